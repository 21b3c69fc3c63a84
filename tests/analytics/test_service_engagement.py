"""Engagement rate on the simulated fleet: it moves with the health engagement component, and it recovers the
planted persona rhythms (casual users are engaged less often than routine and power users)."""

from __future__ import annotations

import pytest

from cxp.analytics import service
from cxp.analytics.core.engagement import EngagementRule, engagement_rates
from cxp.analytics.models_measures import EngagementReport
from cxp.analytics.query import AnalyticsQuery
from cxp.analytics.service.engagement import engagement_device_rows
from tests.analytics.helpers import assert_no_nan
from tests.fixtures.fleet import LoadedFleet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def report(fleet_conn) -> EngagementReport:
    return service.get_engagement_rate(conn=fleet_conn, weeks=8)


def test_report_is_complete_and_consistent(report: EngagementReport, loaded_fleet: LoadedFleet) -> None:
    assert_no_nan(report)
    assert report.reason is None
    assert set(report.definitions) == {"brew-c3", "ebike-s2", "thermo-x1"}
    assert "4 days/week" in report.definitions["ebike-s2"] and "7 days/week" in report.definitions["thermo-x1"]
    overall = [r for r in report.rates if r.segment is None]
    assert len(overall) == 3 * 8
    for r in overall:
        parts = [
            s
            for s in report.rates
            if s.segment is not None and (s.product_id, s.period_start) == (r.product_id, r.period_start)
        ]
        assert sum(s.reached for s in parts) == r.reached and sum(s.engaged for s in parts) == r.engaged
        assert r.rate is not None and r.ci_low <= r.rate <= r.ci_high
    # devices come online through the window and churners leave it: the busiest week reaches most of the fleet
    weekly = {}
    for r in overall:
        weekly[r.period_start] = weekly.get(r.period_start, 0) + r.reached
    assert 0.7 * len(loaded_fleet.truth) <= max(weekly.values()) <= len(loaded_fleet.truth), weekly


def test_rate_agrees_with_the_engagement_component(report: EngagementReport) -> None:
    # across product × segment × week groups, a higher rate goes with a higher mean engagement component
    assert report.rank_agreement is not None and report.rank_agreement >= 0.6, report.rank_agreement
    print("rank agreement", round(report.rank_agreement, 3))
    for trend in report.trends:
        if trend.segment is None:
            print(trend)
            # week-to-week moves of the product's rate and of its component go the same way
            assert trend.direction_agreement is not None and trend.direction_agreement >= 0.6, trend


def test_planted_persona_rhythm_is_recovered(fleet_conn, loaded_fleet: LoadedFleet) -> None:
    rows, _ = engagement_device_rows(conn=fleet_conn, query=AnalyticsQuery(), weeks=8)
    rows = rows.merge(loaded_fleet.truth[["persona"]], left_on="entity_id", right_index=True)
    rates = engagement_rates(frame=rows, by=["product_id", "persona"], rule=EngagementRule(), min_n=20)
    table = rates.set_index(["product_id", "persona"])["rate"]
    print(rates[["product_id", "persona", "reached", "rate"]].to_string())
    for product in ("brew-c3", "ebike-s2", "thermo-x1"):
        # active-day factor casual 0.5 < routine 1.0 < power 1.15
        assert table[(product, "casual")] + 15 < table[(product, "routine_user")], product
        assert table[(product, "routine_user")] <= table[(product, "power_user")] + 5, product


def test_scoped_to_one_product_and_segment(fleet_conn) -> None:
    scoped = service.get_engagement_rate(conn=fleet_conn, query=AnalyticsQuery(product="ebike-s2"), weeks=4)
    assert {r.product_id for r in scoped.rates} == {"ebike-s2"}
    assert set(scoped.definitions) == {"ebike-s2"}
    assert len({r.period_start for r in scoped.rates}) == 4


def test_engagement_rows_equal_those_of_the_whole_health_frame(fleet_conn) -> None:
    # The rate reads only the engagement component (no kept trajectory, voice or efficiency): the same rows and
    # engagement values as the full health frame, and the other components are not computed.
    rows, _ = engagement_device_rows(conn=fleet_conn, weeks=8)
    whole, _ = service.health_frames(conn=fleet_conn, level="device", weeks=8)
    columns = ["entity_id", "period", "active_days", "days_in_period", "stickiness_score", "breadth_score",
               "engagement"]
    assert len(rows) > 1000
    assert rows[columns].reset_index(drop=True).equals(whole[columns].reset_index(drop=True))
    assert rows[["trajectory", "voice", "efficiency"]].isna().all().all()
    assert whole[["trajectory", "voice"]].notna().any().all()
