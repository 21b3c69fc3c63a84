"""Registry changes that used to answer 500 or silently rewrite history: duplicate ids in an import, races with a
concurrent delete, and moving a device with telemetry to another product or account (issue 11)."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from cxp.store.db import connect

pytestmark = pytest.mark.integration

DEVICE = {"product_id": "test-p1", "account_id": "acc-1", "activated_at": "2026-01-01T00:00:00Z"}


def _upload(api, kind: str, text: str, **params):
    return api.client.post(f"/v1/registry/{kind}/import", headers=api.headers("admin"), params=params,
                           files={"file": (f"{kind}.csv", text.encode(), "text/csv")})


def _with_telemetry(db: psycopg.Connection, device_id: str) -> None:
    db.execute("INSERT INTO device_state (device_key, ts, seq, battery_pct)"
               " SELECT device_key, now(), 1, 80 FROM devices WHERE device_id = %s", (device_id,))


def _second_product_and_account(api) -> None:
    body = {"name": "Other", "touchpoints": [{"touchpoint": "brew", "journey_stage": "post_purchase",
                                              "owner": "brand"}]}
    assert api.client.put("/v1/registry/products/test-p2", headers=api.headers("admin"), json=body).status_code == 200
    assert api.client.put("/v1/registry/accounts/acc-2", headers=api.headers("admin"),
                          json={"name": "Two"}).status_code == 200


def test_a_device_id_twice_in_an_import_is_a_422_naming_both_lines(db, registered, test_db_api) -> None:
    text = ("device_id,product_id,account_id,activated_at\n"
            "new-1,test-p1,acc-1,2026-02-01T00:00:00Z\n"
            "new-2,test-p1,acc-1,2026-02-01T00:00:00Z\n"
            "new-1,test-p1,,2026-02-02T00:00:00Z\n")
    r = _upload(test_db_api, "devices", text)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["details"][0]["loc"] == ["line", 4, "device_id"]
    assert "line 2" in error["message"] and "line 4" in error["message"]
    assert db.execute("SELECT count(*) FROM devices WHERE device_id LIKE 'new-%'").fetchone()[0] == 0


def _wait_until_blocked(db: psycopg.Connection, holder_pid: int) -> None:
    """Until some backend waits for a lock `holder_pid` holds (the API's statement is inside the race)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if db.execute("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                      (holder_pid,)).fetchone()[0]:
            return
        time.sleep(0.02)
    raise AssertionError("the API's statement never waited for the concurrent transaction")


def _race(api, db, settings, concurrent_sql: str, params: tuple, request) -> object:
    """Run `request(api)` in a thread while another transaction holds `concurrent_sql`; commit it once the
    request's statement waits for it; the request's response."""
    result: dict[str, object] = {}
    with connect(settings.db, autocommit=False) as other:
        other.execute(concurrent_sql, params)
        thread = threading.Thread(target=lambda: result.setdefault("r", request(api)))
        thread.start()
        try:
            _wait_until_blocked(db, other.info.backend_pid)
        finally:
            other.commit()
            thread.join(30)
    return result["r"]


def test_put_device_while_its_product_is_deleted_is_a_409(db, registered, settings, test_db_api) -> None:
    # The PUT checks the product exists (it does, for its snapshot), then its insert waits on the deleting
    # transaction's row lock and fails the foreign key once that commits: a 409, not a 500.
    body = {"name": "Doomed", "touchpoints": []}
    assert test_db_api.client.put("/v1/registry/products/doomed", headers=test_db_api.headers("admin"),
                                  json=body).status_code == 200
    r = _race(test_db_api, db, settings, "DELETE FROM products WHERE product_id = %s", ("doomed",),
              lambda api: api.client.put("/v1/registry/devices/racer", headers=api.headers("admin"),
                                         json={**DEVICE, "product_id": "doomed"}))
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "conflict" and "retry" in r.json()["error"]["message"]
    assert db.execute("SELECT count(*) FROM devices WHERE device_id = 'racer'").fetchone()[0] == 0


def test_delete_product_while_a_device_is_added_is_a_409(db, registered, settings, test_db_api) -> None:
    _second_product_and_account(test_db_api)
    r = _race(test_db_api, db, settings,
              "INSERT INTO devices (device_id, product_id, activated_at) VALUES (%s, 'test-p2', now())", ("late",),
              lambda api: api.client.delete("/v1/registry/products/test-p2", headers=api.headers("admin")))
    assert r.status_code == 409, r.text
    assert db.execute("SELECT count(*) FROM products WHERE product_id = 'test-p2'").fetchone()[0] == 1


def test_moving_a_device_with_telemetry_needs_force(db, registered, test_db_api) -> None:
    api = test_db_api
    _second_product_and_account(api)
    device = registered[0]
    _with_telemetry(db, device)
    for change in ({"product_id": "test-p2"}, {"account_id": "acc-2"}, {"account_id": None}):
        r = api.client.put(f"/v1/registry/devices/{device}", headers=api.headers("admin"), json={**DEVICE, **change})
        assert r.status_code == 409, (change, r.text)
        assert "telemetry" in r.json()["error"]["message"] and "force=true" in r.json()["error"]["message"]
    stored = db.execute("SELECT product_id, account_id FROM devices WHERE device_id = %s", (device,)).fetchone()
    assert stored == ("test-p1", "acc-1")
    # the same device, unmoved, may still be updated; a device without telemetry may move freely
    r = api.client.put(f"/v1/registry/devices/{device}", headers=api.headers("admin"), json={**DEVICE, "plan": "pro"})
    assert r.status_code == 200 and r.json()["plan"] == "pro"
    r = api.client.put(f"/v1/registry/devices/{registered[1]}", headers=api.headers("admin"),
                       json={**DEVICE, "product_id": "test-p2"})
    assert r.status_code == 200, r.text
    # the account keeps its device, so it cannot be deleted from under the history
    assert api.client.delete("/v1/registry/accounts/acc-1", headers=api.headers("admin")).status_code == 409
    # an import is refused as a whole, naming the line; force=true moves it
    text = (f"device_id,product_id,account_id,activated_at\n{registered[2]},test-p1,acc-2,2026-01-01T00:00:00Z\n"
            f"{device},test-p2,acc-2,2026-01-01T00:00:00Z\n")
    r = _upload(api, "devices", text)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["details"] == [{"loc": ["line", 3, "device_id"], "message": r.json()["error"][
        "details"][0]["message"]}]
    assert db.execute("SELECT account_id FROM devices WHERE device_id = %s", (registered[2],)).fetchone()[0] == "acc-1"
    assert _upload(api, "devices", text, force="true").status_code == 200
    r = api.client.put(f"/v1/registry/devices/{device}?force=true", headers=api.headers("admin"),
                       json={**DEVICE, "product_id": "test-p2", "account_id": "acc-2"})
    assert r.status_code == 200 and r.json()["account_id"] == "acc-2"
