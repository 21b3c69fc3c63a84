"""GET /v1/experience/earned-growth on a referral fleet (April against March): the pricing lab's earned growth per
group beside the group's NPS, the correlation across groups, CSV, role `product`, a stored plan version."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest

from cxp.analytics import service as analytics
from cxp.analytics.query import AnalyticsQuery
from cxp.pricing.core.plans import Plan
from cxp.pricing.earned import get_earned_growth
from cxp.store.db import connect
from tests.fixtures.fleet import REFERRAL_SEEDS, TruthFleet

pytestmark = pytest.mark.integration

PLAN = {
    "plan_id": "eg-api",
    "name": "Subscription",
    "currency": "EUR",
    "components": [{"kind": "flat_fee", "id": "subscription", "fee": "9.99"}],
}


def test_earned_growth_beside_nps_json_csv_and_roles(make_api, referral_fleets: dict[int, TruthFleet]) -> None:
    rf = referral_fleets[REFERRAL_SEEDS[0]]
    api = make_api(rf.settings)
    stored = api.post("/v1/pricing/plans", json=PLAN, role="pricing")
    assert stored.status_code in (200, 201), stored.text
    version = stored.json()["version"]
    r = api.get(f"/v1/experience/earned-growth?plan=eg-api@v{version}&by=product&by=segment", role="product")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["base_month"], body["month"], body["partial"]) == ("2025-03-01", "2025-04-01", False)
    plan = Plan(**{**PLAN, "version": version})
    with connect(rf.settings.db, autocommit=True) as conn:
        expected = get_earned_growth(conn=conn, plan=plan, by=("product", "segment"))
        voice = analytics.get_referrals(
            conn=conn,
            query=AnalyticsQuery(start=expected.month, end=expected.month.replace(day=30)),
            by=("product", "segment"),
        )
    nps = {(g.key["product"], g.key["segment"]): g for g in voice.groups}
    assert len(body["groups"]) == len(expected.groups)
    for got, want in zip(body["groups"], expected.groups, strict=True):
        assert got["key"] == want.key
        assert got["base_customers"] == want.base_customers
        if want.growth is not None:
            assert got["base_revenue_minor"] == want.growth.base_revenue_minor
            assert Decimal(got["earned_growth_pct"]) == want.growth.earned_growth_pct.quantize(Decimal("0.01"))
        v = nps[(want.key["product"], want.key["segment"])]
        assert (got["nps"], got["nps_n"]) == (v.nps, v.nps_n)
    usable = body["correlation_groups"]
    assert usable == sum(1 for g in body["groups"] if g["reason"] is None and g["nps"] is not None and g["nps_n"] >= 10)
    if usable >= 3:
        assert -1 <= body["nps_growth_correlation"] <= 1
    print(f"NPS vs earned growth: Spearman {body['nps_growth_correlation']} over {usable} groups")
    text = api.get(f"/v1/experience/earned-growth?plan=eg-api@v{version}&by=cohort&format=csv", role="product")
    assert text.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text.text)))
    assert rows and {"cohort", "nrr_pct", "earned_new_pct", "earned_growth_pct", "nps", "nps_n"} <= set(rows[0])
    # the latest version when none is named; an example plan by id; unknown plans and bad input are 4xx
    assert api.get("/v1/experience/earned-growth?plan=eg-api", role="product").status_code == 200
    assert api.get("/v1/experience/earned-growth?plan=hw-connect", role="product").status_code == 200
    missing = api.get("/v1/experience/earned-growth?plan=no-such-plan", role="product")
    assert missing.status_code == 404 and "no plan" in missing.json()["error"]["message"]
    assert api.get("/v1/experience/earned-growth?plan=eg-api&month=2025-04-02", role="product").status_code == 422
    assert api.get("/v1/experience/earned-growth?plan=eg-api&by=touchpoint", role="product").status_code == 422
    assert api.get("/v1/experience/earned-growth?plan=eg-api", role="pricing").status_code == 403
