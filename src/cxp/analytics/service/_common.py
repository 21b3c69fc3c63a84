"""Private helpers shared by the service modules: plain values from frame cells, the resolved window, UTC days."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import psycopg

from cxp.analytics.core._frames import finite_or_none
from cxp.analytics.errors import InvalidParameter
from cxp.analytics.models import Window
from cxp.analytics.queries._base import Grain, week_start
from cxp.analytics.queries.registry import get_first_day, get_latest_day
from cxp.analytics.query import AnalyticsQuery

CHURN_INACTIVE_DAYS = 28  # no use for this long (or a cancellation/return) = churned


def count_or_zero(value: object) -> int:
    """An int, 0 for missing."""
    number = finite_or_none(value)
    return 0 if number is None else int(number)


def as_day(value: object) -> date | None:
    """A date from a date/timestamp-like value, None when missing."""
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        if pd.isna(value):  # type: ignore[arg-type]
            return None
    except (TypeError, ValueError):
        pass
    timestamp = pd.Timestamp(value)  # type: ignore[arg-type]
    if timestamp.tzinfo is not None:
        timestamp = timestamp.tz_convert("UTC").tz_localize(None)
    return timestamp.date()


def as_utc_datetime(value: object) -> datetime:
    """A tz-aware UTC datetime from a timestamp-like value (microsecond precision)."""
    timestamp = pd.Timestamp(value)  # type: ignore[arg-type]
    timestamp = timestamp.tz_localize("UTC") if timestamp.tzinfo is None else timestamp.tz_convert("UTC")
    return timestamp.floor("us").to_pydatetime()


def as_text(value: object) -> str | None:
    """A string, or None for any missing marker (None, NaN, pd.NA)."""
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def resolve_window(conn: psycopg.Connection, *, query: AnalyticsQuery, default_days: int) -> Window | None:
    """The period asked about: `end` defaults to the last day with data, `start` to `default_days` before it."""
    end = query.end if query.end is not None else get_latest_day(conn)
    if end is None:
        return None
    start = query.start
    if start is None:
        first = get_first_day(conn) or end
        # An `end` before the first data day gives an empty window (a "not enough data" answer), not an error.
        try:
            earliest = end - timedelta(days=default_days - 1)
        except OverflowError:  # an `end` near year 1
            earliest = date.min
        start = min(max(first, earliest), end)
    if start > end:
        raise InvalidParameter(f"start ({start}) must be on or before end ({end})")
    return Window(start=start, end=end, as_of=end)


def empty_window() -> Window:
    """Today (UTC, whatever the machine's zone) as a window: for answers about a database with nothing stored yet."""
    today = datetime.now(UTC).date()
    return Window(start=today, end=today, as_of=today)


def utc_days(values: pd.Series) -> pd.Series:
    """Timestamps/dates → naive midnight datetime64 (UTC days)."""
    return pd.to_datetime(values, utc=True).dt.tz_localize(None).dt.normalize()


def partial_period(*, period_start: date, period_end: date, window_start: date, window_end: date) -> bool:
    """Whether a week is only partly inside the window [window_start, window_end] (a day never is)."""
    if period_start == period_end:
        return False
    return period_start < window_start or period_end > window_end or (period_end - period_start).days < 6


def periods(start: date, end: date, grain: Grain) -> list[tuple[date, date]]:
    """(first day, last day) of each day/week period overlapping [start, end], the last one cut at `end`."""
    if grain == "day":
        return [(start + timedelta(days=k), start + timedelta(days=k)) for k in range((end - start).days + 1)]
    out = []
    period_start = week_start(start)
    while period_start <= end:
        out.append((period_start, min(period_start + timedelta(days=6), end)))
        period_start += timedelta(days=7)
    return out
