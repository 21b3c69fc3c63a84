"""The rollups as stored and as computed afresh from raw events, in the same order: what the tests compare after
late and out-of-order data (the refresh that keeps them is `store.rollups`)."""

from __future__ import annotations

import psycopg

from cxp.store.errors import mapped_errors
from cxp.store.rollups import (
    ANSWER_COLUMNS,
    ANSWER_SELECT,
    DAILY_COLUMNS,
    DAILY_SELECT,
    FEEDBACK_DAILY_COLUMNS,
    FEEDBACK_DAILY_SELECT,
    FIRST_SUCCESS_SELECT,
    HOURLY_COLUMNS,
    HOURLY_SELECT,
    PRODUCT_ERROR_HOURLY_COLUMNS,
    PRODUCT_ERROR_HOURLY_SELECT,
    PRODUCT_HOURLY_COLUMNS,
    PRODUCT_HOURLY_SELECT,
    TOUCHPOINT_DAILY_COLUMNS,
    TOUCHPOINT_DAILY_SELECT,
    TOUCHPOINT_WEEKLY_COLUMNS,
    TOUCHPOINT_WEEKLY_SELECT,
    UPTIME_HOLD_FACTOR,
    UPTIME_SELECT,
    WEEKLY_COLUMNS,
    WEEKLY_SELECT,
)
from cxp.store.rollups_monthly import (
    MONTHLY_COLUMNS,
    MONTHLY_SELECT,
    TOUCHPOINT_MONTHLY_COLUMNS,
    TOUCHPOINT_MONTHLY_SELECT,
)

# Each error row's next success (migration 034) for every row: times grow with days, so the least first success of the
# later days is that of the next day with one.
NEXT_SUCCESS_RAW = """
SELECT x.*, CASE WHEN x.error_count > 0 AND x.touchpoint <> '' THEN min(x.success_times[1]) OVER (
    PARTITION BY x.device_key, x.touchpoint ORDER BY x.day ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) END
FROM ({rows}) x({columns})
"""
# Each answer's failure in the week before (migration 033) from raw events.
ANSWER_FAILED_BEFORE_RAW = """
SELECT x.*, EXISTS (
    SELECT 1 FROM events f
    WHERE f.device_key = x.device_key AND f.touchpoint = x.touchpoint AND f.kind = 'error'
      AND f.ts >= ((x.ts AT TIME ZONE 'UTC')::date - 7)::timestamp AT TIME ZONE 'UTC'
      AND f.ts < ((x.ts AT TIME ZONE 'UTC')::date)::timestamp AT TIME ZONE 'UTC')
FROM ({answers}) x
"""


def _rows(conn: psycopg.Connection, statement: str, params: dict | None = None) -> list[tuple]:
    """Every row one statement returns, database errors mapped to the store's."""
    with mapped_errors():
        return conn.execute(statement, params).fetchall()


def list_hourly_from_scratch(conn: psycopg.Connection) -> list[tuple]:
    """The hourly rollup aggregated afresh from every raw event, ordered like `list_hourly`."""
    return _rows(conn, HOURLY_SELECT.format(scope="") + " ORDER BY 1, 2, 3")


def list_daily_from_scratch(conn: psycopg.Connection) -> list[tuple]:
    """The daily rollup aggregated afresh (from the hourly rollup and raw rows)."""
    return _rows(conn, DAILY_SELECT.format(scope_hourly="", scope_events="", scope_state="") + " ORDER BY 1, 2")


def list_weekly_from_scratch(conn: psycopg.Connection) -> tuple[list[tuple], list[tuple]]:
    """The weekly rollups (per device, per device × touchpoint) afresh from the daily ones, ordered like
    `list_weekly`."""
    scope = {"scope_daily": "", "scope_touchpoints": ""}
    return (_rows(conn, WEEKLY_SELECT.format(**scope) + " ORDER BY 1, 2"),
            _rows(conn, TOUCHPOINT_WEEKLY_SELECT.format(**scope) + " ORDER BY 1, 2, 3"))


def list_monthly_from_scratch(conn: psycopg.Connection) -> tuple[list[tuple], list[tuple]]:
    """The monthly rollups (per device, per device × touchpoint) afresh from the daily ones and the covers, ordered
    like `list_monthly`."""
    scope = {"scope_daily": "", "scope_uptime": "", "scope_touchpoints": ""}
    return (_rows(conn, MONTHLY_SELECT.format(**scope) + " ORDER BY 1, 2"),
            _rows(conn, TOUCHPOINT_MONTHLY_SELECT.format(**scope) + " ORDER BY 1, 2, 3"))


def list_monthly(conn: psycopg.Connection) -> tuple[list[tuple], list[tuple]]:
    """Every stored monthly rollup row (per device, per device × touchpoint)."""
    return (_rows(conn, f"SELECT {MONTHLY_COLUMNS} FROM rollup_monthly ORDER BY 1, 2"),
            _rows(conn, f"SELECT {TOUCHPOINT_MONTHLY_COLUMNS} FROM rollup_touchpoint_monthly ORDER BY 1, 2, 3"))


def list_weekly(conn: psycopg.Connection) -> tuple[list[tuple], list[tuple]]:
    """Every stored weekly rollup row (per device, per device × touchpoint)."""
    return (_rows(conn, f"SELECT {WEEKLY_COLUMNS} FROM rollup_weekly ORDER BY 1, 2"),
            _rows(conn, f"SELECT {TOUCHPOINT_WEEKLY_COLUMNS} FROM rollup_touchpoint_weekly ORDER BY 1, 2, 3"))


def list_touchpoint_daily_from_scratch(conn: psycopg.Connection) -> list[tuple]:
    """The touchpoint-daily rollup afresh from the hourly one and raw events, with each error row's next success,
    ordered like `list_touchpoint_daily`."""
    rows = TOUCHPOINT_DAILY_SELECT.format(scope_hourly="", scope_events="")
    return _rows(conn, NEXT_SUCCESS_RAW.format(rows=rows, columns=TOUCHPOINT_DAILY_COLUMNS) + " ORDER BY 1, 2, 3")


def list_touchpoint_daily(conn: psycopg.Connection) -> list[tuple]:
    """Every stored touchpoint-daily rollup row, its `next_success_at` last."""
    return _rows(conn, f"SELECT {TOUCHPOINT_DAILY_COLUMNS}, next_success_at FROM rollup_touchpoint_daily"
                       " ORDER BY 1, 2, 3")


def list_first_success_from_scratch(conn: psycopg.Connection) -> list[tuple]:
    """Each device's first successful use of each touchpoint afresh from the touchpoint-daily rollup."""
    return _rows(conn, FIRST_SUCCESS_SELECT.format(scope="") + " ORDER BY 1, 2")


def list_first_success(conn: psycopg.Connection) -> list[tuple]:
    """Every kept first successful use per device × touchpoint."""
    return _rows(conn, "SELECT device_key, touchpoint, first_at FROM touchpoint_first_success ORDER BY 1, 2")


def list_core_uses_from_scratch(conn: psycopg.Connection) -> list[tuple]:
    """Each device-day's uses of its product's core touchpoints (the current catalogue) counted afresh from raw
    events, ordered like `list_core_uses`."""
    return _rows(
        conn,
        "SELECT e.device_key, (e.ts AT TIME ZONE 'UTC')::date, count(*)::int FROM events e"
        " JOIN devices dv ON dv.device_key = e.device_key"
        " JOIN touchpoints t ON t.product_id = dv.product_id AND t.touchpoint = e.touchpoint AND t.is_core"
        " WHERE e.kind = 'usage' GROUP BY 1, 2 ORDER BY 1, 2",
    )


def list_core_uses(conn: psycopg.Connection) -> list[tuple]:
    """Every daily rollup row's kept core uses, where there are any (migration 036)."""
    return _rows(conn, "SELECT device_key, day, core_usage_count FROM rollup_daily WHERE core_usage_count > 0"
                       " ORDER BY 1, 2")


def list_feedback_daily_from_scratch(conn: psycopg.Connection) -> list[tuple]:
    """The feedback-daily rollup afresh from raw events, ordered like `list_feedback_daily`."""
    return _rows(conn, FEEDBACK_DAILY_SELECT.format(scope="") + " ORDER BY 1, 2, 3, 4, 5")


def list_feedback_daily(conn: psycopg.Connection) -> list[tuple]:
    """Every stored feedback-daily rollup row."""
    return _rows(conn, f"SELECT {FEEDBACK_DAILY_COLUMNS} FROM rollup_feedback_daily ORDER BY 1, 2, 3, 4, 5")


def list_product_hourly_from_scratch(conn: psycopg.Connection) -> list[tuple]:
    """The product-hourly exposure afresh from the hourly rollup, ordered like `list_product_hourly`."""
    return _rows(conn, PRODUCT_HOURLY_SELECT.format(scope="") + " ORDER BY 1, 2, 3")


def list_product_hourly(conn: psycopg.Connection) -> list[tuple]:
    """Every stored product-hourly exposure row."""
    return _rows(conn, f"SELECT {PRODUCT_HOURLY_COLUMNS} FROM rollup_product_hourly ORDER BY 1, 2, 3")


def list_product_error_hourly_from_scratch(conn: psycopg.Connection) -> list[tuple]:
    """The product-hourly errors afresh from raw events, ordered like `list_product_error_hourly`."""
    return _rows(conn, PRODUCT_ERROR_HOURLY_SELECT.format(scope="") + " ORDER BY 1, 2, 3, 4")


def list_product_error_hourly(conn: psycopg.Connection) -> list[tuple]:
    """Every stored product-hourly error row."""
    return _rows(conn, f"SELECT {PRODUCT_ERROR_HOURLY_COLUMNS} FROM rollup_product_error_hourly"
                       " ORDER BY 1, 2, 3, 4")


def list_answer_context_from_scratch(conn: psycopg.Connection) -> list[tuple]:
    """Every answer's context computed afresh from raw events, ordered like `list_answer_context`."""
    return _rows(conn, ANSWER_FAILED_BEFORE_RAW.format(answers=ANSWER_SELECT.format(scope="")) + " ORDER BY 1, 2, 3")


def list_uptime_from_scratch(conn: psycopg.Connection) -> list[tuple]:
    """Every device-day's heartbeat cover computed afresh from raw states, ordered like `list_uptime`."""
    return _rows(conn, UPTIME_SELECT.format(ranges="", days="") + " ORDER BY 1, 2",
                       {"hold": UPTIME_HOLD_FACTOR})


def list_uptime(conn: psycopg.Connection) -> list[tuple]:
    """Every stored device-day heartbeat cover."""
    return _rows(conn, "SELECT device_key, day, covered_us FROM uptime_daily ORDER BY 1, 2")


def list_answer_context(conn: psycopg.Connection) -> list[tuple]:
    """Every stored answer context."""
    return _rows(conn, f"SELECT {ANSWER_COLUMNS}, failed_before FROM answer_context ORDER BY 1, 2, 3")


def list_hourly(conn: psycopg.Connection) -> list[tuple]:
    """Every stored hourly rollup row."""
    return _rows(conn, f"SELECT {HOURLY_COLUMNS} FROM rollup_hourly ORDER BY 1, 2, 3")


def list_daily(conn: psycopg.Connection) -> list[tuple]:
    """Every stored daily rollup row."""
    return _rows(conn, f"SELECT {DAILY_COLUMNS} FROM rollup_daily ORDER BY 1, 2")
