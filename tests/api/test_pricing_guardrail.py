"""The guardrail of a running experiment through the API: recorded looks, boundaries spending α over every look."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from scipy import stats as sps

from cxp.pricing.core.experiments import ExperimentDesign
from cxp.pricing.core.sequential import boundaries
from cxp.pricing.examples import example_metrics
from cxp.pricing.repository import get_plans_by_key
from cxp.pricing.service import get_experiment_results
from tests.api.test_pricing_api import _experiment

pytestmark = pytest.mark.integration

START, END = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)


def _fraction(as_of: datetime) -> float:
    return min(1.0, (as_of - START) / (END - START))


def test_looks_are_recorded_and_each_boundary_accounts_for_the_earlier_ones(pricing_fleet, test_db_api) -> None:
    design = _experiment(test_db_api)
    url = f"/v1/pricing/experiments/{design['experiment_id']}/guardrail-checks"
    first = test_db_api.post(url, role="pricing", json={"as_of": "2026-01-16T00:00:00Z"})
    assert first.status_code == 200, first.text
    look = first.json()
    t1 = _fraction(datetime(2026, 1, 16, tzinfo=UTC))
    assert look["look"] == 1 and look["recorded"] and not look["final"]
    assert look["information_fraction"] == pytest.approx(t1)
    (arm,) = look["arms"]
    assert arm["arm"] == "hybrid" and arm["boundary_z"] == pytest.approx(boundaries(fractions=[t1])[0], abs=1e-4)
    assert arm["stop"] == (arm["z"] is not None and arm["z"] <= -arm["boundary_z"] and arm["estimate"] < 0)
    # The z is the health difference on what was recorded by then, as the results endpoint computes it.
    stored = ExperimentDesign.model_validate(design)
    plans = get_plans_by_key(pricing_fleet.conn, keys=[a.plan_key for a in stored.arms])
    metrics = tuple(m for m in example_metrics() if m.name not in {x.name for p in plans.values() for x in p.metrics})
    res = get_experiment_results(conn=pricing_fleet.conn, design=stored, plans=tuple(plans.values()),
                                 metrics=metrics, until=datetime(2026, 1, 16, tzinfo=UTC))
    health = res.difference(metric="health", arm="hybrid")
    assert arm["estimate"] == pytest.approx(health.estimate)
    assert abs(arm["z"]) == pytest.approx(sps.norm.isf(health.p_value / 2), rel=1e-6)
    assert math.copysign(1, arm["z"]) == math.copysign(1, health.estimate)

    # Asking again within 1 % of information returns the same look, recording nothing.
    again = test_db_api.post(url, role="pricing", json={"as_of": "2026-01-16T06:00:00Z"}).json()
    assert again["look"] == 1 and not again["recorded"]
    second = test_db_api.post(url, role="pricing", json={"as_of": "2026-02-10T00:00:00Z"}).json()
    t2 = _fraction(datetime(2026, 2, 10, tzinfo=UTC))
    assert second["look"] == 2 and second["recorded"]
    assert second["arms"][0]["boundary_z"] == pytest.approx(boundaries(fractions=[t1, t2])[1], abs=1e-3)
    assert second["arms"][0]["alpha_spent"] > look["arms"][0]["alpha_spent"]

    # Looks go forward in time, with the spending function chosen at the first.
    back = test_db_api.post(url, role="pricing", json={"as_of": "2026-01-20T00:00:00Z"})
    assert back.status_code == 422 and "later look" in back.text
    other = test_db_api.post(url, role="pricing", json={"as_of": "2026-02-20T00:00:00Z", "spending": "pocock"})
    assert other.status_code == 422 and "fixed at the first look" in other.text

    final = test_db_api.post(url, role="pricing", json={"as_of": "2026-03-05T00:00:00Z"}).json()
    assert final["look"] == 3 and final["final"] and final["information_fraction"] == 1.0
    assert final["arms"][0]["alpha_spent"] == pytest.approx(0.05)
    after = test_db_api.post(url, role="pricing", json={"as_of": "2026-03-09T00:00:00Z"}).json()
    assert after["look"] == 3 and not after["recorded"]

    listed = test_db_api.get(url, role="pricing").json()
    assert [x["look"] for x in listed] == [1, 2, 3]
    assert [x["information_fraction"] for x in listed] == sorted(x["information_fraction"] for x in listed)


def test_guardrail_requests_that_cannot_be_answered(pricing_fleet, test_db_api) -> None:
    design = _experiment(test_db_api)
    url = f"/v1/pricing/experiments/{design['experiment_id']}/guardrail-checks"
    assert test_db_api.post(url, role="product", json={}).status_code == 403
    missing = test_db_api.post("/v1/pricing/experiments/no-such-exp/guardrail-checks", role="pricing", json={})
    assert missing.status_code == 404
    for body, words in (({"as_of": "2025-12-01T00:00:00Z"}, "nothing to look at"),
                        ({"as_of": "2026-01-10T00:00:00"}, "timezone"),
                        ({"alpha": 0.7}, "alpha"), ({"spending": "bonferroni"}, "spending")):
        r = test_db_api.post(url, role="pricing", json=body)
        assert r.status_code == 422 and words in r.text, (body, r.text)
    assert test_db_api.get(url, role="pricing").json() == []
