"""Provisioning keys and their audit (role `admin`), a device provisioning itself with its product's key
(`POST /v1/provision`, header X-Provisioning-Key, checked before the body is read), bulk provisioning from CSV."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Literal

from fastapi import APIRouter, File, Path, Query, Request, UploadFile
from fastapi.responses import Response

from cxp.api.deps import AdminKey, ConnDep, LightConnDep, PageDep, ProvisioningToken, SettingsDep
from cxp.api.errors import ErrorBody, ErrorDetail, Unprocessable
from cxp.api.routers.credentials.schemas import (
    AuditOut,
    IssuedOut,
    NewProvisioningKeyOut,
    ProvisionIn,
    ProvisioningKeyIn,
    ProvisioningKeyOut,
)
from cxp.api.schemas import Page
from cxp.api.uploads import MIB, CsvColumns, CsvProblems, line_loc, read_csv
from cxp.core.csvout import neutralise
from cxp.identity.errors import IdentityError
from cxp.identity.pki import DEVICE_ID
from cxp.identity.provisioning import (
    BulkRefused,
    BulkRow,
    bulk_provision,
    create_provisioning_key,
    csr_from_cell,
    list_attempts,
    list_keys,
    provision_device,
    revoke_key,
)

router = APIRouter(tags=["provisioning"])
KeyPath = Annotated[str, Path(min_length=12, max_length=12, pattern=r"^[0-9a-f]{12}$")]
MAX_CSV_BYTES = 20 * MIB
BULK_COLUMNS = CsvColumns(required=("device_id", "product", "kind"), optional=("csr",))
BULK_OUT = ("line", "device_id", "product", "kind", "credential_id", "mqtt_username", "secret", "certificate_pem")


@router.post("/v1/provisioning/keys", response_model=NewProvisioningKeyOut, status_code=201,
             summary="A product's provisioning key (token shown once), with a device count limit and an expiry")
def create_key_view(key: AdminKey, conn: LightConnDep, body: ProvisioningKeyIn) -> NewProvisioningKeyOut:
    new = create_provisioning_key(conn=conn, product_id=body.product_id, name=body.name,
                                  max_devices=body.max_devices, expires_at=body.expires_at,
                                  actor=f"api-key:{key.key_id}")
    return NewProvisioningKeyOut(key=ProvisioningKeyOut.of(new.key), token=new.token)


@router.get("/v1/provisioning/keys", response_model=list[ProvisioningKeyOut], summary="Provisioning keys")
def list_keys_view(_: AdminKey, conn: LightConnDep, product_id: Annotated[str | None, Query(max_length=128)] = None,
                   include_revoked: bool = False) -> list[ProvisioningKeyOut]:
    return [ProvisioningKeyOut.of(k) for k in list_keys(conn=conn, product_id=product_id,
                                                        include_revoked=include_revoked)]


@router.delete("/v1/provisioning/keys/{key_id}", response_model=ProvisioningKeyOut,
               responses={404: {"description": "Unknown key"}},
               summary="Revoke a provisioning key (devices it provisioned keep their credentials)")
def revoke_key_view(_: AdminKey, conn: LightConnDep, key_id: KeyPath) -> ProvisioningKeyOut:
    return ProvisioningKeyOut.of(revoke_key(conn=conn, key_id=key_id))


@router.get("/v1/provisioning/audit", response_model=Page[AuditOut], summary="Every provisioning attempt, newest first")
def audit_view(_: AdminKey, conn: LightConnDep, page: PageDep,
               key_id: Annotated[str | None, Query(max_length=128)] = None,
               outcome: Literal["provisioned", "refused"] | None = None) -> Page[AuditOut]:
    rows, total = list_attempts(conn=conn, key_id=key_id, outcome=outcome, limit=page.limit, offset=page.offset)
    return Page(items=[AuditOut.of(r) for r in rows], total=total, limit=page.limit, offset=page.offset)


@router.post("/v1/provision", response_model=IssuedOut, status_code=201,
             responses={401: {"model": ErrorBody, "description": "No, a malformed or an unknown provisioning key"},
                        403: {"model": ErrorBody, "description": "The key is revoked, expired or used up"},
                        409: {"model": ErrorBody, "description": "The device id is registered already"}},
             summary="A device provisions itself with its product's key: registered, given a token or certificate")
def provision_view(request: Request, token: ProvisioningToken, conn: LightConnDep, settings: SettingsDep,
                   body: ProvisionIn) -> IssuedOut:
    client = request.client.host if request.client else None
    issued = provision_device(conn=conn, settings=settings, token=token, device_id=body.device_id,
                              csr_pem=body.csr.encode() if body.csr else None, client=client)
    return IssuedOut.of(issued)


def _bulk_rows(data: bytes) -> list[BulkRow]:
    rows = read_csv(data, columns=BULK_COLUMNS, loc=line_loc, max_bytes=MAX_CSV_BYTES)
    problems = CsvProblems(line_loc)
    parsed = []
    for row in rows:
        cells = row.cells
        device_id, product, kind = cells.get("device_id", ""), cells.get("product", ""), cells.get("kind", "")
        if not DEVICE_ID.match(device_id):
            problems.add(row.line, "device_id", message=f"not a device id: {device_id!r}")
        if not product:
            problems.add(row.line, "product", message="missing")
        if kind not in ("token", "certificate"):
            problems.add(row.line, "kind", message=f"expected token or certificate, got {kind!r}")
        csr = None
        if kind == "certificate":
            if "csr" not in cells:
                problems.add(row.line, "csr", message="a certificate needs the device's CSR")
            else:
                try:
                    csr = csr_from_cell(cells["csr"])
                except IdentityError as exc:
                    problems.add(row.line, "csr", message=str(exc))
        elif "csr" in cells:
            problems.add(row.line, "csr", message="a token takes no CSR")
        parsed.append(BulkRow(row.line, device_id, product, kind, csr))
    problems.raise_any(outcome="; nothing was provisioned")
    return parsed


@router.post("/v1/provisioning/import", response_class=Response,
             responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                              "description": "One row per device with its one-time secret or certificate"},
                        400: {"model": ErrorBody, "description": "The multipart body could not be parsed"},
                        422: {"model": ErrorBody, "description": "Bad rows; nothing was provisioned"}},
             summary="Bulk provisioning for factories: CSV device_id,product,kind[,csr] → CSV of credentials")
def import_view(key: AdminKey, conn: ConnDep, settings: SettingsDep,
                file: Annotated[UploadFile, File(description="CSV: device_id,product,kind[,csr] (csr: PEM with \\n,"
                                                             " or base64 DER)")]) -> Response:
    """All or nothing; the response is the only copy of the secrets: hand it to the factory, then delete it."""
    rows = _bulk_rows(file.file.read(MAX_CSV_BYTES + 1))
    try:
        issued = bulk_provision(conn=conn, settings=settings, rows=rows, actor=f"api-key:{key.key_id}")
    except BulkRefused as exc:
        raise Unprocessable(str(exc), details=[ErrorDetail(loc=line_loc(line), message=m)
                                               for line, m in exc.problems[:200]]) from None
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(BULK_OUT)
    for row, done in zip(rows, issued, strict=True):
        # Secrets and PEM are ours (may start with '-'): only the caller's device id is neutralised.
        writer.writerow([row.line, neutralise(row.device_id), row.product_id, row.kind, done.credential.credential_id,
                         done.credential.username or "", done.secret or "", done.certificate_pem or ""])
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="credentials.csv"',
                             "Cache-Control": "no-store"})
