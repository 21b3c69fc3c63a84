"""Incident and health rules on a simulated fleet with planted truth (tests/alerts/sim_fleet.py), a real database
and a real local webhook receiver: a planted incident raises exactly one alert and one notification and clears
after its recovery; a planted week-long failure raises the product's (and its accounts') health alerts only."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

from cxp.alerts import repository
from cxp.alerts.core.rules import parse_ruleset
from cxp.alerts.core.webhook import verify
from cxp.alerts.delivery import deliver_pending
from cxp.alerts.evaluator import evaluate
from cxp.core.config import AlertSettings, DbSettings, Settings
from cxp.store.admin import ALERT_TABLES
from cxp.store.db import connect
from cxp.store.migrate import apply_migrations
from tests.alerts import sim_fleet
from tests.alerts.receiver import Receiver

pytestmark = pytest.mark.integration

SECRET = b"test-signing-secret-0123456789abcdef"


@pytest.fixture(scope="module", params=[7, 11], ids=["seed7", "seed11"])
def sim(request, stack: Settings) -> Iterator[tuple[psycopg.Connection, sim_fleet.SimFleet]]:
    """The planted fleet in a database of its own (per-test truncation of the test database cannot touch it)."""
    db = DbSettings(**{**stack.db.model_dump(), "name": f"{stack.db.name}_alerts_sim"})
    with connect(stack.db, autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db.name,)).fetchone():
            from psycopg import sql

            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db.name)))
    conn = connect(db, autocommit=True)
    apply_migrations(conn)
    try:
        yield conn, sim_fleet.load(conn, seed=request.param)
    finally:
        conn.close()


@pytest.fixture
def sim_db(sim) -> tuple[psycopg.Connection, sim_fleet.SimFleet]:
    conn, fleet = sim
    conn.execute(f"TRUNCATE {', '.join(ALERT_TABLES)} RESTART IDENTITY CASCADE")
    return conn, fleet


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def alert_settings(tmp_path) -> AlertSettings:
    (tmp_path / "ops.secret").write_bytes(SECRET)
    return AlertSettings(secrets_dir=tmp_path, webhook_attempts=2, webhook_timeout_s=2)


def _rules(conn: psycopg.Connection, *rules: dict) -> None:
    repository.import_rules(conn, rules=list(parse_ruleset(json.dumps({"rules": list(rules)})).rules), by="test")


def _received(receiver: Receiver) -> list[dict]:
    docs = []
    for headers, body in receiver.got:
        assert verify(secret=SECRET, body=body, header=headers["x-cxp-signature"], now=int(time.time()))
        docs.append(json.loads(body))
    return docs


def test_planted_incident_raises_one_alert_and_one_notification_then_clears(sim_db, receiver, alert_settings):
    conn, fleet = sim_db
    inc = sim_fleet.INCIDENT
    _rules(
        conn,
        {
            "name": "incidents",
            "severity": "critical",
            "hold_down_s": 0,
            "params": {"kind": "incident"},
            "channels": [{"url": receiver.url, "secret_ref": "ops"}],
        },
    )
    # Three hours into the incident (telemetry written up to then): the detector's incident, still open.
    first = evaluate(conn, now=sim_fleet.CUTOFF)
    assert (first.rules, first.opened, first.failed) == (1, 1, [])
    [alert] = repository.list_alerts(conn)
    assert alert["entity"] == f"{inc.product}/{inc.touchpoint}/{inc.code}"
    assert (alert["product_id"], alert["touchpoint"]) == (inc.product, inc.touchpoint)
    values = alert["trigger_values"]
    # Episodes end at the device's next successful use: a few hit devices already had one, most have not.
    assert values["devices_affected"] >= 5 and values["recovered_episodes"] < values["episodes"] / 2
    assert inc.start <= datetime_of(values["start"]) < sim_fleet.CUTOFF
    # Within the hour: not due again (cadence); at the next hour: still the same one alert.
    assert evaluate(conn, now=sim_fleet.CUTOFF + timedelta(minutes=5)).deferred == 1
    again = evaluate(conn, now=sim_fleet.CUTOFF + timedelta(minutes=61))
    assert (again.rules, again.opened, again.firing) == (1, 0, 1)
    assert deliver_pending(conn, settings=alert_settings).delivered == 1
    assert [d["type"] for d in _received(receiver)] == ["alert.opened"]

    # The incident ends at 12:00 and every device hit sends its recovery within 10 minutes; the recoveries arrive
    # with the devices' next uploads (hourly, later for a device that is offline): the alert clears once they have.
    for hours in range(1, 7):
        at = inc.end + timedelta(hours=hours)
        fleet.write_until(conn, at)
        step = evaluate(conn, now=at)
        assert step.opened == 0
        if step.cleared:
            break
        assert step.firing == 1
    assert (step.firing, step.cleared) == (0, 1), "the incident did not recover within 6 hours"
    deliver_pending(conn, settings=alert_settings)
    docs = _received(receiver)
    assert [d["type"] for d in docs] == ["alert.opened", "alert.cleared"]
    assert docs[0]["alert"]["id"] == docs[1]["alert"]["id"] == alert["alert_id"]
    assert [a["state"] for a in repository.list_alerts(conn)] == ["cleared"]  # one alert in all


def datetime_of(text: str):  # noqa: ANN201 - a tz-aware datetime
    from datetime import datetime

    return datetime.fromisoformat(text)


def _single_product_accounts(conn: psycopg.Connection, product: str) -> list[str]:
    """Accounts whose devices (at least two, active since the first week) are all of one product."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT account_id FROM devices GROUP BY 1 HAVING bool_and(product_id = %s) AND count(*) >= 2"
            " AND max(activated_at) < %s ORDER BY 1",
            (product, sim_fleet.START + timedelta(days=1)),
        ).fetchall()
    ]


def test_week_long_failure_raises_health_alerts_for_that_product_only(sim_db, receiver, alert_settings):
    conn, _ = sim_db
    outage = sim_fleet.WEEK_OUTAGE
    brew_account = _single_product_accounts(conn, outage.product)[0]
    thermo_account = _single_product_accounts(conn, "thermo-x1")[0]
    _rules(
        conn,
        {
            "name": "health-drop",
            "params": {"kind": "health", "max_weekly_drop": 10},
            "channels": [{"url": receiver.url, "secret_ref": "ops"}],
        },
        {"name": "health-band", "params": {"kind": "health", "min_score": 70, "band_drop": True}},
        {
            "name": "key-account-brew",
            "scope": {"account_id": brew_account},
            "params": {"kind": "health", "level": "account", "max_weekly_drop": 10},
        },
        {
            "name": "key-account-thermo",
            "scope": {"account_id": thermo_account},
            "params": {"kind": "health", "level": "account", "max_weekly_drop": 10},
        },
        {"name": "fleet-drop", "params": {"kind": "health", "level": "fleet", "max_weekly_drop": 50}},
    )
    # Monday of the third week: the last whole week (the outage) against the first.
    monday = sim_fleet.START + timedelta(days=14, hours=1)
    result = evaluate(conn, now=monday)
    assert (result.rules, result.failed) == (5, [])
    live = {(a["rule_name"], a["entity"]): a for a in repository.list_alerts(conn, live_only=True)}
    assert set(live) == {
        ("health-drop", outage.product),
        ("health-band", outage.product),
        ("key-account-brew", brew_account),
    }
    drop = live[("health-drop", outage.product)]
    assert drop["trigger_values"]["delta"] <= -10 and drop["trigger_values"]["week"] == "2025-06-09"
    assert drop["product_id"] == outage.product  # marked on the health chart
    assert set(live[("health-band", outage.product)]["trigger_values"]["reasons"]) == {"below_band", "band_drop"}
    assert live[("key-account-brew", brew_account)]["product_id"] is None
    # Later the same day: not due; the next day: the same week, the same alerts, no new notification.
    assert evaluate(conn, now=monday + timedelta(hours=2)).deferred == 5
    assert evaluate(conn, now=monday + timedelta(days=1)).opened == 0
    assert deliver_pending(conn, settings=alert_settings).delivered == 1
    [doc] = _received(receiver)
    assert (doc["type"], doc["alert"]["entity"]) == ("alert.opened", outage.product)
