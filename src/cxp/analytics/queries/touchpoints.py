"""Per touchpoint and per device × touchpoint totals from the touchpoint rollups; first successful core use."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import pandas as pd
import psycopg

from cxp.analytics.queries._base import (
    day_start,
    fetch_frame,
    scoped_join,
    weeks_and_days_sql,
    with_scoped_devices,
)
from cxp.analytics.query import AnalyticsQuery


def touchpoint_totals(
    conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date, per_device: bool = True
) -> pd.DataFrame:
    """Per product × touchpoint over [start, end]: devices, uses, successes, errors, latency_count/sum,
    fleet_devices (devices active in the window). Whole weeks from the weekly rollups, other days from the daily.

    `per_device`: summed here from the per-device rows, for a view that reads them anyway (`device_touchpoints`: one
    read, shared in a `shared_reads` block); else summed in SQL, only the totals sent (a view that shows only them)."""
    sums = ["devices", "uses", "successes", "errors", "latency_count", "latency_sum"]
    if per_device:
        rows = _device_touchpoint_sums(conn, scope=scope, start=start, end=end)
        totals = rows.assign(devices=rows["uses"] > 0).groupby(["product_id", "touchpoint"], as_index=False,
                                                                 sort=True)[sums].sum()
    else:
        device_sums, params = _touchpoint_sums(scope, start, end)
        statement, params = with_scoped_devices(
            scope,
            f", pd AS ({device_sums}) SELECT sel.product_id, pd.touchpoint,"
            " count(*) FILTER (WHERE pd.uses > 0)::int AS devices, sum(pd.uses)::int AS uses,"
            " sum(pd.successes)::int AS successes, sum(pd.errors)::int AS errors,"
            " sum(pd.latency_count)::int AS latency_count, sum(pd.latency_sum) AS latency_sum"
            " FROM pd JOIN sel USING (device_key) GROUP BY 1, 2 ORDER BY 1, 2",
            **params,
        )
        totals = fetch_frame(conn, statement, params)
    active, params = weeks_and_days_sql(start, end, weekly="rollup_weekly", daily="rollup_daily",
                                        columns="w.device_key", join=scoped_join(scope),
                                        weekly_where="AND w.active_days > 0", daily_where="AND w.active")
    statement, params = with_scoped_devices(
        scope,
        f"SELECT sel.product_id, count(*)::int AS fleet_devices FROM (SELECT DISTINCT device_key FROM ({active}) a) b"
        " JOIN sel USING (device_key) GROUP BY 1",
        **params,
    )
    fleet = fetch_frame(conn, statement, params)
    totals = totals.merge(fleet, on="product_id", how="left")
    totals["fleet_devices"] = totals["fleet_devices"].fillna(0).astype("int64")
    return totals


def device_touchpoints(conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date) -> pd.DataFrame:
    """Per device × touchpoint used over [start, end]: uses, successes, errors, latency_count, latency_sum."""
    rows = _device_touchpoint_sums(conn, scope=scope, start=start, end=end)
    used = rows[rows["uses"] > 0].sort_values(["device_key", "touchpoint"], ignore_index=True)
    return used[["device_key", "touchpoint", "uses", "successes", "errors", "latency_count", "latency_sum"]]


def _device_touchpoint_sums(conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date) -> pd.DataFrame:
    """Per product × named touchpoint × device with a rollup row over [start, end], used or not: uses, successes,
    errors, latency_count, latency_sum."""
    sums, params = _touchpoint_sums(scope, start, end)
    statement, params = with_scoped_devices(
        scope,
        f", pd AS ({sums}) SELECT sel.product_id, pd.touchpoint, pd.device_key, pd.uses::int, pd.successes::int,"
        " pd.errors::int, pd.latency_count::int, pd.latency_sum FROM pd JOIN sel USING (device_key)",
        **params,
    )
    return fetch_frame(conn, statement, params)


def _touchpoint_sums(scope: AnalyticsQuery, start: date, end: date) -> tuple[str, dict]:
    """SQL of per device × named touchpoint sums over [start, end] (device_key, touchpoint, uses, successes, errors,
    latency_count, latency_sum); the scoped devices' rows, the products joined by the caller.

    Summed per device key and touchpoint before the devices' products are joined: the join then meets ~devices ×
    touchpoints sums instead of every weekly and daily row, and the whole fleet's rows are read without one."""
    rows, params = weeks_and_days_sql(
        start, end, weekly="rollup_touchpoint_weekly", daily="rollup_touchpoint_daily",
        columns="w.touchpoint, w.device_key, w.usage_count, w.success_count, w.error_count, w.latency_count,"
                " w.latency_sum",
        join=scoped_join(scope), weekly_where="AND w.touchpoint <> ''", daily_where="AND w.touchpoint <> ''")
    return ("SELECT device_key, touchpoint, sum(usage_count) AS uses, sum(success_count) AS successes,"
            " sum(error_count) AS errors, sum(latency_count) AS latency_count, sum(latency_sum) AS latency_sum"
            f" FROM ({rows}) h GROUP BY 1, 2"), params


def first_core_success(
    conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date, device_keys: Sequence[int]
) -> pd.DataFrame:
    """First successful core use in the window of each of `device_keys`: device_key, first_core_use_at (the exact
    time). From each device's kept first success per touchpoint (`touchpoint_first_success`) when none of its core
    touchpoints first worked before the window (so the first in the window is the first ever), else from the window's
    `rollup_touchpoint_daily.success_times` for those devices."""
    lo, hi = day_start(start), day_start(end + timedelta(days=1))
    statement, params = with_scoped_devices(
        scope,
        "SELECT f.device_key, bool_or(f.first_at < %(lo)s) AS before,"
        " min(f.first_at) FILTER (WHERE f.first_at < %(hi)s) AS first_core_use_at"
        " FROM touchpoint_first_success f JOIN sel USING (device_key)"
        " JOIN touchpoints t ON t.product_id = sel.product_id AND t.touchpoint = f.touchpoint AND t.is_core"
        " WHERE f.device_key = ANY(%(keys)s::int[]) GROUP BY 1",
        lo=lo, hi=hi, keys=[int(k) for k in device_keys],
    )
    kept = fetch_frame(conn, statement, params)
    before = kept["before"].astype(bool)
    earlier = kept.loc[before, "device_key"].astype(int).tolist()
    kept = kept.loc[~before & kept["first_core_use_at"].notna(), ["device_key", "first_core_use_at"]]
    if not earlier:
        return kept.reset_index(drop=True)
    statement, params = with_scoped_devices(
        scope,
        "SELECT h.device_key, min(h.success_times[1]) AS first_core_use_at"
        " FROM rollup_touchpoint_daily h JOIN sel USING (device_key)"
        " JOIN touchpoints t ON t.product_id = sel.product_id AND t.touchpoint = h.touchpoint AND t.is_core"
        " WHERE h.day BETWEEN %(start)s AND %(end)s AND h.success_count > 0 AND h.device_key = ANY(%(keys)s::int[])"
        " GROUP BY 1",
        start=start, end=end, keys=earlier,
    )
    scanned = fetch_frame(conn, statement, params)
    return pd.concat([kept, scanned], ignore_index=True) if len(scanned) else kept.reset_index(drop=True)


def touchpoint_answers(conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date) -> pd.DataFrame:
    """CSAT answers about a touchpoint in the window, in time order, with what the Kano grouping needs of each
    (`answer_context`, kept by the rollup refresh): device_key, touchpoint, score, last_use_ok (the outcome of the
    day's last use of the touchpoint at or before the answer; None: no use that day before it), failed_before (a
    failure of the touchpoint on one of the 7 days before the answer's day). Ids and products are the caller's to
    join: text columns of every answer cost more than the answers."""
    statement, params = with_scoped_devices(
        scope,
        "SELECT a.device_key, a.touchpoint, a.csat::float8 AS score, a.last_use_ok, a.failed_before"
        " FROM answer_context a" + scoped_join(scope)
        + " WHERE a.ts >= %(lo)s AND a.ts < %(hi)s ORDER BY a.ts, a.device_key, a.seq",
        lo=day_start(start),
        hi=day_start(end + timedelta(days=1)),
    )
    return fetch_frame(conn, statement, params)


def failure_counts(conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date) -> pd.DataFrame:
    """Per device × touchpoint × UTC day from `rollup_touchpoint_daily`: failures (errors on the touchpoint)."""
    statement, params = with_scoped_devices(
        scope,
        "SELECT h.device_key, h.touchpoint, h.day, h.error_count AS failures"
        " FROM rollup_touchpoint_daily h" + scoped_join(scope)
        + " WHERE h.day BETWEEN %(start)s AND %(end)s AND h.touchpoint <> '' AND h.error_count > 0",
        start=start,
        end=end,
    )
    return fetch_frame(conn, statement, params)
