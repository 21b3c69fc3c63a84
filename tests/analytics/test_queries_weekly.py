"""Inputs read from the weekly rollups (whole weeks, and the week under way when no later day of it is stored) equal
those summed from the daily rollups."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from functools import partial

import pandas as pd
import pytest

from cxp.analytics.queries import _base as base
from cxp.analytics.queries import health as queries
from cxp.analytics.queries import touchpoints as touchpoint_queries
from cxp.analytics.query import AnalyticsQuery
from cxp.store.rollups import refresh_all_pending
from tests.fixtures.fleet import LoadedFleet
from tests.fixtures.planting import plant_days

pytestmark = pytest.mark.integration


def _days_only(patch) -> None:
    """Every day read from the daily rollups: no whole week and no week under way from the weekly ones."""
    none = lambda start, end: None  # noqa: E731
    for module, name in ((queries, "_last_whole_week"), (queries, "week_under_way"), (base, "whole_weeks"),
                         (base, "week_under_way")):
        patch.setattr(module, name, none)


def _both(fleet_conn, monkeypatch, read, **kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    weekly = read(fleet_conn, **kw)
    with monkeypatch.context() as m:
        _days_only(m)
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
@pytest.mark.parametrize("read", [touchpoint_queries.touchpoint_totals, touchpoint_queries.device_touchpoints,
                                  partial(touchpoint_queries.touchpoint_totals, per_device=False)])
def test_touchpoint_sums_over_whole_weeks_and_edge_days_equal_the_daily_sums(
    fleet_conn, loaded_fleet: LoadedFleet, monkeypatch, read, offset: int, days: int
) -> None:
    first = loaded_fleet.params["start"].date()
    start = first + timedelta(days=(7 - first.weekday()) % 7 + offset)
    end = start + timedelta(days=days - 1)
    for scope in (AnalyticsQuery(), AnalyticsQuery(product="ebike-s2")):
        weekly = read(fleet_conn, scope=scope, start=start, end=end)
        with monkeypatch.context() as m:
            _days_only(m)
            daily = read(fleet_conn, scope=scope, start=start, end=end)
        assert len(weekly) > 0
        pd.testing.assert_frame_equal(weekly, daily, check_dtype=False, rtol=1e-12)


@pytest.mark.parametrize(("offset", "days"), [(2, 23), (0, 14)])
def test_touchpoint_totals_summed_in_sql_equal_the_sums_of_the_per_device_rows(
    fleet_conn, loaded_fleet: LoadedFleet, offset: int, days: int
) -> None:
    first = loaded_fleet.params["start"].date()
    start = first + timedelta(days=offset)
    end = start + timedelta(days=days - 1)
    for scope in (AnalyticsQuery(), AnalyticsQuery(product="ebike-s2"), AnalyticsQuery(segment="smb")):
        summed = touchpoint_queries.touchpoint_totals(fleet_conn, scope=scope, start=start, end=end)
        in_sql = touchpoint_queries.touchpoint_totals(fleet_conn, scope=scope, start=start, end=end, per_device=False)
        assert len(summed) > 3 and (summed["devices"] > 0).all()
        pd.testing.assert_frame_equal(in_sql, summed, check_dtype=False, rtol=1e-12)


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


@contextmanager
def _weekly_rows_off_by_1000(db, week: date):
    """The week's weekly rows made to disagree with its days, for the block only (rolled back after)."""
    with db.transaction(force_rollback=True):
        db.execute("UPDATE rollup_weekly SET usage_count = usage_count + 1000 WHERE week = %s", (week,))
        db.execute("UPDATE rollup_touchpoint_weekly SET usage_count = usage_count + 1000,"
                   " clean_latency_sum = clean_latency_sum * 2 WHERE week = %s", (week,))
        yield


def test_the_week_under_way_is_read_whole_only_when_no_later_day_of_it_is_stored(db, registered, monkeypatch):
    today = datetime.now(UTC).date()
    last = today - timedelta(days=7 + (today.weekday() - 2) % 7)  # a Wednesday at least a week ago
    tail = last - timedelta(days=2)  # its Monday
    first = tail - timedelta(days=10)  # from a Friday: part of a week, a whole week, then the week under way
    plant_days(db, registered, first=first, last=last)
    refresh_all_pending(db)
    week_before = tail - timedelta(days=7)
    reads = {
        "health inputs": lambda scope, end: queries.health_period_inputs(db, scope=scope, start=week_before, end=end,
                                                                         grain="week"),
        "latency": lambda scope, end: queries.latency_by_touchpoint(db, scope=scope, start=week_before, end=end,
                                                                    grain="week"),
        "touchpoint totals": lambda scope, end: touchpoint_queries.touchpoint_totals(db, scope=scope, start=first,
                                                                                     end=end),
        "device touchpoints": lambda scope, end: touchpoint_queries.device_touchpoints(db, scope=scope, start=first,
                                                                                       end=end),
    }
    for scope in (AnalyticsQuery(), AnalyticsQuery(product="test-p1")):
        for name, read in reads.items():
            for end in (last, last - timedelta(days=1)):  # no later day stored; Wednesday stored after it
                with monkeypatch.context() as m:
                    _days_only(m)
                    daily = read(scope, end)
                assert len(daily) > 0, name
                pd.testing.assert_frame_equal(read(scope, end), daily, check_dtype=False, rtol=1e-12, obj=name)
                with _weekly_rows_off_by_1000(db, tail):
                    read_whole = read(scope, end)
                if end == last:  # the weekly row of the week under way was read, not its days
                    column = "observed_mean" if name == "latency" else "uses"
                    assert not read_whole[column].equals(daily[column]), name
                else:  # a day after `end` is stored in that week: its days were read
                    pd.testing.assert_frame_equal(read_whole, daily, check_dtype=False, rtol=1e-12, obj=name)
