"""Alerts on the real database with a real local webhook receiver: raise once, notify once, clear, redeliver."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from cxp.alerts import repository
from cxp.alerts.core.rules import parse_ruleset
from cxp.alerts.core.webhook import verify
from cxp.alerts.delivery import deliver_pending
from cxp.alerts.evaluator import evaluate
from cxp.core.config import AlertSettings
from cxp.store.rollups import refresh_all_pending
from tests.alerts.receiver import Receiver

pytestmark = pytest.mark.integration

SECRET = b"test-signing-secret-0123456789abcdef"
ALERT_TABLES = "alert_deliveries, alert_outbox, alert_history, alerts, alert_rules, alert_eval_state, alert_device_seen"


@pytest.fixture
def alert_db(db: psycopg.Connection, registered: list[str]) -> psycopg.Connection:
    """The emptied test database with the registered fleet and no alert state."""
    db.execute(f"TRUNCATE {ALERT_TABLES} RESTART IDENTITY CASCADE")
    return db


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def alert_settings(tmp_path) -> AlertSettings:
    (tmp_path / "ops.secret").write_bytes(SECRET)
    return AlertSettings(secrets_dir=tmp_path, webhook_attempts=2, webhook_timeout_s=2)


def _rules(db: psycopg.Connection, *rules: dict) -> None:
    repository.import_rules(db, rules=list(parse_ruleset(json.dumps({"rules": list(rules)})).rules), by="test")


def _usage(db: psycopg.Connection, *, hour: datetime, n: int, failures: int, touchpoint: str = "brew") -> None:
    """`n` usage events of a touchpoint spread over the fleet inside one hour, the first `failures` failing."""
    db.execute(
        "INSERT INTO events (device_key, ts, seq, kind, touchpoint, success, latency_ms)"
        " SELECT d.device_key, %(h)s + make_interval(secs => g * 60.0 / %(n)s * 59), g, 'usage', %(tp)s, g > %(f)s, 100"
        " FROM generate_series(1, %(n)s) g JOIN devices d ON d.device_id = 'dev-00' || (g %% 5)",
        {"h": hour, "n": n, "f": failures, "tp": touchpoint})
    db.execute("INSERT INTO rollup_dirty SELECT DISTINCT device_key, (ts AT TIME ZONE 'UTC')::date FROM events")
    refresh_all_pending(db)


def _verified(receiver: Receiver) -> list[dict]:
    out = []
    for headers, body in receiver.got:
        assert verify(secret=SECRET, body=body, header=headers["x-cxp-signature"], now=int(time.time()))
        doc = json.loads(body)
        assert headers["idempotency-key"] == doc["idempotency_key"]
        out.append(doc)
    return out


@pytest.mark.parametrize("extra_scope", [{}, {"account_id": "acc-1"}], ids=["shared-scan", "scoped-query"])
def test_failing_touchpoint_raises_one_alert_and_one_notification_then_clears(alert_db, receiver, alert_settings,
                                                                             extra_scope):
    db = alert_db
    h = (datetime.now(UTC) - timedelta(hours=5)).replace(minute=0, second=0, microsecond=0)
    for back in range(1, 7):
        _usage(db, hour=h - timedelta(hours=back), n=30, failures=0)
    _usage(db, hour=h, n=40, failures=20)
    _usage(db, hour=h + timedelta(hours=1), n=40, failures=0)
    _rules(db, {"name": "brew-fails", "severity": "critical", "hold_down_s": 600,
                "scope": {"product_id": "test-p1", "touchpoint": "brew", **extra_scope},
                "params": {"kind": "touchpoint", "window_h": 1, "min_n": 20, "max_failure_rate": 0.2,
                           "baseline_h": 6},
                "channels": [{"url": receiver.url, "secret_ref": "ops"}]})

    first = evaluate(db, now=h + timedelta(minutes=59))
    assert (first.opened, first.cleared) == (1, 0)
    again = evaluate(db, now=h + timedelta(minutes=59, seconds=30))
    assert (again.opened, again.firing) == (0, 1)  # deduplicated: still one alert
    assert deliver_pending(db, settings=alert_settings).delivered == 1
    assert deliver_pending(db, settings=alert_settings).delivered == 0
    [opened] = _verified(receiver)
    assert opened["type"] == "alert.opened" and opened["alert"]["entity"] == "test-p1/brew"
    assert set(opened["alert"]["values"]["reasons"]) == {"failure_rate", "baseline_drop"}

    recovered = evaluate(db, now=h + timedelta(hours=1, minutes=30))  # the window now holds only successes
    assert (recovered.firing, recovered.cleared) == (0, 0)  # hold-down running
    cleared = evaluate(db, now=h + timedelta(hours=1, minutes=41))
    assert cleared.cleared == 1
    deliver_pending(db, settings=alert_settings)
    docs = _verified(receiver)
    assert [d["type"] for d in docs] == ["alert.opened", "alert.cleared"]
    assert docs[0]["alert"]["id"] == docs[1]["alert"]["id"]
    [row] = repository.list_alerts(db)
    assert row["state"] == "cleared"
    history = [e["event"] for e in repository.get_alert(db, alert_id=row["alert_id"])["history"]]
    assert history == ["opened", "cleared"]


def test_silent_device_raises_a_silence_alert(alert_db):
    db = alert_db
    now = datetime.now(UTC)
    db.execute("INSERT INTO device_state (device_key, ts, seq)"
               " SELECT device_key, CASE WHEN device_id = 'dev-004' THEN %s ELSE %s END, 1 FROM devices",
               (now - timedelta(hours=5), now - timedelta(minutes=10)))
    _rules(db, {"name": "offline", "params": {"kind": "silence", "k": 3}},
           {"name": "offline-consumers", "scope": {"segment": "consumer"}, "params": {"kind": "silence", "k": 4}},
           {"name": "offline-dev3", "scope": {"device_id": "dev-003"}, "params": {"kind": "silence", "k": 1}},
           {"name": "offline-long", "params": {"kind": "silence", "k": 6}})
    result = evaluate(db, now=now)
    assert result.opened == 2  # dev-004 (5 h) under k=3 and k=4 (segment); not k=6; dev-003 is heard from
    alerts = repository.list_alerts(db, live_only=True)
    assert {(a["rule_name"], a["entity"]) for a in alerts} == {("offline", "dev-004"), ("offline-consumers", "dev-004")}
    alert = next(a for a in alerts if a["rule_name"] == "offline")
    assert alert["trigger_values"]["limit_s"] == 3 * 3600
    # The device reports again: the alert clears after the hold-down (default 300 s).
    db.execute("INSERT INTO device_state (device_key, ts, seq) SELECT device_key, %s, 2 FROM devices"
               " WHERE device_id = 'dev-004'", (now + timedelta(seconds=1),))
    evaluate(db, now=now + timedelta(seconds=2))
    assert evaluate(db, now=now + timedelta(seconds=303)).cleared == 2


def test_receiver_down_gets_every_notification_once_in_order_signed(alert_db, receiver, alert_settings):
    db = alert_db
    now = datetime.now(UTC)
    db.execute("INSERT INTO device_state (device_key, ts, seq) SELECT device_key, %s, 1 FROM devices",
               (now - timedelta(hours=5),))
    _rules(db, {"name": "offline", "hold_down_s": 0, "params": {"kind": "silence", "k": 3},
                "channels": [{"url": receiver.url, "secret_ref": "ops", "format": "slack"}]})
    receiver.stop()
    assert evaluate(db, now=now).opened == 5
    first = deliver_pending(db, settings=alert_settings)
    assert first.delivered == 0 and first.failed_channels == 1
    # Recovery while the receiver is still down: five "cleared" queue behind the five "opened".
    db.execute("INSERT INTO device_state (device_key, ts, seq) SELECT device_key, %s, 2 FROM devices", (now,))
    assert evaluate(db, now=now + timedelta(seconds=1)).cleared == 5
    receiver.status = 503
    receiver.start()

    def later(hours: int):
        return lambda: datetime.now(UTC) + timedelta(hours=hours)  # past every backoff so far

    assert deliver_pending(db, settings=alert_settings, now=later(1)).delivered == 0  # 503 is not delivered
    receiver.status = 200
    assert deliver_pending(db, settings=alert_settings, now=later(2)).delivered == 10
    assert deliver_pending(db, settings=alert_settings, now=later(3)).delivered == 0
    docs = _verified(receiver)
    assert len(docs) == 10 and len({d["idempotency_key"] for d in docs}) == 10
    assert [d["type"] for d in docs] == ["alert.opened"] * 5 + ["alert.cleared"] * 5
    ids = [d["alert"]["id"] for d in docs]
    assert ids[:5] == sorted(ids[:5]) and ids[5:] == ids[:5]
    assert all(d["text"].startswith(":") for d in docs)  # Slack-compatible
    log = repository.get_alert(db, alert_id=ids[0])["deliveries"]
    statuses = [d["status"] for d in log if d["event"] == "opened"]
    assert statuses[0] is None and 503 in statuses and statuses[-1] == 200


def test_flapping_condition_does_not_spam(alert_db, receiver, alert_settings):
    db = alert_db
    now = datetime.now(UTC)
    _rules(db, {"name": "dead", "hold_down_s": 120,
                "params": {"kind": "pipeline", "metric": "dead_letters", "window_s": 10, "max_value": 0},
                "channels": [{"url": receiver.url, "secret_ref": "ops"}]})
    for i in range(20):  # a dead letter every other 10-second step: the condition flaps
        t = now + timedelta(seconds=10 * i)
        if i % 2 == 0:
            db.execute("INSERT INTO dead_letters (received_at, topic, reason, payload_bytes)"
                       " VALUES (%s, 't', 'bad_json', 1)", (t - timedelta(seconds=1),))
        evaluate(db, now=t)
    deliver_pending(db, settings=alert_settings)
    assert [json.loads(b)["type"] for _, b in receiver.got] == ["alert.opened"]
    assert len(repository.list_alerts(db)) == 1


def test_leader_lock_lets_one_evaluator_run(alert_db, settings):
    from cxp.store.db import connect

    _rules(alert_db, {"name": "offline", "params": {"kind": "silence"}})
    with connect(settings.db) as other, other.transaction():
        other.execute("SELECT pg_advisory_xact_lock(%s)", (0x6378_7016,))
        assert evaluate(alert_db) is None
    assert evaluate(alert_db) is not None


def test_rule_versions_change_only_when_the_definition_does(alert_db):
    rule = {"name": "offline", "params": {"kind": "silence", "k": 3}}
    _rules(alert_db, rule)
    _rules(alert_db, rule)
    _rules(alert_db, {**rule, "params": {"kind": "silence", "k": 4}})
    assert [v["version"] for v in repository.rule_versions(alert_db, name="offline")] == [2, 1]
    [current] = repository.current_rules(alert_db)
    assert current.version == 2 and current.params.k == 4


def test_rate_limited_channel_delivers_the_rest_later_in_order(alert_db, receiver, alert_settings):
    db = alert_db
    now = datetime.now(UTC)
    db.execute("INSERT INTO device_state (device_key, ts, seq) SELECT device_key, %s, 1 FROM devices",
               (now - timedelta(hours=5),))
    _rules(db, {"name": "offline", "params": {"kind": "silence", "k": 3},
                "channels": [{"url": receiver.url, "secret_ref": "ops", "max_per_hour": 2}]})
    assert evaluate(db, now=now).opened == 5
    assert deliver_pending(db, settings=alert_settings).delivered == 2
    assert deliver_pending(db, settings=alert_settings).delivered == 0  # held, not failed
    in_61_min = lambda: datetime.now(UTC) + timedelta(minutes=61)  # noqa: E731
    assert deliver_pending(db, settings=alert_settings, now=in_61_min).delivered == 2
    in_2_h = lambda: datetime.now(UTC) + timedelta(minutes=122)  # noqa: E731
    assert deliver_pending(db, settings=alert_settings, now=in_2_h).delivered == 1
    assert [d["alert"]["entity"] for d in _verified(receiver)] == [f"dev-00{i}" for i in range(5)]
