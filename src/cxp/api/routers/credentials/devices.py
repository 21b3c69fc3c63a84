"""Credentials per device (role `admin`): create, list, rotate (grace window), revoke (broker drops the device)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from cxp.api.deps import AdminKey, LightConnDep, PageDep, SettingsDep
from cxp.api.routers.credentials.schemas import (
    Credential,
    CredentialIn,
    CredentialState,
    DeviceCredentials,
    IssuedOut,
    Kind,
    RevocationOut,
    RevokeIn,
    RotationOut,
)
from cxp.api.schemas import Page
from cxp.identity.service import (
    create_credential,
    get_device_credential,
    list_device_credentials,
    revoke_credential,
    rotate_credential,
)
from cxp.store.credentials import credential_summaries

router = APIRouter(prefix="/v1/credentials", tags=["credentials"])
DevicePath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
_404 = {404: {"description": "Unknown device or credential"}}


def _actor(key) -> str:
    return f"api-key:{key.key_id}"


@router.get("", response_model=Page[Credential], summary="Credentials with their state, newest first")
def list_credentials_view(
    _: AdminKey, conn: LightConnDep, page: PageDep,
    device_id: Annotated[str | None, Query(max_length=64)] = None,
    state: Literal["active", "superseded", "revoked"] | None = None,
    kind: Kind | None = None,
) -> Page[Credential]:
    rows, total = list_device_credentials(conn=conn, device_id=device_id, state=state, kind=kind, limit=page.limit,
                                          offset=page.offset)
    return Page(items=[Credential.of(r) for r in rows], total=total, limit=page.limit, offset=page.offset)


@router.get("/{credential_id}", response_model=Credential, responses=_404, summary="One credential")
def get_credential_view(_: AdminKey, conn: LightConnDep, credential_id: int) -> Credential:
    return Credential.of(get_device_credential(conn=conn, credential_id=credential_id))


@router.get("/devices/{device_id}", response_model=DeviceCredentials, summary="A device's credential state")
def device_credentials_view(_: AdminKey, conn: LightConnDep, device_id: DevicePath) -> DeviceCredentials:
    rows, _total = list_device_credentials(conn=conn, device_id=device_id, limit=1000)
    summary = credential_summaries(conn, device_ids=[device_id])[device_id]
    return DeviceCredentials(state=CredentialState.of(device_id, summary), credentials=[Credential.of(r) for r in rows])


@router.post("/devices/{device_id}", response_model=IssuedOut, status_code=201, responses=_404,
             summary="Issue a token (secret shown once) or a certificate from the device's CSR")
def create_credential_view(key: AdminKey, conn: LightConnDep, settings: SettingsDep, device_id: DevicePath,
                           body: CredentialIn) -> IssuedOut:
    issued = create_credential(conn=conn, settings=settings, device_id=device_id, kind=body.kind,
                               csr_pem=body.csr.encode() if body.csr else None, actor=_actor(key))
    return IssuedOut.of(issued)


@router.post("/devices/{device_id}/rotate", response_model=RotationOut, responses=_404,
             summary="A new credential; the current ones stay valid for the grace window (no downtime)")
def rotate_credential_view(key: AdminKey, conn: LightConnDep, settings: SettingsDep, device_id: DevicePath,
                           body: CredentialIn) -> RotationOut:
    done = rotate_credential(conn=conn, settings=settings, device_id=device_id, kind=body.kind,
                             csr_pem=body.csr.encode() if body.csr else None, actor=_actor(key))
    return RotationOut(issued=IssuedOut.of(done.issued), old=[Credential.of(c) for c in done.old],
                       grace_until=done.grace_until)


@router.post("/devices/{device_id}/revoke", response_model=RevocationOut, responses=_404,
             summary="Revoke one credential or all of a device: removed from the broker, live session dropped")
def revoke_credential_view(key: AdminKey, conn: LightConnDep, settings: SettingsDep, device_id: DevicePath,
                           body: RevokeIn) -> RevocationOut:
    done = revoke_credential(conn=conn, settings=settings, device_id=device_id, credential_id=body.credential_id,
                             actor=_actor(key), reason=body.reason)
    return RevocationOut(revoked=[Credential.of(c) for c in done.revoked], broker_reloaded=done.sync.reloaded,
                         sessions_dropped=done.sessions_dropped)
