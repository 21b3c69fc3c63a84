"""Price solving and trade-off curves over the API on the pricing fleet: same answers as the library, jobs, 4xx."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

from cxp.api.app import create_app
from cxp.pricing.core.solve import FreeParameter, MaximiseRevenue, RevenueTarget
from cxp.pricing.decisions import get_tradeoff_curve, solve_prices
from cxp.pricing.examples import example_metrics, example_plans
from cxp.pricing.metrics import Cohort
from cxp.store.apikeys import create_key
from cxp.store.db import connect
from cxp.tools.bench.pricing_solve import HYBRID, UNIT

pytestmark = pytest.mark.integration

PERIOD = {"start_month": "2026-01", "months": 2}
COHORT = {"product": "thermo-x1"}
BASE = next(p for p in example_plans() if p.plan_id == "hw-connect")
PRICE = {"component": "energy", "field": "charge.unit_price", "lower": "0.0001", "upper": "0.2", "step": "0.0001"}
HYB = [
    {"component": "energy", "field": "base_fee", "lower": "0", "upper": "5", "step": "0.01"},
    {"component": "energy", "field": "overage.unit_price", "lower": "0", "upper": "0.02", "step": "0.0001"},
]


def _param(d: dict) -> FreeParameter:
    return FreeParameter(d["component"], d["field"], Decimal(d["lower"]), Decimal(d["upper"]), Decimal(d["step"]))


def _body(plan, params, **extra) -> dict:
    return {"baseline": BASE.model_dump(mode="json"), "plan": plan.model_dump(mode="json"), "period": PERIOD,
            "cohort": COHORT, "parameters": params, **extra}


def _lib(pricing_fleet, plan, params, goal):
    return solve_prices(conn=pricing_fleet.conn, baseline=BASE, plan=plan, parameters=[_param(p) for p in params],
                        goal=goal, period=pricing_fleet.period, cohort=Cohort(product="thermo-x1"),
                        metrics=example_metrics())


def test_revenue_neutral_solve_equals_the_library(pricing_fleet, test_db_api) -> None:
    r = test_db_api.post("/v1/pricing/solve", role="pricing",
                         json=_body(UNIT, [PRICE], goal={"kind": "revenue_target"}))
    assert r.status_code == 200, r.text
    got = r.json()
    lib = _lib(pricing_fleet, UNIT, [PRICE], RevenueTarget())
    assert got["parameters"] == {k: str(v) for k, v in lib.parameters.items()}
    assert got["feasible"] and got["deterministic"] and got["decimal_check_equal"]
    assert Decimal(got["metrics"]["revenue"]) == lib.metrics.revenue == Decimal(got["summary"]["revenue"])
    assert abs(lib.metrics.revenue - lib.baseline_revenue) <= lib.baseline_revenue * Decimal("0.005")
    assert got["bounds"]["energy.charge.unit_price"] == {"lower": "0.0001", "upper": "0.2000", "step": "0.0001"}
    assert got["plan"]["components"][1]["charge"]["unit_price"] == got["parameters"]["energy.charge.unit_price"]
    assert got["evaluations"] == lib.evaluations and "brentq" in got["method"]


def test_constrained_solve_and_tradeoff_equal_the_library(pricing_fleet, test_db_api) -> None:
    goal = {"kind": "max_revenue", "max_shock_share": 0.3, "max_losers_share": 0.5, "max_p90_increase": 0.5}
    r = test_db_api.post("/v1/pricing/solve", role="pricing", json=_body(HYBRID, HYB, goal=goal))
    assert r.status_code == 200, r.text
    lib = _lib(pricing_fleet, HYBRID, HYB, MaximiseRevenue(0.3, 0.5, 0.5))
    got = r.json()
    assert got["parameters"] == {k: str(v) for k, v in lib.parameters.items()} and got["feasible"]
    assert got["metrics"]["shock_share"] <= 0.3 and got["metrics"]["losers_share"] <= 0.5
    t = test_db_api.post("/v1/pricing/tradeoff", role="pricing", json=_body(HYBRID, HYB, points=5))
    assert t.status_code == 200, t.text
    curve = t.json()
    lib_curve = get_tradeoff_curve(conn=pricing_fleet.conn, baseline=BASE, plan=HYBRID,
                                   parameters=[_param(p) for p in HYB], period=pricing_fleet.period,
                                   cohort=Cohort(product="thermo-x1"), metrics=example_metrics(), points=5)
    assert curve["losers_front"] == list(lib_curve.losers_front) and curve["losers_front"][0] == 0
    assert len(curve["points"]) == 26 and curve["points"][0]["baseline"] and curve["points"][0]["on_losers_front"]
    revenues = [Decimal(curve["points"][i]["metrics"]["revenue"]) for i in curve["losers_front"]]
    assert revenues == sorted(revenues) and len(set(revenues)) == len(revenues)


def test_large_solve_runs_as_a_job_with_the_same_answer(pricing_fleet, test_db_api, stack) -> None:
    body = _body(UNIT, [PRICE], goal={"kind": "revenue_target", "tolerance": "0.01"})
    inline = test_db_api.post("/v1/pricing/solve", role="pricing", json=body)
    assert inline.status_code == 200, inline.text
    tiny = stack.model_copy(update={"api": stack.api.model_copy(update={"sync_backtest_limit": 1})})
    with connect(stack.db) as conn:
        token = create_key(conn, name="pytest pricing decisions", role="pricing").token
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(tiny)) as client:
        r = client.post("/v1/pricing/solve", headers=headers, json=body)
        assert r.status_code == 202, r.text
        job = r.json()
        assert r.headers["Location"] == f"/v1/pricing/decisions/jobs/{job['job_id']}" and job["request"]["size"] > 1
        deadline = time.monotonic() + 120
        while job["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
            job = client.get(r.headers["Location"], headers=headers).json()
        assert job["status"] == "done", job["error"]
        assert job["solve"] == inline.json() and job["tradeoff"] is None
        t = client.post("/v1/pricing/tradeoff", headers=headers, json=_body(UNIT, [PRICE], points=4))
        assert t.status_code == 202 and t.headers["Location"].startswith("/v1/pricing/decisions/jobs/")


def test_solve_requests_are_4xx(pricing_fleet, test_db_api) -> None:
    def post(path="/v1/pricing/solve", role="pricing", **update):
        body = {**_body(UNIT, [PRICE], goal={"kind": "revenue_target"}), **update}
        return test_db_api.post(path, role=role, json=body)

    assert post(role="product").status_code == 403
    bad_field = post(parameters=[{**PRICE, "field": "charge.nope"}])
    assert bad_field.status_code == 422 and "no field" in bad_field.text
    assert post(parameters=[{**PRICE, "lower": "0.5", "upper": "0.1"}]).status_code == 422
    assert post(plan=BASE.model_dump(mode="json")).status_code == 422  # the same plan as the baseline
    assert post(plan={"plan_id": "no-such-plan"}).status_code == 404
    assert post(goal={"kind": "guess"}).status_code == 422
    assert post(parameters=[PRICE, PRICE]).status_code == 422  # a revenue target takes one parameter
    assert post(path="/v1/pricing/tradeoff", goal=None).status_code == 422  # no goal field in a trade-off
    assert test_db_api.get("/v1/pricing/decisions/jobs/00000000-0000-0000-0000-000000000000",
                           role="pricing").status_code == 404


def test_backtest_reports_coverage_and_can_exclude_it(pricing_fleet, test_db_api) -> None:
    from cxp.pricing.service import simulate_backtest

    body = {"plans": [BASE.model_dump(mode="json"), UNIT.model_dump(mode="json")], "period": PERIOD,
            "cohort": COHORT, "coverage_threshold": 0.999}
    r = test_db_api.post("/v1/pricing/backtests", role="pricing", json=body)
    assert r.status_code == 200, r.text
    lib = simulate_backtest(conn=pricing_fleet.conn, plans=[BASE, UNIT], period=pricing_fleet.period,
                            cohort=Cohort(product="thermo-x1"), metrics=example_metrics(), coverage_threshold=0.999)
    got = {s["plan_key"]: s for s in r.json()["summaries"]}
    for key, s in lib.summaries.items():
        assert got[key]["low_coverage_periods"] == s.low_coverage_periods == int(lib.low_coverage.sum())
        assert Decimal(got[key]["low_coverage_revenue"]) == s.low_coverage_revenue
        assert Decimal(got[key]["coverage_shortfall"]) == s.coverage_shortfall
    ex = test_db_api.post("/v1/pricing/backtests", role="pricing", json={**body, "exclude_low_coverage": True}).json()
    n = lib.summaries[UNIT.key]
    assert n.low_coverage_periods > 0  # a threshold just under full coverage flags a few heartbeat gaps
    assert ex["summaries"][1]["customer_periods"] == n.customer_periods - n.low_coverage_periods
    off = test_db_api.post("/v1/pricing/backtests", role="pricing", json={**body, "coverage_threshold": None}).json()
    assert off["summaries"][1]["low_coverage_periods"] == 0
    assert test_db_api.post("/v1/pricing/backtests", role="pricing",
                            json={**body, "coverage_threshold": 2}).status_code == 422


def test_horizon_equals_the_service(pricing_fleet, test_db_api) -> None:
    from cxp.pricing.core.wtp import ElasticityFit
    from cxp.pricing.service import simulate_horizon

    grad = next(p for p in example_plans() if p.plan_id == "ppu-graduated")
    body = {"plans": [BASE.model_dump(mode="json"), grad.model_dump(mode="json")], "period": PERIOD,
            "cohort": COHORT, "months": 24, "elasticity": {"elasticity": -0.4, "low": -0.7, "high": -0.1}}
    r = test_db_api.post("/v1/pricing/horizon", role="pricing", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    lib = simulate_horizon(conn=pricing_fleet.conn, plans=[BASE, grad], period=pricing_fleet.period, months=24,
                           cohort=Cohort(product="thermo-x1"), metrics=example_metrics(),
                           elasticity=ElasticityFit(-0.4, 0.0, None, -0.7, -0.1, 0, None))
    assert got["months"] == 24 and got["first_month"] == "2026-01" and got["verdict"] == lib.verdict("central")
    assert [(f["plan_key"], f["scenario"]) for f in got["figures"]] == [(f.plan_key, f.scenario) for f in lib.figures]
    for f, e in zip(got["figures"], lib.figures, strict=True):
        assert (Decimal(f["recurring"]), Decimal(f["one_time"]), Decimal(f["ltv"])) == (e.recurring, e.one_time, e.ltv)
    assert {f["scenario"] for f in got["figures"]} == {"static", "low", "central", "high"}
    assert any("κ = −ε" in a for a in got["assumptions"])
    static = test_db_api.post("/v1/pricing/horizon", role="pricing", json={**body, "elasticity": None}).json()
    assert {f["scenario"] for f in static["figures"]} == {"static"} and "static response" in static["verdict"]
    assert test_db_api.post("/v1/pricing/horizon", role="pricing", json={**body, "months": 0}).status_code == 422


def test_backtest_experience_risk_uses_the_analytics_health_score(pricing_fleet, test_db_api) -> None:
    from cxp.api.routers.pricing.backtests import account_health
    from cxp.pricing.core.experience import experience_risk
    from cxp.pricing.service import simulate_backtest

    grad = next(p for p in example_plans() if p.plan_id == "ppu-graduated")
    body = {"plans": [BASE.model_dump(mode="json"), grad.model_dump(mode="json"), UNIT.model_dump(mode="json")],
            "period": PERIOD, "cohort": COHORT, "experience_risk": True}
    r = test_db_api.post("/v1/pricing/backtests", role="pricing", json=body)
    assert r.status_code == 200, r.text
    got = r.json()["experience_risk"]
    health = account_health(pricing_fleet.conn, cohort=Cohort(product="thermo-x1"), period=pricing_fleet.period)
    assert len(health) > 3 and all(0 <= v <= 100 for v in health.values())
    lib = simulate_backtest(conn=pricing_fleet.conn, plans=[BASE, grad, UNIT], period=pricing_fleet.period,
                            cohort=Cohort(product="thermo-x1"), metrics=example_metrics())
    expected = experience_risk(result=lib, health=health)
    assert [g["plan_key"] for g in got] == [e.plan_key for e in expected] == [grad.key, UNIT.key]
    for g, e in zip(got, expected, strict=True):
        assert g["accounts"] == e.accounts > 3 and g["flagged"] == e.flagged
        assert g["spearman"] == pytest.approx(e.spearman)
    plain = test_db_api.post("/v1/pricing/backtests", role="pricing", json={**body, "experience_risk": False})
    assert plain.json()["experience_risk"] is None


def test_experiment_design_equals_the_library(pricing_fleet, test_db_api) -> None:
    from cxp.pricing.decisions import get_experiment_plan

    body = {"metric": "heating_kwh", "period": PERIOD, "cohort": COHORT, "mde_relative": 0.5}
    r = test_db_api.post("/v1/pricing/experiment-design", role="pricing", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    kwh = next(m for m in example_metrics() if m.name == "heating_kwh")
    lib = get_experiment_plan(conn=pricing_fleet.conn, metric=kwh, period=pricing_fleet.period,
                              cohort=Cohort(product="thermo-x1"), mde_relative=0.5)
    assert (got["n_per_arm"], got["duration_months"], got["total_n"]) == (lib.n_per_arm, lib.duration_months,
                                                                          lib.total_n)
    assert got["sd"] == pytest.approx(lib.sd) and len(got["options"]) == 2 and "TTestIndPower" in got["method"]
    assert test_db_api.post("/v1/pricing/experiment-design", role="pricing",
                            json={**body, "metric": "nope"}).status_code == 422
    assert test_db_api.post("/v1/pricing/experiment-design", role="pricing",
                            json={**body, "mde": 1.0}).status_code == 422  # both effects given
