"""Touchpoints on a simulated fleet: the planted failing touchpoint is the least reliable, in "concentrate here"."""

from __future__ import annotations

import dataclasses

import pytest

from cxp.analytics import service
from cxp.analytics.models import TouchpointReport
from cxp.analytics.query import AnalyticsQuery
from tests.analytics.helpers import assert_no_nan

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def touchpoints(fleet_conn) -> TouchpointReport:
    """Touchpoint report over the whole simulated period."""
    return service.get_touchpoints(conn=fleet_conn, days=10_000)


def test_planted_touchpoint_is_least_reliable_and_to_concentrate_on(
    touchpoints: TouchpointReport, loaded_fleet
) -> None:
    product, touchpoint = loaded_fleet.error_prone
    planted = next(t for t in touchpoints.touchpoints if (t.product_id, t.touchpoint) == (product, touchpoint))
    # ranked by the upper 95% bound of the success rate, so a touchpoint with three uses cannot win by chance
    worst = min(touchpoints.touchpoints, key=lambda t: t.success_ci_high)
    assert (worst.product_id, worst.touchpoint) == (product, touchpoint)
    assert planted.success_rate < 0.8 and planted.uses > 1000
    assert planted.performance == min(t.performance for t in touchpoints.for_product(product))
    assert planted.quadrant == "concentrate here"
    imp_x, perf_y = touchpoints.crosshairs[product]
    assert planted.importance >= imp_x and planted.performance < perf_y


def test_touchpoint_figures_are_consistent(touchpoints: TouchpointReport) -> None:
    assert_no_nan(touchpoints)
    assert {t.product_id for t in touchpoints.touchpoints} == {"brew-c3", "ebike-s2", "thermo-x1"}
    for pid in ("brew-c3", "ebike-s2", "thermo-x1"):
        rows = touchpoints.for_product(pid)
        assert sum(t.usage_share for t in rows) == pytest.approx(1.0)
        assert sum(t.importance_usage for t in rows) == pytest.approx(100.0)
    for t in touchpoints.touchpoints:
        assert 0 <= t.reach <= 1 and t.devices >= 1
        assert t.success_ci_low <= t.success_rate <= t.success_ci_high
        assert t.journey_stage in ("pre_purchase", "purchase", "post_purchase")
        assert t.owner in ("brand", "partner", "customer", "external")
        # placed on the IPA chart only with a derived importance; usage share alone never places a touchpoint
        assert t.importance_basis.startswith("derived" if t.importance is not None else "not placed")
        placed = sum(u.importance is not None for u in touchpoints.for_product(t.product_id))
        assert (t.quadrant is None) == (t.importance is None or placed < 2)
        if t.quadrant is not None:
            assert t.quadrant in ("concentrate here", "keep up the good work", "low priority", "possible overkill")
        if t.classification is not None:
            assert t.classification in ("basic", "performance", "attractive", "indifferent")
            assert t.n_low >= 10 and t.n_high >= 10 and t.spread_ci_low <= t.spread <= t.spread_ci_high
        else:
            assert t.reason and t.reason.startswith(("not enough data", "no satisfaction answers"))
    core = {(t.product_id, t.touchpoint) for t in touchpoints.touchpoints if t.is_core}
    assert ("thermo-x1", "heating_cycle") in core and ("ebike-s2", "ride") in core


def test_outcome_models_state_their_evidence(touchpoints: TouchpointReport) -> None:
    assert {(m.product_id, m.outcome) for m in touchpoints.models} == {
        (p, o) for p in ("brew-c3", "ebike-s2", "thermo-x1") for o in ("retention", "feedback")
    }
    for m in touchpoints.models:
        assert m.n_devices >= 30 and 0 <= m.r2 <= 1 and 0 <= m.p_value <= 1
        assert m.significant == (m.p_value < 0.05)
        derived = [getattr(t, f"importance_{m.outcome}") for t in touchpoints.for_product(m.product_id)]
        # derived importance is used only where the model explains the outcome significantly
        assert any(d is not None for d in derived) == m.significant


def test_reach_counts_devices_in_scope(fleet_conn) -> None:
    one = service.get_touchpoints(conn=fleet_conn, query=AnalyticsQuery(product="thermo-x1"), days=10_000)
    assert {t.product_id for t in one.touchpoints} == {"thermo-x1"}
    heating = next(t for t in one.touchpoints if t.touchpoint == "heating_cycle")
    assert heating.reach == pytest.approx(1.0, abs=0.02)


def test_without_outcome_models_only_the_models_and_their_importances_are_left_out(
    fleet_conn, touchpoints: TouchpointReport
) -> None:
    lean = service.get_touchpoints(conn=fleet_conn, days=10_000, outcome_models=False)
    assert lean.models == () and touchpoints.models
    assert any(t.importance_retention is not None or t.n_retention for t in touchpoints.touchpoints)
    modelled = ("importance_retention", "importance_feedback", "rho_retention", "rho_feedback")
    for full, light in zip(touchpoints.touchpoints, lean.touchpoints, strict=True):
        assert all(getattr(light, name) is None for name in modelled)
        assert light.n_retention == light.n_feedback == 0
        blanked = dataclasses.replace(full, **{name: None for name in modelled}, n_retention=0, n_feedback=0)
        assert light == blanked
    assert lean.crosshairs == touchpoints.crosshairs
