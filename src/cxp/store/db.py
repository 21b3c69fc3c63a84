"""Connections and the connection pool."""

from __future__ import annotations

import psycopg
from psycopg_pool import ConnectionPool

from cxp.core.config import DbSettings
from cxp.store.errors import mapped_errors


def connect(db: DbSettings, *, autocommit: bool = True) -> psycopg.Connection:
    """One connection, autocommit: store functions open their own transactions with conn.transaction()."""
    with mapped_errors():
        return psycopg.connect(db.dsn, autocommit=autocommit, connect_timeout=5, application_name="cxp")


def create_pool(db: DbSettings, *, name: str = "cxp") -> ConnectionPool:
    """A pool for request-scoped work (API, analytics, CLI)."""
    pool = ConnectionPool(
        db.dsn, min_size=db.pool_min, max_size=db.pool_max, name=name, open=False,
        kwargs={"application_name": name, "connect_timeout": 5, "autocommit": True},
        # A connection the server dropped (restart, failover) is replaced before a caller gets it.
        check=ConnectionPool.check_connection,
    )
    with mapped_errors():
        pool.open(wait=True, timeout=15)
    return pool
