"""Connections and the connection pool."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

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

    def getconn(self, timeout: float | None = None, *, probe: bool = True) -> psycopg.Connection:
        """A connection from the pool, or StoreUnavailable when the database refuses one, or PoolTimeout; `probe`:
        on PoolTimeout, open one outside the pool to tell down from busy (a caller that only asks whether one is
        free, `idle_connection`, does not want a connection opened each time the pool is busy)."""
        if self.down:
            self.probe()
        try:
            return super().getconn(timeout)
        except PoolTimeout:
            if probe:
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
        db.dsn,
        min_size=db.pool_min,
        max_size=db.pool_max,
        name=name,
        open=False,
        timeout=timeout,
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


@contextlib.contextmanager
def idle_connection(pool: Pool | ReadPool, *, wait_s: float = 0.05) -> Iterator[psycopg.Connection | None]:
    """A connection of `pool` if one is free within `wait_s`, else None (the caller goes on with what it holds): a
    computation borrowing a second connection must never wait for one another computation holds."""
    if isinstance(pool, Pool):  # busy is the common answer here: no probe connection opened to tell it from down
        try:
            conn = pool.getconn(wait_s, probe=False)
        except (PoolTimeout, StoreUnavailable):
            yield None
            return
        try:
            yield conn
        finally:
            pool.putconn(conn)
        return
    with contextlib.ExitStack() as stack:  # a standby pool: its own choice of standby or primary
        try:
            conn = stack.enter_context(pool.connection(timeout=wait_s))
        except (PoolTimeout, StoreUnavailable):
            conn = None
        yield conn


# How far a standby's data is behind the primary, in seconds (0 on the primary; NULL: unknown, never replayed).
_LAG_SQL = """
SELECT pg_is_in_recovery(), CASE
    WHEN NOT pg_is_in_recovery() THEN 0.0
    WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
         AND (SELECT status FROM pg_stat_wal_receiver) = 'streaming' THEN 0.0
    ELSE extract(epoch FROM now() - greatest(pg_last_xact_replay_timestamp(),
                                             (SELECT last_msg_receipt_time FROM pg_stat_wal_receiver
                                              WHERE pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn())))
END
"""


def get_replica_lag_s(conn: psycopg.Connection) -> float | None:
    """Seconds the server's data is behind its primary: 0 on the primary and on a streaming standby that replayed
    all it received; else the age of the last replayed transaction (or of the last word from the primary when all
    was replayed); None when unknown."""
    return _standing(conn)[1]


def _standing(conn: psycopg.Connection) -> tuple[bool, float | None]:
    """Whether the server is a standby, and its lag as `get_replica_lag_s` reports it."""
    with mapped_errors():
        in_recovery, lag = conn.execute(_LAG_SQL).fetchone()
    return bool(in_recovery), None if lag is None else max(0.0, float(lag))


class ReadPool:
    """Connections for reads: a standby's (`read_dsn`, prefer-standby) while its data is at most `max_lag_s` behind,
    else the primary's pool. On a single database both are the same server."""

    # prefer-standby lands on the primary when no standby answers at connect time (starting, failing over); such
    # connections are replaced, at most this often, so reads move to a standby once one is back.
    recycle_s = 5.0

    def __init__(self, standby: Pool, primary: Pool, *, max_lag_s: float) -> None:
        self.standby = standby
        self.primary = primary
        self.max_lag_s = max_lag_s
        self.fallbacks = 0  # reads sent to the primary because no standby was fresh enough (or reachable)
        self._recycled_at = float("-inf")

    @contextlib.contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection]:
        """A standby connection within the lag bound, else a primary one."""
        with contextlib.ExitStack() as stack:
            conn = None
            try:
                candidate = stack.enter_context(self.standby.connection(timeout))
                in_recovery, lag = _standing(candidate)
                if lag is not None and lag <= self.max_lag_s:
                    conn = candidate
                if not in_recovery and time.monotonic() - self._recycled_at >= self.recycle_s:
                    self._recycled_at = time.monotonic()
                    self.standby.drain()  # this one is closed when it comes back; new ones try the standbys first
            except (StoreUnavailable, PoolTimeout, psycopg.Error):
                pass
            if conn is None:
                stack.close()  # the stale or broken standby connection goes back first
                self.fallbacks += 1
                conn = stack.enter_context(self.primary.connection(timeout))
            yield conn

    def close(self) -> None:
        """Close the standby pool (the primary pool belongs to its creator)."""
        self.standby.close()


def create_read_pool(
    db: DbSettings,
    *,
    primary: Pool,
    name: str = "cxp-read",
    timeout: float = 30.0,
) -> ReadPool | Pool:
    """The readers' pool: with `db.members`, a ReadPool over standbys (lag bound `db.read_max_lag_s`) falling back
    to `primary`; on a single database, `primary` itself."""
    if not db.members:
        return primary
    standby = Pool(
        db.read_dsn,
        min_size=1,
        max_size=db.pool_max,
        name=name,
        open=False,
        timeout=timeout,
        kwargs={"application_name": name, "connect_timeout": 5, "autocommit": True},
        check=ConnectionPool.check_connection,
    )
    with mapped_errors():
        standby.open(wait=False)
    return ReadPool(standby, primary, max_lag_s=db.read_max_lag_s)
