"""Device credentials, provisioning keys and the provisioning audit: queries only (rules: cxp.identity.service)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import psycopg

from cxp.store.errors import mapped_errors

KINDS = ("token", "certificate")
STATES = ("active", "superseded", "revoked")
PROVISIONING_PREFIX = "cxpprov"
# One advisory lock id for every writer of the broker's identity files: two processes never interleave writes.
BROKER_SYNC_LOCK = 0x6378_7010


@dataclass(frozen=True)
class CredentialRow:
    """One credential as stored: never a secret, never a private key."""

    credential_id: int
    device_id: str
    kind: str
    username: str | None
    generation: int | None
    serial_hex: str | None
    fingerprint_sha256: str | None
    not_before: datetime | None
    not_after: datetime | None
    state: str
    grace_until: datetime | None
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None


_CRED_COLS = ("credential_id, device_id, kind, username, generation, serial_hex, fingerprint_sha256, not_before,"
              " not_after, state, grace_until, created_at, created_by, revoked_at, revoked_by, revoke_reason")


@dataclass(frozen=True)
class TokenLogin:
    """A token the broker must accept now: its username, device and `$7$` hash."""

    username: str
    device_id: str
    secret_hash: str


@dataclass(frozen=True)
class CredentialSummary:
    """A device's credential state at a glance."""

    kinds: tuple[str, ...]
    active: int
    in_grace: int
    revoked: int


def insert_token(conn: psycopg.Connection, *, device_id: str, generation: int, username: str, secret_hash: str,
                 created_by: str | None) -> CredentialRow:
    """Store a new token (its hash only)."""
    with mapped_errors():
        row = conn.execute(
            "INSERT INTO device_credentials (device_id, kind, username, generation, secret_hash, created_by)"
            f" VALUES (%s, 'token', %s, %s, %s, %s) RETURNING {_CRED_COLS}",
            (device_id, username, generation, secret_hash, created_by)).fetchone()
    return CredentialRow(*row)


def insert_certificate(conn: psycopg.Connection, *, device_id: str, serial_hex: str, fingerprint_sha256: str,
                       not_before: datetime, not_after: datetime, created_by: str | None) -> CredentialRow:
    """Store an issued certificate's facts (serial, fingerprint, validity)."""
    with mapped_errors():
        row = conn.execute(
            "INSERT INTO device_credentials (device_id, kind, serial_hex, fingerprint_sha256, not_before, not_after,"
            f" created_by) VALUES (%s, 'certificate', %s, %s, %s, %s, %s) RETURNING {_CRED_COLS}",
            (device_id, serial_hex, fingerprint_sha256, not_before, not_after, created_by)).fetchone()
    return CredentialRow(*row)


def next_generation(conn: psycopg.Connection, *, device_id: str) -> int:
    """The generation a new token of this device gets (generations are never reused, revoked ones included)."""
    with mapped_errors():
        return conn.execute("SELECT coalesce(max(generation), 0) + 1 FROM device_credentials WHERE device_id = %s",
                            (device_id,)).fetchone()[0]


def lock_device(conn: psycopg.Connection, *, device_id: str) -> None:
    """Serialise credential changes of one device until the transaction ends."""
    with mapped_errors():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (BROKER_SYNC_LOCK, device_id))


def get_credential(conn: psycopg.Connection, *, credential_id: int) -> CredentialRow | None:
    """One credential."""
    with mapped_errors():
        row = conn.execute(f"SELECT {_CRED_COLS} FROM device_credentials WHERE credential_id = %s",
                           (credential_id,)).fetchone()
    return CredentialRow(*row) if row else None


def list_credentials(conn: psycopg.Connection, *, device_id: str | None = None, state: str | None = None,
                     kind: str | None = None, limit: int = 100, offset: int = 0) -> tuple[list[CredentialRow], int]:
    """Credentials (newest first), optionally of one device, state or kind, and how many match."""
    where = ("WHERE (%(device)s::text IS NULL OR device_id = %(device)s)"
             " AND (%(state)s::text IS NULL OR state = %(state)s) AND (%(kind)s::text IS NULL OR kind = %(kind)s)")
    params = {"device": device_id, "state": state, "kind": kind, "limit": limit, "offset": offset}
    with mapped_errors():
        rows = conn.execute(f"SELECT {_CRED_COLS} FROM device_credentials {where}"
                            " ORDER BY created_at DESC, credential_id DESC LIMIT %(limit)s OFFSET %(offset)s",
                            params).fetchall()
        total = conn.execute(f"SELECT count(*) FROM device_credentials {where}", params).fetchone()[0]
    return [CredentialRow(*r) for r in rows], total


def active_credentials(conn: psycopg.Connection, *, device_id: str, kind: str) -> list[CredentialRow]:
    """A device's active credentials of one kind that are not already in a grace window (what a rotation ends)."""
    with mapped_errors():
        rows = conn.execute(f"SELECT {_CRED_COLS} FROM device_credentials WHERE device_id = %s AND kind = %s"
                            " AND state = 'active' AND grace_until IS NULL ORDER BY credential_id",
                            (device_id, kind)).fetchall()
    return [CredentialRow(*r) for r in rows]


def start_grace(conn: psycopg.Connection, *, credential_ids: Sequence[int], grace_until: datetime) -> None:
    """Give these active credentials a last moment of validity."""
    with mapped_errors():
        conn.execute("UPDATE device_credentials SET grace_until = %s WHERE credential_id = ANY(%s)"
                     " AND state = 'active'", (grace_until, list(credential_ids)))


def revoke_credentials(conn: psycopg.Connection, *, by: str | None, reason: str | None, device_id: str | None = None,
                       credential_id: int | None = None) -> list[CredentialRow]:
    """Revoke one credential or every one of a device that is not revoked yet; returns those revoked now."""
    if (device_id is None) == (credential_id is None):
        raise ValueError("name exactly one of device_id, credential_id")
    with mapped_errors():
        rows = conn.execute(
            "UPDATE device_credentials SET state = 'revoked', revoked_at = now(), revoked_by = %s, revoke_reason = %s"
            " WHERE state <> 'revoked' AND (device_id = %s OR credential_id = %s)"
            f" RETURNING {_CRED_COLS}", (by, reason, device_id, credential_id)).fetchall()
    return [CredentialRow(*r) for r in rows]


def end_grace(conn: psycopg.Connection, *, now: datetime | None = None) -> list[CredentialRow]:
    """Supersede every credential whose grace window has ended; returns them."""
    with mapped_errors():
        rows = conn.execute(
            "UPDATE device_credentials SET state = 'superseded' WHERE state = 'active'"
            f" AND grace_until <= coalesce(%s, now()) RETURNING {_CRED_COLS}", (now,)).fetchall()
    return [CredentialRow(*r) for r in rows]


def live_token_logins(conn: psycopg.Connection, *, now: datetime | None = None) -> list[TokenLogin]:
    """Every token the broker must accept now: active, and in its grace window if it has one."""
    with mapped_errors():
        rows = conn.execute(
            "SELECT username, device_id, secret_hash FROM device_credentials WHERE kind = 'token'"
            " AND state = 'active' AND (grace_until IS NULL OR grace_until > coalesce(%s, now()))"
            " ORDER BY username", (now,)).fetchall()
    return [TokenLogin(*r) for r in rows]


def refused_serials(conn: psycopg.Connection, *, now: datetime | None = None) -> list[str]:
    """Serials of certificates that must be on the CRL: revoked, superseded or past their grace, and not expired
    (an expired certificate is refused anyway, so the list does not grow for ever)."""
    with mapped_errors():
        rows = conn.execute(
            "SELECT serial_hex FROM device_credentials WHERE kind = 'certificate'"
            " AND (state <> 'active' OR grace_until <= coalesce(%s, now()))"
            " AND not_after > coalesce(%s, now()) ORDER BY serial_hex", (now, now)).fetchall()
    return [r[0] for r in rows]


def has_certificates(conn: psycopg.Connection) -> bool:
    """Whether any certificate was ever issued (then the broker needs a CRL)."""
    with mapped_errors():
        return conn.execute("SELECT EXISTS (SELECT 1 FROM device_credentials WHERE kind = 'certificate')"
                            ).fetchone()[0]


def credential_summaries(conn: psycopg.Connection, *, device_ids: Sequence[str]) -> dict[str, CredentialSummary]:
    """Per device: the kinds it has live, how many are active, in a grace window, revoked."""
    with mapped_errors():
        rows = conn.execute(
            "SELECT device_id, coalesce(array_agg(DISTINCT kind) FILTER (WHERE state = 'active'), '{}'),"
            " count(*) FILTER (WHERE state = 'active' AND grace_until IS NULL),"
            " count(*) FILTER (WHERE state = 'active' AND grace_until IS NOT NULL),"
            " count(*) FILTER (WHERE state = 'revoked')"
            " FROM device_credentials WHERE device_id = ANY(%s) GROUP BY device_id", (list(device_ids),)).fetchall()
    found = {r[0]: CredentialSummary(tuple(sorted(r[1])), r[2], r[3], r[4]) for r in rows}
    return {d: found.get(d, CredentialSummary((), 0, 0, 0)) for d in device_ids}


@contextmanager
def broker_sync_lock(conn: psycopg.Connection) -> Iterator[None]:
    """A transaction holding the broker-files lock: writers of the broker's files take turns across processes."""
    with mapped_errors(), conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (BROKER_SYNC_LOCK,))
        yield


def try_broker_sync_lock(conn: psycopg.Connection) -> bool:
    """Inside a transaction: take the broker-files lock if nobody holds it (False when another process does)."""
    with mapped_errors():
        return conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (BROKER_SYNC_LOCK,)).fetchone()[0]


# ------------------------------------------------------------------------------------------- provisioning keys


@dataclass(frozen=True)
class ProvisioningKey:
    """A product's provisioning key: public record, never the secret."""

    key_id: str
    product_id: str
    name: str
    max_devices: int
    used_count: int
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    created_by: str | None


@dataclass(frozen=True)
class NewProvisioningKey:
    """A fresh provisioning key: `token` is the only copy of its secret."""

    key: ProvisioningKey
    token: str


@dataclass(frozen=True)
class AuditRow:
    """One provisioning attempt."""

    audit_id: int
    at: datetime
    key_id: str | None
    device_id: str | None
    client_address: str | None
    outcome: str
    reason: str


_KEY_COLS = "key_id, product_id, name, max_devices, used_count, expires_at, revoked_at, created_at, created_by"
_AUDIT_COLS = "audit_id, at, key_id, device_id, client_address, outcome, reason"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_provisioning_token(token: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed `cxpprov_<key_id>_<secret>`, else None."""
    parts = token.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != PROVISIONING_PREFIX or len(parts[1]) != 12 or len(parts[2]) < 32:
        return None
    return parts[1], parts[2]


def insert_provisioning_key(conn: psycopg.Connection, *, product_id: str, name: str, max_devices: int,
                            expires_at: datetime | None, created_by: str | None) -> NewProvisioningKey:
    """Create a provisioning key; return its record and the token shown once."""
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    with mapped_errors():
        row = conn.execute(
            "INSERT INTO provisioning_keys (key_id, product_id, name, secret_sha256, max_devices, expires_at,"
            f" created_by) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_KEY_COLS}",
            (key_id, product_id, name, _digest(secret), max_devices, expires_at, created_by)).fetchone()
    return NewProvisioningKey(ProvisioningKey(*row), f"{PROVISIONING_PREFIX}_{key_id}_{secret}")


def verify_provisioning_secret(conn: psycopg.Connection, *, key_id: str,
                               secret: str) -> tuple[ProvisioningKey | None, bool]:
    """The key of `key_id` (None: unknown) and whether `secret` is its secret (constant-time compare)."""
    with mapped_errors():
        row = conn.execute(f"SELECT {_KEY_COLS}, secret_sha256 FROM provisioning_keys WHERE key_id = %s",
                           (key_id,)).fetchone()
    if row is None:
        return None, False
    return ProvisioningKey(*row[:-1]), hmac.compare_digest(bytes(row[-1]), _digest(secret))


def claim_provisioning_slot(conn: psycopg.Connection, *, key_id: str) -> ProvisioningKey | None:
    """Count one use of a key that is live and not exhausted (row-locked: concurrent claims never exceed the max)."""
    with mapped_errors():
        row = conn.execute(
            "UPDATE provisioning_keys SET used_count = used_count + 1 WHERE key_id = %s AND revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > now()) AND used_count < max_devices"
            f" RETURNING {_KEY_COLS}", (key_id,)).fetchone()
    return ProvisioningKey(*row) if row else None


def get_provisioning_key(conn: psycopg.Connection, *, key_id: str) -> ProvisioningKey | None:
    """One provisioning key."""
    with mapped_errors():
        row = conn.execute(f"SELECT {_KEY_COLS} FROM provisioning_keys WHERE key_id = %s", (key_id,)).fetchone()
    return ProvisioningKey(*row) if row else None


def list_provisioning_keys(conn: psycopg.Connection, *, product_id: str | None = None,
                           include_revoked: bool = False) -> list[ProvisioningKey]:
    """Provisioning keys, newest first."""
    with mapped_errors():
        rows = conn.execute(
            f"SELECT {_KEY_COLS} FROM provisioning_keys WHERE (%(p)s::text IS NULL OR product_id = %(p)s)"
            " AND (%(all)s OR revoked_at IS NULL) ORDER BY created_at DESC, key_id",
            {"p": product_id, "all": include_revoked}).fetchall()
    return [ProvisioningKey(*r) for r in rows]


def revoke_provisioning_key(conn: psycopg.Connection, *, key_id: str) -> ProvisioningKey | None:
    """Revoke a provisioning key (idempotent); None when it does not exist."""
    with mapped_errors():
        row = conn.execute("UPDATE provisioning_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %s"
                           f" RETURNING {_KEY_COLS}", (key_id,)).fetchone()
    return ProvisioningKey(*row) if row else None


def insert_audit(conn: psycopg.Connection, *, key_id: str | None, device_id: str | None, client_address: str | None,
                 outcome: str, reason: str) -> None:
    """Record one provisioning attempt (text is clipped: the presented values are the caller's)."""
    def clip(value: str | None) -> str | None:
        return None if value is None else value[:128]

    with mapped_errors():
        conn.execute("INSERT INTO provisioning_audit (key_id, device_id, client_address, outcome, reason)"
                     " VALUES (%s, %s, %s, %s, %s)",
                     (clip(key_id), clip(device_id), clip(client_address), outcome, reason[:500]))


def list_audit(conn: psycopg.Connection, *, key_id: str | None = None, outcome: str | None = None,
               limit: int = 100, offset: int = 0) -> tuple[list[AuditRow], int]:
    """Provisioning attempts, newest first, and how many match."""
    where = "WHERE (%(k)s::text IS NULL OR key_id = %(k)s) AND (%(o)s::text IS NULL OR outcome = %(o)s)"
    params = {"k": key_id, "o": outcome, "limit": limit, "offset": offset}
    with mapped_errors():
        rows = conn.execute(f"SELECT {_AUDIT_COLS} FROM provisioning_audit {where}"
                            " ORDER BY at DESC, audit_id DESC LIMIT %(limit)s OFFSET %(offset)s", params).fetchall()
        total = conn.execute(f"SELECT count(*) FROM provisioning_audit {where}", params).fetchone()[0]
    return [AuditRow(*r) for r in rows], total
