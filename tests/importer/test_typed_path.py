"""The import's typed path (events staged as COPY rows, validated in a child process) stores and hashes every value as
the gateway's JSON path does: the same message through the other path is a duplicate, never a seq conflict."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from cxp.contract.validate import Accepted, validate_message
from cxp.importer import ImportFileError, import_file
from cxp.store.ingest import IngestMessage, write_batch
from cxp.store.registry import DeviceCache
from cxp.tools.history import write_jsonl

pytestmark = pytest.mark.integration

# Values where a text and a binary float, a JSON writer and another, or a timestamp parser could disagree.
_AWKWARD = [
    {"kind": "usage", "touchpoint": "brew", "duration_s": 1.0000000596046448, "latency_ms": 0.1, "quantity": 1e-7,
     "unit": "cup", "success": False},
    {"kind": "usage", "touchpoint": "brew", "duration_s": 86400, "latency_ms": 3_599_999.9, "quantity": 1e12},
    {"kind": "usage", "touchpoint": "app_pairing", "duration_s": 16777217.0 / 1000, "latency_ms": 33.333333333333336},
    {"kind": "state", "battery_pct": 33.333333333333336, "signal_dbm": -97.5, "uptime_s": 3.2e9, "energy_wh": 1e12,
     "metrics": {"a": 1e15, "b": 1e-7, "c": 5, "d": -0.0, "e": 0.30000000000000004}},
    {"kind": "state", "battery_pct": 1.1754943508222875e-38},
    {"kind": "error", "code": "E.42-x", "severity": "critical", "touchpoint": "brew"},
    {"kind": "error", "code": "E1"},
    {"kind": "recovery", "code": "E1"},
    {"kind": "feedback", "nps": 0, "csat": 5, "ces": 7, "touchpoint": "brew"},
    {"kind": "lifecycle", "stage": "referred",
     "detail": {"note": 'back\\slash, "quotes", naïve ☕ {braces} [x]', "empty": "", "tabs_as_text": "\\t\\n"}},
    {"kind": "lifecycle", "stage": "setup"},
]


def _messages(devices: list[str]) -> list[bytes]:
    start = datetime.now(UTC) - timedelta(days=3)
    out = []
    for d_no, device in enumerate(devices):
        events = []
        for seq, extra in enumerate(_AWKWARD * 3):
            at = start + timedelta(seconds=977 * seq + d_no, microseconds=123457)
            ts = at.isoformat() if seq % 3 else at.strftime("%Y-%m-%dT%H:%M:%S.%f999Z")  # nanoseconds: cut to µs
            events.append({"seq": seq, "ts": ts, **extra})
        out += [json.dumps({"device_id": device, "events": events[i : i + 4]}).encode()
                for i in range(0, len(events), 4)]
    return out


def _through_gateway_path(db, settings, messages: list[bytes]):
    devices = DeviceCache()
    devices.load(db)
    ready = []
    for payload in messages:
        topic = f"{settings.mqtt.topic_prefix}/{json.loads(payload)['device_id']}/telemetry"
        verdict = validate_message(topic=topic, payload=payload, lookup_device=devices.lookup,
                                   max_payload_bytes=settings.gateway.max_payload_bytes,
                                   topic_prefix=settings.mqtt.topic_prefix)
        assert type(verdict) is Accepted, verdict
        ready.append(IngestMessage(topic, verdict.device_id, verdict.device_key, verdict.canonical,
                                   datetime.now(UTC).timestamp(), verdict.activated_epoch))
    return write_batch(db, messages=ready)


def _stored(db) -> list[tuple]:
    return db.execute(
        "SELECT device_key, seq, content_hash, kind FROM device_seq ORDER BY 1, 2"
    ).fetchall() + db.execute(
        "SELECT to_jsonb(e)::text FROM events e ORDER BY device_key, seq"
    ).fetchall() + db.execute("SELECT to_jsonb(s)::text FROM device_state s ORDER BY device_key, seq").fetchall()


@pytest.mark.parametrize("in_process", [False, True])
def test_gateway_then_import_is_all_duplicates(db, settings, registered, tmp_path, in_process):
    messages = _messages(registered)
    total = sum(len(json.loads(m)["events"]) for m in messages)
    first = _through_gateway_path(db, settings, messages)
    assert (first.events_stored + first.states_stored, first.dead_lettered) == (total, 0)
    before = _stored(db)
    path = tmp_path / "history.jsonl"
    write_jsonl(path, messages)
    result = import_file(db, settings=settings, path=path, chunk_events=37, in_process=in_process)
    assert (result.events_in, result.events_stored, result.duplicates, result.dead_lettered) == (total, 0, total, 0)
    assert _stored(db) == before


def _imported(db, settings, registered, tmp_path):
    """The test messages written to a JSON-lines file and imported whole: (messages, events, file)."""
    messages = _messages(registered)
    total = sum(len(json.loads(m)["events"]) for m in messages)
    path = tmp_path / "history.jsonl"
    write_jsonl(path, messages)
    result = import_file(db, settings=settings, path=path, chunk_events=50, refresh=False)
    assert (result.events_stored, result.dead_lettered) == (total, 0)
    return messages, total, path


def test_import_then_gateway_is_all_duplicates_and_stores_the_same_rows(db, settings, registered, tmp_path):
    messages, total, _ = _imported(db, settings, registered, tmp_path)
    imported = _stored(db)
    again = _through_gateway_path(db, settings, messages)
    assert (again.events_stored, again.states_stored, again.dead_lettered, again.duplicates) == (0, 0, 0, total)
    # and what the gateway path alone stores is row for row what the import stored
    db.execute("TRUNCATE events, device_state, device_seq, device_seq_stats, rollup_dirty")
    _through_gateway_path(db, settings, messages)
    assert _stored(db) == imported


def test_a_file_the_reader_process_cannot_read_fails_with_its_reason(db, settings, registered, tmp_path):
    path = tmp_path / "broken.csv"
    path.write_text("device_id,seq,when\n dev-000,1,2026-01-01T00:00:00Z\n")
    with pytest.raises(ImportFileError, match="ts"):
        import_file(db, settings=settings, path=path, in_process=True)


def test_events_stored_without_their_seq_registration_are_duplicates_not_failures(db, settings, registered, tmp_path):
    # The optimistic statement inserts without ON CONFLICT once every (device, seq) registered as new; a row the
    # registry does not know (written before it, or by hand) must send the batch to the exact statement instead.
    _, total, path = _imported(db, settings, registered, tmp_path)
    stored = _stored(db)
    db.execute("TRUNCATE device_seq, device_seq_stats")
    again = import_file(db, settings=settings, path=path, chunk_events=50, refresh=False, force=True)
    assert (again.events_in, again.events_stored, again.dead_lettered) == (total, 0, 0)
    assert _stored(db) == stored  # the registry is whole again, and no event is doubled
