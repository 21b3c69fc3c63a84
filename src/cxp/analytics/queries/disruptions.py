"""Error and recovery events, daily errors per product and hourly devices with an error code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date, timedelta

import pandas as pd
import psycopg
from psycopg import sql

from cxp.analytics.queries._base import day_start, fetch_frame, scoped_join, with_scoped_devices
from cxp.analytics.queries.registry import devices, with_device_ids
from cxp.analytics.query import AnalyticsQuery


def error_stream(
    conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date,
    keys: Sequence[tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """Error and recovery events in the window (raw, filtered in SQL): device_id, device_key, product_id, ts, kind,
    code, touchpoint; only those of these (touchpoint, code) pairs when `keys` is given."""
    # The pairs as one text each: a condition the (touchpoint, ts) index cannot serve, so the errors of the window are
    # found through the kind index (covering, migration 043) and filtered, not every use of those touchpoints read.
    only = "" if keys is None else " AND e.touchpoint || chr(31) || e.code = ANY(%(key_pairs)s)"
    statement, params = with_scoped_devices(
        scope,
        "SELECT e.device_key, e.ts, e.kind::text AS kind, e.code, e.touchpoint FROM events e" + scoped_join(scope)
        + f" WHERE e.kind IN ('error', 'recovery') AND e.ts >= %(lo)s AND e.ts < %(hi)s{only}",
        lo=day_start(start),
        hi=day_start(end + timedelta(days=1)),
        key_pairs=[f"{t}\x1f{c}" for t, c in keys or ()],
    )
    events = fetch_frame(conn, statement, params)
    # Ids and products from the scoped devices, not sent with each event (140,000 events of 8 weeks at 10,000
    # devices); an event of a device not in the scope is left out, as the join leaves it out.
    events = with_device_ids(events, scoped=devices(conn, scope=scope))
    # Ordered here, not in SQL: ORDER BY e.ts makes PostgreSQL walk every event of the window in time order
    # (the ts index) instead of the few errors and recoveries (the kind index): 440 → ~60 ms at 5,000 devices.
    return events.sort_values("ts", kind="stable", ignore_index=True)


def daily_errors_by_product(conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date) -> pd.DataFrame:
    """Per product × day from `rollup_daily`: errors, uses, active devices."""
    # Active days and days with only errors apart, each from its covering index (migrations 036, 037): the other
    # device-days (heartbeats only) add nothing.
    statement, params = with_scoped_devices(
        scope,
        "SELECT sel.product_id, r.day, sum(r.error_count)::int AS errors, sum(r.usage_count)::int AS uses,"
        " count(*) FILTER (WHERE r.active)::int AS active_devices FROM ("
        " SELECT device_key, day, error_count, usage_count, true AS active FROM rollup_daily"
        " WHERE active AND day BETWEEN %(start)s AND %(end)s"
        " UNION ALL SELECT device_key, day, error_count, 0, false FROM rollup_daily"
        " WHERE NOT active AND error_count > 0 AND day BETWEEN %(start)s AND %(end)s"
        ") r JOIN sel USING (device_key) GROUP BY 1, 2 ORDER BY 1, 2",
        start=start,
        end=end,
    )
    return fetch_frame(conn, statement, params)


def _kept_product_hours(conn: psycopg.Connection, table: str, columns: tuple[str, ...], bounds: dict,
                        product: str | None) -> pd.DataFrame:
    """The window's rows of a kept product × hour table, for every product or one, ordered by all but the last
    column."""
    names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    only = sql.SQL(" AND product_id = %(product)s") if product is not None else sql.SQL("")
    order = sql.SQL(", ").join(sql.Identifier(c) for c in columns[:-1])
    statement = sql.SQL("SELECT {} FROM {} WHERE bucket >= %(lo)s AND bucket < %(hi)s{} ORDER BY {}").format(
        names, sql.Identifier(table), only, order)
    return fetch_frame(conn, statement, {**bounds, "product": product})


def hourly_errors(conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date) -> pd.DataFrame:
    """Per product × touchpoint × error code × hour: distinct devices with an error; from `rollup_product_error_hourly`
    for the whole fleet or one product, else from raw events.

    The rollups have no error code; an incident repeats one code, so counting per code separates it from the
    everyday mix of codes.
    """
    bounds = {"lo": day_start(start), "hi": day_start(end + timedelta(days=1))}
    if replace(scope, product=None).is_all_devices:
        return _kept_product_hours(conn, "rollup_product_error_hourly", ("product_id", "touchpoint", "code", "bucket",
                                                                         "devices"), bounds, scope.product)
    statement, params = with_scoped_devices(
        scope,
        "SELECT sel.product_id, e.touchpoint, e.code, time_bucket(INTERVAL '1 hour', e.ts) AS bucket,"
        " count(DISTINCT e.device_key)::int AS devices FROM events e JOIN sel USING (device_key)"
        " WHERE e.kind = 'error' AND e.ts >= %(lo)s AND e.ts < %(hi)s AND e.touchpoint IS NOT NULL"
        " AND e.code IS NOT NULL GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
        **bounds,
    )
    return fetch_frame(conn, statement, params)


def hourly_users(conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date) -> pd.DataFrame:
    """Per product × touchpoint × hour: users = devices that used the touchpoint (the exposure an hour's error count
    is compared with); from `rollup_product_hourly` for the whole fleet or one product, else from `rollup_hourly`."""
    bounds = {"lo": day_start(start), "hi": day_start(end + timedelta(days=1))}
    if replace(scope, product=None).is_all_devices:
        return _kept_product_hours(conn, "rollup_product_hourly", ("product_id", "touchpoint", "bucket", "users"),
                                   bounds, scope.product)
    statement, params = with_scoped_devices(
        scope,
        "SELECT sel.product_id, h.touchpoint, h.bucket, count(*)::int AS users"
        " FROM rollup_hourly h JOIN sel USING (device_key)"
        " WHERE h.bucket >= %(lo)s AND h.bucket < %(hi)s AND h.touchpoint <> '' AND h.usage_count > 0"
        " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        **bounds,
    )
    return fetch_frame(conn, statement, params)


def successes_after_errors(
    conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date, touchpoints: Sequence[str] | None = None
) -> pd.DataFrame:
    """The successful uses that can end the window's touchpoint errors (of `touchpoints` only, when given):
    device_key, touchpoint, ts.

    Per device × touchpoint × UTC day of the window with an error on the touchpoint (`rollup_touchpoint_daily`), the
    day's successful uses (`success_times`) and the first one of the next later day with any (`next_success_at`,
    kept by the rollup refresh) up to the end of `end`: each error's next successful use is among them.
    """
    statement, params = with_scoped_devices(
        scope,
        "SELECT t.device_key, t.touchpoint, x.ts FROM rollup_touchpoint_daily t" + scoped_join(scope)
        + " CROSS JOIN LATERAL unnest(t.success_times || t.next_success_at) AS x(ts)"
        " WHERE t.error_count > 0 AND t.touchpoint <> '' AND t.day BETWEEN %(start)s AND %(end)s AND x.ts < %(hi)s"
        + ("" if touchpoints is None else " AND t.touchpoint = ANY(%(touchpoints)s)"),
        start=start,
        end=end,
        hi=day_start(end + timedelta(days=1)),
        touchpoints=list(touchpoints or ()),
    )
    return fetch_frame(conn, statement, params)
