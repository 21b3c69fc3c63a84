"""Experience endpoints on the simulated fleet: the API answers what the services compute, paged and as CSV."""

from __future__ import annotations

import csv
import io

import pytest

from cxp.analytics import service

pytestmark = pytest.mark.integration


def test_product_health_matches_the_service(fleet_api, fleet_conn) -> None:
    r = fleet_api.get("/v1/experience/health?level=product&weeks=8", role="product")
    assert r.status_code == 200, r.text
    body = r.json()
    expected = service.get_health(conn=fleet_conn, level="product", weeks=8)
    assert body["total"] == len(expected.scores) == 3 * 8
    got = {(s["entity_id"], s["period_start"]): s["score"] for s in body["items"]}
    for s in expected.scores:
        assert got[(s.entity_id, s.period_start.isoformat())] == pytest.approx(s.score)
    first = body["items"][0]
    assert set(first["components"]) == {"reliability", "efficiency", "engagement", "trajectory", "voice"}
    assert first["drivers"] and "contribution" in first["drivers"][0]


def test_health_paging_latest_and_csv(fleet_api) -> None:
    all_devices = fleet_api.get("/v1/experience/health?level=device&latest=true&limit=1000", role="product").json()
    page = fleet_api.get("/v1/experience/health?level=device&latest=true&limit=50&offset=100", role="product").json()
    assert page["total"] == all_devices["total"] > 400
    assert [s["entity_id"] for s in page["items"]] == [s["entity_id"] for s in all_devices["items"][100:150]]
    text = fleet_api.get("/v1/experience/health?level=product&format=csv", role="product")
    assert text.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text.text)))
    assert len(rows) == 24 and {"entity_id", "score", "band", "components"} <= set(rows[0])


def test_health_history_of_one_product_and_unknown_entity(fleet_api, loaded_fleet) -> None:
    product, _ = loaded_fleet.error_prone
    history = fleet_api.get(f"/v1/experience/health/product/{product}?weeks=8", role="product").json()
    assert len(history) == 8 and all(h["entity_id"] == product for h in history)
    assert [h["period_start"] for h in history] == sorted(h["period_start"] for h in history)
    missing = fleet_api.get("/v1/experience/health/device/no-such-device", role="product")
    assert missing.status_code == 404 and "no-such-device" in missing.json()["error"]["message"]


def test_voice_nps_equals_the_service(fleet_api, fleet_conn) -> None:
    body = fleet_api.get("/v1/experience/voice?by=product&days=3650", role="product").json()
    expected = service.get_voice(conn=fleet_conn, by=("product",), days=10_000)
    assert body["overall"]["nps"]["n"] == expected.overall.nps.n
    assert body["overall"]["nps"]["value"] == pytest.approx(expected.overall.nps.value)
    assert {g["key"]["product"] for g in body["groups"]} == {"brew-c3", "ebike-s2", "thermo-x1"}


def test_touchpoints_flag_the_planted_fault(fleet_api, loaded_fleet) -> None:
    product, touchpoint = loaded_fleet.error_prone
    body = fleet_api.get("/v1/experience/touchpoints?days=3650", role="product").json()
    planted = next(t for t in body["touchpoints"] if (t["product_id"], t["touchpoint"]) == (product, touchpoint))
    assert planted["quadrant"] == "concentrate here"
    rows = list(csv.DictReader(io.StringIO(
        fleet_api.get("/v1/experience/touchpoints?days=3650&format=csv", role="product").text)))
    assert len(rows) == len(body["touchpoints"])


def test_churn_risk_is_ranked_and_pageable(fleet_api) -> None:
    body = fleet_api.get("/v1/experience/churn-risk?limit=10", role="product").json()
    assert body["total"] > 100 and len(body["items"]) == 10
    risks = [e["risk_score"] for e in body["items"]]
    assert risks == sorted(risks, reverse=True) and body["items"][0]["reasons"]
    accounts = fleet_api.get("/v1/experience/churn-risk?level=account&limit=5", role="product").json()
    assert all(e["entity_id"].startswith("acct-") for e in accounts["items"])


def test_report_journey_disruptions_personas(fleet_api, loaded_fleet) -> None:
    product, touchpoint = loaded_fleet.error_prone
    report = fleet_api.get("/v1/experience/report", role="product").json()
    assert f"{product}/{touchpoint}" in report["concerns"][0]["area"]
    journey = fleet_api.get("/v1/experience/journey?days=3650", role="product").json()
    assert journey["stages"][0]["stage"] == "registered"
    disruptions = fleet_api.get("/v1/experience/disruptions?days=3650", role="product").json()
    assert len(disruptions["incidents"]) >= 1
    personas = fleet_api.get("/v1/experience/personas?days=3650", role="product").json()
    assert personas["k"] == len(personas["segments"]) >= 3


def test_bad_filters_are_4xx_with_reasons(fleet_api) -> None:
    r = fleet_api.get("/v1/experience/voice?start=2025-05-01&end=2025-03-01", role="product")
    assert r.status_code == 422 and "after end" in r.json()["error"]["message"]
    r = fleet_api.get("/v1/experience/voice?by=planet", role="product")
    assert r.status_code == 422 and r.json()["error"]["details"][0]["loc"][:2] == ["query", "by"]
    r = fleet_api.get("/v1/experience/health?limit=0", role="product")
    assert r.status_code == 422
    empty = fleet_api.get("/v1/experience/health?product=no-such-product", role="product").json()
    assert empty["total"] == 0 and empty["reason"].startswith("not enough data")


def test_an_end_before_the_data_is_an_empty_answer_not_an_error(fleet_api) -> None:
    for path in ("/v1/experience/health?end=2001-01-01", "/v1/experience/touchpoints?end=2001-01-01",
                 "/v1/experience/health/product/brew-c3?end=2001-01-01"):
        r = fleet_api.get(path, role="product")
        assert r.status_code in (200, 404), (path, r.text)
        assert r.status_code != 404 or "no product" in r.json()["error"]["message"]
    assert fleet_api.get("/v1/experience/health?end=2001-01-01", role="product").json()["total"] == 0
