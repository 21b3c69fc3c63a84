"""Feedback answers (NPS, CSAT, CES) counted and averaged in SQL (the feedback-daily rollup; raw events for the
first answer after a moment)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import pandas as pd
import psycopg
from psycopg import sql

from cxp.analytics.errors import InvalidParameter
from cxp.analytics.queries._base import day_start, fetch_frame, scoped_join, with_scoped_devices
from cxp.analytics.query import AnalyticsQuery

# Group expressions over `rollup_feedback_daily` f (one row per device × day × touchpoint × measure × score).
VOICE_GROUPS: dict[str, str] = {
    "product": "sel.product_id",
    "touchpoint": "CASE WHEN f.touchpoint = '' THEN '(relationship)' ELSE f.touchpoint END",
    "segment": "coalesce(sel.segment, '(none)')",
    "week": "time_bucket(INTERVAL '7 days', f.day, DATE '2000-01-03')::text",
    "month": "to_char(f.day, 'YYYY-MM')",
    "day": "f.day::text",
}


def feedback_histogram(
    conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date, by: Sequence[str]
) -> pd.DataFrame:
    """Feedback answers counted per group × measure × score (from `rollup_feedback_daily`): <by columns>, measure,
    score, responses."""
    unknown = set(by) - set(VOICE_GROUPS)
    if unknown:
        raise InvalidParameter(f"unknown voice grouping(s) {sorted(unknown)}; choose from {sorted(VOICE_GROUPS)}")
    cols = [sql.SQL("{} AS {}").format(sql.SQL(VOICE_GROUPS[g]), sql.Identifier(g)) for g in by]
    select = sql.SQL(", ").join(
        [*cols, sql.SQL("f.measure"), sql.SQL("f.score::int AS score"), sql.SQL("sum(f.responses)::int AS responses")]
    )
    group = sql.SQL(", ").join(sql.Literal(i) for i in range(1, len(by) + 3))
    # Grouped by a device's product or segment, the rows need the join; else only a narrower scope does.
    join = " JOIN sel USING (device_key)" if any("sel." in VOICE_GROUPS[g] for g in by) else scoped_join(scope)
    query = sql.SQL(
        "SELECT {} FROM rollup_feedback_daily f" + join + " WHERE f.day BETWEEN %(start)s AND %(end)s"
        " GROUP BY {} ORDER BY {}"
    ).format(select, group, group)
    statement, params = with_scoped_devices(scope, query, start=start, end=end)
    return fetch_frame(conn, statement, params)


def device_feedback(conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date) -> pd.DataFrame:
    """Per device: mean NPS, CSAT and CES answers in the window with their counts (from `rollup_feedback_daily`)."""
    measures = ", ".join(
        f"coalesce(sum(f.responses) FILTER (WHERE f.measure = '{m}'), 0)::int AS {m}_n,"
        # an integer sum over a count in numeric, as avg() of the answers computes it: the same to the last digit
        f" (sum(f.score * f.responses) FILTER (WHERE f.measure = '{m}')::numeric"
        f"  / sum(f.responses) FILTER (WHERE f.measure = '{m}'))::float8 AS {m}_mean"
        for m in ("nps", "csat", "ces")
    )
    statement, params = with_scoped_devices(
        scope,
        f"SELECT f.device_key, {measures} FROM rollup_feedback_daily f" + scoped_join(scope)
        + " WHERE f.day BETWEEN %(start)s AND %(end)s GROUP BY 1",
        start=start,
        end=end,
    )
    return fetch_frame(conn, statement, params)


def feedback_after(
    conn: psycopg.Connection, *, scope: AnalyticsQuery, refs: pd.DataFrame, horizon_days: int, end: date
) -> pd.DataFrame:
    """Each device's first NPS and first CSAT answer within `horizon_days` after its reference time.

    refs: device_key, ref_ts.
    """
    if refs.empty:
        return pd.DataFrame(columns=["device_key", "nps_after", "csat_after"])
    statement, params = with_scoped_devices(
        scope,
        ", r AS (SELECT unnest(%(keys)s::int[]) AS device_key, unnest(%(ts)s::timestamptz[]) AS ref_ts)"
        " SELECT r.device_key,"
        " (SELECT e.nps FROM events e WHERE e.device_key = r.device_key AND e.kind = 'feedback'"
        "   AND e.nps IS NOT NULL AND e.ts > r.ref_ts AND e.ts <= least(r.ref_ts + %(h)s, %(hi)s)"
        "   ORDER BY e.ts LIMIT 1) AS nps_after,"
        " (SELECT e.csat FROM events e WHERE e.device_key = r.device_key AND e.kind = 'feedback'"
        "   AND e.csat IS NOT NULL AND e.ts > r.ref_ts AND e.ts <= least(r.ref_ts + %(h)s, %(hi)s)"
        "   ORDER BY e.ts LIMIT 1) AS csat_after"
        " FROM r" + scoped_join(scope),
        keys=[int(k) for k in refs["device_key"]],
        ts=[pd.Timestamp(t).floor("us").to_pydatetime() for t in refs["ref_ts"]],
        h=timedelta(days=horizon_days),
        hi=day_start(end + timedelta(days=1)),
    )
    return fetch_frame(conn, statement, params)


def feedback_around(
    conn: psycopg.Connection, *, scope: AnalyticsQuery, refs: pd.DataFrame, days: int, end: date
) -> pd.DataFrame:
    """Each device's mean CSAT and NPS answers in the `days` before and after its reference time (aggregated in SQL):
    device_key, csat_before, csat_after, nps_before, nps_after (NULL without an answer).

    refs: device_key, ref_ts (one per device).
    """
    columns = ["device_key", "csat_before", "csat_after", "nps_before", "nps_after"]
    if refs.empty:
        return pd.DataFrame(columns=columns)
    statement, params = with_scoped_devices(
        scope,
        ", r AS (SELECT unnest(%(keys)s::int[]) AS device_key, unnest(%(ts)s::timestamptz[]) AS ref_ts)"
        " SELECT r.device_key,"
        " avg(e.csat) FILTER (WHERE e.ts < r.ref_ts)::float8 AS csat_before,"
        " avg(e.csat) FILTER (WHERE e.ts > r.ref_ts)::float8 AS csat_after,"
        " avg(e.nps) FILTER (WHERE e.ts < r.ref_ts)::float8 AS nps_before,"
        " avg(e.nps) FILTER (WHERE e.ts > r.ref_ts)::float8 AS nps_after"
        " FROM r" + scoped_join(scope) + " JOIN events e ON e.device_key = r.device_key AND e.kind = 'feedback'"
        " AND e.ts >= r.ref_ts - %(h)s AND e.ts <= least(r.ref_ts + %(h)s, %(hi)s)"
        " AND e.ts >= %(lo)s AND e.ts < %(hi)s GROUP BY r.device_key",
        keys=[int(k) for k in refs["device_key"]],
        ts=[pd.Timestamp(t).floor("us").to_pydatetime() for t in refs["ref_ts"]],
        h=timedelta(days=days),
        lo=min(pd.Timestamp(t) for t in refs["ref_ts"]).floor("us").to_pydatetime() - timedelta(days=days),
        hi=day_start(end + timedelta(days=1)),
    )
    return fetch_frame(conn, statement, params)
