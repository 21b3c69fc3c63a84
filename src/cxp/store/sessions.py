"""Dashboard sessions: an opaque random token for the browser, its SHA-256 in the database, an expiry, revocable."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from cxp.store.apikeys import ApiKey
from cxp.store.errors import StoreError, mapped_errors

_CSRF_CONTEXT = b"cxp dashboard csrf v1"


@dataclass(frozen=True)
class Session:
    """A live session's record (never its token): the key it was opened with, that key's role, its lifetime."""

    key: ApiKey
    role: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class NewSession:
    """A freshly opened session: `token` is the only copy, for the browser's cookie."""

    session: Session
    token: str


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def csrf_token(token: str) -> str:
    """The CSRF token of the session `token`: an HMAC keyed by it, so it is stored nowhere and reveals nothing."""
    return hmac.new(token.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def csrf_matches(token: str, presented: str | None) -> bool:
    """Whether `presented` is the CSRF token of the session `token` (constant-time)."""
    return bool(presented) and hmac.compare_digest(csrf_token(token), presented or "")


_KEY_COLUMNS = "k.key_id, k.name, k.role, k.created_at, k.revoked_at, k.last_used_at"


def create_session(conn: psycopg.Connection, *, key: ApiKey, ttl: timedelta) -> NewSession:
    """Open a session for an active `key` (already verified by the caller), lasting `ttl`; purge expired ones."""
    if ttl <= timedelta(0):
        raise StoreError("a session needs a positive lifetime")
    token = secrets.token_urlsafe(32)  # 256 random bits: a plain hash of it cannot be brute-forced
    with mapped_errors(), conn.transaction():
        purge_sessions(conn)
        row = conn.execute(
            "INSERT INTO dashboard_sessions (token_sha256, key_id, role, expires_at)"
            " SELECT %s, key_id, role, now() + %s FROM api_keys WHERE key_id = %s AND revoked_at IS NULL"
            " RETURNING created_at, expires_at",
            (_digest(token), ttl, key.key_id),
        ).fetchone()
    if row is None:
        raise StoreError(f"key {key.key_id} is unknown or revoked: no session")
    return NewSession(Session(key, key.role, row[0], row[1]), token)


def get_session(conn: psycopg.Connection, *, token: str) -> Session | None:
    """The live session of `token`, or None (unknown, expired, logged out, or its key revoked)."""
    if not token or len(token) > 200:
        return None
    with mapped_errors():
        row = conn.execute(
            f"SELECT {_KEY_COLUMNS}, s.role, s.created_at, s.expires_at FROM dashboard_sessions s"
            " JOIN api_keys k ON k.key_id = s.key_id"
            " WHERE s.token_sha256 = %s AND s.revoked_at IS NULL AND s.expires_at > now() AND k.revoked_at IS NULL",
            (_digest(token),),
        ).fetchone()
    return None if row is None else Session(ApiKey(*row[:6]), *row[6:])


def revoke_session(conn: psycopg.Connection, *, token: str) -> bool:
    """End the session of `token` (logout); whether a live one was ended."""
    with mapped_errors():
        cur = conn.execute(
            "UPDATE dashboard_sessions SET revoked_at = now() WHERE token_sha256 = %s AND revoked_at IS NULL",
            (_digest(token),),
        )
    return cur.rowcount > 0


def revoke_key_sessions(conn: psycopg.Connection, *, key_id: str) -> int:
    """End every session opened with the key `key_id`; how many were live."""
    with mapped_errors():
        cur = conn.execute(
            "UPDATE dashboard_sessions SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL", (key_id,)
        )
    return cur.rowcount


def purge_sessions(conn: psycopg.Connection) -> int:
    """Delete expired and ended sessions (they can never authenticate again); how many."""
    with mapped_errors():
        cur = conn.execute("DELETE FROM dashboard_sessions WHERE expires_at <= now() OR revoked_at IS NOT NULL")
    return cur.rowcount
