"""What the broker saw per login (from its log): last connection, connected now, publishes it refused."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from cxp.store.errors import mapped_errors


@dataclass(frozen=True)
class BrokerClientUpdate:
    """Changes seen for one broker username since the last write; `denied_publishes` is an increment."""

    username: str
    device_id: str
    connected: bool | None = None  # None: unchanged
    last_connected_at: datetime | None = None
    last_address: str | None = None
    last_disconnected_at: datetime | None = None
    denied_publishes: int = 0
    last_denied_at: datetime | None = None
    last_denied_topic: str | None = None


@dataclass(frozen=True)
class BrokerClient:
    """One broker username as last seen."""

    username: str
    device_id: str
    last_connected_at: datetime | None
    last_address: str | None
    connected: bool
    last_disconnected_at: datetime | None
    denied_publishes: int
    last_denied_at: datetime | None
    last_denied_topic: str | None


_UPSERT = """
INSERT INTO broker_clients AS b (username, device_id, connected, last_connected_at, last_address,
                                 last_disconnected_at, denied_publishes, last_denied_at, last_denied_topic)
VALUES (%(username)s, %(device_id)s, coalesce(%(connected)s::boolean, false), %(last_connected_at)s, %(last_address)s,
        %(last_disconnected_at)s, %(denied_publishes)s, %(last_denied_at)s, %(last_denied_topic)s)
ON CONFLICT (username) DO UPDATE SET
    connected = coalesce(%(connected)s::boolean, b.connected),
    -- Several followers (or a replay after a restart) may report the same event: keep the newest, never go back.
    last_address = CASE WHEN b.last_connected_at IS NULL OR EXCLUDED.last_connected_at >= b.last_connected_at
                        THEN coalesce(EXCLUDED.last_address, b.last_address) ELSE b.last_address END,
    last_connected_at = greatest(b.last_connected_at, EXCLUDED.last_connected_at),
    last_disconnected_at = greatest(b.last_disconnected_at, EXCLUDED.last_disconnected_at),
    denied_publishes = b.denied_publishes + EXCLUDED.denied_publishes,
    last_denied_topic = CASE WHEN b.last_denied_at IS NULL OR EXCLUDED.last_denied_at >= b.last_denied_at
                             THEN coalesce(EXCLUDED.last_denied_topic, b.last_denied_topic)
                             ELSE b.last_denied_topic END,
    last_denied_at = greatest(b.last_denied_at, EXCLUDED.last_denied_at),
    updated_at = now()
"""


def record_broker_clients(conn: psycopg.Connection, *, updates: Sequence[BrokerClientUpdate],
                          all_disconnected: bool = False) -> None:
    """Apply a batch of changes in one transaction; `all_disconnected` first (the broker restarted)."""
    with mapped_errors(), conn.transaction():
        if all_disconnected:
            conn.execute("UPDATE broker_clients SET connected = false, updated_at = now() WHERE connected")
        if updates:
            with conn.cursor() as cur:
                cur.executemany(_UPSERT, [u.__dict__ for u in updates])


def list_broker_clients(conn: psycopg.Connection, *, device_ids: Sequence[str] | None = None,
                        usernames: Sequence[str] | None = None) -> list[BrokerClient]:
    """Rows for these devices (every username of theirs) or usernames; all rows when neither is given."""
    with mapped_errors():
        rows = conn.execute(
            "SELECT username, device_id, last_connected_at, last_address, connected, last_disconnected_at,"
            " denied_publishes, last_denied_at, last_denied_topic FROM broker_clients"
            " WHERE (%(d)s::text[] IS NULL OR device_id = ANY(%(d)s))"
            " AND (%(u)s::text[] IS NULL OR username = ANY(%(u)s))"
            " ORDER BY username",
            {"d": list(device_ids) if device_ids is not None else None,
             "u": list(usernames) if usernames is not None else None}).fetchall()
    return [BrokerClient(*r) for r in rows]
