"""Per touchpoint and per device × touchpoint totals from `rollup_hourly`; first successful core use."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import psycopg
from psycopg import sql

from cxp.analytics.queries._base import day_start, fetch_frame, with_scoped_devices
from cxp.analytics.query import AnalyticsQuery


def touchpoint_totals(conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date) -> pd.DataFrame:
    """Per product × touchpoint from `rollup_hourly`: devices, uses, successes, errors, latency_count/sum,
    fleet_devices."""
    statement, params = with_scoped_devices(
        scope,
        ", t AS (SELECT sel.product_id, h.touchpoint, count(DISTINCT h.device_key) FILTER (WHERE h.usage_count > 0)"
        "   AS devices, sum(h.usage_count)::int AS uses, sum(h.success_count)::int AS successes,"
        "   sum(h.error_count)::int AS errors, sum(h.latency_count)::int AS latency_count,"
        "   sum(h.latency_sum) AS latency_sum"
        "   FROM rollup_hourly h JOIN sel USING (device_key)"
        "   WHERE h.bucket >= %(lo)s AND h.bucket < %(hi)s AND h.touchpoint <> '' GROUP BY 1, 2),"
        " f AS (SELECT sel.product_id, count(DISTINCT r.device_key)::int AS fleet_devices"
        "   FROM rollup_daily r JOIN sel USING (device_key)"
        "   WHERE r.day BETWEEN %(start)s AND %(end)s AND r.active GROUP BY 1)"
        " SELECT t.*, coalesce(f.fleet_devices, 0) AS fleet_devices FROM t LEFT JOIN f USING (product_id)"
        " ORDER BY 1, 2",
        start=start,
        end=end,
        lo=day_start(start),
        hi=day_start(end + timedelta(days=1)),
    )
    return fetch_frame(conn, statement, params)


def device_touchpoints(conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date) -> pd.DataFrame:
    """Per device × touchpoint from `rollup_hourly`: uses, successes, errors, latency_count, latency_sum."""
    statement, params = with_scoped_devices(
        scope,
        "SELECT h.device_key, h.touchpoint, sum(h.usage_count)::int AS uses, sum(h.success_count)::int AS successes,"
        " sum(h.error_count)::int AS errors, sum(h.latency_count)::int AS latency_count,"
        " sum(h.latency_sum) AS latency_sum"
        " FROM rollup_hourly h JOIN sel USING (device_key)"
        " WHERE h.bucket >= %(lo)s AND h.bucket < %(hi)s AND h.touchpoint <> '' GROUP BY 1, 2 HAVING"
        " sum(h.usage_count) > 0 ORDER BY 1, 2",
        lo=day_start(start),
        hi=day_start(end + timedelta(days=1)),
    )
    return fetch_frame(conn, statement, params)


def first_core_success(conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date) -> pd.DataFrame:
    """First successful core use per device in the window: device_key, first_core_use_at.

    The hourly rollup finds each device's first hour with a successful core use; the exact time then
    comes from the raw events of that one hour only.
    """
    statement, params = with_scoped_devices(
        scope,
        ", fh AS (SELECT h.device_key, min(h.bucket) AS bucket FROM rollup_hourly h JOIN sel USING (device_key)"
        "   JOIN touchpoints t ON t.product_id = sel.product_id AND t.touchpoint = h.touchpoint AND t.is_core"
        "   WHERE h.bucket >= %(lo)s AND h.bucket < %(hi)s AND h.success_count > 0 GROUP BY 1)"
        " SELECT fh.device_key, (SELECT min(e.ts) FROM events e JOIN sel s2 ON s2.device_key = e.device_key"
        "   JOIN touchpoints t ON t.product_id = s2.product_id AND t.touchpoint = e.touchpoint AND t.is_core"
        "   WHERE e.device_key = fh.device_key AND e.ts >= fh.bucket AND e.ts < fh.bucket + INTERVAL '1 hour'"
        "   AND e.kind = 'usage' AND e.success) AS first_core_use_at FROM fh",
        lo=day_start(start),
        hi=day_start(end + timedelta(days=1)),
    )
    return fetch_frame(conn, statement, params)


def touchpoint_answers(conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date) -> pd.DataFrame:
    """CSAT answers about a touchpoint in the window (raw feedback, filtered in SQL): device_key, device_id,
    product_id, touchpoint, ts, score."""
    statement, params = with_scoped_devices(
        scope,
        "SELECT e.device_key, sel.device_id, sel.product_id, e.touchpoint, e.ts, e.csat::float8 AS score"
        " FROM events e JOIN sel USING (device_key)"
        " WHERE e.kind = 'feedback' AND e.csat IS NOT NULL AND e.touchpoint IS NOT NULL"
        " AND e.ts >= %(lo)s AND e.ts < %(hi)s ORDER BY e.ts",
        lo=day_start(start),
        hi=day_start(end + timedelta(days=1)),
    )
    return fetch_frame(conn, statement, params)


def uses_on_days(conn: psycopg.Connection, *, cells: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """Uses of the given device × touchpoint × UTC day cells (raw events, few): device_key, touchpoint, ts, success.

    `cells`: device_key, touchpoint, day (a date or midnight); the window bounds let TimescaleDB skip other chunks.
    """
    if cells.empty:
        return pd.DataFrame(columns=["device_key", "touchpoint", "ts", "success"])
    cells = cells.drop_duplicates()
    days = pd.to_datetime(cells["day"])
    days = days.dt.tz_localize("UTC") if days.dt.tz is None else days.dt.tz_convert("UTC")
    return fetch_frame(
        conn,
        sql.SQL(
            "SELECT u.device_key, u.touchpoint, u.ts, u.success FROM events u"
            " JOIN unnest(%(keys)s::int[], %(tps)s::text[], %(days)s::timestamptz[]) AS c(device_key, touchpoint, day)"
            " ON u.device_key = c.device_key AND u.touchpoint = c.touchpoint AND u.ts >= c.day"
            " AND u.ts < c.day + INTERVAL '1 day'"
            " WHERE u.kind = 'usage' AND u.ts >= %(lo)s AND u.ts < %(hi)s"
        ),
        {
            "keys": [int(k) for k in cells["device_key"]],
            "tps": [str(t) for t in cells["touchpoint"]],
            "days": list(days.dt.to_pydatetime()),
            "lo": day_start(start),
            "hi": day_start(end + timedelta(days=1)),
        },
    )


def failure_days(conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date) -> pd.DataFrame:
    """Device × touchpoint × UTC day with an error on the touchpoint, from `rollup_hourly`: device_key, touchpoint,
    day."""
    statement, params = with_scoped_devices(
        scope,
        "SELECT h.device_key, h.touchpoint, (h.bucket AT TIME ZONE 'UTC')::date AS day"
        " FROM rollup_hourly h JOIN sel USING (device_key)"
        " WHERE h.bucket >= %(lo)s AND h.bucket < %(hi)s AND h.touchpoint <> '' AND h.error_count > 0"
        " GROUP BY 1, 2, 3",
        lo=day_start(start),
        hi=day_start(end + timedelta(days=1)),
    )
    return fetch_frame(conn, statement, params)


def failure_counts(conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date) -> pd.DataFrame:
    """Per device × touchpoint × UTC day from `rollup_hourly`: failures (errors on the touchpoint)."""
    statement, params = with_scoped_devices(
        scope,
        "SELECT h.device_key, h.touchpoint, (h.bucket AT TIME ZONE 'UTC')::date AS day,"
        " sum(h.error_count)::int AS failures FROM rollup_hourly h JOIN sel USING (device_key)"
        " WHERE h.bucket >= %(lo)s AND h.bucket < %(hi)s AND h.touchpoint <> '' AND h.error_count > 0"
        " GROUP BY 1, 2, 3",
        lo=day_start(start),
        hi=day_start(end + timedelta(days=1)),
    )
    return fetch_frame(conn, statement, params)
