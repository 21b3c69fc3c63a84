"""Pricing endpoints on the simulated pricing fleet: the API answers what the pricing services compute."""

from __future__ import annotations

import csv
import io
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

from cxp.api.app import create_app
from cxp.pricing.core.experiments import ExperimentDesign, assign_arms
from cxp.pricing.core.plans import Plan
from cxp.pricing.examples import example_metrics, example_plans
from cxp.pricing.metrics import Cohort
from cxp.pricing.service import (
    get_experiment_results,
    get_model_comparison,
    get_model_comparison_text,
    list_experiment_assignments,
    simulate_backtest,
)
from cxp.store.apikeys import create_key
from cxp.store.db import connect

pytestmark = pytest.mark.integration

PERIOD = {"start_month": "2026-01", "months": 2}
COHORT = {"product": "thermo-x1"}
SUMMARY_MONEY = ("revenue", "revenue_delta", "static_revenue", "arpu", "arpu_month", "cost", "margin")
SUMMARY_COUNTS = ("accounts", "customer_periods", "winners", "losers", "unchanged", "shock_count")


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def _example(plan_id: str) -> Plan:
    return next(p for p in example_plans() if p.plan_id == plan_id)


def _definition(plan: Plan, **update) -> dict:
    """A plan as JSON, without its version (the API stores the next one)."""
    body = plan.model_dump(mode="json", exclude={"version"})
    return {**body, **update}


def _bills(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _revenue_by_plan(rows: list[dict[str, str]]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for r in rows:
        out[r["plan"]] = out.get(r["plan"], Decimal(0)) + Decimal(r["bill"])
    return out


def _assert_matches(summary: dict, expected) -> None:
    """One plan's API summary equals the library's figures (money exactly, as strings)."""
    for f in SUMMARY_MONEY:
        assert Decimal(summary[f]) == getattr(expected, f), f
        assert isinstance(summary[f], str), f
    for f in SUMMARY_COUNTS:
        assert summary[f] == getattr(expected, f), f
    for q in ("p10", "p50", "p90"):
        assert Decimal(summary["bill"][q]) == getattr(expected.bill, q)
        assert Decimal(summary["bill_change"][q]) == getattr(expected.bill_change, q)
    assert summary["shock_rate"] == pytest.approx(expected.shock_rate)
    assert summary["below_cost_share"] == pytest.approx(expected.below_cost_share)
    if expected.fairness_gini is None:
        assert summary["fairness_gini"] is None
    else:
        assert summary["fairness_gini"] == pytest.approx(expected.fairness_gini)


# ---------------------------------------------------------------------------------------------
# Roles


def test_pricing_endpoints_need_a_pricing_key(pricing_fleet, test_db_api) -> None:
    client = test_db_api.client
    for method, path in (("GET", "/v1/pricing/plans"), ("GET", "/v1/pricing/comparison"),
                         ("POST", "/v1/pricing/backtests"), ("GET", "/v1/pricing/jobs"),
                         ("POST", "/v1/pricing/wtp/elasticity"), ("GET", "/v1/pricing/experiments")):
        anonymous = client.request(method, path)
        assert anonymous.status_code == 401, (path, anonymous.text)
        assert anonymous.json()["error"]["code"] == "not_authenticated"
        product = client.request(method, path, headers=test_db_api.headers("product"))
        assert product.status_code == 403, (path, product.text)
        assert "pricing" in product.json()["error"]["message"]
    assert test_db_api.get("/v1/pricing/plans", role="pricing").status_code == 200
    assert test_db_api.get("/v1/pricing/plans", role="admin").status_code == 200


# ---------------------------------------------------------------------------------------------
# Plans


def test_plan_versions_increment_and_reposts_are_idempotent(pricing_fleet, test_db_api) -> None:
    plan_id = f"t{_uid()}-hybrid"
    first = _definition(_example("hybrid"), plan_id=plan_id)
    r1 = test_db_api.post("/v1/pricing/plans", role="pricing", json=first)
    assert r1.status_code == 201, r1.text
    assert r1.json()["version"] == 1 and r1.json()["key"] == f"{plan_id}@v1"
    assert r1.headers["Location"] == f"/v1/pricing/plans/{plan_id}/versions/1"
    assert r1.json()["created_by"] == test_db_api.tokens["pricing"].split("_")[1]

    again = test_db_api.post("/v1/pricing/plans", role="pricing", json=first)
    assert again.status_code == 200 and again.json()["version"] == 1  # identical re-post stores nothing

    cheaper = _definition(_example("hybrid"), plan_id=plan_id, name="Cheaper base")
    cheaper["components"][0]["base_fee"] = "1.49"
    r2 = test_db_api.post("/v1/pricing/plans", role="pricing", json=cheaper)
    assert r2.status_code == 201 and r2.json()["version"] == 2
    assert r2.json()["definition"]["components"][0]["base_fee"] == "1.49"

    # A given version must be the next one; an existing one only with its own definition.
    skip = test_db_api.post("/v1/pricing/plans", role="pricing", json={**cheaper, "version": 5})
    assert skip.status_code == 409 and "next version is 3" in skip.json()["error"]["message"]
    clash = test_db_api.post("/v1/pricing/plans", role="pricing", json={**first, "version": 2})
    assert clash.status_code == 409 and "different definition" in clash.json()["error"]["message"]
    same = test_db_api.post("/v1/pricing/plans", role="pricing", json={**first, "version": 1})
    assert same.status_code == 200 and same.json()["version"] == 1
    explicit = test_db_api.post("/v1/pricing/plans", role="pricing", json={**first, "version": 3})
    assert explicit.status_code == 201 and explicit.json()["version"] == 3

    same_value = {**first, "components": [{**first["components"][0], "base_fee": "1.990"}, *first["components"][1:]]}
    assert test_db_api.post("/v1/pricing/plans", role="pricing", json=same_value).json()["version"] == 3

    latest = test_db_api.get(f"/v1/pricing/plans/{plan_id}", role="pricing").json()
    assert latest["version"] == 3 and latest["definition"]["name"] == first["name"]
    versions = test_db_api.get(f"/v1/pricing/plans/{plan_id}/versions", role="pricing").json()
    assert [v["version"] for v in versions["items"]] == [1, 2, 3] and versions["total"] == 3
    v2 = test_db_api.get(f"/v1/pricing/plans/{plan_id}/versions/2", role="pricing").json()
    assert v2["definition"]["name"] == "Cheaper base"
    assert Plan.model_validate(v2["definition"]).key == f"{plan_id}@v2"


def test_plan_list_is_latest_per_plan_with_prefix_and_paging(pricing_fleet, test_db_api) -> None:
    prefix = f"t{_uid()}-"
    for name in ("a", "b", "c"):
        body = _definition(_example("hw-connect"), plan_id=f"{prefix}{name}")
        assert test_db_api.post("/v1/pricing/plans", role="pricing", json=body).status_code == 201
    body = _definition(_example("hw-connect"), plan_id=f"{prefix}b", name="B two")
    assert test_db_api.post("/v1/pricing/plans", role="pricing", json=body).json()["version"] == 2
    page = test_db_api.get(f"/v1/pricing/plans?prefix={prefix}", role="pricing").json()
    assert page["total"] == 3
    assert [(p["plan_id"], p["version"]) for p in page["items"]] == [(f"{prefix}a", 1), (f"{prefix}b", 2),
                                                                      (f"{prefix}c", 1)]
    second = test_db_api.get(f"/v1/pricing/plans?prefix={prefix}&limit=1&offset=1", role="pricing").json()
    assert [p["plan_id"] for p in second["items"]] == [f"{prefix}b"] and second["total"] == 3


def test_unknown_plans_are_404(pricing_fleet, test_db_api) -> None:
    missing = test_db_api.get("/v1/pricing/plans/no-such-plan", role="pricing")
    assert missing.status_code == 404 and "no-such-plan" in missing.json()["error"]["message"]
    assert test_db_api.get("/v1/pricing/plans/no-such-plan/versions", role="pricing").status_code == 404
    plan_id = f"t{_uid()}-p"
    test_db_api.post("/v1/pricing/plans", role="pricing", json=_definition(_example("bundles"), plan_id=plan_id))
    assert test_db_api.get(f"/v1/pricing/plans/{plan_id}/versions/2", role="pricing").status_code == 404
    bad_id = test_db_api.get("/v1/pricing/plans/bad%20id", role="pricing")
    assert bad_id.status_code == 422


def test_validate_normalises_and_warns_without_storing(pricing_fleet, test_db_api) -> None:
    plan_id = f"t{_uid()}-volume"
    body = _definition(_example("ppu-volume"), plan_id=plan_id)
    body["components"][0]["charge"]["tiers"][0]["unit_price"] = "0.010000"
    r = test_db_api.post("/v1/pricing/plans/validate", role="pricing", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["valid"] and out["key"] is None and out["plan"]["plan_id"] == plan_id
    assert out["inputs"]["usage_keys"] == ["heating_kwh"]
    assert any("drops by 0.75" in w and "q = 500" in w for w in out["warnings"]), out["warnings"]
    assert test_db_api.get(f"/v1/pricing/plans/{plan_id}", role="pricing").status_code == 404


def test_invalid_plans_are_422_naming_the_field(pricing_fleet, test_db_api) -> None:
    body = _definition(_example("hw-connect"), plan_id=f"t{_uid()}-bad")
    body["components"][1]["fee"] = "-2.99"
    for path in ("/v1/pricing/plans/validate", "/v1/pricing/plans"):
        r = test_db_api.post(path, role="pricing", json=body)
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "invalid"
        locs = [d["loc"] for d in err["details"]]
        assert any(loc[:3] == ["body", "components", 1] and loc[-1] == "fee" for loc in locs), locs
        assert "fee" in err["message"]
    tiers = _definition(_example("ppu-graduated"), plan_id=f"t{_uid()}-gap")
    tiers["components"][0]["charge"]["tiers"][1]["lower"] = 150
    gap = test_db_api.post("/v1/pricing/plans/validate", role="pricing", json=tiers).json()["error"]
    assert "contiguous" in gap["message"] and "tiers[1] starts at 150" in gap["message"]
    nul = test_db_api.post("/v1/pricing/plans", role="pricing",
                           json=_definition(_example("hw-connect"), plan_id=f"t{_uid()}-nul", name="a\x00b"))
    assert nul.status_code == 422 and nul.json()["error"]["details"][0]["loc"] == ["body", "name"]


def test_examples_and_their_installation(pricing_fleet, test_db_api) -> None:
    ex = test_db_api.get("/v1/pricing/examples", role="pricing").json()
    assert [p["plan_id"] for p in ex["plans"]] == [p.plan_id for p in example_plans()]
    assert {m["name"] for m in ex["metrics"]} == {"heating_kwh", "app_sessions", "optimised_cycles"}
    assert Plan.model_validate(ex["plans"][4]) == _example("hybrid")
    first = test_db_api.post("/v1/pricing/examples/install", role="pricing").json()
    created_ids = {k.removesuffix("@v1") for k in first["created"]}
    assert created_ids.isdisjoint(first["existing"])
    assert created_ids | set(first["existing"]) == {p.plan_id for p in example_plans()}
    second = test_db_api.post("/v1/pricing/examples/install", role="pricing").json()
    assert second["created"] == [] and second["existing"] == [p.plan_id for p in example_plans()]
    stored = test_db_api.get("/v1/pricing/plans/hybrid", role="pricing").json()
    assert Plan.model_validate(stored["definition"]) == _example("hybrid") and stored["version"] == 1


# ---------------------------------------------------------------------------------------------
# Backtests


def _stored(test_db_api, plan: Plan) -> str:
    """Store `plan` under a fresh id; return its plan id."""
    plan_id = f"t{_uid()}-{plan.plan_id}"
    r = test_db_api.post("/v1/pricing/plans", role="pricing", json=_definition(plan, plan_id=plan_id))
    assert r.status_code == 201, r.text
    return plan_id


def test_backtest_equals_the_service(pricing_fleet, test_db_api) -> None:
    graduated, hybrid = _stored(test_db_api, _example("ppu-graduated")), _stored(test_db_api, _example("hybrid"))
    outcome = _example("outcome")
    body = {
        "plans": [{"plan_id": graduated}, {"plan_id": hybrid, "version": 1}, outcome.model_dump(mode="json")],
        "period": PERIOD, "cohort": COHORT, "baseline": graduated, "theta": "0.25",
        "cost": {"per_unit": "0.002", "unit_metric": "heating_kwh", "per_device_month": "0.40"},
        "value_metric": "heating_kwh",
    }
    r = test_db_api.post("/v1/pricing/backtests", role="pricing", json=body)
    assert r.status_code == 200, r.text
    report = r.json()
    plans = [Plan.model_validate({**p.model_dump(), "plan_id": pid}) for p, pid in
             ((_example("ppu-graduated"), graduated), (_example("hybrid"), hybrid))] + [outcome]
    from cxp.pricing.core.backtest import CostModel

    expected = simulate_backtest(
        conn=pricing_fleet.conn, plans=plans, period=pricing_fleet.period, cohort=Cohort(product="thermo-x1"),
        baseline=plans[0].key, theta=Decimal("0.25"), metrics=example_metrics(), value_metric="heating_kwh",
        cost=CostModel(Decimal("0.002"), "heating_kwh", Decimal("0.40")))
    assert report["baseline"] == f"{graduated}@v1" and report["plan_keys"] == list(expected.plan_keys)
    assert report["currency"] == "EUR" and report["quantum"] == "0.01" and report["theta"] == "0.25"
    assert report["accounts"] == len(expected.cube.account_ids) > 3
    assert report["size"] == report["accounts"] * 2 * 3
    assert [s["plan_key"] for s in report["summaries"]] == list(expected.plan_keys)
    for s in report["summaries"]:
        _assert_matches(s, expected.summaries[s["plan_key"]])
    assert Decimal(report["summaries"][1]["revenue"]) > 0 and report["summaries"][0]["baseline"]
    assert len(report["experience"]) == len(expected.experience) > 0
    assert {e["segment"] for e in report["experience"]} <= {"consumer", "smb"}


def test_a_plan_equal_to_the_baseline_changes_nothing(pricing_fleet, test_db_api) -> None:
    base = _stored(test_db_api, _example("hybrid"))
    twin = _definition(_example("hybrid"), plan_id=f"t{_uid()}-twin", version=1)
    body = {"plans": [{"plan_id": base}, twin], "period": PERIOD, "cohort": COHORT}
    report = test_db_api.post("/v1/pricing/backtests", role="pricing", json=body).json()
    s = report["summaries"][1]
    assert s["plan_key"] == f"{twin['plan_id']}@v1" and not s["baseline"]
    assert (s["shock_count"], s["shock_rate"], s["winners"], s["losers"]) == (0, 0.0, 0, 0)
    assert s["revenue_delta"] == "0.00" and s["unchanged"] == s["accounts"] > 0
    assert s["revenue"] == report["summaries"][0]["revenue"]
    assert s["bill_change"] == {"p10": "0.00", "p50": "0.00", "p90": "0.00"}


def test_backtest_csv_bills_add_up_to_the_revenue(pricing_fleet, test_db_api) -> None:
    body = {"plans": [p.model_dump(mode="json") for p in example_plans()[:3]], "period": PERIOD,
            "cohort": {"segment": "smb"}}
    report = test_db_api.post("/v1/pricing/backtests", role="pricing", json=body).json()
    r = test_db_api.post("/v1/pricing/backtests?format=csv", role="pricing", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = _bills(r.text)
    assert list(rows[0]) == ["plan", "account_id", "segment", "month", "bill", "currency"]
    assert {r["segment"] for r in rows} == {"smb"} and {r["month"] for r in rows} <= {"2026-01-01", "2026-02-01"}
    totals = _revenue_by_plan(rows)
    assert totals == {s["plan_key"]: Decimal(s["revenue"]) for s in report["summaries"]}
    assert len(rows) == 3 * report["summaries"][0]["customer_periods"]


def test_backtest_date_period_and_demand_response(pricing_fleet, test_db_api) -> None:
    plans = [_example("hw-connect"), _example("ppu-graduated")]
    body = {"plans": [p.model_dump(mode="json") for p in plans], "period": {"start": "2026-01-01", "end": "2026-02-28"},
            "cohort": COHORT, "demand": {"elasticity": -0.5}}
    report = test_db_api.post("/v1/pricing/backtests", role="pricing", json=body).json()
    assert report["period"]["first_month"] == "2026-01-01" and report["period"]["months"] == 2
    assert report["period"]["until"].startswith("2026-03-01") and report["elasticity"] == -0.5
    from cxp.pricing.core.backtest import DemandResponse

    expected = simulate_backtest(
        conn=pricing_fleet.conn, plans=plans, period=pricing_fleet.period, cohort=Cohort(product="thermo-x1"),
        metrics=example_metrics(), demand=DemandResponse(-0.5), until=datetime(2026, 3, 1, tzinfo=UTC))
    for s in report["summaries"]:
        _assert_matches(s, expected.summaries[s["plan_key"]])
    moved = report["summaries"][1]
    assert moved["static_revenue"] != moved["revenue"]  # usage responded to the price change


def test_backtest_request_problems_are_4xx(pricing_fleet, test_db_api) -> None:
    hybrid = _example("hybrid").model_dump(mode="json")

    def post(**body):
        return test_db_api.post("/v1/pricing/backtests", role="pricing",
                                json={"plans": [hybrid], "period": PERIOD, **body})

    unknown = post(plans=[{"plan_id": "no-such-plan"}])
    assert unknown.status_code == 404 and "no-such-plan" in unknown.json()["error"]["message"]
    missing_version = post(plans=[hybrid, {"plan_id": _stored(test_db_api, _example("bundles")), "version": 7}])
    assert missing_version.status_code == 404 and "version 7" in missing_version.json()["error"]["message"]
    bad_inline = post(plans=[{**hybrid, "currency": "euro"}])
    assert bad_inline.status_code == 422
    assert any(d["loc"][-1] == "currency" for d in bad_inline.json()["error"]["details"])
    assert post(baseline="nope").status_code == 422
    assert post(plans=[hybrid, hybrid]).status_code == 422
    assert post(period={"start_month": "2026-13", "months": 2}).status_code == 422
    assert post(period={"start_month": "2026-01"}).status_code == 422
    assert post(period={"start": "2026-02-01", "end": "2026-01-01"}).status_code == 422
    assert post(period={"start_month": "2026-01", "months": 2, "start": "2026-01-01"}).status_code == 422
    assert post(theta="-1").status_code == 422
    assert post(cost={"per_unit": "0.01"}).status_code == 422
    mixed = post(plans=[hybrid, {**_example("hw-connect").model_dump(mode="json"), "currency": "USD"}])
    assert mixed.status_code == 422 and "currency" in mixed.json()["error"]["message"]
    assert post(cohort={"product": "x\x00y"}).status_code == 422


def test_large_backtest_runs_as_a_job_with_the_same_numbers(pricing_fleet, test_db_api, stack) -> None:
    body = {"plans": [p.model_dump(mode="json") for p in example_plans()[:4]], "period": PERIOD, "cohort": COHORT,
            "baseline": "bundles"}
    inline = test_db_api.post("/v1/pricing/backtests", role="pricing", json=body)
    inline_csv = test_db_api.post("/v1/pricing/backtests?format=csv", role="pricing", json=body).text
    assert inline.status_code == 200 and inline.json()["baseline"] == "bundles@v1"
    tiny = stack.model_copy(update={"api": stack.api.model_copy(update={"sync_backtest_limit": 1})})
    with connect(stack.db) as conn:
        token = create_key(conn, name="pytest pricing jobs", role="pricing").token
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(tiny)) as client:
        r = client.post("/v1/pricing/backtests", headers=headers, json=body)
        assert r.status_code == 202, r.text
        job = r.json()
        assert r.headers["Location"] == f"/v1/pricing/jobs/{job['job_id']}"
        assert job["status"] in ("queued", "running", "done") and job["request"]["size"] == inline.json()["size"]
        deadline = time.monotonic() + 120
        while job["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
            job = client.get(r.headers["Location"], headers=headers).json()
        assert job["status"] == "done", job["error"]
        assert job["result"] == inline.json()
        assert job["links"]["bills"] == f"/v1/pricing/jobs/{job['job_id']}/bills"
        bills_csv = client.get(f"{job['links']['bills']}?format=csv", headers=headers)
        assert bills_csv.headers["content-type"].startswith("text/csv")
        assert _bills(bills_csv.text) == _bills(inline_csv)
        page = client.get(f"{job['links']['bills']}?plan=ppu-volume@v1&limit=5&offset=2", headers=headers).json()
        plan_rows = [r for r in _bills(inline_csv) if r["plan"] == "ppu-volume@v1"]
        assert len(plan_rows) > 7  # a plan of the four, so the page below is not vacuous
        assert page["total"] == len(plan_rows)
        assert [(b["account_id"], b["month"], b["bill"]) for b in page["items"]] == [
            (r["account_id"], r["month"], r["bill"]) for r in plan_rows[2:7]]
        listed = client.get("/v1/pricing/jobs?limit=1000", headers=headers).json()
        assert job["job_id"] in {j["job_id"] for j in listed["items"]} and "result" not in listed["items"][0]
        csv_job = client.post("/v1/pricing/backtests?format=csv", headers=headers, json=body)
        assert csv_job.status_code == 202  # large CSV requests queue too; the bills come from the job


def test_job_endpoints_404_and_409(pricing_fleet, test_db_api) -> None:
    zero = "00000000-0000-0000-0000-000000000000"
    assert test_db_api.get(f"/v1/pricing/jobs/{zero}", role="pricing").status_code == 404
    assert test_db_api.get(f"/v1/pricing/jobs/{zero}/bills", role="pricing").status_code == 404
    assert test_db_api.get("/v1/pricing/jobs/not-a-uuid", role="pricing").status_code == 422
    job_id = uuid.uuid4()
    pricing_fleet.conn.execute("INSERT INTO jobs (job_id, kind, status, request, error) VALUES "
                               "(%s, 'backtest', 'failed', '{}', 'ValueError: boom')", (job_id,))
    failed = test_db_api.get(f"/v1/pricing/jobs/{job_id}", role="pricing").json()
    assert failed["status"] == "failed" and failed["error"] == "ValueError: boom" and failed["result"] is None
    r = test_db_api.get(f"/v1/pricing/jobs/{job_id}/bills", role="pricing")
    assert r.status_code == 409 and "boom" in r.json()["error"]["message"]


# ---------------------------------------------------------------------------------------------
# Comparison


def test_comparison_matches_the_service_and_the_demo_text(pricing_fleet, test_db_api) -> None:
    r = test_db_api.get("/v1/pricing/comparison?product=thermo-x1&bins=8", role="pricing")
    assert r.status_code == 200, r.text
    body = r.json()
    expected = get_model_comparison(conn=pricing_fleet.conn, product="thermo-x1", bins=8)
    assert body["baseline"] == expected.baseline == "hw-connect@v1" and body["reason"] is None
    assert [m["plan_key"] for m in body["models"]] == [m.plan_key for m in expected.models]
    assert len(body["models"]) == 5 and body["accounts"] == expected.accounts > 3
    assert len(body["bin_edges"]) == 9 and body["bin_edges"][0] == "0.00"
    text = get_model_comparison_text(conn=pricing_fleet.conn)
    for m, e in zip(body["models"], expected.models, strict=True):
        assert Decimal(m["revenue"]) == e.revenue and Decimal(m["bill"]["p50"]) == e.bill.p50
        assert Decimal(m["revenue_delta"]) == e.revenue_delta and m["winners"] == e.winners
        assert sum(m["histogram"]) == body["customer_periods"] and len(m["histogram"]) == 8
        line = next(line for line in text if line.strip().startswith(m["plan_key"]))
        assert f"{Decimal(m['revenue']):,}" in line and f"{m['winners']}/{m['losers']}" in line
    edges = [Decimal(e) for e in body["bin_edges"]]
    assert edges == sorted(edges) and edges[-1] >= max(Decimal(m["bill"]["p90"]) for m in body["models"])
    hybrid = test_db_api.get("/v1/pricing/comparison?baseline=hybrid", role="pricing").json()
    assert hybrid["baseline"] == "hybrid@v1" and hybrid["models"][0]["plan_key"] == "hybrid@v1"
    assert hybrid["models"][0]["revenue_delta"] == "0.00" and hybrid["models"][0]["shock_count"] == 0
    by_key = {m["plan_key"]: m for m in body["models"]}
    assert {m["plan_key"]: m["revenue"] for m in hybrid["models"]} == {k: m["revenue"] for k, m in by_key.items()}
    assert test_db_api.get("/v1/pricing/comparison?baseline=freemium", role="pricing").status_code == 422
    none = test_db_api.get("/v1/pricing/comparison?product=no-such-product", role="pricing").json()
    assert none["models"] == [] and "no recorded usage" in none["reason"]
    assert get_model_comparison_text(conn=pricing_fleet.conn, product="no-such-product") == [
        "pricing lab: no recorded usage for no-such-product yet"]


# ---------------------------------------------------------------------------------------------
# Experiments


def _experiment(test_db_api, **update) -> dict:
    control, treatment = _stored(test_db_api, _example("hw-connect")), _stored(test_db_api, _example("hybrid"))
    design = {
        "experiment_id": f"t{_uid()}-exp", "salt": f"salt-{_uid()}",
        "arms": [{"name": "control", "plan_key": f"{control}@v1"}, {"name": "hybrid", "plan_key": f"{treatment}@v1"}],
        "start": "2026-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z", **update,
    }
    r = test_db_api.post("/v1/pricing/experiments", role="pricing", json=design)
    assert r.status_code == 201, r.text
    return design


def test_experiments_are_stored_once_and_listed(pricing_fleet, test_db_api) -> None:
    design = _experiment(test_db_api)
    eid = design["experiment_id"]
    again = test_db_api.post("/v1/pricing/experiments", role="pricing", json=design)
    assert again.status_code == 409 and eid in again.json()["error"]["message"]
    got = test_db_api.get(f"/v1/pricing/experiments/{eid}", role="pricing").json()
    assert ExperimentDesign.model_validate(got["design"]) == ExperimentDesign.model_validate(design)
    listed = test_db_api.get("/v1/pricing/experiments?limit=1000", role="pricing").json()
    assert eid in {e["experiment_id"] for e in listed["items"]} and listed["total"] >= 1
    assert test_db_api.get("/v1/pricing/experiments/no-such-exp", role="pricing").status_code == 404
    unknown = test_db_api.post("/v1/pricing/experiments", role="pricing", json={
        **design, "experiment_id": f"t{_uid()}-x", "arms": [design["arms"][0], {"name": "b", "plan_key": "nope@v1"}]})
    assert unknown.status_code == 422
    assert unknown.json()["error"]["details"][0]["loc"] == ["body", "arms", 1, "plan_key"]
    naive = test_db_api.post("/v1/pricing/experiments", role="pricing",
                             json={**design, "experiment_id": f"t{_uid()}-n", "start": "2026-01-01T00:00:00"})
    assert naive.status_code == 422 and "timezone" in naive.json()["error"]["message"]


def test_assignment_is_deterministic_and_matches_the_library(pricing_fleet, test_db_api) -> None:
    design = _experiment(test_db_api)
    eid = design["experiment_id"]
    lib = ExperimentDesign.model_validate(design)
    accounts = [f"acct-{i:04d}" for i in range(40)]
    arms = assign_arms(design=lib, unit_ids=accounts)
    for unit, arm in zip(accounts, arms.tolist(), strict=True):
        got = test_db_api.get(f"/v1/pricing/experiments/{eid}/assignments/{unit}", role="pricing").json()
        assert got["arm"] == lib.arms[arm].name and got["plan_key"] == lib.arms[arm].plan_key
    assert {test_db_api.get(f"/v1/pricing/experiments/{eid}/assignments/acct-0001", role="pricing").json()["arm"]
            for _ in range(3)} == {lib.arms[arms[1]].name}
    assert len(set(arms.tolist())) == 2  # both arms are used
    missing = test_db_api.get("/v1/pricing/experiments/no-such-exp/assignments/acct-0001", role="pricing")
    assert missing.status_code == 404
    page = test_db_api.get(f"/v1/pricing/experiments/{eid}/assignments?product=thermo-x1&limit=1000",
                           role="pricing").json()
    expected = list_experiment_assignments(conn=pricing_fleet.conn, design=lib, cohort=Cohort(product="thermo-x1"))
    assert [(a["unit_id"], a["arm"]) for a in page["items"]] == [(a.unit_id, a.arm) for a in expected]
    assert page["total"] == len(expected) > 3


def test_experiment_results_equal_the_service(pricing_fleet, test_db_api) -> None:
    design = _experiment(test_db_api)
    eid = design["experiment_id"]
    r = test_db_api.get(f"/v1/pricing/experiments/{eid}/results?product=thermo-x1", role="pricing")
    assert r.status_code == 200, r.text
    body = r.json()
    lib = ExperimentDesign.model_validate(design)
    plans = [Plan.model_validate({**_example(pid).model_dump(), "plan_id": a["plan_key"].split("@")[0]})
             for pid, a in zip(("hw-connect", "hybrid"), design["arms"], strict=True)]
    expected = get_experiment_results(conn=pricing_fleet.conn, design=lib, plans=plans,
                                      cohort=Cohort(product="thermo-x1"), metrics=example_metrics())
    assert [a["arm"] for a in body["arms"]] == ["control", "hybrid"]
    for got, want in zip(body["arms"], expected.arms, strict=True):
        assert got["units"] == want.units and Decimal(got["revenue"]) == want.revenue
        assert Decimal(got["revenue_per_unit"]) == want.revenue_per_unit and isinstance(got["revenue"], str)
        assert got["usage_mean"] == pytest.approx(want.usage_mean)
    assert sum(a["units"] for a in body["arms"]) > 3
    metrics = {d["metric"] for d in body["differences"]}
    assert metrics >= {"usage", "revenue_per_unit", "health", "conversion", "churn"}
    usage = next(d for d in body["differences"] if d["metric"] == "usage")
    want = expected.difference(metric="usage", arm="hybrid")
    assert float(usage["diff"]) == pytest.approx(want.estimate) and float(usage["low"]) <= float(usage["diff"])
    assert usage["p_value"] == pytest.approx(want.p_value) and usage["significant"] == want.significant
    revenue = next(d for d in body["differences"] if d["metric"] == "revenue_per_unit")
    assert len(revenue["diff"].split(".")[1]) == 2  # money rounded to the quantum
    assert body["sample_ratio"]["counts"] == [a["units"] for a in body["arms"]]
    assert body["sample_ratio"]["p_value"] == pytest.approx(expected.sample_ratio.p_value)
    assert body["guardrail_breached"] == bool(expected.guardrail_flags)
    assert test_db_api.get("/v1/pricing/experiments/no-such-exp/results", role="pricing").status_code == 404
