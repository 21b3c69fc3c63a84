"""Journey map on the simulated fleet: stage columns, touchpoint cells, the planted fault as a pain point."""

from __future__ import annotations

import pytest

from cxp.analytics import service
from cxp.analytics.query import AnalyticsQuery
from tests.analytics.helpers import assert_no_nan
from tests.fixtures.fleet import LoadedFleet

pytestmark = pytest.mark.integration


def test_journey_map_of_the_error_prone_product(fleet_conn, loaded_fleet: LoadedFleet) -> None:
    product, touchpoint = loaded_fleet.error_prone
    m = service.get_journey_map(conn=fleet_conn, query=AnalyticsQuery(product=product), days=3650)
    assert_no_nan(m)
    assert m.reason is None
    assert [s.stage for s in m.stages][:2] == ["pre_purchase", "purchase"]
    post = [s for s in m.stages if s.stage == "post_purchase"]
    assert [s.lifecycle_stage for s in post] == ["registered", "activated", "first_core_use", "habitual"]
    assert all(s.drop_off_to_next is None or 0 <= s.drop_off_to_next <= 1 for s in post)
    assert post[-1].drop_off_to_next is None
    assert {c.product_id for c in m.cells} == {product}
    stages = {c.touchpoint: c.stage for c in m.cells}
    assert stages["referral_share"] == "pre_purchase" and stages["plan_checkout"] == "purchase"
    planted = next(c for c in m.cells if c.touchpoint == touchpoint)
    assert planted.pain and planted.stage == "post_purchase"
    assert f"{product}/{touchpoint}" in post[0].pain_points
    assert any(c.csat is not None and c.csat_n > 0 for c in m.cells)
    for c in m.cells:
        assert c.reach is None or 0 <= c.reach <= 1
