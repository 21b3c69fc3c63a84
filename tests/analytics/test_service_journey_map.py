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


def test_journey_map_of_one_persona_covers_its_devices_only(fleet_conn, loaded_fleet: LoadedFleet) -> None:
    query = AnalyticsQuery(product="thermo-x1")
    personas = service.get_segments(conn=fleet_conn, query=query, days=56, with_health=False)
    persona = personas.segments[0]
    members = {d for d, name in personas.assignments.items() if name == persona.name}
    whole = service.get_journey_map(conn=fleet_conn, query=query, days=56)
    narrowed = service.get_journey_map(conn=fleet_conn, query=query, days=56, persona=persona.name)
    assert_no_nan(narrowed)
    assert narrowed.reason is None and narrowed.persona == persona.name and narrowed.cells
    by_touchpoint = {c.touchpoint: c for c in whole.cells}
    for c in narrowed.cells:
        assert c.devices <= min(len(members), by_touchpoint[c.touchpoint].devices)
    # every persona member is a thermo-x1 device; the funnel counts only them
    funnel = [s for s in narrowed.stages if s.lifecycle_stage is not None]
    assert funnel and all(s.devices <= len(members) for s in funnel)
    assert sum(c.devices for c in narrowed.cells) < sum(c.devices for c in whole.cells)


def test_unknown_persona_says_not_enough_data(fleet_conn) -> None:
    m = service.get_journey_map(conn=fleet_conn, query=AnalyticsQuery(product="thermo-x1"), persona="Nobody at all")
    assert m.cells == () and "not enough data" in m.reason and "Nobody at all" in m.reason
