"""The gateway against the real broker and database: exactly-once storage and dead letters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.fixtures.gateway import wait_for
from tests.fixtures.mqtt import batch_payload, usage
from tests.fixtures.stack import recent

pytestmark = pytest.mark.integration


def count(db, sql: str, *params) -> int:
    return db.execute(sql, params).fetchone()[0]


def test_same_message_twice_is_stored_once(db, registered, publisher, start_gateway):
    gw = start_gateway()
    ts = recent(10)
    payload = batch_payload([usage(1, ts), usage(2, ts + timedelta(seconds=1)),
                             {"seq": 3, "ts": ts.isoformat(), "kind": "state", "battery_pct": 55.0}],
                            device_id="dev-000", sent_at=datetime.now(UTC))
    topic = publisher.topic("dev-000")
    assert publisher.publish([(topic, payload), (topic, payload)]) == 2
    assert wait_for(lambda: count(db, "SELECT count(*) FROM events") == 2, timeout=20)
    assert wait_for(lambda: count(db, "SELECT count(*) FROM device_state") == 1, timeout=5)
    assert gw.stop() == 0
    stats = gw.final_stats()
    assert stats["received"] == 2 and stats["duplicates"] == 3 and stats["dead_lettered"] == 0
    assert count(db, "SELECT count(*) FROM events") == 2
    assert count(db, "SELECT count(*) FROM dead_letters") == 0


def _malformed_corpus(ts: datetime) -> list[tuple[str, bytes, str]]:
    """(device, payload, expected reason) for every way a message can be bad."""
    ok = [usage(1, ts)]
    return [
        ("dev-001", b"{not json", "invalid_json"),
        ("dev-001", batch_payload([{**usage(1, ts), "duration_s": "long"}]), "schema"),
        ("dev-001", batch_payload([{"seq": 1, "kind": "usage", "touchpoint": "brew"}]), "schema"),  # no ts
        ("dev-001", json.dumps({"v": 1, "events": []}).encode(), "schema"),
        ("dev-001", batch_payload([{**usage(1, ts), "ts": "2026-03-01T10:00:00"}]), "schema"),  # naive time
        ("dev-001", batch_payload([{"seq": 1, "ts": ts.isoformat(), "kind": "teleport"}]), "schema"),
        ("dev-001", batch_payload([{"seq": 1, "ts": ts.isoformat(), "kind": "feedback"}]), "schema"),
        ("dev-001", b"{" + b'"pad": "' + b"x" * 300_000 + b'"}', "oversize"),
        ("dev-001", batch_payload(ok, device_id="dev-002"), "device_mismatch"),
        ("ghost-9", batch_payload(ok), "unknown_device"),
        ("dev-001", batch_payload([usage(1, datetime.now(UTC) + timedelta(days=2))]), "future_timestamp"),
        ("dev-001", batch_payload([usage(1, datetime(2025, 6, 1, tzinfo=UTC))]), "before_activation"),
    ]


def test_malformed_corpus_is_dead_lettered_with_reasons(db, registered, publisher, start_gateway):
    gw = start_gateway()
    ts = recent(5)
    corpus = _malformed_corpus(ts)
    good = batch_payload([usage(7, ts), usage(8, ts + timedelta(seconds=2))], device_id="dev-003")
    items = [(publisher.topic(dev), payload) for dev, payload, _ in corpus]
    items.insert(len(items) // 2, (publisher.topic("dev-003"), good))  # good mail in the middle of the bad
    items.append((f"{publisher.prefix}/dev-001/other", batch_payload([usage(1, ts)])))  # not a telemetry topic
    assert publisher.publish(items) == len(items)
    assert wait_for(lambda: count(db, "SELECT count(*) FROM dead_letters") == len(corpus), timeout=20), \
        db.execute("SELECT reason, detail FROM dead_letters").fetchall()
    rows = db.execute("SELECT device_id, reason, detail, payload_bytes, length(payload) FROM dead_letters"
                      " ORDER BY id").fetchall()
    assert sorted(r[1] for r in rows) == sorted(reason for _, _, reason in corpus)
    assert all(r[2] for r in rows), "every dead letter explains itself"
    assert all(r[4] <= 8192 for r in rows), "stored payloads are capped"
    assert max(r[3] for r in rows) > 300_000, "the original size is kept"
    # The good message between the bad ones was stored and the gateway is still alive.
    assert wait_for(lambda: count(db, "SELECT count(*) FROM events") == 2, timeout=10)
    assert gw.proc.poll() is None
    later = batch_payload([usage(9, ts + timedelta(seconds=5))], device_id="dev-003")
    publisher.publish([(publisher.topic("dev-003"), later)])
    assert wait_for(lambda: count(db, "SELECT count(*) FROM events") == 3, timeout=10)
    assert gw.stop() == 0
