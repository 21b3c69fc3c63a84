"""CX measures endpoints on the simulated fleet: engagement rate as JSON and CSV, role `product`."""

from __future__ import annotations

import csv
import io

import pytest

from cxp.analytics import service

pytestmark = pytest.mark.integration


def test_engagement_rate_matches_the_service_and_exports_csv(fleet_api, fleet_conn) -> None:
    r = fleet_api.get("/v1/experience/engagement-rate?weeks=8", role="product")
    assert r.status_code == 200, r.text
    body = r.json()
    expected = service.get_engagement_rate(conn=fleet_conn, weeks=8)
    assert len(body["rates"]) == len(expected.rates)
    got = {(x["product_id"], x["segment"], x["period_start"]): x for x in body["rates"]}
    for e in expected.rates:
        row = got[(e.product_id, e.segment, e.period_start.isoformat())]
        assert (row["reached"], row["engaged"]) == (e.reached, e.engaged)
    assert set(body["definitions"]) == {"brew-c3", "ebike-s2", "thermo-x1"}
    text = fleet_api.get("/v1/experience/engagement-rate?weeks=8&format=csv", role="product")
    assert text.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text.text)))
    assert len(rows) == len(expected.rates)
    assert {"product_id", "segment", "period_start", "reached", "engaged", "rate", "engagement_component"} <= set(
        rows[0]
    )


def test_a_stricter_rule_engages_fewer_and_bad_thresholds_are_422(fleet_api) -> None:
    loose = fleet_api.get("/v1/experience/engagement-rate?weeks=2&min_stickiness=0.3", role="product").json()
    strict = fleet_api.get("/v1/experience/engagement-rate?weeks=2&min_stickiness=0.9", role="product").json()
    assert sum(x["engaged"] for x in strict["rates"]) < sum(x["engaged"] for x in loose["rates"])
    bad = fleet_api.get("/v1/experience/engagement-rate?min_breadth=1.5", role="product")
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["loc"] == ["query", "min_breadth"]


def test_engagement_rate_needs_the_product_role(fleet_api) -> None:
    assert fleet_api.get("/v1/experience/engagement-rate", role="pricing").status_code == 403


def test_capability_ladder_json_and_csv(fleet_api, fleet_conn) -> None:
    body = fleet_api.get("/v1/experience/capability-ladder?weeks=8", role="product").json()
    expected = service.get_capability_ladder(conn=fleet_conn, weeks=8)
    assert len(body["levels"]) == len(expected.levels) > 0
    assert {c["product_id"] for c in body["contrasts"]} == {"brew-c3", "ebike-s2", "thermo-x1"}
    assert body["contrasts"][0]["health"]["metric"] == "health"
    text = fleet_api.get("/v1/experience/capability-ladder?weeks=8&format=csv", role="product")
    rows = list(csv.DictReader(io.StringIO(text.text)))
    assert len(rows) == len(expected.levels)
    assert {"product_id", "segment", "level", "devices", "reached", "share", "median_days_to_reach"} <= set(rows[0])


def test_journey_map_json_and_csv(fleet_api) -> None:
    body = fleet_api.get("/v1/experience/journey-map?product=thermo-x1&days=3650", role="product").json()
    assert body["stages"][0]["stage"] == "pre_purchase" and body["cells"]
    text = fleet_api.get("/v1/experience/journey-map?product=thermo-x1&days=3650&format=csv", role="product")
    rows = list(csv.DictReader(io.StringIO(text.text)))
    assert len(rows) == len(body["cells"]) and {"stage", "touchpoint", "reach", "performance", "csat"} <= set(rows[0])


def test_referrals_json_csv_and_role(fleet_api, fleet_conn) -> None:
    body = fleet_api.get("/v1/experience/referrals?by=product&by=segment&weeks=8", role="product").json()
    expected = service.get_referrals(conn=fleet_conn, by=("product", "segment"), weeks=8)
    assert body["by"] == ["product", "segment"] and len(body["groups"]) == len(expected.groups) > 0
    got = {(g["key"]["product"], g["key"]["segment"]): g for g in body["groups"]}
    for e in expected.groups:
        row = got[(e.key["product"], e.key["segment"])]
        assert (row["referrals"], row["devices"], row["nps_n"]) == (e.referrals, e.devices, e.nps_n)
    text = fleet_api.get("/v1/experience/referrals?by=cohort&weeks=8&format=csv", role="product")
    rows = list(csv.DictReader(io.StringIO(text.text)))
    assert rows and {"cohort", "referrals", "rate_per_100_weeks", "earned_new_devices", "nps", "nps_n"} <= set(rows[0])
    assert fleet_api.get("/v1/experience/referrals", role="pricing").status_code == 403
    bad = fleet_api.get("/v1/experience/referrals?by=touchpoint", role="product")
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["loc"][:2] == ["query", "by"]
