"""Journey funnel and time to first value for the devices that came online during the simulated period."""

from __future__ import annotations

import pandas as pd
import pytest

from cxp.analytics import service
from cxp.analytics.query import AnalyticsQuery
from tests.analytics.helpers import assert_no_nan

pytestmark = pytest.mark.integration


def test_funnel_counts_the_devices_onboarded_in_the_window(fleet_conn, loaded_fleet) -> None:
    report = service.get_journey(conn=fleet_conn, days=10_000)
    assert_no_nan(report)
    start = loaded_fleet.params["start"]
    onboarded = fleet_conn.execute("SELECT count(*) FROM devices WHERE activated_at >= %s", (start,)).fetchone()[0]
    stages = {s.stage: s for s in report.stages}
    assert list(stages) == ["registered", "activated", "first_core_use", "habitual"]
    assert stages["registered"].devices == onboarded > 50
    counts = [s.devices for s in report.stages]
    assert counts == sorted(counts, reverse=True)  # monotone: a stage counts only after every earlier one
    assert stages["activated"].conversion_from_previous > 0.95  # the simulator pairs every device (support helps)
    assert stages["first_core_use"].devices >= 0.9 * onboarded
    assert sum(c.registered for c in report.cohorts) == onboarded
    assert all(c.cohort >= "2025-03-03" for c in report.cohorts)
    assert report.churned is not None and 0 <= report.churn_rate < 0.5


def test_time_to_first_value_per_product(fleet_conn) -> None:
    report = service.get_journey(conn=fleet_conn, days=10_000)
    ttv = {t.product_id: t for t in report.time_to_value}
    assert set(ttv) == {"all", "brew-c3", "ebike-s2", "thermo-x1"}
    for t in ttv.values():
        assert t.n_reached <= t.n_activated and t.median_h is not None and 0 <= t.median_h <= t.p90_h
    # a thermostat heats within hours of installation; an e-bike waits for the next ride
    assert ttv["thermo-x1"].median_h < ttv["ebike-s2"].median_h


def test_churned_devices_in_the_funnel_are_simulated_churners(fleet_conn, loaded_fleet) -> None:
    exits = pd.DataFrame(
        fleet_conn.execute(
            "SELECT d.device_id FROM events e JOIN devices d USING (device_key)"
            " WHERE e.kind = 'lifecycle' AND e.stage IN ('cancelled', 'returned')"
        ).fetchall(),
        columns=["device_id"],
    )
    assert loaded_fleet.truth.loc[exits["device_id"], "churns"].all()


def test_empty_window_is_a_clear_state(fleet_conn) -> None:
    from datetime import date

    report = service.get_journey(conn=fleet_conn, query=AnalyticsQuery(start=date(2020, 1, 1), end=date(2020, 1, 31)))
    assert report.stages == () and report.reason.startswith("not enough data")
