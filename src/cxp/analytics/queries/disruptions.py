"""Error and recovery events, daily errors per product and hourly devices with an error code."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import psycopg
from psycopg import sql

from cxp.analytics.queries._base import day_start, fetch_frame, with_scoped_devices
from cxp.analytics.query import AnalyticsQuery


def error_stream(conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date) -> pd.DataFrame:
    """Error and recovery events in the window (raw, filtered in SQL): device_id, product_id, ts, kind, code,
    touchpoint."""
    statement, params = with_scoped_devices(
        scope,
        "SELECT sel.device_id, sel.device_key, sel.product_id, e.ts, e.kind::text AS kind, e.code, e.touchpoint"
        " FROM events e JOIN sel USING (device_key)"
        " WHERE e.kind IN ('error', 'recovery') AND e.ts >= %(lo)s AND e.ts < %(hi)s ORDER BY e.ts",
        lo=day_start(start),
        hi=day_start(end + timedelta(days=1)),
    )
    return fetch_frame(conn, statement, params)


def daily_errors_by_product(conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date) -> pd.DataFrame:
    """Per product × day from `rollup_daily`: errors, uses, active devices."""
    statement, params = with_scoped_devices(
        scope,
        "SELECT sel.product_id, r.day, sum(r.error_count)::int AS errors, sum(r.usage_count)::int AS uses,"
        " count(*) FILTER (WHERE r.active)::int AS active_devices"
        " FROM rollup_daily r JOIN sel USING (device_key) WHERE r.day BETWEEN %(start)s AND %(end)s"
        " GROUP BY 1, 2 ORDER BY 1, 2",
        start=start,
        end=end,
    )
    return fetch_frame(conn, statement, params)


def hourly_errors(conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date) -> pd.DataFrame:
    """Per product × touchpoint × error code × hour: distinct devices with an error (raw events, aggregated in SQL).

    The rollup has no error code; an incident repeats one code, so counting per code separates it from the
    everyday mix of codes.
    """
    statement, params = with_scoped_devices(
        scope,
        "SELECT sel.product_id, e.touchpoint, e.code, time_bucket(INTERVAL '1 hour', e.ts) AS bucket,"
        " count(DISTINCT e.device_key)::int AS devices FROM events e JOIN sel USING (device_key)"
        " WHERE e.kind = 'error' AND e.ts >= %(lo)s AND e.ts < %(hi)s AND e.touchpoint IS NOT NULL"
        " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
        lo=day_start(start),
        hi=day_start(end + timedelta(days=1)),
    )
    return fetch_frame(conn, statement, params)


def hourly_users(conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date) -> pd.DataFrame:
    """Per product × touchpoint × hour from `rollup_hourly`: users = devices that used the touchpoint (the exposure
    an hour's error count is compared with)."""
    statement, params = with_scoped_devices(
        scope,
        "SELECT sel.product_id, h.touchpoint, h.bucket, count(*)::int AS users"
        " FROM rollup_hourly h JOIN sel USING (device_key)"
        " WHERE h.bucket >= %(lo)s AND h.bucket < %(hi)s AND h.touchpoint <> '' AND h.usage_count > 0"
        " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        lo=day_start(start),
        hi=day_start(end + timedelta(days=1)),
    )
    return fetch_frame(conn, statement, params)


def next_success_hours(conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date) -> pd.DataFrame:
    """Per touchpoint error in the window: device_key, ts, touchpoint, code, same_hour (the error's hour also has a
    successful use of the touchpoint) and next_hour (the first later hour that has one, before the window end),
    from `rollup_hourly`; the exact times come from `successes_in_hours`."""
    statement, params = with_scoped_devices(
        scope,
        "SELECT e.device_key, e.ts, e.touchpoint, e.code,"
        " EXISTS (SELECT 1 FROM rollup_hourly h WHERE h.device_key = e.device_key AND h.touchpoint = e.touchpoint"
        "   AND h.bucket = date_trunc('hour', e.ts) AND h.success_count > 0) AS same_hour,"
        " (SELECT min(h.bucket) FROM rollup_hourly h WHERE h.device_key = e.device_key AND h.touchpoint = e.touchpoint"
        "   AND h.bucket > date_trunc('hour', e.ts) AND h.bucket < %(hi)s AND h.success_count > 0) AS next_hour"
        " FROM events e JOIN sel USING (device_key)"
        " WHERE e.kind = 'error' AND e.touchpoint IS NOT NULL AND e.ts >= %(lo)s AND e.ts < %(hi)s",
        lo=day_start(start),
        hi=day_start(end + timedelta(days=1)),
    )
    return fetch_frame(conn, statement, params)


def successes_in_hours(conn: psycopg.Connection, *, hours: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """Successful uses in the given device × touchpoint × hour cells (raw events, few): device_key, touchpoint, ts.

    `hours`: device_key, touchpoint, hour (hour start); the window bounds let TimescaleDB skip other chunks.
    """
    if hours.empty:
        return pd.DataFrame(columns=["device_key", "touchpoint", "ts"])
    cells = hours.drop_duplicates()
    return fetch_frame(
        conn,
        sql.SQL(
            "SELECT u.device_key, u.touchpoint, u.ts FROM events u"
            " JOIN unnest(%(keys)s::int[], %(tps)s::text[], %(hours)s::timestamptz[])"
            " AS c(device_key, touchpoint, hour)"
            " ON u.device_key = c.device_key AND u.touchpoint = c.touchpoint AND u.ts >= c.hour"
            " AND u.ts < c.hour + INTERVAL '1 hour'"
            " WHERE u.kind = 'usage' AND u.success AND u.ts >= %(lo)s AND u.ts < %(hi)s"
        ),
        {
            "keys": [int(k) for k in cells["device_key"]],
            "tps": [str(t) for t in cells["touchpoint"]],
            "hours": list(pd.to_datetime(cells["hour"], utc=True).dt.to_pydatetime()),
            "lo": day_start(start),
            "hi": day_start(end + timedelta(days=1)),
        },
    )
