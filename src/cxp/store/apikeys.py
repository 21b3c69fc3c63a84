"""API keys: created once (the plain key is shown only then), stored as a SHA-256 of their secret, revocable."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

import psycopg

from cxp.store.errors import StoreError, mapped_errors

ROLES = ("product", "pricing", "admin")
_PREFIX = "cxp"


@dataclass(frozen=True)
class ApiKey:
    """A key's public record (never the secret)."""

    key_id: str
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class NewApiKey:
    """A freshly created key: `token` is the only copy of the secret."""

    key: ApiKey
    token: str


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_token(token: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed token `cxp_<key_id>_<secret>`, else None."""
    parts = token.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != _PREFIX or len(parts[1]) != 12 or len(parts[2]) < 32:
        return None
    return parts[1], parts[2]


_COLUMNS = "key_id, name, role, created_at, revoked_at, last_used_at"


def create_key(conn: psycopg.Connection, *, name: str, role: str) -> NewApiKey:
    """Create a key with a role; return its record and the token to hand to its user."""
    if role not in ROLES:
        raise StoreError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if not name.strip():
        raise StoreError("a key needs a name saying who or what uses it")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    with mapped_errors():
        row = conn.execute(
            f"INSERT INTO api_keys (key_id, name, role, secret_sha256) VALUES (%s, %s, %s, %s) RETURNING {_COLUMNS}",
            (key_id, name.strip(), role, _digest(secret)),
        ).fetchone()
    return NewApiKey(ApiKey(*row), f"{_PREFIX}_{key_id}_{secret}")


def verify_key(conn: psycopg.Connection, *, token: str) -> ApiKey | None:
    """The active key a token belongs to, or None (malformed, unknown, wrong secret or revoked)."""
    parts = split_token(token)
    if parts is None:
        return None
    key_id, secret = parts
    with mapped_errors():
        row = conn.execute(
            f"SELECT {_COLUMNS}, secret_sha256 FROM api_keys WHERE key_id = %s AND revoked_at IS NULL", (key_id,)
        ).fetchone()
    if row is None or not hmac.compare_digest(bytes(row[-1]), _digest(secret)):
        return None
    return ApiKey(*row[:-1])


def touch_key(conn: psycopg.Connection, *, key_id: str) -> None:
    """Record that a key was used (coarse: callers throttle it)."""
    with mapped_errors():
        conn.execute("UPDATE api_keys SET last_used_at = now() WHERE key_id = %s", (key_id,))


def list_keys(conn: psycopg.Connection, *, include_revoked: bool = False) -> list[ApiKey]:
    """Every key, newest first."""
    where = "" if include_revoked else " WHERE revoked_at IS NULL"
    with mapped_errors():
        rows = conn.execute(f"SELECT {_COLUMNS} FROM api_keys{where} ORDER BY created_at DESC, key_id").fetchall()
    return [ApiKey(*r) for r in rows]


def revoke_key(conn: psycopg.Connection, *, key_id: str) -> ApiKey | None:
    """Revoke a key (idempotent) and end the dashboard sessions opened with it; None when no such key exists."""
    with mapped_errors(), conn.transaction():
        row = conn.execute(
            f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %s RETURNING {_COLUMNS}",
            (key_id,),
        ).fetchone()
        # Sessions also check their key at each lookup; ending them here keeps the table saying what is live.
        conn.execute("UPDATE dashboard_sessions SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL",
                     (key_id,))
    return ApiKey(*row) if row else None
