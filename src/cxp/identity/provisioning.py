"""Self-provisioning (as ThingsBoard's): product keys with limits, devices registering themselves, every attempt
audited; and bulk provisioning of a factory batch, all or nothing."""

from __future__ import annotations

import base64
import binascii
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from cxp.core.config import Settings
from cxp.identity.errors import BadCsr, BadParameter, IdentityError
from cxp.identity.service import (
    CredentialConflict,
    IssuedCredential,
    check_device_name,
    issue_credential,
    sync_broker,
)
from cxp.store.credentials import (
    AuditRow,
    NewProvisioningKey,
    ProvisioningKey,
    claim_provisioning_slot,
    get_provisioning_key,
    insert_audit,
    insert_provisioning_key,
    list_audit,
    list_provisioning_keys,
    revoke_provisioning_key,
    split_provisioning_token,
    verify_provisioning_secret,
)
from cxp.store.registry import DeviceRow, get_device, get_product, upsert_devices


class UnknownProduct(IdentityError):
    """The product is not in the registry."""


class UnknownProvisioningKey(IdentityError):
    """No provisioning key has this id."""


class ProvisioningRefused(IdentityError):
    """A provisioning attempt refused; `status` 401 (not a valid key) or 403 (a valid key that may not be used)."""

    status = 403

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ProvisioningUnauthenticated(ProvisioningRefused):
    """No key, a malformed or unknown key, or a wrong secret."""

    status = 401


@dataclass(frozen=True)
class BulkRow:
    """One line of a factory's CSV: the device, its product, the credential kind, the CSR for a certificate."""

    line: int
    device_id: str
    product_id: str
    kind: str
    csr_pem: bytes | None = None


class BulkRefused(IdentityError):
    """A bulk provisioning refused as a whole: (line, message) of each problem found; nothing was stored."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        super().__init__(f"{len(problems)} problem(s); nothing was provisioned. First: line {problems[0][0]}: "
                         f"{problems[0][1]}")
        self.problems = problems


def create_provisioning_key(*, conn: psycopg.Connection, product_id: str, name: str, max_devices: int,
                            expires_at: datetime | None = None, actor: str | None = None) -> NewProvisioningKey:
    """A product's provisioning key (token shown once) for at most `max_devices` devices, until `expires_at`."""
    if max_devices < 1:
        raise BadParameter("a provisioning key admits at least one device")
    if expires_at is not None and expires_at.tzinfo is None:
        raise BadParameter("expires_at must be timezone-aware (UTC)")
    if not name.strip():
        raise BadParameter("a provisioning key needs a name saying which batch or factory uses it")
    if get_product(conn, product_id=product_id) is None:
        raise UnknownProduct(f"product {product_id!r} is not registered")
    return insert_provisioning_key(conn, product_id=product_id, name=name.strip(), max_devices=max_devices,
                                   expires_at=expires_at, created_by=actor)


def list_keys(*, conn: psycopg.Connection, product_id: str | None = None,
              include_revoked: bool = False) -> list[ProvisioningKey]:
    """Provisioning keys, newest first."""
    return list_provisioning_keys(conn, product_id=product_id, include_revoked=include_revoked)


def revoke_key(*, conn: psycopg.Connection, key_id: str) -> ProvisioningKey:
    """Revoke a provisioning key (idempotent); devices it provisioned keep their credentials."""
    key = revoke_provisioning_key(conn, key_id=key_id)
    if key is None:
        raise UnknownProvisioningKey(f"no provisioning key {key_id!r}")
    return key


def list_attempts(*, conn: psycopg.Connection, key_id: str | None = None, outcome: str | None = None,
                  limit: int = 100, offset: int = 0) -> tuple[list[AuditRow], int]:
    """Provisioning attempts (the audit), newest first, and how many match."""
    return list_audit(conn, key_id=key_id, outcome=outcome, limit=limit, offset=offset)


def _unusable(key: ProvisioningKey, now: datetime) -> ProvisioningRefused | None:
    if key.revoked_at is not None:
        return ProvisioningRefused(f"provisioning key {key.key_id} is revoked", reason="revoked")
    if key.expires_at is not None and key.expires_at <= now:
        return ProvisioningRefused(f"provisioning key {key.key_id} expired at {key.expires_at:%Y-%m-%d %H:%M} UTC",
                                   reason="expired")
    if key.used_count >= key.max_devices:
        return ProvisioningRefused(f"provisioning key {key.key_id} has provisioned its {key.max_devices} device(s)",
                                   reason="exhausted")
    return None


def _refuse(conn: psycopg.Connection, exc: ProvisioningRefused, *, key_id: str | None, device_id: str | None,
            client: str | None) -> ProvisioningRefused:
    insert_audit(conn, key_id=key_id, device_id=device_id, client_address=client, outcome="refused",
                 reason=f"{exc.reason}: {exc}")
    return exc


def authenticate_provisioning(*, conn: psycopg.Connection, token: str | None, client: str | None,
                              device_id: str | None = None) -> ProvisioningKey:
    """The live provisioning key a presented token belongs to; else audited and refused (401 or 403)."""
    parts = split_provisioning_token(token) if token else None
    if parts is None:
        raise _refuse(conn, ProvisioningUnauthenticated(
            "a provisioning key is required in the X-Provisioning-Key header (cxpprov_<key id>_<secret>)",
            reason="malformed" if token else "missing"), key_id=None, device_id=device_id, client=client)
    key_id, secret = parts
    key, matches = verify_provisioning_secret(conn, key_id=key_id, secret=secret)
    if key is None or not matches:
        raise _refuse(conn, ProvisioningUnauthenticated(
            "the provisioning key is not valid (unknown key or wrong secret)",
            reason="unknown key" if key is None else "wrong secret"), key_id=key_id, device_id=device_id,
            client=client)
    refusal = _unusable(key, datetime.now(UTC))
    if refusal is not None:
        raise _refuse(conn, refusal, key_id=key_id, device_id=device_id, client=client)
    return key


def provision_device(*, conn: psycopg.Connection, settings: Settings, token: str | None, device_id: str,
                     csr_pem: bytes | None = None, client: str | None = None) -> IssuedCredential:
    """A new device registers itself with its product's key: registered, counted against the key, given a token
    (or a certificate when it sends a CSR); every attempt audited. An existing device id is refused."""
    key = authenticate_provisioning(conn=conn, token=token, client=client, device_id=device_id)
    kind = "certificate" if csr_pem is not None else "token"
    try:
        with conn.transaction():
            claimed = claim_provisioning_slot(conn, key_id=key.key_id)
            if claimed is None:  # used up, revoked or expired since the check above: say which
                current = get_provisioning_key(conn, key_id=key.key_id) or key
                raise _unusable(current, datetime.now(UTC)) or ProvisioningRefused(
                    f"provisioning key {key.key_id} cannot be used now", reason="unusable")
            check_device_name(device_id)
            if get_device(conn, device_id=device_id) is not None:
                # A provisioning key must never hand out a credential for a device that exists already.
                raise CredentialConflict(f"device {device_id!r} is already registered; ask an administrator")
            upsert_devices(conn, devices=[DeviceRow(device_id, key.product_id, None, datetime.now(UTC))])
            issued = issue_credential(conn=conn, settings=settings, device_id=device_id, kind=kind,
                                      csr_pem=csr_pem, actor=f"provisioning:{key.key_id}")
    except ProvisioningRefused as exc:
        raise _refuse(conn, exc, key_id=key.key_id, device_id=device_id, client=client) from None
    except IdentityError as exc:
        insert_audit(conn, key_id=key.key_id, device_id=device_id, client_address=client, outcome="refused",
                     reason=f"{type(exc).__name__}: {exc}")
        raise
    insert_audit(conn, key_id=key.key_id, device_id=device_id, client_address=client, outcome="provisioned",
                 reason=f"{kind} credential {issued.credential.credential_id}")
    if kind == "token":
        sync_broker(conn=conn, settings=settings)
    return issued


def csr_from_cell(text: str) -> bytes:
    """A CSR from one CSV cell: PEM with its line breaks written as `\\n`, or base64 DER (no line breaks at all)."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        return (text.replace("\\n", "\n") + "\n").encode()
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadCsr("the csr cell is neither PEM (with \\n for line breaks) nor base64 DER") from exc
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n".encode()


def bulk_provision(*, conn: psycopg.Connection, settings: Settings, rows: Sequence[BulkRow],
                   actor: str | None = None) -> list[IssuedCredential]:
    """Register a factory batch and issue each device its credential in one transaction: all or nothing.
    A device already registered keeps its registration when the product matches (its credential is added)."""
    problems: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for row in rows:
        if row.device_id in seen:
            problems.append((row.line, f"device {row.device_id!r} also on line {seen[row.device_id]}"))
        seen.setdefault(row.device_id, row.line)
    if problems:
        raise BulkRefused(problems)
    issued: list[IssuedCredential] = []
    try:
        with conn.transaction():
            products: dict[str, bool] = {}
            new_devices: list[DeviceRow] = []
            for row in rows:
                if row.product_id not in products:
                    products[row.product_id] = get_product(conn, product_id=row.product_id) is not None
                existing = get_device(conn, device_id=row.device_id)
                if not products[row.product_id]:
                    problems.append((row.line, f"product {row.product_id!r} is not registered"))
                elif existing is not None and existing.product_id != row.product_id:
                    problems.append((row.line, f"device {row.device_id!r} is registered as a {existing.product_id}"))
                elif existing is None:
                    new_devices.append(DeviceRow(row.device_id, row.product_id, None, datetime.now(UTC)))
            if problems:
                raise BulkRefused(problems)
            upsert_devices(conn, devices=new_devices)  # one call: its staging table lives until the commit
            for row in rows:
                try:
                    check_device_name(row.device_id)
                    issued.append(issue_credential(conn=conn, settings=settings, device_id=row.device_id,
                                                   kind=row.kind, csr_pem=row.csr_pem, actor=actor))
                except IdentityError as exc:
                    problems.append((row.line, str(exc)))
            if problems:
                raise BulkRefused(problems)  # leaves the transaction: nothing of the batch is stored
    finally:
        if problems:
            issued.clear()
    if any(i.credential.kind == "token" for i in issued):
        sync_broker(conn=conn, settings=settings)
    return issued
