"""Registry endpoints: CRUD of products, accounts and devices, and all-or-nothing CSV import."""

from __future__ import annotations

import csv
import io

import pytest

pytestmark = pytest.mark.integration

PRODUCT = {"name": "Kettle K1", "heartbeat_interval_s": 900, "expected_active_days_per_week": 6,
           "touchpoints": [{"touchpoint": "boil", "journey_stage": "post_purchase", "owner": "brand", "is_core": True,
                            "target_latency_ms": 500, "unit": "litre"},
                           {"touchpoint": "app_pairing", "journey_stage": "purchase", "owner": "partner"}]}


def _upload(api, kind: str, text: str):
    return api.client.post(f"/v1/registry/{kind}/import", headers=api.headers("admin"),
                           files={"file": (f"{kind}.csv", text.encode(), "text/csv")})


def test_product_account_device_lifecycle(db, test_db_api) -> None:
    api = test_db_api
    created = api.client.put("/v1/registry/products/kettle-k1", headers=api.headers("admin"), json=PRODUCT)
    assert created.status_code == 200, created.text
    assert {t["touchpoint"] for t in created.json()["touchpoints"]} == {"boil", "app_pairing"}
    assert api.get("/v1/registry/products/kettle-k1").json()["heartbeat_interval_s"] == 900
    assert api.client.put("/v1/registry/accounts/acc-9", headers=api.headers("admin"),
                          json={"name": "Nine", "segment": "smb"}).status_code == 200
    device = {"product_id": "kettle-k1", "account_id": "acc-9", "activated_at": "2026-03-01T08:00:00+01:00"}
    r = api.client.put("/v1/registry/devices/k-1", headers=api.headers("admin"), json=device)
    assert r.status_code == 200 and r.json()["activated_at"].startswith("2026-03-01T07:00:00")
    listed = api.get("/v1/registry/devices?product=kettle-k1").json()
    assert listed["total"] == 1 and listed["items"][0]["device_id"] == "k-1"
    # references block deletes; the errors say why
    r = api.client.delete("/v1/registry/products/kettle-k1", headers=api.headers("admin"))
    assert r.status_code == 409 and "1 devices" in r.json()["error"]["message"]
    assert api.client.delete("/v1/registry/accounts/acc-9", headers=api.headers("admin")).status_code == 409
    assert api.client.delete("/v1/registry/devices/k-1", headers=api.headers("admin")).status_code == 204
    assert api.client.delete("/v1/registry/devices/k-1", headers=api.headers("admin")).status_code == 404
    assert api.client.delete("/v1/registry/products/kettle-k1", headers=api.headers("admin")).status_code == 204
    assert db.execute("SELECT count(*) FROM touchpoints WHERE product_id = 'kettle-k1'").fetchone()[0] == 0


def test_invalid_bodies_name_the_field(db, test_db_api) -> None:
    api = test_db_api
    bad = {**PRODUCT, "touchpoints": [{**PRODUCT["touchpoints"][0], "journey_stage": "afterlife"}]}
    r = api.client.put("/v1/registry/products/kettle-k1", headers=api.headers("admin"), json=bad)
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["loc"][-1] == "journey_stage"
    naive = {"product_id": "kettle-k1", "activated_at": "2026-03-01T08:00:00"}
    r = api.client.put("/v1/registry/devices/k-2", headers=api.headers("admin"), json=naive)
    assert r.status_code == 422 and "timezone" in r.text
    unknown = {"product_id": "no-such", "activated_at": "2026-03-01T08:00:00Z"}
    r = api.client.put("/v1/registry/devices/k-2", headers=api.headers("admin"), json=unknown)
    assert r.status_code == 422 and "unknown product 'no-such'" in r.json()["error"]["message"]
    assert api.client.put("/v1/registry/devices/bad id", headers=api.headers("admin"), json=unknown).status_code == 422
    # A device id is its broker username and topic level: the contract's alphabet, ':' excluded, ≤ 64 characters.
    for bad_id in ("k:1", "k" * 65):
        assert api.client.put(f"/v1/registry/devices/{bad_id}", headers=api.headers("admin"),
                              json=unknown).status_code == 422


def test_csv_import_is_all_or_nothing_with_line_numbers(db, test_db_api) -> None:
    api = test_db_api
    products = ("product_id,name,heartbeat_interval_s,expected_active_days_per_week,touchpoint,journey_stage,owner,"
                "is_core\nkettle-k1,Kettle,900,6,boil,post_purchase,brand,true\n"
                "kettle-k1,Kettle,900,6,descale,post_purchase,customer,false\n")
    r = _upload(api, "products", products)
    assert r.status_code == 200 and r.json() == {"kind": "products", "rows": 2, "stored": 1}
    accounts = "account_id,name,segment\nacc-1,One,consumer\nacc-2,Two,smb\n"
    assert _upload(api, "accounts", accounts).json()["stored"] == 2
    devices = ("device_id,product_id,account_id,activated_at\n"
               "k-1,kettle-k1,acc-1,2026-01-01T00:00:00Z\n"
               "k-2,kettle-k1,acc-404,2026-01-01T00:00:00Z\n"
               "k-3,kettle-k1,acc-2,not-a-date\n")
    r = _upload(api, "devices", devices)
    assert r.status_code == 422
    locs = [d["loc"] for d in r.json()["error"]["details"]]
    assert ["line", 4, "activated_at"] in locs
    colon = _upload(api, "devices", "device_id,product_id,activated_at\nk:9,kettle-k1,2026-01-01T00:00:00Z\n")
    assert colon.status_code == 422 and ["line", 2, "device_id"] in [d["loc"] for d in colon.json()["error"]["details"]]
    assert db.execute("SELECT count(*) FROM devices").fetchone()[0] == 0, "nothing imported from a bad file"
    fixed = devices.replace("acc-404", "acc-2").replace("not-a-date", "2026-02-01T00:00:00Z")
    assert _upload(api, "devices", fixed).json() == {"kind": "devices", "rows": 3, "stored": 3}
    rows = list(csv.DictReader(io.StringIO(api.get("/v1/registry/devices?format=csv").text)))
    assert [r["device_id"] for r in rows] == ["k-1", "k-2", "k-3"]
    assert api.get("/v1/registry/products/kettle-k1").json()["touchpoints"][0]["touchpoint"] == "boil"


@pytest.mark.parametrize(("text", "message"), [
    ("", "missing column"),
    ("account_id,name,colour\nacc-1,One,red\n", "unknown columns colour"),
    ("account_id,name\n", "no rows"),
    ("account_id,name\nacc-1,One,extra\n", "more fields"),
])
def test_malformed_csv_files_are_explained(db, test_db_api, text: str, message: str) -> None:
    r = _upload(test_db_api, "accounts", text)
    assert r.status_code == 422 and message in r.json()["error"]["message"] + str(r.json()["error"]["details"])
