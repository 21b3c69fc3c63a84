"""Sequence numbers are an identity (issue 12): one (device, seq) names one event across kinds and times; a re-send
with the same content is a duplicate, with other content a `seq_conflict` dead letter keeping both contents."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest

from cxp.store import ingest
from cxp.store.db import connect
from cxp.store.ingest import IngestMessage, write_batch
from tests.fixtures.gateway import wait_for
from tests.fixtures.mqtt import batch_payload, usage

pytestmark = pytest.mark.integration

ACTIVATED = datetime(2026, 1, 1, tzinfo=UTC)


def _key(db, device: str = "dev-000") -> int:
    return db.execute("SELECT device_key FROM devices WHERE device_id = %s", (device,)).fetchone()[0]


def _msg(key: int, payload: bytes, device: str = "dev-000") -> IngestMessage:
    return IngestMessage(
        f"d/{device}/telemetry", device, key, payload, datetime.now(UTC).timestamp(), ACTIVATED.timestamp()
    )


def _state(seq: int, ts: datetime, **extra) -> dict:
    return {"seq": seq, "ts": ts.isoformat(), "kind": "state", "battery_pct": 50.0, **extra}


def _letters(db) -> list[tuple[str, dict, dict]]:
    """(reason, detail as JSON, payload as JSON) of every dead letter, oldest first."""
    rows = db.execute("SELECT reason, detail, payload FROM dead_letters ORDER BY id").fetchall()
    return [(reason, json.loads(detail), json.loads(bytes(payload))) for reason, detail, payload in rows]


def _stored(db) -> list[tuple[int, str]]:
    return db.execute(
        "SELECT seq, kind::text FROM events UNION ALL SELECT seq, 'state' FROM device_state ORDER BY 1, 2"
    ).fetchall()


def test_the_same_seq_at_another_time_is_a_conflict_keeping_both_contents(db, registered):
    key = _key(db)
    t = datetime.now(UTC) - timedelta(hours=1)
    first = write_batch(db, messages=[_msg(key, batch_payload([usage(5, t, duration_s=2.0)]))])
    assert (first.events_stored, first.dead_lettered) == (1, 0)
    # The same message again: a duplicate, as before (not a conflict).
    again = write_batch(db, messages=[_msg(key, batch_payload([usage(5, t, duration_s=2.0)]))])
    assert (again.events_stored, again.duplicates, again.dead_lettered) == (0, 1, 0)
    # Seq 5 again, a minute later: the old key (device, ts, seq) stored it twice.
    other = batch_payload([usage(5, t + timedelta(minutes=1), duration_s=2.0)])
    result = write_batch(db, messages=[_msg(key, other)])
    assert (result.events_stored, result.dead_lettered) == (0, 1)
    assert [r[1] for r in result.rejected] == ["seq_conflict"]
    assert _stored(db) == [(5, "usage")]
    [(reason, detail, payload)] = _letters(db)
    assert reason == "seq_conflict" and detail["conflicts"] == 1
    shown = detail["shown"][0]
    assert shown["seq"] == 5
    assert datetime.fromisoformat(shown["stored"]["ts"]) == t, "the stored content"
    assert shown["stored"]["duration_s"] == 2.0 and shown["stored"]["kind"] == "usage"
    assert datetime.fromisoformat(shown["new"]["ts"]) == t + timedelta(minutes=1), "the new content"
    assert payload == json.loads(other), "the whole new message is kept"


def test_a_usage_and_a_state_event_cannot_share_a_seq(db, registered):
    key = _key(db)
    t = datetime.now(UTC) - timedelta(hours=1)
    write_batch(db, messages=[_msg(key, batch_payload([usage(7, t)]))])
    result = write_batch(db, messages=[_msg(key, batch_payload([_state(7, t)]))])
    assert [r[1] for r in result.rejected] == ["seq_conflict"]
    assert _stored(db) == [(7, "usage")]
    [(_, detail, _)] = _letters(db)
    assert detail["shown"][0]["stored"]["kind"] == "usage" and detail["shown"][0]["new"]["kind"] == "state"
    # And the other way round: a heartbeat holds seq 8, a usage event with seq 8 is refused.
    write_batch(db, messages=[_msg(key, batch_payload([_state(8, t)]))])
    result = write_batch(db, messages=[_msg(key, batch_payload([usage(8, t)]))])
    assert [r[1] for r in result.rejected] == ["seq_conflict"]
    assert _letters(db)[1][1]["shown"][0]["stored"]["kind"] == "state"


def test_same_seq_same_time_new_values_is_no_longer_dropped_silently(db, registered):
    key = _key(db)
    t = datetime.now(UTC) - timedelta(hours=1)
    write_batch(db, messages=[_msg(key, batch_payload([usage(3, t, success=True)]))])
    result = write_batch(db, messages=[_msg(key, batch_payload([usage(3, t, success=False)]))])
    assert [r[1] for r in result.rejected] == ["seq_conflict"] and result.duplicates == 0
    assert db.execute("SELECT success FROM events").fetchall() == [(True,)]


def test_a_conflicting_message_is_refused_whole_and_other_messages_are_stored(db, registered):
    key, other_key = _key(db), _key(db, "dev-001")
    t = datetime.now(UTC) - timedelta(hours=1)
    write_batch(db, messages=[_msg(key, batch_payload([usage(1, t)]))])
    mixed = batch_payload([usage(2, t), usage(1, t + timedelta(seconds=1)), usage(3, t)])
    result = write_batch(db, messages=[_msg(key, mixed), _msg(other_key, batch_payload([usage(1, t)]), "dev-001")])
    # The conflicting message is kept whole (its seqs 2 and 3 are not stored); dev-001's seq 1 is its own.
    assert [(i, r) for i, r, _ in result.rejected] == [(0, "seq_conflict")]
    assert result.events_stored == 1
    assert db.execute(
        "SELECT d.device_id, e.seq FROM events e JOIN devices d USING (device_key) ORDER BY 1, 2"
    ).fetchall() == [("dev-000", 1), ("dev-001", 1)]


def test_within_one_batch_the_first_message_holds_the_seq(db, registered):
    key = _key(db)
    t = datetime.now(UTC) - timedelta(hours=1)
    a = batch_payload([usage(9, t, touchpoint="brew")])
    b = batch_payload([usage(9, t, touchpoint="app_pairing")])
    result = write_batch(db, messages=[_msg(key, a), _msg(key, a), _msg(key, b)])
    assert result.events_stored == 1 and result.duplicates == 1
    assert [(i, r) for i, r, _ in result.rejected] == [(2, "seq_conflict")]
    [(_, detail, _)] = _letters(db)
    stored = detail["shown"][0]["stored"]
    assert stored["in_this_batch"] is True and stored["event"]["touchpoint"] == "brew"
    assert db.execute("SELECT touchpoint FROM events").fetchall() == [("brew",)]


def test_the_stored_hash_matches_what_the_migration_computes_from_stored_rows(db, registered):
    """The backfill (015) hashes stored rows; ingest hashes the payload: the same event must hash the same, or
    every redelivery of an event stored before the migration would become a conflict."""
    key = _key(db)
    t = datetime.now(UTC) - timedelta(hours=1)
    events = [
        usage(1, t),
        usage(2, t, success=False, duration_s=1.5, quantity=2.0, unit="cup", latency_ms=120.0),
        {"seq": 3, "ts": t.isoformat(), "kind": "error", "code": "E1"},
        {"seq": 4, "ts": t.isoformat(), "kind": "error", "code": "E2", "severity": "critical", "touchpoint": "brew"},
        {"seq": 5, "ts": t.isoformat(), "kind": "recovery", "code": "E1"},
        {"seq": 6, "ts": t.isoformat(), "kind": "feedback", "nps": 9, "csat": 4},
        {"seq": 7, "ts": t.isoformat(), "kind": "lifecycle", "stage": "setup", "detail": {}},
        {"seq": 8, "ts": t.isoformat(), "kind": "lifecycle", "stage": "plan_changed", "detail": {"to": "pro"}},
        _state(9, t),
        _state(10, t, metrics={}, uptime_s=12.5),
        _state(11, t, metrics={"temp_c": 21.5}, signal_dbm=-70.0, energy_wh=3.25),
    ]
    assert write_batch(db, messages=[_msg(key, batch_payload(events))]).events_stored == 8
    mismatched = db.execute("""
        SELECT s.seq FROM device_seq s
        LEFT JOIN events e ON e.device_key = s.device_key AND e.seq = s.seq AND e.ts = s.ts
        LEFT JOIN device_state d ON d.device_key = s.device_key AND d.seq = s.seq AND d.ts = s.ts
        WHERE s.content_hash IS DISTINCT FROM CASE WHEN s.kind = 'state' THEN
            event_content_hash('state', d.ts, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                               NULL, d.battery_pct, d.signal_dbm, d.uptime_s, d.energy_wh, d.metrics)
        ELSE event_content_hash(e.kind::text, e.ts, e.touchpoint, e.success, e.duration_s, e.quantity, e.unit,
                                e.latency_ms, e.code, e.severity, e.nps, e.csat, e.ces, e.stage, e.detail,
                                NULL, NULL, NULL, NULL, NULL) END""").fetchall()
    assert db.execute("SELECT count(*) FROM device_seq").fetchone()[0] == 11
    assert mismatched == []


def test_a_concurrent_writer_of_the_same_seq_sees_the_conflict(db, registered, settings, monkeypatch):
    """Two transactions register seq 4 at once: the second waits on the first, then tries again and classifies
    against what the first committed."""
    key = _key(db)
    attempts = []
    real_once = ingest._write_batch_once
    monkeypatch.setattr(
        ingest,
        "_write_batch_once",
        lambda conn, **kw: attempts.append(threading.current_thread().name) or real_once(conn, **kw),
    )
    t = datetime.now(UTC) - timedelta(hours=1)
    holder = connect(settings.db)
    results = {}
    try:
        with holder.transaction():
            write_batch(holder, messages=[_msg(key, batch_payload([usage(4, t, touchpoint="brew")]))])

            def second() -> None:
                with connect(settings.db) as conn:
                    results["b"] = write_batch(
                        conn, messages=[_msg(key, batch_payload([usage(4, t, touchpoint="app_pairing")]))]
                    )

            thread = threading.Thread(target=second, name="second")
            thread.start()
            waiting = (
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            assert wait_for(lambda: db.execute(waiting).fetchone()[0] >= 1, timeout=10), "the second should wait"
        thread.join(20)
    finally:
        holder.close()
    assert [r[1] for r in results["b"].rejected] == ["seq_conflict"]
    assert attempts.count("second") == 2, "its first attempt saw neither the row nor a conflict: retried"
    assert db.execute("SELECT touchpoint FROM events").fetchall() == [("brew",)]


def test_sequence_gaps_are_counted_per_device_and_filled_by_late_arrivals(db, registered):
    key, other = _key(db), _key(db, "dev-001")
    t = datetime.now(UTC) - timedelta(hours=1)
    seqs = [0, 1, 2, 5, 6, 9]  # 3, 4, 7, 8 missing
    write_batch(db, messages=[_msg(key, batch_payload([usage(s, t + timedelta(seconds=s)) for s in seqs]))])
    write_batch(db, messages=[_msg(other, batch_payload([usage(s, t) for s in range(4)]), "dev-001")])

    def missing(k: int) -> int:
        return db.execute("SELECT missing FROM device_seq_stats WHERE device_key = %s", (k,)).fetchone()[0]

    assert (missing(key), missing(other)) == (4, 0)
    write_batch(db, messages=[_msg(key, batch_payload([usage(4, t + timedelta(seconds=4))]))])
    assert missing(key) == 3, "a late arrival fills its gap"
    write_batch(db, messages=[_msg(key, batch_payload([usage(4, t + timedelta(seconds=4))]))])
    assert missing(key) == 3, "a duplicate changes nothing"
    write_batch(db, messages=[_msg(key, batch_payload([usage(4, t + timedelta(seconds=40))]))])
    assert missing(key) == 3, "nor does a conflict"
    row = db.execute("SELECT min_seq, max_seq, seqs FROM device_seq_stats WHERE device_key = %s", (key,)).fetchone()
    assert row == (0, 9, 7)
