"""Shared SQL plumbing: the scoped-devices CTE, running a query into a frame, UTC day and week helpers."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar, copy_context
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, TypeVar

import pandas as pd
import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from cxp.analytics.queries._csv import NULL, ParseError, read_copy_csv
from cxp.analytics.query import AnalyticsQuery
from cxp.store.copy_out import copy_out
from cxp.store.errors import mapped_errors
from cxp.store.rollups import EXIT_STAGES

T = TypeVar("T")
Grain = Literal["day", "week"]
Source = Literal["rollups", "raw"]
WEEK_ORIGIN = date(2000, 1, 3)  # a Monday: weeks are Monday–Sunday
CHURN_STAGES = EXIT_STAGES  # the stages that end a customer relationship (kept on the daily rollup)


def day_start(day: date) -> datetime:
    """00:00 UTC of a day."""
    return datetime.combine(day, time(0), tzinfo=UTC)


def week_start(day: date) -> date:
    """The Monday of the day's week."""
    return day - timedelta(days=day.weekday())


# Reads already made in the current `shared_reads` block: (connection, statement, parameters) → its `_Once`.
_SHARED: ContextVar[dict[tuple[int, str, str], _Once] | None] = ContextVar("cxp_shared_reads", default=None)
_SLOTS = threading.Lock()  # guards adding a slot to a block (the parts of `concurrently` share the block)
# Set inside a part of `concurrently`: other statements may run on the connection between this part's statements.
_IN_PART: ContextVar[bool] = ContextVar("cxp_in_concurrent_part", default=False)
# Set while a shared slot is computed: parts started there could wait for that very slot, held by their caller.
_IN_SLOT: ContextVar[bool] = ContextVar("cxp_in_shared_slot", default=False)
CONCURRENT_PARTS = 3  # threads a view's parts run on: the connection runs one statement at a time anyway


class _Once:
    """One slot of a `shared_reads` block: computed by the first caller; one asking meanwhile waits for it."""

    __slots__ = ("done", "lock", "value")

    def __init__(self) -> None:
        self.lock, self.done, self.value = threading.RLock(), False, None

    def get(self, compute: Callable[[], Any]) -> Any:
        with self.lock:
            if not self.done:
                token = _IN_SLOT.set(True)
                try:
                    self.value, self.done = compute(), True
                finally:
                    _IN_SLOT.reset(token)
            return self.value


@contextmanager
def shared_reads() -> Iterator[None]:
    """Within the block, a read with the same statement and parameters runs once and `shared_value` computes once
    per key: the parts of a composite view (the fleet report) ask for the same inputs. A nested block joins the
    outer one; every caller gets its own copy. Also a decorator (`@shared_reads()`): the whole call in one block."""
    if _SHARED.get() is not None:
        yield
        return
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def _slot(shared: dict[tuple[int, str, str], _Once], slot: tuple[int, str, str]) -> _Once:
    with _SLOTS:
        once = shared.get(slot)
        if once is None:
            once = shared[slot] = _Once()
        return once


def shared_value(key: tuple[Any, ...], compute: Callable[[], T]) -> T:
    """`compute()` once per key inside a `shared_reads` block (each caller gets a deep copy); outside one, always."""
    shared = _SHARED.get()
    if shared is None:
        return compute()
    return copy.deepcopy(_slot(shared, (0, "value", repr(key))).get(compute))


def concurrently(**parts: Callable[[], Any]) -> dict[str, Any]:
    """Run a view's independent read-only parts at once on its connection; their results by name.

    The connection runs one statement at a time (its lock orders them), but while the database computes one
    part's rows, Python parses or scores another's: on two cores most of the reading hides behind the
    computing. Each part runs in a copy of the caller's context, so the parts share its `shared_reads` block;
    a part must not open a transaction (another part's statements would run inside it): `in_concurrent_part`
    tells it. Every part has finished when this returns, raised or not (none is left using the connection);
    the first part's error in the order given is raised (a part failed only by another's failure in the
    connection's transaction is passed over). A part may run parts of its own; within the computation of a
    `shared_value` or a shared read, parts run one after the other (one might wait for the slot being computed)."""
    if len(parts) < 2 or CONCURRENT_PARTS < 2 or _IN_SLOT.get():
        return {name: compute() for name, compute in parts.items()}

    def run(compute: Callable[[], Any]) -> Any:
        _IN_PART.set(True)
        return compute()

    with ThreadPoolExecutor(max_workers=min(len(parts), CONCURRENT_PARTS), thread_name_prefix="cxp-part") as pool:
        futures = {name: pool.submit(copy_context().run, run, compute) for name, compute in parts.items()}
    # leaving the pool's block waited for every part
    failed = [f.exception() for f in futures.values() if f.exception() is not None]
    # In a transaction, one part's failure fails the others' later statements: raise the cause, not those.
    causes = [e for e in failed if not isinstance(e, psycopg.errors.InFailedSqlTransaction)]
    if failed:
        raise (causes or failed)[0]
    return {name: future.result() for name, future in futures.items()}


# Set by a caller that can lend connections (the API, around a computation): `own_connection` borrows from it.
_LENDER: ContextVar[Callable[[], AbstractContextManager[psycopg.Connection | None]] | None] = ContextVar(
    "cxp_connection_lender", default=None)


@contextmanager
def lending_connections(lend: Callable[[], AbstractContextManager[psycopg.Connection | None]]) -> Iterator[None]:
    """Within the block, `own_connection` may borrow through `lend()` (which yields a connection, or None when none
    is free: then the part shares its caller's)."""
    token = _LENDER.set(lend)
    try:
        yield
    finally:
        _LENDER.reset(token)


@contextmanager
def own_connection(conn: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """A connection of its own for a part of `concurrently` with long reads of its own (the fleet report's churn
    risk), taken before the parts start: its statements then run beside the other parts' on a second server process
    instead of queueing behind them on `conn`. Lent by the caller (`lending_connections`) when one is free, else
    `conn` itself; never while `conn` is in a transaction (the part would not read its snapshot) or busy."""
    lend = _LENDER.get()
    if lend is None or not conn.autocommit or conn.info.transaction_status != TransactionStatus.IDLE:
        yield conn
        return
    with lend() as spare:
        yield conn if spare is None else spare


def in_concurrent_part() -> bool:
    """Whether this code runs as a part of `concurrently` (it then must not open a transaction)."""
    return _IN_PART.get()


def fetch_frame(conn: psycopg.Connection, query: sql.Composable, params: dict[str, Any] | None = None) -> pd.DataFrame:
    """Run a query and return its rows as a DataFrame with the query's column names (once per `shared_reads`
    block for the same statement and parameters)."""
    shared = _SHARED.get()
    if shared is None:
        return _fetch_frame(conn, query, params)
    frame = _slot(shared, (id(conn), repr(query), repr(params))).get(lambda: _fetch_frame(conn, query, params))
    return frame.copy()


def _fetch_frame(conn: psycopg.Connection, query: sql.Composable, params: dict[str, Any] | None) -> pd.DataFrame:
    """Run a query and return its rows as a DataFrame with the query's column names.

    The rows come as CSV through COPY and are parsed by Arrow's reader (`_csv`), typed from the query's result
    columns: far faster than Python objects per value for large results, with the same dtypes and values (a column
    of a type not converted here sends the whole query through the row path)."""
    with mapped_errors(), conn.cursor() as cur:
        if isinstance(query, str):
            query = sql.SQL(query)
        # The result's column types, planned but not run; long lists (keys of many cells) need not be sent twice.
        cur.execute(sql.SQL("SELECT * FROM ({}) AS q LIMIT 0").format(query), _small(params or {}))
        columns = [(c.name, c.type_code) for c in cur.description or ()]
        if not all(oid in _COPY_TYPES for _, oid in columns):
            return _rows_frame(cur, query, params)
        data = copy_out(conn, sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, NULL {})").format(query, sql.Literal(NULL)),
                        params or None)
    names = [name for name, _ in columns]
    if not data:
        return pd.DataFrame(columns=names)
    kinds = [(name, _COPY_TYPES[oid]) for name, oid in columns]
    try:
        frame = read_copy_csv(data, columns=kinds, timezone=conn.info.timezone)
    except ParseError:  # a value Arrow does not read as its type (an offset with seconds, say): row by row
        frame = None
    # A float column of missing values only: NULLs or NaNs? Rare enough to ask the row path.
    if frame is None or any(kind == "float" and frame[name].isna().all() for name, kind in kinds):
        with mapped_errors(), conn.cursor() as cur:
            return _rows_frame(cur, query, params)
    for name, _ in kinds:
        if frame[name].isna().all():  # a column of None only, whatever its type, as in a frame of rows
            frame[name] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    return frame


def _small(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v[:0] if isinstance(v, list | tuple) and len(v) > 16 else v for k, v in params.items()}


def _rows_frame(cur: psycopg.Cursor, query: sql.Composable, params: dict[str, Any] | None) -> pd.DataFrame:
    cur.execute(query, params or {})
    cols = [c.name for c in cur.description] if cur.description else []
    return pd.DataFrame(cur.fetchall(), columns=cols)


# Result column types read from CSV: OID -> kind (`_csv` reads each kind).
_COPY_TYPES = {
    16: "bool", 20: "int", 21: "int", 23: "int", 700: "float", 701: "float", 25: "text", 1043: "text", 18: "text",
    19: "text", 1082: "date", 1184: "timestamptz", 1114: "timestamp", 1700: "numeric", 114: "json", 3802: "json",
}


def _scoped_devices_sql(scope: AnalyticsQuery) -> tuple[sql.Composable, dict[str, Any]]:
    """`sel` CTE body: the scoped devices with product, account, segment and activation."""
    where: list[sql.Composable] = [sql.SQL("TRUE")]
    params: dict[str, Any] = {}
    for name, column in (
        ("product", ("d", "product_id")),
        ("segment", ("a", "segment")),
        ("account", ("d", "account_id")),
        ("device", ("d", "device_id")),
    ):
        value = getattr(scope, name)
        if value is not None:
            where.append(sql.SQL("{} = {}").format(sql.Identifier(*column), sql.Placeholder(f"scope_{name}")))
            params[f"scope_{name}"] = value
    if scope.devices is not None:
        where.append(sql.SQL("d.device_id = ANY({})").format(sql.Placeholder("scope_devices")))
        params["scope_devices"] = sorted(scope.devices)
    body = sql.SQL(
        "SELECT d.device_key, d.device_id, d.product_id, d.account_id, a.segment, d.activated_at,"
        " p.expected_active_days_per_week::float8 AS expected_active_days_per_week, p.heartbeat_interval_s"
        " FROM devices d JOIN products p ON p.product_id = d.product_id"
        " LEFT JOIN accounts a ON a.account_id = d.account_id WHERE {}"
    ).format(sql.SQL(" AND ").join(where))
    return body, params


def with_scoped_devices(
    scope: AnalyticsQuery, query: str | sql.Composable, **params: Any
) -> tuple[sql.Composable, dict[str, Any]]:
    """Prefix `query` (which may start with more CTEs after a comma) with the scoped `sel` CTE."""
    body, scope_params = _scoped_devices_sql(scope)
    statement = sql.SQL(query) if isinstance(query, str) else query
    # Not MATERIALIZED: a CTE used once is then inlined, which lets PostgreSQL scan rollups in parallel (2-3×).
    return sql.SQL("WITH sel AS ({}) ").format(body) + statement, {**scope_params, **params}


def scoped_join(scope: AnalyticsQuery) -> str:
    """The join that restricts a scan to the scoped devices; none for the whole fleet, where it only costs: every
    stored row's device is registered (the registry refuses to delete a device with telemetry or a product with
    devices), and joining each row to `sel` turns a parallel hash aggregate into a serial index-ordered merge or a
    memoized lookup per row (139,000 answers: 100 → 21 ms)."""
    return "" if scope.is_all_devices else " JOIN sel USING (device_key)"


def narrow_scope_join(scope: AnalyticsQuery) -> str:
    """The join that restricts rows to the scoped devices before they are aggregated, for scopes of a few devices
    (one device, one account, a list of devices); none for the whole fleet, a product or a segment, whose rows are
    aggregated per device first and the sums joined to the scope after: a hash aggregate of every device's rows costs
    less than joining each row (the planner joined ~260,000 day rows of 56 days to one product's devices by sorting
    them all)."""
    narrow = scope.device is not None or scope.account is not None or scope.devices is not None
    return " JOIN sel USING (device_key)" if narrow else ""


def whole_weeks(start: date, end: date) -> tuple[date, date] | None:
    """The Mondays of the first and the last Monday–Sunday week that lie whole in [start, end]; None if none does."""
    first = start + timedelta(days=(7 - start.weekday()) % 7)
    last = week_start(end + timedelta(days=1)) - timedelta(days=7)
    return (first, last) if first <= last else None


def week_under_way(start: date, end: date) -> date | None:
    """The Monday of the week that `end` falls in when that week starts in [start, end] and is not over by `end`
    (a window ending before Sunday); else None."""
    monday = week_start(end)
    return monday if end.weekday() != 6 and monday >= start else None


def whole_week_under_way(dailies: Sequence[str], *, end: date, week: date) -> tuple[str, dict[str, Any]]:
    """SQL that is true when none of the daily rollups `dailies` holds a row after `end` in the week starting `week`
    (its weekly rows then sum exactly its days up to `end`), with its parameters.

    Uncorrelated, so PostgreSQL evaluates it once per statement (an index probe on each table's day) and skips the
    part of the statement it gates; in the same snapshot as the rows read beside it."""
    probes = " AND ".join(f"NOT EXISTS (SELECT 1 FROM {daily} x WHERE x.day > %(wd_end)s AND x.day < %(wd_tail_after)s)"
                          for daily in dailies)
    return f"({probes})", {"wd_end": end, "wd_tail_after": week + timedelta(days=7)}


def weeks_and_days_sql(
    start: date, end: date, *, weekly: str, daily: str, columns: str, join: str = "", weekly_where: str = "",
    daily_where: str = "",
) -> tuple[str, dict[str, Any]]:
    """SQL of `columns` from rows covering the days of [start, end] exactly once: the whole weeks in it from the
    `weekly` table (alias w, column `week`), the days before and after them from the `daily` one (alias w, `day`).

    The week under way at `end` comes from its weekly row too when no day after `end` is stored in it (the usual
    case: `end` is today), else from its days. `join` joins both (e.g. the scoped devices); `weekly_where` /
    `daily_where` filter each ("AND …")."""
    params: dict[str, Any] = {"wd_start": start, "wd_end": end}
    weeks, tail = whole_weeks(start, end), week_under_way(start, end)
    parts = []
    if weeks is not None:
        params.update(wd_first_week=weeks[0], wd_after_weeks=weeks[1] + timedelta(days=7))
        parts.append(f"SELECT {columns} FROM {weekly} w{join} WHERE w.week >= %(wd_first_week)s"
                     f" AND w.week < %(wd_after_weeks)s {weekly_where}")
    # Days before the first whole week (the weeks end where the week under way begins, or at `end`, a Sunday).
    head_end = end if tail is None else tail - timedelta(days=1)
    if weeks is not None:
        head_end = min(head_end, weeks[0] - timedelta(days=1))
    if tail is not None:
        whole, gate = whole_week_under_way([daily], end=end, week=tail)
        params.update(wd_tail_week=tail, **gate)
        parts.append(f"SELECT {columns} FROM {weekly} w{join} WHERE w.week = %(wd_tail_week)s AND {whole}"
                     f" {weekly_where}")
        parts.append(f"SELECT {columns} FROM {daily} w{join} WHERE w.day BETWEEN %(wd_tail_week)s AND %(wd_end)s"
                     f" AND NOT {whole} {daily_where}")
    if head_end >= start:
        params["wd_head_end"] = head_end
        parts.append(f"SELECT {columns} FROM {daily} w{join} WHERE w.day BETWEEN %(wd_start)s AND %(wd_head_end)s"
                     f" {daily_where}")
    return " UNION ALL ".join(parts), params


def period_start_sql(grain: Grain, day_expr: str) -> str:
    """SQL for the first day of the period a date falls in."""
    if grain == "day":
        return day_expr
    return f"time_bucket(INTERVAL '7 days', {day_expr}, DATE '{WEEK_ORIGIN.isoformat()}')"
