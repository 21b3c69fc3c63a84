"""The OpenAPI document says what the server enforces (issue 11): days are YYYY-MM-DD within stated bounds, the
400 of an unparseable body is documented, and a float the schema allows is one the database can store."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def _param(doc: dict, path: str, name: str) -> dict:
    params = doc["paths"][path]["get"]["parameters"]
    schema = next(p for p in params if p["name"] == name)["schema"]
    return next(s for s in schema.get("anyOf", [schema]) if s.get("type") != "null")


def test_a_day_is_a_date_not_a_unix_time(test_db_api) -> None:
    for value in ("0", "1700000000", "2026-1-5", "2026-01-05T00:00:00Z"):
        r = test_db_api.get(f"/v1/experience/health?start={value}", role="product")
        assert r.status_code == 422, (value, r.status_code, r.text[:200])
        assert r.json()["error"]["details"][0]["loc"] == ["query", "start"]
    assert test_db_api.get("/v1/experience/health?start=1969-12-31", role="product").status_code == 422
    assert test_db_api.get("/v1/experience/health?end=2201-01-01", role="product").status_code == 422
    assert test_db_api.get("/v1/experience/health?start=2026-01-05", role="product").status_code == 200


def test_day_bounds_are_in_the_schema(test_db_api) -> None:
    doc = test_db_api.client.get("/openapi.json").json()
    start = _param(doc, "/v1/experience/health", "start")
    assert (start["format"], start["formatMinimum"], start["formatMaximum"]) == ("date", "1970-01-01", "2200-12-31")
    assert start["pattern"].startswith("^(19[7-9]")
    period = doc["components"]["schemas"]["PeriodIn"]["properties"]["start"]
    period = next(s for s in period["anyOf"] if s.get("type") != "null")
    assert (period["formatMinimum"], period["formatMaximum"]) == ("1970-01-01", "2199-12-31")


def test_floats_the_schema_allows_are_stored(db, test_db_api) -> None:
    # before: 1e-50 passed `exclusiveMinimum: 0` and then failed in the database's `real` column (underflow)
    api = test_db_api
    doc = api.client.get("/openapi.json").json()["components"]["schemas"]
    tp = doc["Touchpoint"]["properties"]
    for field in ("target_latency_ms", "target_duration_s"):
        number = next(s for s in tp[field]["anyOf"] if s.get("type") == "number")
        assert number["minimum"] > 1e-30, number
        body = {"name": "Tiny", "expected_active_days_per_week": 1e-50, "touchpoints": [
            {"touchpoint": "t", "journey_stage": "purchase", "owner": "brand", field: number["minimum"]}]}
        r = api.client.put("/v1/registry/products/tiny", headers=api.headers("admin"), json=body)
        assert r.status_code == 200, r.text
        assert r.json()["touchpoints"][0][field] == pytest.approx(number["minimum"])
        assert r.json()["expected_active_days_per_week"] == 0
        too_small = {**body, "touchpoints": [{**body["touchpoints"][0], field: number["minimum"] / 10}]}
        r = api.client.put("/v1/registry/products/tiny", headers=api.headers("admin"), json=too_small)
        assert r.status_code == 422 and r.json()["error"]["details"][0]["loc"][-1] == field, r.text


def test_every_400_the_server_sends_is_documented(test_db_api) -> None:
    api = test_db_api
    r = api.client.post("/v1/registry/devices/import", headers={**api.headers("admin"),
                                                               "content-type": "multipart/form-data"}, content=b"x")
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    doc = api.client.get("/openapi.json").json()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            content = op.get("requestBody", {}).get("content", {})
            if "multipart/form-data" in content:  # Starlette answers 400 to a multipart body it cannot parse
                assert "400" in op["responses"], (method, path)
