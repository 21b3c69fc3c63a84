"""Inputs read from the weekly rollups (whole weeks) equal those summed from the daily rollups."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from cxp.analytics.queries import _base as base
from cxp.analytics.queries import health as queries
from cxp.analytics.queries import touchpoints as touchpoint_queries
from cxp.analytics.query import AnalyticsQuery
from tests.fixtures.fleet import LoadedFleet

pytestmark = pytest.mark.integration


def _both(fleet_conn, monkeypatch, read, **kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    weekly = read(fleet_conn, **kw)
    with monkeypatch.context() as m:
        m.setattr(queries, "_last_whole_week", lambda start, end: None)  # every day from the daily rollups
        daily = read(fleet_conn, **kw)
    keys = [c for c in ("device_key", "period", "touchpoint") if c in weekly.columns]
    return (weekly.sort_values(keys, ignore_index=True), daily.sort_values(keys, ignore_index=True))


@pytest.mark.parametrize("extra_days", [0, 3])  # a window of whole weeks; one ending mid-week
@pytest.mark.parametrize("read", [queries.health_period_inputs, queries.latency_by_touchpoint])
def test_whole_weeks_from_the_weekly_rollup_equal_the_daily_sums(
    fleet_conn, loaded_fleet: LoadedFleet, monkeypatch, read, extra_days: int
) -> None:
    first = loaded_fleet.params["start"].date()
    start = first + timedelta(days=(7 - first.weekday()) % 7)  # the first Monday
    end = start + timedelta(days=20 + extra_days)  # three whole weeks, then part of a fourth
    assert queries._last_whole_week(start, end) == start + timedelta(days=14)
    for scope in (AnalyticsQuery(), AnalyticsQuery(product="ebike-s2")):
        weekly, daily = _both(fleet_conn, monkeypatch, read, scope=scope, start=start, end=end, grain="week")
        assert len(weekly) == len(daily) > 0
        assert weekly["period"].nunique() == 3 + (extra_days > 0)
        pd.testing.assert_frame_equal(weekly, daily, check_dtype=False, rtol=1e-12)


@pytest.mark.parametrize(("offset", "days"), [(2, 23), (0, 14), (3, 5), (6, 9)])  # mid-week; whole weeks; none
@pytest.mark.parametrize("read", [touchpoint_queries.touchpoint_totals, touchpoint_queries.device_touchpoints])
def test_touchpoint_sums_over_whole_weeks_and_edge_days_equal_the_daily_sums(
    fleet_conn, loaded_fleet: LoadedFleet, monkeypatch, read, offset: int, days: int
) -> None:
    first = loaded_fleet.params["start"].date()
    start = first + timedelta(days=(7 - first.weekday()) % 7 + offset)
    end = start + timedelta(days=days - 1)
    for scope in (AnalyticsQuery(), AnalyticsQuery(product="ebike-s2")):
        weekly = read(fleet_conn, scope=scope, start=start, end=end)
        with monkeypatch.context() as m:
            m.setattr(base, "whole_weeks", lambda start, end: None)  # every day from the daily rollups
            daily = read(fleet_conn, scope=scope, start=start, end=end)
        assert len(weekly) > 0
        pd.testing.assert_frame_equal(weekly, daily, check_dtype=False, rtol=1e-12)


def test_whole_weeks_are_exactly_the_monday_to_sunday_weeks_inside_the_window() -> None:
    origin = date(2026, 3, 2)  # a Monday
    for offset in range(7):
        for length in range(1, 30):
            start = origin + timedelta(days=offset)
            end = start + timedelta(days=length - 1)
            inside = [start + timedelta(days=i) for i in range(length)]
            expected = [d for d in inside if d.weekday() == 0 and d + timedelta(days=6) <= end]
            weeks = base.whole_weeks(start, end)
            assert weeks == ((expected[0], expected[-1]) if expected else None), (start, end)
