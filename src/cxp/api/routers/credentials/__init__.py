"""Device credential endpoints (role `admin`, except the device's own `POST /v1/provision`): credentials per
device (create, list, rotate, revoke), provisioning keys and their audit, bulk provisioning from CSV."""

from __future__ import annotations

from fastapi import APIRouter

from cxp.api.routers.credentials import devices, provisioning

router = APIRouter()
for resource in (devices, provisioning):
    router.include_router(resource.router)
