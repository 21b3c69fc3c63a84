"""Shared SQL plumbing: the scoped-devices CTE, running a query into a frame, UTC day and week helpers."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

import pandas as pd
import psycopg
from psycopg import sql

from cxp.analytics.query import AnalyticsQuery
from cxp.store.errors import mapped_errors

Grain = Literal["day", "week"]
Source = Literal["rollups", "raw"]
WEEK_ORIGIN = date(2000, 1, 3)  # a Monday: weeks are Monday–Sunday
CHURN_STAGES = ("cancelled", "returned")


def day_start(day: date) -> datetime:
    """00:00 UTC of a day."""
    return datetime.combine(day, time(0), tzinfo=UTC)


def week_start(day: date) -> date:
    """The Monday of the day's week."""
    return day - timedelta(days=day.weekday())


def fetch_frame(conn: psycopg.Connection, query: sql.Composable, params: dict[str, Any] | None = None) -> pd.DataFrame:
    """Run a query and return its rows as a DataFrame with the query's column names."""
    with mapped_errors(), conn.cursor() as cur:
        cur.execute(query, params or {})
        cols = [c.name for c in cur.description] if cur.description else []
        return pd.DataFrame(cur.fetchall(), columns=cols)


def _scoped_devices_sql(scope: AnalyticsQuery) -> tuple[sql.Composable, dict[str, Any]]:
    """`sel` CTE body: the scoped devices with product, account, segment and activation."""
    where: list[sql.Composable] = [sql.SQL("TRUE")]
    params: dict[str, Any] = {}
    for name, column in (
        ("product", ("d", "product_id")),
        ("segment", ("a", "segment")),
        ("account", ("d", "account_id")),
        ("device", ("d", "device_id")),
    ):
        value = getattr(scope, name)
        if value is not None:
            where.append(sql.SQL("{} = {}").format(sql.Identifier(*column), sql.Placeholder(f"scope_{name}")))
            params[f"scope_{name}"] = value
    if scope.devices is not None:
        where.append(sql.SQL("d.device_id = ANY({})").format(sql.Placeholder("scope_devices")))
        params["scope_devices"] = sorted(scope.devices)
    body = sql.SQL(
        "SELECT d.device_key, d.device_id, d.product_id, d.account_id, a.segment, d.activated_at,"
        " p.expected_active_days_per_week::float8 AS expected_active_days_per_week, p.heartbeat_interval_s"
        " FROM devices d JOIN products p ON p.product_id = d.product_id"
        " LEFT JOIN accounts a ON a.account_id = d.account_id WHERE {}"
    ).format(sql.SQL(" AND ").join(where))
    return body, params


def with_scoped_devices(
    scope: AnalyticsQuery, query: str | sql.Composable, **params: Any
) -> tuple[sql.Composable, dict[str, Any]]:
    """Prefix `query` (which may start with more CTEs after a comma) with the scoped `sel` CTE."""
    body, scope_params = _scoped_devices_sql(scope)
    statement = sql.SQL(query) if isinstance(query, str) else query
    # Not MATERIALIZED: a CTE used once is then inlined, which lets PostgreSQL scan rollups in parallel (2-3×).
    return sql.SQL("WITH sel AS ({}) ").format(body) + statement, {**scope_params, **params}


def scoped_join(scope: AnalyticsQuery) -> str:
    """The join that restricts a large scan to the scoped devices; none for the whole fleet, where the join
    only costs (it turns a parallel hash aggregate into a serial index-ordered merge)."""
    return "" if scope.is_all_devices else " JOIN sel USING (device_key)"


def period_start_sql(grain: Grain, day_expr: str) -> str:
    """SQL for the first day of the period a date falls in."""
    if grain == "day":
        return day_expr
    return f"time_bucket(INTERVAL '7 days', {day_expr}, DATE '{WEEK_ORIGIN.isoformat()}')"
