"""The registry and the stored period: devices in scope, the touchpoint catalogue, lifecycle events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import pandas as pd
import psycopg
from psycopg import sql

from cxp.analytics.queries._base import CHURN_STAGES, Source, day_start, fetch_frame, scoped_join, with_scoped_devices
from cxp.analytics.query import AnalyticsQuery
from cxp.store.errors import mapped_errors


def get_latest_day(conn: psycopg.Connection) -> date | None:
    """The last UTC day with rolled-up data (analytics default "as of")."""
    with mapped_errors():
        row = conn.execute("SELECT max(day) FROM rollup_daily").fetchone()
    return row[0] if row else None


def get_first_day(conn: psycopg.Connection) -> date | None:
    """The first UTC day with rolled-up data."""
    with mapped_errors():
        row = conn.execute("SELECT min(day) FROM rollup_daily").fetchone()
    return row[0] if row else None


def devices(conn: psycopg.Connection, *, scope: AnalyticsQuery) -> pd.DataFrame:
    """Scoped devices: device_key, device_id, product_id, account_id, segment, activated_at, expected rhythm,
    heartbeat interval."""
    statement, params = with_scoped_devices(scope, "SELECT * FROM sel ORDER BY device_key")
    return fetch_frame(conn, statement, params)


def with_device_ids(frame: pd.DataFrame, *, scoped: pd.DataFrame) -> pd.DataFrame:
    """The rows of `frame` whose device_key is one of the `scoped` devices (`devices`), with their device_id just
    before the device_key column and product_id just after it; rows of other devices are left out, as a join with
    the scope leaves them out."""
    found = pd.Index(scoped["device_key"]).get_indexer(frame["device_key"])
    inside = found >= 0
    out = frame.copy() if inside.all() else frame[inside].copy()
    found = found[inside]
    at = out.columns.get_loc("device_key")
    out.insert(at + 1, "product_id", scoped["product_id"].take(found).to_numpy())
    out.insert(at, "device_id", scoped["device_id"].take(found).to_numpy())
    return out


def touchpoint_catalogue(conn: psycopg.Connection, *, product: str | None = None) -> pd.DataFrame:
    """The touchpoints table: product_id, touchpoint, journey_stage, owner, is_core, target_latency_ms."""
    statement = sql.SQL(
        "SELECT product_id, touchpoint, journey_stage, owner, is_core, target_latency_ms::float8 AS target_latency_ms,"
        " target_duration_s::float8 AS target_duration_s FROM touchpoints {} ORDER BY product_id, touchpoint"
    ).format(sql.SQL("WHERE product_id = %(product)s") if product else sql.SQL(""))
    return fetch_frame(conn, statement, {"product": product})


def lifecycle(
    conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date, stages: Sequence[str]
) -> pd.DataFrame:
    """Raw lifecycle events of the given stages in [start, end]: device_key, ts, stage (filtered in SQL)."""
    statement, params = with_scoped_devices(
        scope,
        "SELECT e.device_key, e.ts, e.stage FROM events e" + scoped_join(scope)
        + " WHERE e.kind = 'lifecycle' AND e.ts >= %(lo)s AND e.ts < %(hi)s AND e.stage = ANY(%(stages)s)"
        " ORDER BY e.device_key, e.ts",
        lo=day_start(start),
        hi=day_start(end + timedelta(days=1)),
        stages=list(stages),
    )
    return fetch_frame(conn, statement, params)


def churn_exits(conn: psycopg.Connection, *, scope: AnalyticsQuery, end: date,
                source: Source = "rollups") -> pd.DataFrame:
    """First cancellation/return per device up to `end`: device_key, exit_at, exit_stage (each day's first kept on
    the daily rollup, or from raw lifecycle events; the earlier event first, then the earlier sequence number)."""
    if source == "raw":
        statement, params = with_scoped_devices(
            scope,
            "SELECT DISTINCT ON (e.device_key) e.device_key, e.ts AS exit_at, e.stage AS exit_stage"
            " FROM events e" + scoped_join(scope)
            + " WHERE e.kind = 'lifecycle' AND e.stage = ANY(%(stages)s) AND e.ts < %(hi)s"
            " ORDER BY e.device_key, e.ts, e.seq",
            stages=list(CHURN_STAGES),
            hi=day_start(end + timedelta(days=1)),
        )
    else:
        statement, params = with_scoped_devices(
            scope,
            "SELECT DISTINCT ON (r.device_key) r.device_key, r.exit_at, r.exit_stage"
            " FROM rollup_daily r" + scoped_join(scope)
            + " WHERE r.exit_at IS NOT NULL AND r.day <= %(end)s ORDER BY r.device_key, r.day",
            end=end,
        )
    return fetch_frame(conn, statement, params)
