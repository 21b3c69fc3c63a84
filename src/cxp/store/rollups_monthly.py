"""Per device × UTC month sums of the daily rollups (migration 040): what the pricing views bill and compare read,
~devices × months rows instead of every device-day of the period. Recomputed for each month holding a dirty day."""

from __future__ import annotations

import psycopg

_MONTH = "time_bucket('1 month', {d}.day)"

# The whole-device month: uses, successes, durations and quantities, active days (rollup_daily) and the heartbeat
# cover (uptime_daily); `{scope_daily}` / `{scope_uptime}` limit it to some device-months or not at all.
MONTHLY_SELECT = f"""
WITH d AS (
    SELECT r.device_key, {_MONTH.format(d="r")} AS month, sum(r.usage_count)::bigint AS usage_count,
           sum(r.success_count)::bigint AS success_count, sum(r.duration_sum) AS duration_sum,
           sum(r.quantity_sum) AS quantity_sum, count(*) FILTER (WHERE r.active)::int AS active_days
    FROM rollup_daily r {{scope_daily}}
    GROUP BY 1, 2
), c AS (
    SELECT u.device_key, {_MONTH.format(d="u")} AS month, sum(u.covered_us)::bigint AS covered_us
    FROM uptime_daily u {{scope_uptime}}
    GROUP BY 1, 2
)
SELECT coalesce(d.device_key, c.device_key), coalesce(d.month, c.month), coalesce(d.usage_count, 0),
       coalesce(d.success_count, 0), coalesce(d.duration_sum, 0), coalesce(d.quantity_sum, 0),
       coalesce(d.active_days, 0), coalesce(c.covered_us, 0)
FROM d FULL JOIN c ON c.device_key = d.device_key AND c.month = d.month
"""
MONTHLY_COLUMNS = ("device_key, month, usage_count, success_count, duration_sum, quantity_sum, active_days,"
                   " covered_us")
# The touchpoint month (rollup_touchpoint_daily); `{scope_touchpoints}` limits it.
TOUCHPOINT_MONTHLY_SELECT = f"""
SELECT h.device_key, {_MONTH.format(d="h")}, h.touchpoint, sum(h.usage_count)::bigint, sum(h.success_count)::bigint,
       sum(h.duration_sum), sum(h.quantity_sum)
FROM rollup_touchpoint_daily h {{scope_touchpoints}}
GROUP BY 1, 2, 3
"""
TOUCHPOINT_MONTHLY_COLUMNS = "device_key, month, touchpoint, usage_count, success_count, duration_sum, quantity_sum"


def _in_months(alias: str) -> str:
    return (f"{alias}.device_key = m.device_key AND {alias}.day >= m.month"
            f" AND {alias}.day < (m.month + INTERVAL '1 month')::date")


def refresh_months(conn: psycopg.Connection, *, days: str) -> None:
    """Recompute the monthly rollups of the device-months holding a day of the temporary table `days` (device_key,
    day), after the daily rollups and heartbeat covers of those days."""
    conn.execute("CREATE TEMP TABLE _rollup_months ON COMMIT DROP AS SELECT DISTINCT device_key,"
                 f" {_MONTH.format(d='d')} AS month FROM {days} d")
    conn.execute("ANALYZE _rollup_months")
    for table, select, columns in (("rollup_monthly", MONTHLY_SELECT, MONTHLY_COLUMNS),
                                   ("rollup_touchpoint_monthly", TOUCHPOINT_MONTHLY_SELECT,
                                    TOUCHPOINT_MONTHLY_COLUMNS)):
        conn.execute(f"DELETE FROM {table} t USING _rollup_months m WHERE t.device_key = m.device_key"
                     " AND t.month = m.month")
        conn.execute(f"INSERT INTO {table} ({columns}) " + select.format(
            scope_daily=f"JOIN _rollup_months m ON {_in_months('r')}",
            scope_uptime=f"JOIN _rollup_months m ON {_in_months('u')}",
            scope_touchpoints=f"JOIN _rollup_months m ON {_in_months('h')}"))
