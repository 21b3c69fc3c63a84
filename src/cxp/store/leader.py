"""One leader among processes, elected through a PostgreSQL session-level advisory lock.

The lock is held by a dedicated connection: when the holder dies (SIGKILL, crash, lost host), its
connection closes, the server releases the lock, and the next process that asks gets it. Nothing to
expire, no clock to trust. The holder's connection carries `application_name = cxp-leader <name>`, so
anyone can see who leads (`get_leader`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import psycopg

from cxp.core.config import DbSettings
from cxp.store.errors import StoreError, mapped_errors

log = logging.getLogger("cxp.store.leader")

# The gateway group's leader: rollup refresh, alert evaluation, retention (bigint advisory lock key).
GATEWAY_LEADER_LOCK = 0x6378_7100
_APP_PREFIX = "cxp-leader "


@dataclass(frozen=True)
class Leader:
    """The process holding a leader lock, as the database sees it."""

    name: str
    backend_pid: int
    since: datetime  # when its lock connection was opened


class LeaderLock:
    """Hold (or contend for) one leader lock on a connection of its own; call `hold()` before each leader's task."""

    def __init__(self, db: DbSettings, *, name: str, key: int = GATEWAY_LEADER_LOCK) -> None:
        self.db = db
        self.name = name
        self.key = key
        self._conn: psycopg.Connection | None = None
        self.is_leader = False

    def hold(self) -> bool:
        """True while this process leads: checks the lock connection is alive, or tries to take the lock.

        A lost connection means the lock is gone with it (the server released it): False until taken again.
        """
        try:
            with mapped_errors():
                if self._conn is None or self._conn.closed:
                    self.is_leader = False
                    self._conn = psycopg.connect(
                        self.db.dsn,
                        autocommit=True,
                        connect_timeout=5,
                        application_name=f"{_APP_PREFIX}{self.name}"[:63],
                    )
                if self.is_leader:
                    self._conn.execute("SELECT 1")
                else:
                    got = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0]
                    if got:
                        log.info("%s is now the leader", self.name)
                    self.is_leader = bool(got)
        except StoreError as exc:
            if self.is_leader:
                log.warning("%s lost the leader lock with its connection: %s", self.name, exc)
            self._drop()
        return self.is_leader

    def release(self) -> None:
        """Give the lock up (closing its connection releases it)."""
        if self.is_leader:
            log.info("%s steps down as leader", self.name)
        self._drop()

    def _drop(self) -> None:
        self.is_leader = False
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail any way
                log.debug("closing the leader connection failed", exc_info=True)
        self._conn = None


def get_leader(conn: psycopg.Connection, *, key: int = GATEWAY_LEADER_LOCK) -> Leader | None:
    """Who holds the leader lock in this database now, or None."""
    with mapped_errors():
        row = conn.execute(
            "SELECT a.application_name, a.pid, a.backend_start FROM pg_locks l"
            " JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database"
            "   WHERE datname = current_database())"
            " AND l.classid = (%(key)s::bigint >> 32)::oid AND l.objid = (%(key)s::bigint & 4294967295)::oid"
            " AND l.objsubid = 1",
            {"key": key},
        ).fetchone()
    if row is None:
        return None
    app = row[0] or ""
    return Leader(app.removeprefix(_APP_PREFIX), int(row[1]), row[2])
