"""Smart-capability ladder on the simulated fleet: levels from the catalogue, climbers healthier and churn less."""

from __future__ import annotations

import pytest

from cxp.analytics import service
from cxp.analytics.core.ladder import LEVELS
from cxp.analytics.models_measures import LadderReport
from cxp.analytics.query import AnalyticsQuery
from tests.analytics.helpers import assert_no_nan
from tests.fixtures.fleet import LoadedFleet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ladder(fleet_conn) -> LadderReport:
    return service.get_capability_ladder(conn=fleet_conn, weeks=8)


def test_levels_follow_the_catalogue_and_shares_are_consistent(ladder: LadderReport, loaded_fleet) -> None:
    assert_no_nan(ladder)
    assert ladder.reason is None
    overall = [lv for lv in ladder.levels if lv.segment is None]
    by_product = {p: [lv.level for lv in overall if lv.product_id == p] for p in {lv.product_id for lv in overall}}
    # thermostat's session touchpoints span control, optimisation and autonomy (+ the app's monitoring)
    assert by_product["thermo-x1"] == list(LEVELS)
    for levels in by_product.values():
        assert levels == sorted(levels, key=LEVELS.index)
    assert sum({lv.product_id: lv.devices for lv in overall}.values()) == len(loaded_fleet.truth)
    for lv in ladder.levels:
        assert 0 <= lv.reached <= lv.devices and (lv.share is None or 0 <= lv.share <= 1)
        assert lv.median_days_to_reach is None or lv.median_days_to_reach >= 0
    for lv in overall:
        parts = [
            s for s in ladder.levels if s.segment is not None and (s.product_id, s.level) == (lv.product_id, lv.level)
        ]
        assert sum(s.reached for s in parts) == lv.reached


def test_climbers_are_healthier(ladder: LadderReport, loaded_fleet: LoadedFleet) -> None:
    # The seed-7 proof fleet is built without the ladder plant: climbing follows the personas' feature mix, so
    # climbers are healthier; its churn contrast has no planted direction (test_service_ladder_planted.py proves
    # the planted ladder, churn included, on fleets built with `ladder=True`).
    compared = [c for c in ladder.contrasts if c.health.difference is not None]
    for c in ladder.contrasts:
        print(c.product_id, c.climbers, c.others, c.health, c.churn)
        assert c.climbers + c.others == (loaded_fleet.truth["product_id"] == c.product_id).sum()
        if c.others < 10 or c.climbers < 10:
            assert c.health.difference is None and "not enough data" in c.health.reason
    assert len(compared) >= 2
    for c in compared:
        assert c.health.difference > 0 and c.health.ci_low > 0, c
        churn = c.churn
        assert churn.difference is not None and churn.ci_low <= churn.difference <= churn.ci_high


def test_small_scope_says_not_enough_data(fleet_conn) -> None:
    one = service.get_capability_ladder(conn=fleet_conn, query=AnalyticsQuery(account="no-such-account"))
    assert one.reason is not None and "not enough data" in one.reason
