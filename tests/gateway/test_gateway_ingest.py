"""The gateway against the real broker and database: exactly-once storage and dead letters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from cxp.contract import MAX_PAYLOAD_BYTES
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
        # A large message refused for its last event: its whole payload is kept, to replay the good ones.
        ("dev-001", batch_payload([usage(i, ts) for i in range(1, 1000)] + [{**usage(1000, ts), "duration_s": -5}]),
         "schema"),
        # Values PostgreSQL would refuse, refused by the contract before the database (issue 12).
        ("dev-001", batch_payload([{"seq": 1, "ts": ts.isoformat(), "kind": "lifecycle", "stage": "setup",
                                    "detail": {"note": "a\u0000b"}}]), "schema"),
        ("dev-001", batch_payload([usage(1, ts, duration_s=1e-50)]), "schema"),  # underflows `real`
        ("dev-001", batch_payload([{"seq": 1, "ts": ts.isoformat(), "kind": "state", "uptime_s": 1e308}]), "schema"),
        ("dev-001", batch_payload([{**usage(1, ts), "ts": "20261130"}]), "schema"),  # not Unix seconds either
        ("dev-001", batch_payload([{**usage(1, ts), "ts": "1764496800"}]), "schema"),
        ("dev-001", batch_payload([{**usage(1, ts), "ts": "2026-11-30T00:00:00+23:59"}]), "schema"),
        ("dev-001", b'{"v": 1, "events": [{"seq": 1, "ts": "%s", "kind": "usage", "touchpoint": "brew",'
                    b' "duration_s": -5, "duration_s": 5}]}' % ts.isoformat().encode(), "duplicate_key"),
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
    assert all(r[4] == min(r[3], MAX_PAYLOAD_BYTES) for r in rows), "whole payloads, capped at the contract's maximum"
    assert max(r[3] for r in rows) > 90_000, "a large message is kept whole"
    # The good message between the bad ones was stored and the gateway is still alive.
    assert wait_for(lambda: count(db, "SELECT count(*) FROM events") == 2, timeout=10)
    assert gw.proc.poll() is None
    later = batch_payload([usage(9, ts + timedelta(seconds=5))], device_id="dev-003")
    publisher.publish([(publisher.topic("dev-003"), later)])
    assert wait_for(lambda: count(db, "SELECT count(*) FROM events") == 3, timeout=10)
    assert gw.stop() == 0


def test_what_is_stored_is_the_timestamp_that_was_validated(db, registered, publisher, start_gateway):
    gw = start_gateway()
    ts = recent(10).replace(microsecond=0)
    local = ts.astimezone(timezone(timedelta(hours=5, minutes=30)))
    # An offset, a lower-case separator and nanoseconds: parsed once by the contract, written as parsed.
    raw = local.strftime("%Y-%m-%dt%H:%M:%S") + ".123456789+05:30"
    publisher.publish([(publisher.topic("dev-000"), batch_payload([{**usage(1, ts), "ts": raw}]))])
    assert wait_for(lambda: count(db, "SELECT count(*) FROM events") == 1, timeout=20)
    assert db.execute("SELECT ts FROM events").fetchone()[0] == ts + timedelta(microseconds=123456)
    assert count(db, "SELECT count(*) FROM dead_letters") == 0
    assert gw.stop() == 0


def test_a_retained_bad_message_is_dead_lettered_once(db, registered, publisher, start_gateway):
    topic = publisher.topic("dev-004")
    publisher.client.publish(topic, b"{not json", qos=1, retain=True).wait_for_publish(10)
    try:
        gw = start_gateway("gw1")
        assert wait_for(lambda: count(db, "SELECT count(*) FROM dead_letters") == 1, timeout=20)
        assert gw.stop() == 0
        gw = start_gateway("gw2")  # the same persistent session: the subscription exists already
        good = batch_payload([usage(1, recent(5))])
        publisher.publish([(topic, good)])
        assert wait_for(lambda: count(db, "SELECT count(*) FROM events") == 1, timeout=20)
        assert gw.stop() == 0
        assert count(db, "SELECT count(*) FROM dead_letters") == 1
    finally:
        publisher.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)  # clears the retained one


def test_a_device_with_a_1970_clock_is_reported_not_averaged(db, registered, publisher, start_gateway):
    gw = start_gateway()
    ts = recent(10)
    skewed = batch_payload([usage(1, ts)], device_id="dev-000", sent_at=datetime(1970, 1, 1, tzinfo=UTC))
    ahead = batch_payload([usage(1, ts)], device_id="dev-001", sent_at=datetime.now(UTC) + timedelta(days=1))
    honest = batch_payload([usage(1, ts)], device_id="dev-002", sent_at=datetime.now(UTC))
    publisher.publish([(publisher.topic("dev-000"), skewed), (publisher.topic("dev-001"), ahead),
                       (publisher.topic("dev-002"), honest)])
    assert wait_for(lambda: count(db, "SELECT count(*) FROM events") == 3, timeout=20)
    assert gw.stop() == 0
    stats = gw.final_stats()
    assert stats["skewed_clock_devices"] == 2
    assert sorted(stats["skewed_clock_sample"]) == ["dev-000", "dev-001"]
    assert stats["skewed_clock_sample"]["dev-000"] < -1.7e9  # about 56 years behind
    # Latency comes from the honest device only (a 1970 clock made the p50 1.8 × 10¹² ms), and from receipt.
    assert stats["publish_to_commit_ms_p99"] < 3_600_000
    assert stats["receive_to_commit_ms_p50"] is not None


def test_a_forged_future_seq_makes_the_genuine_event_a_visible_conflict(db, registered, publisher, start_gateway):
    """A forger who sends a device's future seq first still wins that seq (device identity, issue 10, is what keeps
    forgers off a device's topic), but the genuine event is no longer dropped as a duplicate: it is dead-lettered
    as seq_conflict with both contents, and the forged seq opens a gap in the device's sequence."""
    gw = start_gateway()
    ts = recent(10)
    topic = publisher.topic("dev-002")
    forged = batch_payload([usage(12, ts, touchpoint="app_pairing", success=False)], device_id="dev-002")
    assert publisher.publish([(topic, forged)]) == 1
    assert wait_for(lambda: count(db, "SELECT count(*) FROM events") == 1, timeout=20)
    genuine = [batch_payload([usage(s, ts + timedelta(seconds=s))], device_id="dev-002") for s in range(10, 13)]
    assert publisher.publish([(topic, p) for p in genuine]) == 3
    assert wait_for(lambda: count(db, "SELECT count(*) FROM dead_letters") == 1, timeout=20)
    assert wait_for(lambda: count(db, "SELECT count(*) FROM events") == 3, timeout=10)
    assert gw.stop() == 0
    reason, detail, payload = db.execute("SELECT reason, detail, payload FROM dead_letters").fetchone()
    assert reason == "seq_conflict"
    shown = json.loads(detail)["shown"][0]
    assert (shown["seq"], shown["stored"]["touchpoint"], shown["stored"]["success"]) == (12, "app_pairing", False)
    assert (shown["new"]["touchpoint"], shown["new"]["success"]) == ("brew", True)
    assert bytes(payload) == genuine[2]
    assert db.execute("SELECT seq, touchpoint FROM events ORDER BY seq").fetchall() == \
        [(10, "brew"), (11, "brew"), (12, "app_pairing")]
    assert gw.final_stats()["dead_lettered"] == 1
