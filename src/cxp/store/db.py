"""Connections and the connection pool."""

from __future__ import annotations

import contextlib

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from cxp.core.config import DbSettings
from cxp.store.errors import StoreUnavailable, mapped_errors


def connect(db: DbSettings, *, autocommit: bool = True) -> psycopg.Connection:
    """One connection, autocommit: store functions open their own transactions with conn.transaction()."""
    with mapped_errors():
        return psycopg.connect(db.dsn, autocommit=autocommit, connect_timeout=5, application_name="cxp")


class Pool(ConnectionPool):
    """A pool that tells a database that is down (StoreUnavailable, at once) from one that is busy (PoolTimeout)."""

    down = False  # the last probe was refused: probe before waiting, so callers are not held `timeout` seconds

    def getconn(self, timeout: float | None = None) -> psycopg.Connection:
        """A connection from the pool, or StoreUnavailable when the database refuses one, or PoolTimeout."""
        if self.down:
            self.probe()
        try:
            return super().getconn(timeout)
        except PoolTimeout:
            self.probe()  # none in time: down (StoreUnavailable) or busy (PoolTimeout)?
            raise

    def probe(self) -> None:
        """Open and close one connection outside the pool: StoreUnavailable (and `down`) when it is refused."""
        try:
            with mapped_errors():
                psycopg.connect(self.conninfo, **{**self.kwargs, "autocommit": True}).close()
        except StoreUnavailable:
            self.down = True
            raise
        self.down = False


def create_pool(db: DbSettings, *, name: str = "cxp", wait: bool = True, timeout: float = 30.0) -> Pool:
    """A pool for request-scoped work (API, analytics, CLI); `wait=False` opens it even while the database is down
    (it connects in the background, and callers get StoreUnavailable until it can); a caller waits at most `timeout`
    seconds for a connection (PoolTimeout)."""
    pool = Pool(
        db.dsn, min_size=db.pool_min, max_size=db.pool_max, name=name, open=False, timeout=timeout,
        kwargs={"application_name": name, "connect_timeout": 5, "autocommit": True},
        # A connection the server dropped (restart, failover) is replaced before a caller gets it.
        check=ConnectionPool.check_connection,
    )
    with mapped_errors():
        pool.open(wait=wait, timeout=15)
    if not wait:
        with contextlib.suppress(StoreUnavailable):  # marks the pool down: its callers fail fast until it is up
            pool.probe()
    return pool
