"""Incremental rollups: recompute exactly the (device, day) pairs the writers marked dirty."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from threading import Event

import psycopg

from cxp.store.errors import mapped_errors
from cxp.store.rollups_monthly import refresh_months

_LOCK_ID = 0x6378_7002  # one refresher at a time; writers never take it

_DAY_START = "({d}.day::timestamp AT TIME ZONE 'UTC')"
_DAY_END = "(({d}.day + 1)::timestamp AT TIME ZONE 'UTC')"


def _in_days(alias: str, time_col: str) -> str:
    """Join condition restricting `alias.time_col` to the device-days in _rollup_days d; the constant bounds
    %(lo)s / %(hi)s (the first and past the last day) let TimescaleDB skip every other chunk when planning."""
    return (f"{alias}.device_key = d.device_key AND {alias}.{time_col} >= {_DAY_START.format(d='d')}"
            f" AND {alias}.{time_col} < {_DAY_END.format(d='d')}"
            f" AND {alias}.{time_col} >= %(lo)s AND {alias}.{time_col} < %(hi)s")


# The hourly aggregation over raw events; `{scope}` limits it to the dirty device-days or not at all.
HOURLY_SELECT = """
SELECT e.device_key, time_bucket('1 hour', e.ts) AS bucket, coalesce(e.touchpoint, '') AS touchpoint,
       count(*) FILTER (WHERE e.kind = 'usage')::int,
       count(*) FILTER (WHERE e.kind = 'usage' AND e.success)::int,
       count(*) FILTER (WHERE e.kind = 'error')::int,
       coalesce(sum(e.duration_s::float8) FILTER (WHERE e.kind = 'usage'), 0),
       coalesce(sum(e.quantity) FILTER (WHERE e.kind = 'usage'), 0),
       count(e.latency_ms)::int,
       coalesce(sum(e.latency_ms::float8), 0),
       coalesce(sum(e.latency_ms::float8 * e.latency_ms), 0),
       max(e.latency_ms)
FROM events e {scope}
WHERE e.kind IN ('usage', 'error')
GROUP BY 1, 2, 3
"""

# The stages that end a customer relationship; the daily rollup keeps each device-day's first: time, stage (migration
# 039).
EXIT_STAGES = ("cancelled", "returned")
_EXIT_STAGES_SQL = ", ".join(f"'{stage}'" for stage in EXIT_STAGES)
# The daily aggregation per device: usage stats from the hourly rollup, the rest from raw rows.
DAILY_SELECT = f"""
WITH h AS (
    SELECT r.device_key, (r.bucket AT TIME ZONE 'UTC')::date AS day,
           sum(r.usage_count)::int AS usage_count, sum(r.success_count)::int AS success_count,
           sum(r.error_count)::int AS error_count, sum(r.duration_sum) AS duration_sum,
           sum(r.quantity_sum) AS quantity_sum, sum(r.latency_count)::int AS latency_count,
           sum(r.latency_sum) AS latency_sum, max(r.latency_max) AS latency_max,
           count(DISTINCT r.touchpoint) FILTER (WHERE r.usage_count > 0)::int AS touchpoints_used
    FROM rollup_hourly r {{scope_hourly}}
    GROUP BY 1, 2
), o AS (
    SELECT e.device_key, (e.ts AT TIME ZONE 'UTC')::date AS day,
           count(*) FILTER (WHERE e.kind = 'recovery')::int AS recovery_count,
           count(*) FILTER (WHERE e.kind = 'feedback')::int AS feedback_count,
           count(*) FILTER (WHERE e.kind = 'lifecycle')::int AS lifecycle_count,
           min(e.ts) FILTER (WHERE e.kind = 'lifecycle' AND e.stage IN ({_EXIT_STAGES_SQL})) AS exit_at,
           (array_agg(e.stage ORDER BY e.ts, e.seq)
            FILTER (WHERE e.kind = 'lifecycle' AND e.stage IN ({_EXIT_STAGES_SQL})))[1] AS exit_stage
    FROM events e {{scope_events}}
    WHERE e.kind IN ('recovery', 'feedback', 'lifecycle')
    GROUP BY 1, 2
), s AS (
    SELECT st.device_key, (st.ts AT TIME ZONE 'UTC')::date AS day, count(*)::int AS heartbeat_count,
           min(st.battery_pct) AS battery_min, max(st.energy_wh) AS energy_wh_max
    FROM device_state st {{scope_state}}
    GROUP BY 1, 2
)
SELECT coalesce(h.device_key, o.device_key, s.device_key), coalesce(h.day, o.day, s.day),
       coalesce(h.usage_count, 0), coalesce(h.success_count, 0), coalesce(h.error_count, 0),
       coalesce(o.recovery_count, 0), coalesce(o.feedback_count, 0), coalesce(o.lifecycle_count, 0),
       coalesce(h.duration_sum, 0), coalesce(h.quantity_sum, 0), coalesce(h.latency_count, 0),
       coalesce(h.latency_sum, 0), h.latency_max, coalesce(h.touchpoints_used, 0),
       coalesce(s.heartbeat_count, 0), s.battery_min, s.energy_wh_max,
       coalesce(h.usage_count, 0) > 0, o.exit_at, o.exit_stage
FROM h
FULL JOIN o ON o.device_key = h.device_key AND o.day = h.day
FULL JOIN s ON s.device_key = coalesce(h.device_key, o.device_key) AND s.day = coalesce(h.day, o.day)
"""

# The hourly rollup summed per device × touchpoint × UTC day, with the times of its successful uses from raw events
# (migration 025); `{scope_hourly}` / `{scope_events}` limit it to the dirty device-days or not at all.
_CLEAN_HOUR = "r.success_count = r.usage_count AND r.error_count = 0"
# One aggregate over the hourly rows and the successful uses together, not a join of two aggregates: right after a
# day is ingested its chunks have no statistics, the planner saw both sides as a few rows and nested-looped them
# (8,242 device-days took 88 s instead of ~1 s in `cxp bench refresh`). Every (device, day, touchpoint) with a
# successful use has an hourly row, so the groups are the hourly ones.
TOUCHPOINT_DAILY_SELECT = f"""
SELECT x.device_key, x.day, x.touchpoint,
       sum(x.usage_count)::int, sum(x.success_count)::int, sum(x.error_count)::int, sum(x.duration_sum),
       sum(x.quantity_sum), sum(x.latency_count)::int, sum(x.latency_sum),
       coalesce(sum(x.latency_count) FILTER (WHERE x.clean), 0)::int,
       coalesce(sum(x.latency_sum) FILTER (WHERE x.clean), 0),
       coalesce(array_agg(x.ts ORDER BY x.ts) FILTER (WHERE x.ts IS NOT NULL), '{{{{}}}}')
FROM (
    SELECT r.device_key, (r.bucket AT TIME ZONE 'UTC')::date AS day, r.touchpoint, r.usage_count, r.success_count,
           r.error_count, r.duration_sum, r.quantity_sum, r.latency_count, r.latency_sum, {_CLEAN_HOUR} AS clean,
           NULL::timestamptz AS ts
    FROM rollup_hourly r {{scope_hourly}}
    UNION ALL
    SELECT e.device_key, (e.ts AT TIME ZONE 'UTC')::date, e.touchpoint, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, e.ts
    FROM events e {{scope_events}}
    WHERE e.kind = 'usage' AND e.success AND e.touchpoint IS NOT NULL
) x
GROUP BY 1, 2, 3
HAVING count(x.usage_count) > 0
"""
TOUCHPOINT_DAILY_COLUMNS = ("device_key, day, touchpoint, usage_count, success_count, error_count, duration_sum,"
                            " quantity_sum, latency_count, latency_sum, clean_latency_count, clean_latency_sum,"
                            " success_times")
# An error row's first successful use of its touchpoint on a later day (migration 034). Recomputed per device with
# dirty days, on the error rows whose next success is unknown or on or after its first dirty day: an earlier one
# lies on an unchanged day before every change, so it stands (late successes only ever make a next one earlier).
_NEXT_SUCCESS = f"""
WITH d AS (SELECT device_key, min(day) AS day FROM _rollup_days GROUP BY 1),
fresh AS (
    SELECT t.device_key, t.day, t.touchpoint, (
        SELECT n.success_times[1] FROM rollup_touchpoint_daily n
        WHERE n.device_key = t.device_key AND n.touchpoint = t.touchpoint AND n.day > t.day AND n.success_count > 0
        ORDER BY n.day LIMIT 1) AS next
    FROM rollup_touchpoint_daily t JOIN d ON t.device_key = d.device_key
    WHERE t.error_count > 0 AND t.touchpoint <> ''
      AND (t.next_success_at IS NULL OR t.next_success_at >= {_DAY_START.format(d="d")})
)
UPDATE rollup_touchpoint_daily t SET next_success_at = f.next FROM fresh f
WHERE t.device_key = f.device_key AND t.day = f.day AND t.touchpoint = f.touchpoint
  AND t.next_success_at IS DISTINCT FROM f.next
"""
# Each device's first successful use of each touchpoint (migration 035), lowered by the dirty days' rows; `{scope}`
# limits it to them or not at all.
FIRST_SUCCESS_SELECT = """
SELECT r.device_key, r.touchpoint, min(r.success_times[1]) FROM rollup_touchpoint_daily r {scope}
WHERE r.success_count > 0 AND r.touchpoint <> ''
GROUP BY 1, 2
"""
_FIRST_SUCCESS = ("INSERT INTO touchpoint_first_success (device_key, touchpoint, first_at) "
                  + FIRST_SUCCESS_SELECT.format(scope="JOIN _rollup_days d USING (device_key, day)")
                  + " ON CONFLICT (device_key, touchpoint) DO UPDATE SET first_at = excluded.first_at"
                    " WHERE excluded.first_at < touchpoint_first_success.first_at")

# Each device-day's uses of its product's core touchpoints (migration 036), summed from the touchpoint-daily rows;
# `{scope}` joins what limits it (the dirty days, a product's or some devices' days) or nothing.
CORE_USES_SELECT = """
SELECT h.device_key, h.day, sum(h.usage_count)::int AS uses
FROM rollup_touchpoint_daily h {scope}
JOIN devices dv ON dv.device_key = h.device_key
JOIN touchpoints t ON t.product_id = dv.product_id AND t.touchpoint = h.touchpoint AND t.is_core
WHERE h.usage_count > 0
GROUP BY 1, 2
"""
_SET_CORE_USES = ("UPDATE rollup_daily r SET core_usage_count = c.uses FROM (" + CORE_USES_SELECT + ") c"
                  " WHERE r.device_key = c.device_key AND r.day = c.day AND r.core_usage_count <> c.uses")


def recount_core_uses(conn: psycopg.Connection, *, devices: str, params: dict | None = None) -> None:
    """Recount the kept core uses of every day of the devices `devices` selects (a SQL query of device_key), after
    their product's core touchpoints changed or they moved to another product.

    Run it in the transaction that changed the catalogue or the devices: it waits for a refresh under way (whose rows
    were counted with the old catalogue) and keeps the next one out until that transaction ends."""
    scope = f"JOIN ({devices}) AS moved (device_key) ON moved.device_key = h.device_key"
    with mapped_errors():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        conn.execute(f"UPDATE rollup_daily r SET core_usage_count = 0 WHERE r.core_usage_count <> 0"
                     f" AND r.device_key IN ({devices})", params)
        conn.execute(_SET_CORE_USES.format(scope=scope), params)


# Feedback answers per device × UTC day × touchpoint × measure × score (migration 028); `{scope}` limits it to the
# dirty device-days or not at all.
FEEDBACK_DAILY_SELECT = """
SELECT e.device_key, (e.ts AT TIME ZONE 'UTC')::date, coalesce(e.touchpoint, ''), m.measure, m.score, count(*)::int
FROM events e {scope}
CROSS JOIN LATERAL (VALUES ('nps', e.nps), ('csat', e.csat), ('ces', e.ces)) AS m(measure, score)
WHERE e.kind = 'feedback' AND m.score IS NOT NULL
GROUP BY 1, 2, 3, 4, 5
"""
FEEDBACK_DAILY_COLUMNS = "device_key, day, touchpoint, measure, score, responses"

# Per device × Monday-aligned week from the daily rollups (migration 026); `{scope_daily}` / `{scope_touchpoints}`
# limit it to the weeks of dirty days or not at all.
_WEEK = "time_bucket(INTERVAL '7 days', {d}.day, DATE '2000-01-03')"
WEEKLY_SELECT = f"""
WITH d AS (
    SELECT r.device_key, {_WEEK.format(d="r")} AS week,
           sum(r.usage_count)::int AS usage_count, sum(r.success_count)::int AS success_count,
           count(*) FILTER (WHERE r.active)::int AS active_days,
           count(*) FILTER (WHERE r.active AND r.error_count = 0)::int AS error_free_days,
           sum(r.heartbeat_count)::int AS heartbeat_count
    FROM rollup_daily r {{scope_daily}}
    GROUP BY 1, 2
), t AS (
    SELECT device_key, week, count(*)::int AS touchpoints_used
    FROM (SELECT DISTINCT h.device_key, {_WEEK.format(d="h")} AS week, h.touchpoint
          FROM rollup_touchpoint_daily h {{scope_touchpoints}} WHERE h.usage_count > 0) x
    GROUP BY 1, 2
)
SELECT d.*, coalesce(t.touchpoints_used, 0) FROM d LEFT JOIN t USING (device_key, week)
"""
WEEKLY_COLUMNS = ("device_key, week, usage_count, success_count, active_days, error_free_days, heartbeat_count,"
                  " touchpoints_used")
TOUCHPOINT_WEEKLY_SELECT = f"""
SELECT h.device_key, {_WEEK.format(d="h")}, h.touchpoint,
       sum(h.usage_count)::int, sum(h.clean_latency_count)::int, sum(h.clean_latency_sum),
       sum(h.success_count)::int, sum(h.error_count)::int, sum(h.latency_count)::int, sum(h.latency_sum)
FROM rollup_touchpoint_daily h {{scope_touchpoints}}
GROUP BY 1, 2, 3
"""
TOUCHPOINT_WEEKLY_COLUMNS = ("device_key, week, touchpoint, usage_count, clean_latency_count, clean_latency_sum,"
                             " success_count, error_count, latency_count, latency_sum")


# Per product × touchpoint × hour from the hourly rollup (migration 030); `{scope}` limits it to the days in
# _product_days d or not at all.
PRODUCT_HOURLY_SELECT = """
SELECT v.product_id, h.touchpoint, h.bucket, count(*)::int
FROM rollup_hourly h JOIN devices v USING (device_key) {scope}
WHERE h.touchpoint <> '' AND h.usage_count > 0
GROUP BY 1, 2, 3
"""
PRODUCT_HOURLY_COLUMNS = "product_id, touchpoint, bucket, users"
# Per product × touchpoint × error code × hour from raw errors (migration 032), scoped the same way.
PRODUCT_ERROR_HOURLY_SELECT = """
SELECT v.product_id, e.touchpoint, e.code, time_bucket(INTERVAL '1 hour', e.ts), count(DISTINCT e.device_key)::int
FROM events e JOIN devices v USING (device_key) {scope}
WHERE e.kind = 'error' AND e.touchpoint IS NOT NULL AND e.code IS NOT NULL
GROUP BY 1, 2, 3, 4
"""
PRODUCT_ERROR_HOURLY_COLUMNS = "product_id, touchpoint, code, bucket, devices"


def _in_product_days(column: str) -> str:
    """SQL: `column` (a timestamp) falls in a day of _product_days d, within the days' bounds `lo` / `hi`."""
    return (f"{column} >= {_DAY_START.format(d='d')} AND {column} < {_DAY_END.format(d='d')}"
            f" AND {column} >= %(lo)s AND {column} < %(hi)s")


def _day_bounds(conn: psycopg.Connection, days_table: str) -> dict[str, datetime | None]:
    """`lo` / `hi`: the start of the first day and the end of the last one in a temp table of days (None if empty)."""
    return dict(zip(("lo", "hi"), conn.execute(
        "SELECT min(day)::timestamp AT TIME ZONE 'UTC', (max(day) + 1)::timestamp AT TIME ZONE 'UTC'"
        f" FROM {days_table}").fetchone(), strict=True))


def _in_weeks(alias: str) -> str:
    """Join condition restricting `alias.day` to the weeks in _rollup_weeks w."""
    return f"{alias}.device_key = w.device_key AND {alias}.day >= w.week AND {alias}.day < w.week + 7"


# Each touchpoint CSAT answer with the day's last use of its touchpoint at or before it (migration 023 explains
# the packing); `{scope}` limits it to the dirty device-days or not at all.
ANSWER_SELECT = """
SELECT device_key, ts, seq, touchpoint, csat,
       timestamptz 'epoch' + (last_use >> 1) * INTERVAL '1 microsecond', (last_use & 1) = 1
FROM (
    SELECT e.device_key, e.ts, e.seq, e.kind, e.touchpoint, e.csat,
           max(CASE WHEN e.kind = 'usage'
                    THEN ((extract(epoch FROM e.ts) * 1000000)::bigint << 1) | e.success::int END)
               OVER (PARTITION BY e.device_key, e.touchpoint, (e.ts AT TIME ZONE 'UTC')::date
                     ORDER BY e.ts, e.kind = 'feedback' ROWS UNBOUNDED PRECEDING) AS last_use
    FROM events e {scope}
    WHERE e.touchpoint IS NOT NULL AND (e.kind = 'usage' OR (e.kind = 'feedback' AND e.csat IS NOT NULL))
) x
WHERE kind = 'feedback'
"""
ANSWER_COLUMNS = "device_key, ts, seq, touchpoint, csat, last_use_at, last_use_ok"
# An answer's `failed_before` (migration 033: an error on its touchpoint on one of the 7 days before its day) looks
# back a week: the answers of each dirty device-day and of the 7 days after it are checked again against the
# refreshed touchpoint-daily rows (`hi` here is 7 days past the last dirty day).
_ANSWER_FAILED_BEFORE = f"""
UPDATE answer_context a SET failed_before = NOT a.failed_before
FROM (SELECT DISTINCT device_key, day + k.n AS day FROM _rollup_days CROSS JOIN generate_series(0, 7) AS k(n)) d
WHERE {_in_days('a', 'ts')}
  AND a.failed_before <> EXISTS (
    SELECT 1 FROM rollup_touchpoint_daily h
    WHERE h.device_key = a.device_key AND h.touchpoint = a.touchpoint AND h.error_count > 0
      AND h.day >= (a.ts AT TIME ZONE 'UTC')::date - 7 AND h.day < (a.ts AT TIME ZONE 'UTC')::date)
"""

# How long a state sample holds at most, in multiples of its product's heartbeat interval: the 1.5× tolerance that
# makes a device "up" (domain notes); pricing's time-weighted metrics use the same.
UPTIME_HOLD_FACTOR = 1.5
# Heartbeat-covered µs per device and UTC day (migration 024): each state sample covers until the next one, at most
# the hold, split at midnights. `{ranges}` limits the samples read (per device: from the hold before its first
# day to the end of its last) and `{days}` the device-days kept; both empty for all of them.
UPTIME_SELECT = """
WITH held AS (
    SELECT d.device_key, make_interval(secs => p.heartbeat_interval_s * %(hold)s) AS hold
    FROM devices d JOIN products p ON p.product_id = d.product_id
), s AS (
    SELECT st.device_key, st.ts, (st.ts AT TIME ZONE 'UTC')::date AS day0,
           least(lead(st.ts) OVER (PARTITION BY st.device_key ORDER BY st.ts), st.ts + h.hold) AS t_end
    FROM device_state st JOIN held h ON h.device_key = st.device_key {ranges}
), pieces AS (
    SELECT device_key, day0 AS day, ts AS a, least(t_end, (day0 + 1)::timestamp AT TIME ZONE 'UTC') AS b FROM s
    UNION ALL
    SELECT s.device_key, g.day::date, g.day AT TIME ZONE 'UTC',
           least(s.t_end, (g.day + interval '1 day') AT TIME ZONE 'UTC')
    FROM s CROSS JOIN LATERAL generate_series(
        (s.day0 + 1)::timestamp, ((s.t_end - interval '1 microsecond') AT TIME ZONE 'UTC')::date::timestamp,
        interval '1 day') AS g(day)
    WHERE s.t_end > (s.day0 + 1)::timestamp AT TIME ZONE 'UTC'
)
SELECT p.device_key, p.day, sum((date_part('epoch', p.b - p.a) * 1000000)::bigint)
FROM pieces p {days}
WHERE p.b > p.a
GROUP BY 1, 2
"""

HOURLY_COLUMNS = ("device_key, bucket, touchpoint, usage_count, success_count, error_count, duration_sum,"
                  " quantity_sum, latency_count, latency_sum, latency_sumsq, latency_max")
DAILY_COLUMNS = ("device_key, day, usage_count, success_count, error_count, recovery_count, feedback_count,"
                 " lifecycle_count, duration_sum, quantity_sum, latency_count, latency_sum, latency_max,"
                 " touchpoints_used, heartbeat_count, battery_min, energy_wh_max, active, exit_at, exit_stage")


@dataclass(frozen=True)
class RollupRefresh:
    """What one refresh recomputed."""

    device_days: int
    hourly_rows: int
    daily_rows: int
    pending: int


def refresh_rollups(conn: psycopg.Connection, *, max_device_days: int = 100_000) -> RollupRefresh:
    """Recompute the hourly, daily, touchpoint-daily (with each error day's next success and the first successes),
    feedback-daily, weekly and monthly rollups, the answer contexts and the heartbeat covers of up to `max_device_days`
    dirty device-days."""
    with mapped_errors(), conn.transaction():
        got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_ID,)).fetchone()
        if not got or not got[0]:
            return RollupRefresh(0, 0, 0, -1)
        # Only rows visible now are taken; rows committed meanwhile stay for the next refresh.
        conn.execute(
            "CREATE TEMP TABLE _rollup_days ON COMMIT DROP AS "
            "WITH taken AS (DELETE FROM rollup_dirty WHERE ctid = ANY (ARRAY("
            "    SELECT ctid FROM rollup_dirty LIMIT %s)) RETURNING device_key, day) "
            "SELECT DISTINCT device_key, day FROM taken",
            (max_device_days,),
        )
        conn.execute("ANALYZE _rollup_days")
        device_days = conn.execute("SELECT count(*) FROM _rollup_days").fetchone()[0]
        if device_days == 0:
            if conn.execute("SELECT EXISTS (SELECT 1 FROM rollup_product_dirty)").fetchone()[0]:
                _refresh_product_hours(conn)  # days queued by devices that moved to another product
            return RollupRefresh(0, 0, 0, 0)
        bounds = _day_bounds(conn, "_rollup_days")
        conn.execute(f"DELETE FROM rollup_hourly r USING _rollup_days d WHERE {_in_days('r', 'bucket')}", bounds)
        hourly = conn.execute(
            f"INSERT INTO rollup_hourly ({HOURLY_COLUMNS}) "
            + HOURLY_SELECT.format(scope=f"JOIN _rollup_days d ON {_in_days('e', 'ts')}"), bounds
        ).rowcount
        conn.execute("DELETE FROM rollup_daily r USING _rollup_days d WHERE r.device_key = d.device_key"
                     " AND r.day = d.day")
        daily = conn.execute(
            f"INSERT INTO rollup_daily ({DAILY_COLUMNS}) "
            + DAILY_SELECT.format(
                scope_hourly=f"JOIN _rollup_days d ON {_in_days('r', 'bucket')}",
                scope_events=f"JOIN _rollup_days d ON {_in_days('e', 'ts')}",
                scope_state=f"JOIN _rollup_days d ON {_in_days('st', 'ts')}",
            ), bounds
        ).rowcount
        conn.execute("DELETE FROM rollup_touchpoint_daily r USING _rollup_days d WHERE r.device_key = d.device_key"
                     " AND r.day = d.day")
        conn.execute(f"INSERT INTO rollup_touchpoint_daily ({TOUCHPOINT_DAILY_COLUMNS}) "
                     + TOUCHPOINT_DAILY_SELECT.format(scope_hourly=f"JOIN _rollup_days d ON {_in_days('r', 'bucket')}",
                                                      scope_events=f"JOIN _rollup_days d ON {_in_days('e', 'ts')}"),
                     bounds)
        conn.execute(_NEXT_SUCCESS)
        conn.execute(_FIRST_SUCCESS)
        conn.execute(_SET_CORE_USES.format(scope="JOIN _rollup_days d USING (device_key, day)"))
        conn.execute("DELETE FROM rollup_feedback_daily r USING _rollup_days d WHERE r.device_key = d.device_key"
                     " AND r.day = d.day")
        conn.execute(f"INSERT INTO rollup_feedback_daily ({FEEDBACK_DAILY_COLUMNS}) "
                     + FEEDBACK_DAILY_SELECT.format(scope=f"JOIN _rollup_days d ON {_in_days('e', 'ts')}"), bounds)
        _refresh_weeks(conn)
        conn.execute(_MARK_HEALTH_WEEKS)
        conn.execute(f"DELETE FROM answer_context a USING _rollup_days d WHERE {_in_days('a', 'ts')}", bounds)
        conn.execute(f"INSERT INTO answer_context ({ANSWER_COLUMNS}) "
                     + ANSWER_SELECT.format(scope=f"JOIN _rollup_days d ON {_in_days('e', 'ts')}"), bounds)
        conn.execute(_ANSWER_FAILED_BEFORE, {**bounds, "hi": bounds["hi"] + timedelta(days=7)})
        _refresh_uptime(conn, **bounds)
        refresh_months(conn, days="_uptime_days")  # the dirty days and the day after each (their covers changed)
        _refresh_product_hours(conn)
        pending = conn.execute("SELECT count(*) FROM rollup_dirty").fetchone()[0]
    return RollupRefresh(device_days, hourly, daily, pending)


def _refresh_weeks(conn: psycopg.Connection) -> None:
    """Recompute the weekly rollups of the weeks that hold a dirty day (after the daily ones)."""
    conn.execute("CREATE TEMP TABLE _rollup_weeks ON COMMIT DROP AS SELECT DISTINCT device_key,"
                 f" {_WEEK.format(d='d')} AS week FROM _rollup_days d")
    conn.execute("ANALYZE _rollup_weeks")
    for table, select, columns in (("rollup_weekly", WEEKLY_SELECT, WEEKLY_COLUMNS),
                                   ("rollup_touchpoint_weekly", TOUCHPOINT_WEEKLY_SELECT, TOUCHPOINT_WEEKLY_COLUMNS)):
        conn.execute(f"DELETE FROM {table} t USING _rollup_weeks w WHERE t.device_key = w.device_key"
                     " AND t.week = w.week")
        conn.execute(f"INSERT INTO {table} ({columns}) " + select.format(
            scope_daily=f"JOIN _rollup_weeks w ON {_in_weeks('r')}",
            scope_touchpoints=f"JOIN _rollup_weeks w ON {_in_weeks('h')}"))


# The kept health rows (migration 031) of the weeks whose trailing 28 days hold a dirty device-day (its week and the
# 3 after it) are marked stale, also where none is kept yet: a writer that read the rollups before this transaction
# committed then fails to write the row instead of keeping old values. Only weeks already over are marked (analytics
# keeps no other), so a day of live data marks nothing until its week is over.
_MARK_HEALTH_WEEKS = f"""
INSERT INTO health_weekly (device_key, week, stale)
SELECT DISTINCT d.device_key, {_WEEK.format(d="d")} + 7 * k.n, true
FROM _rollup_days d CROSS JOIN generate_series(0, 3) AS k(n)
WHERE {_WEEK.format(d="d")} + 7 * k.n + 6 < (now() AT TIME ZONE 'UTC')::date
ORDER BY 1, 2
ON CONFLICT (device_key, week) DO UPDATE SET stale = true
"""


def _refresh_product_hours(conn: psycopg.Connection) -> None:
    """Recompute every product's hours of the days that hold a dirty device-day or were queued by a device move
    (after the hourly rollup)."""
    conn.execute("CREATE TEMP TABLE _product_days ON COMMIT DROP AS"
                 " WITH queued AS (DELETE FROM rollup_product_dirty RETURNING day)"
                 " SELECT day FROM _rollup_days UNION SELECT day FROM queued")
    bounds = _day_bounds(conn, "_product_days")
    if bounds["lo"] is None:
        return
    conn.execute("ANALYZE _product_days")
    for table, select, columns, column in (
        ("rollup_product_hourly", PRODUCT_HOURLY_SELECT, PRODUCT_HOURLY_COLUMNS, "h.bucket"),
        ("rollup_product_error_hourly", PRODUCT_ERROR_HOURLY_SELECT, PRODUCT_ERROR_HOURLY_COLUMNS, "e.ts"),
    ):
        conn.execute(f"DELETE FROM {table} h USING _product_days d WHERE {_in_product_days('h.bucket')}", bounds)
        conn.execute(f"INSERT INTO {table} ({columns}) "
                     + select.format(scope=f"JOIN _product_days d ON {_in_product_days(column)}"), bounds)


def _refresh_uptime(conn: psycopg.Connection, *, lo: datetime, hi: datetime) -> None:
    """Recompute the heartbeat cover of the dirty device-days and of the day after each (a cover crosses midnight);
    `lo` / `hi`: the first dirty day's start and the last one's end."""
    longest = conn.execute("SELECT coalesce(max(heartbeat_interval_s), 0) FROM products").fetchone()[0]
    states_from = lo - timedelta(seconds=longest * UPTIME_HOLD_FACTOR)
    conn.execute("CREATE TEMP TABLE _uptime_days ON COMMIT DROP AS SELECT DISTINCT device_key, day FROM ("
                 " SELECT device_key, day FROM _rollup_days UNION ALL SELECT device_key, day + 1 FROM _rollup_days) x")
    conn.execute("CREATE TEMP TABLE _uptime_ranges ON COMMIT DROP AS SELECT device_key,"
                 " min(day)::timestamp AT TIME ZONE 'UTC' AS lo, (max(day) + 1)::timestamp AT TIME ZONE 'UTC' AS hi"
                 " FROM _uptime_days GROUP BY 1")
    conn.execute("ANALYZE _uptime_days")
    conn.execute("ANALYZE _uptime_ranges")
    conn.execute("DELETE FROM uptime_daily u USING _uptime_days d WHERE u.device_key = d.device_key AND u.day = d.day")
    conn.execute(
        "INSERT INTO uptime_daily (device_key, day, covered_us) " + UPTIME_SELECT.format(
            ranges="JOIN _uptime_ranges r ON r.device_key = st.device_key AND st.ts >= r.lo - h.hold AND st.ts < r.hi"
                   " AND st.ts >= %(states_from)s AND st.ts < %(states_to)s",
            days="JOIN _uptime_days d ON d.device_key = p.device_key AND d.day = p.day"),
        {"hold": UPTIME_HOLD_FACTOR, "states_from": states_from, "states_to": hi + timedelta(days=1)},
    )


def refresh_all_pending(conn: psycopg.Connection, *, max_device_days: int = 100_000) -> RollupRefresh:
    """Refresh until nothing is dirty; return the totals."""
    total_days = total_hourly = total_daily = 0
    while True:
        step = refresh_rollups(conn, max_device_days=max_device_days)
        total_days += step.device_days
        total_hourly += step.hourly_rows
        total_daily += step.daily_rows
        if step.pending == 0 or (step.device_days == 0 and step.pending != -1):
            return RollupRefresh(total_days, total_hourly, total_daily, 0)


def refresh_paced(conn: psycopg.Connection, *, batch_device_days: int, max_busy_share: float,
                  stopping: Event | None = None) -> RollupRefresh:
    """Refresh until nothing is dirty (or `stopping` is set), `batch_device_days` at a time, pausing after each
    batch so the refresh is busy at most `max_busy_share` of the time (like PostgreSQL's vacuum cost delay:
    background upkeep yields to the foreground writers)."""
    total_days = total_hourly = total_daily = 0
    while True:
        started = time.monotonic()
        step = refresh_rollups(conn, max_device_days=batch_device_days)
        total_days += step.device_days
        total_hourly += step.hourly_rows
        total_daily += step.daily_rows
        if step.pending <= 0 or step.device_days == 0:
            return RollupRefresh(total_days, total_hourly, total_daily, max(step.pending, 0))
        pause = (time.monotonic() - started) * (1 / max_busy_share - 1)
        if (stopping or Event()).wait(pause):
            return RollupRefresh(total_days, total_hourly, total_daily, step.pending)
