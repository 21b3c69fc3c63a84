"""The kept per-device health inputs at the end of whole weeks (`health_weekly`, migration 031): read and write back."""

from __future__ import annotations

from datetime import date

import pandas as pd
import psycopg

from cxp.analytics.queries._base import (
    CHURN_STAGES,
    Grain,
    fetch_frame,
    period_start_sql,
    scoped_join,
    with_scoped_devices,
)
from cxp.analytics.queries.health import FEEDBACK_COUNT_COLUMNS
from cxp.analytics.query import AnalyticsQuery

KEPT_COLUMNS = ("activated_on", "bucket_days", "points", "slope_per_day", "last_active_on", *FEEDBACK_COUNT_COLUMNS,
                "efficiency", "targets_key")
# Kept only for weeks over at least a day before the database's today: the rollup refresh marks the weeks over by
# its own today, so a refresh that started just before midnight still marks what a writer just after may keep.
KEEP_AFTER_DAYS = 1


def database_today(conn: psycopg.Connection) -> date:
    """The database's current UTC date (the clock the rollup refresh marks weeks by)."""
    return conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchone()[0]


def count_kept_health_weeks(conn: psycopg.Connection) -> tuple[int, int]:
    """(fresh, stale) kept rows."""
    return conn.execute("SELECT count(*) FILTER (WHERE NOT stale), count(*) FILTER (WHERE stale)"
                        " FROM health_weekly").fetchone()


def stale_health_weeks(conn: psycopg.Connection, *, since: date, until: date) -> tuple[list[str], date | None]:
    """The devices with a stale kept row for a whole week in [since, until] they were customers in (activated by its
    Sunday, no cancellation or return before its Monday: rows of other weeks are never computed), and the earliest
    such week."""
    rows = conn.execute(
        "SELECT d.device_id, min(k.week) FROM health_weekly k JOIN devices d USING (device_key)"
        " WHERE k.stale AND k.week >= %(since)s AND k.week + 6 <= %(until)s"
        "   AND (d.activated_at AT TIME ZONE 'UTC')::date <= k.week + 6"
        "   AND NOT EXISTS (SELECT 1 FROM events e WHERE e.device_key = k.device_key AND e.kind = 'lifecycle'"
        "     AND e.stage = ANY(%(stages)s) AND e.ts < k.week::timestamp AT TIME ZONE 'UTC')"
        " GROUP BY 1", {"since": since, "until": until, "stages": list(CHURN_STAGES)}).fetchall()
    return [r[0] for r in rows], min((r[1] for r in rows), default=None)


def kept_health_weeks(
    conn: psycopg.Connection, *, scope: AnalyticsQuery, first_week: date, last_week: date
) -> pd.DataFrame:
    """The fresh (not stale) kept rows of the scoped devices for the weeks [first_week, last_week] (Mondays):
    device_key, week, *KEPT_COLUMNS."""
    statement, params = with_scoped_devices(
        scope,
        f"SELECT k.device_key, k.week, {', '.join('k.' + c for c in KEPT_COLUMNS)}"
        " FROM health_weekly k" + scoped_join(scope)
        + " WHERE k.week BETWEEN %(first)s AND %(last)s AND NOT k.stale",
        first=first_week,
        last=last_week,
    )
    return fetch_frame(conn, statement, params)


def last_use_before_periods(conn: psycopg.Connection, *, scope: AnalyticsQuery, first_day: date,
                            grain: Grain) -> pd.DataFrame:
    """Per scoped device, the last day with a use before its first period in the window: before `first_day`, or
    before the period its activation falls in when that is later (device_key, last_use_on)."""
    activation_period = period_start_sql(grain, "(sel.activated_at AT TIME ZONE 'UTC')::date")
    # Each device's latest active day backwards along the primary key: one short probe per device instead of an
    # aggregate over every row before the window (which, at the start of the history, finds none).
    statement, params = with_scoped_devices(
        scope,
        "SELECT sel.device_key, l.day AS last_use_on FROM sel CROSS JOIN LATERAL ("
        " SELECT r.day FROM rollup_daily r WHERE r.device_key = sel.device_key AND r.active"
        f" AND r.day < greatest(%(first)s, {activation_period}) ORDER BY r.day DESC LIMIT 1) l",
        first=first_day,
    )
    return fetch_frame(conn, statement, params)


def write_health_weeks(conn: psycopg.Connection, *, rows: pd.DataFrame) -> int:
    """Upsert computed rows (device_key, week, *KEPT_COLUMNS) as fresh; returns how many were written.

    Run it in the repeatable-read transaction the rows were computed in: a row the rollup refresh marked stale
    after that snapshot then fails the write (serialization failure) instead of being overwritten with old values.
    """
    if rows.empty:
        return 0
    columns = ("device_key", "week", *KEPT_COLUMNS)
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _health_rows (LIKE health_weekly INCLUDING DEFAULTS)"
                 " ON COMMIT DELETE ROWS")
    # Python values column by column (psycopg adapts them; numpy scalars it may not), missing as None.
    values = [[None if pd.isna(v) else v for v in rows[c].tolist()] for c in columns]
    with conn.cursor() as cur, cur.copy(f"COPY _health_rows ({', '.join(columns)}) FROM STDIN") as copy:
        for record in zip(*values, strict=True):
            copy.write_row(record)
    updates = ", ".join(f"{c} = excluded.{c}" for c in KEPT_COLUMNS)
    written = conn.execute(
        f"INSERT INTO health_weekly ({', '.join(columns)}) SELECT {', '.join(columns)} FROM _health_rows"
        f" ORDER BY device_key, week ON CONFLICT (device_key, week) DO UPDATE SET stale = false, {updates}"
    ).rowcount
    conn.execute("DELETE FROM _health_rows")
    return written

