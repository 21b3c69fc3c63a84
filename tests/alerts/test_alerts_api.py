"""The alerts API: product reads and acknowledges alerts, admin reads and imports rules; bad input is a 4xx."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cxp.alerts.evaluator import evaluate
from tests.alerts.test_alerts_db import alert_db  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

RULES = {"format": "cxp.alerts.rules/v1", "rules": [
    {"name": "offline", "params": {"kind": "silence", "k": 3}, "severity": "critical"}]}


def test_rules_import_export_ack_and_roles(alert_db, test_db_api):  # noqa: F811
    api = test_db_api
    assert api.client.put("/v1/alert-rules", json=RULES, headers=api.headers("product")).status_code == 403
    r = api.client.put("/v1/alert-rules", json=RULES, headers=api.headers("admin"))
    assert r.status_code == 200 and r.json()["rules"] == [{"name": "offline", "version": 1, "changed": True}]
    again = api.client.put("/v1/alert-rules", json=RULES, headers=api.headers("admin")).json()
    assert again["rules"][0]["changed"] is False
    exported = api.get("/v1/alert-rules", role="admin").json()
    assert exported["rules"][0]["name"] == "offline" and exported["rules"][0]["version"] == 1
    bad = api.client.put("/v1/alert-rules", json={"rules": [{"name": "x", "params": {"kind": "nope"}}]},
                         headers=api.headers("admin"))
    assert bad.status_code == 422

    now = datetime.now(UTC)
    alert_db.execute("INSERT INTO device_state (device_key, ts, seq) SELECT device_key, %s, 1 FROM devices",
                     (now - timedelta(hours=5),))
    assert evaluate(alert_db, now=now).opened == 5
    live = api.get("/v1/alerts?live_only=true", role="product").json()
    assert len(live) == 5 and {a["state"] for a in live} == {"open"}
    first = live[-1]["id"]
    acked = api.post(f"/v1/alerts/{first}/ack", role="product")
    assert acked.status_code == 200 and acked.json()["state"] == "acknowledged"
    assert acked.json()["acked_by"] == "pytest product"
    assert api.post(f"/v1/alerts/{first}/ack", role="product").status_code == 200  # idempotent
    detail = api.get(f"/v1/alerts/{first}", role="product").json()
    assert [h["event"] for h in detail["history"]] == ["opened", "acknowledged"]
    assert api.get("/v1/alerts/999999", role="product").status_code == 404
    assert api.post("/v1/alerts/999999/ack", role="product").status_code == 404
    assert api.get("/v1/alerts", role="pricing").status_code == 403
    assert api.get("/v1/alert-rules", role="product").status_code == 403
    assert api.get("/v1/alert-rules/offline/versions", role="admin").json()[0]["version"] == 1


def test_metrics_count_alerts_and_notifications(alert_db, test_db_api):  # noqa: F811
    now = datetime.now(UTC)
    test_db_api.client.put("/v1/alert-rules", json=RULES, headers=test_db_api.headers("admin"))
    alert_db.execute("INSERT INTO device_state (device_key, ts, seq) SELECT device_key, %s, 1 FROM devices",
                     (now - timedelta(hours=5),))
    evaluate(alert_db, now=now)
    text = test_db_api.client.get("/metrics").text
    assert 'cxp_alerts{severity="critical",state="open"} 5.0' in text
    assert "cxp_alerts_opened_total 5.0" in text and "cxp_alerts_scrape_ok 1.0" in text


def test_dashboard_page_lists_live_alerts_and_history(alert_db, test_db_api):  # noqa: F811
    from fastapi.testclient import TestClient

    now = datetime.now(UTC)
    test_db_api.client.put("/v1/alert-rules", json=RULES, headers=test_db_api.headers("admin"))
    alert_db.execute("INSERT INTO device_state (device_key, ts, seq) SELECT device_key, %s, 1 FROM devices",
                     (now - timedelta(hours=5),))
    evaluate(alert_db, now=now)
    # Not `with`: that would run the shared app's lifespan and close its pools at the end.
    web = TestClient(test_db_api.client.app, follow_redirects=False)
    try:
        r = web.post("/dashboard/login", data={"key": test_db_api.tokens["product"], "next": "/dashboard/alerts"})
        assert r.status_code == 303
        html = web.get("/dashboard/alerts").text
    finally:
        web.close()
    assert "Open and acknowledged (5)" in html and "dev-004" in html and 'href="/dashboard/alerts"' in html
    assert "<script>" not in html.split("</nav>", 1)[1]  # values are escaped, not injected
