"""Experience Health Score on a simulated fleet in the real database: levels, grains, sources, degraded driver."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from cxp.analytics import service
from cxp.analytics.core.health import COMPONENTS
from cxp.analytics.models import HealthReport
from cxp.analytics.query import AnalyticsQuery
from cxp.analytics.service.health import device_scores
from tests.analytics.helpers import assert_no_nan
from tests.fixtures.fleet import LoadedFleet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def product_health(fleet_conn) -> HealthReport:
    """Weekly product-level health over the whole simulated period."""
    return service.get_health(conn=fleet_conn, level="product", weeks=8)


@pytest.fixture(scope="module")
def device_health(fleet_conn) -> HealthReport:
    """Weekly device-level health over the whole simulated period."""
    return service.get_health(conn=fleet_conn, level="device", weeks=8)


def test_error_prone_product_has_lowest_reliability_and_it_is_the_top_negative_driver(
    product_health: HealthReport, loaded_fleet: LoadedFleet
) -> None:
    product, _ = loaded_fleet.error_prone
    weeks = sorted({s.period_start for s in product_health.scores})
    assert len(weeks) == 8
    for week in weeks:
        rows = {s.entity_id: s for s in product_health.scores if s.period_start == week}
        assert set(rows) == {"brew-c3", "ebike-s2", "thermo-x1"}
        worst = min(rows.values(), key=lambda s: s.components["reliability"])
        assert worst.entity_id == product, week
        assert rows[product].top_negative_drivers[0] == "reliability", (week, rows[product].drivers)
        top = min(rows[product].drivers, key=lambda d: d.contribution)
        assert top.component == "reliability" and top.contribution < 0


def test_health_reports_are_complete_typed_and_nan_free(device_health: HealthReport, loaded_fleet: LoadedFleet) -> None:
    assert_no_nan(device_health)
    assert device_health.reason is None and device_health.level == "device"
    latest = device_health.latest()
    assert 0.8 * len(loaded_fleet.truth) <= len(latest) <= len(loaded_fleet.truth)
    for s in device_health.scores:
        assert s.score is None or 0 <= s.score <= 100
        assert (s.band is None) == (s.score is None)
        if s.score is not None:
            assert s.band == ("red" if s.score < 50 else "amber" if s.score < 70 else "green")
            assert sum(w for w in s.weights.values() if w) == pytest.approx(1.0)
        assert s.segment == s.product_id  # devices are compared with their product's median
        assert all(d.component in COMPONENTS for d in s.drivers)
        assert [d.contribution for d in s.drivers] == sorted(d.contribution for d in s.drivers)
    history = device_health.history(latest[0].entity_id)
    assert [h.period_start for h in history] == sorted(h.period_start for h in history)
    assert all(h.previous_score is not None for h in history[1:])


def test_capped_devices_have_poor_reliability(device_health: HealthReport) -> None:
    capped = [s for s in device_health.scores if s.capped]
    for s in capped:
        assert s.components["reliability"] < 60 and s.score <= s.components["reliability"] + 10 + 1e-9


def test_error_prone_devices_score_lower_reliability_than_peers(device_health: HealthReport, loaded_fleet) -> None:
    product, _ = loaded_fleet.error_prone
    by_product: dict[str, list[float]] = {}
    for s in device_health.latest():
        if s.components["reliability"] is not None:
            by_product.setdefault(s.product_id, []).append(s.components["reliability"])
    means = {p: sum(v) / len(v) for p, v in by_product.items()}
    assert min(means, key=means.get) == product


def test_account_and_fleet_levels_roll_up_the_devices(fleet_conn, device_health: HealthReport) -> None:
    fleet = service.get_health(conn=fleet_conn, level="fleet", weeks=8)
    accounts = service.get_health(conn=fleet_conn, level="account", weeks=8)
    assert_no_nan(fleet)
    last_week = device_health.latest()[0].period_start
    devices_last_week = sum(1 for s in device_health.scores if s.period_start == last_week)
    assert fleet.latest()[0].devices == devices_last_week
    assert sum(s.devices for s in accounts.scores if s.period_start == last_week) == devices_last_week
    assert {s.segment for s in accounts.scores} <= {"consumer", "smb"}
    assert fleet.latest()[0].score is not None and len(fleet.scores) == 8


def test_rollups_and_raw_events_give_the_same_health(fleet_conn) -> None:
    kw = {"level": "device", "query": AnalyticsQuery(product="ebike-s2"), "weeks": 3}
    fast = {(s.entity_id, s.period_start): s for s in service.get_health(conn=fleet_conn, **kw).scores}
    raw = {(s.entity_id, s.period_start): s for s in service.get_health(conn=fleet_conn, source="raw", **kw).scores}
    assert fast.keys() == raw.keys() and len(fast) > 100
    diffs: Counter[str] = Counter()
    for key, a in fast.items():
        b = raw[key]
        for c in ("engagement", "trajectory", "voice"):
            assert a.components[c] == pytest.approx(b.components[c], abs=1e-9), (key, c)
        # uptime (interval counting vs the exact 1.5 × rule) and efficiency (fully successful hours vs successful
        # uses) are estimated slightly differently from the rollups
        for c, tol in (("reliability", 3.0), ("efficiency", 5.0)):
            if a.components[c] is None or b.components[c] is None:
                assert a.components[c] is None and b.components[c] is None
            elif abs(a.components[c] - b.components[c]) > tol:
                diffs[c] += 1
    assert diffs["reliability"] <= 0.02 * len(fast) and diffs["efficiency"] <= 0.05 * len(fast), diffs


def test_daily_grain_and_single_device_scope(fleet_conn, device_health: HealthReport) -> None:
    device_id = device_health.latest()[0].entity_id
    daily = service.get_health(conn=fleet_conn, query=AnalyticsQuery(device=device_id), level="device", grain="day")
    assert {s.entity_id for s in daily.scores} == {device_id}
    assert 1 <= len(daily.scores) <= 28
    assert all(s.period_start == s.period_end for s in daily.scores)
    assert_no_nan(daily)


def test_unknown_scope_is_a_clear_not_enough_data_state(fleet_conn) -> None:
    report = service.get_health(conn=fleet_conn, query=AnalyticsQuery(product="no-such-product"))
    assert report.scores == () and report.reason and report.reason.startswith("not enough data")


def test_a_week_the_window_covers_only_in_part_is_flagged(fleet_conn, loaded_fleet: LoadedFleet) -> None:
    # Data from a Wednesday to a Saturday: the first and the last week are partial, the ones between whole.
    start = loaded_fleet.params["start"].date() + timedelta(days=2)
    end = start + timedelta(days=24)
    report = service.get_health(conn=fleet_conn, query=AnalyticsQuery(start=start, end=end), level="fleet")
    flags = [(s.period_start, s.partial) for s in report.scores]
    assert [p for _, p in flags] == [True, False, False, True], flags
    assert flags[0][0] < start and report.scores[-1].period_end == end
    daily = service.get_health(conn=fleet_conn, query=AnalyticsQuery(start=start, end=end), level="fleet", grain="day")
    assert not any(s.partial for s in daily.scores)


def test_device_scores_are_the_scores_of_the_health_report(fleet_conn, device_health: HealthReport) -> None:
    frame = device_scores(conn=fleet_conn, query=AnalyticsQuery(), weeks=8)
    expected = [(s.entity_id, s.score) for s in device_health.scores]
    got = [(d, None if score != score else score) for d, score in zip(frame["device_id"], frame["score"], strict=True)]
    assert got == expected and any(score is not None for _, score in got)
