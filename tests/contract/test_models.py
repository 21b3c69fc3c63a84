"""The telemetry contract: what it accepts, what it refuses, and that the SQL expansion agrees with it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from cxp.contract import batch_adapter, device_id_from_topic, json_schema, telemetry_topic
from cxp.contract.models import ErrorEvent, FeedbackEvent, LifecycleEvent, RecoveryEvent, StateEvent, UsageEvent
from cxp.core.config import PROJECT_ROOT
from cxp.store.ingest import SQL_DEFAULTS

TS = "2026-03-01T10:00:00Z"


def _batch(*events: dict) -> bytes:
    return json.dumps({"v": 1, "events": list(events)}).encode()


def test_every_event_kind_round_trips():
    payload = _batch(
        {"seq": 1, "ts": TS, "kind": "usage", "touchpoint": "brew", "quantity": 2, "unit": "cup", "latency_ms": 80},
        {"seq": 2, "ts": TS, "kind": "error", "code": "E42", "severity": "critical", "touchpoint": "brew"},
        {"seq": 3, "ts": TS, "kind": "recovery", "code": "E42"},
        {"seq": 4, "ts": TS, "kind": "state", "battery_pct": 80, "metrics": {"temperature_c": 21.5}},
        {"seq": 5, "ts": TS, "kind": "feedback", "nps": 9, "csat": 5},
        {"seq": 6, "ts": TS, "kind": "lifecycle", "stage": "plan_changed", "detail": {"plan": "pro"}},
    )
    batch = batch_adapter().validate_json(payload, strict=True)
    assert [type(e) for e in batch.events] == [UsageEvent, ErrorEvent, RecoveryEvent, StateEvent, FeedbackEvent,
                                               LifecycleEvent]
    assert batch.events[0].ts == datetime(2026, 3, 1, 10, tzinfo=UTC)
    again = batch_adapter().validate_json(batch_adapter().dump_json(batch), strict=True)
    assert again == batch


@pytest.mark.parametrize("event, problem", [
    ({"seq": 1, "ts": "2026-03-01T10:00:00", "kind": "usage", "touchpoint": "x"}, "with an offset"),
    ({"seq": 1, "ts": 1767225600, "kind": "usage", "touchpoint": "x"}, "datetime"),
    ({"seq": -1, "ts": TS, "kind": "usage", "touchpoint": "x"}, "greater than or equal"),
    ({"seq": 1, "ts": TS, "kind": "usage", "touchpoint": "x", "quantity": "3"}, "valid number"),
    ({"seq": 1, "ts": TS, "kind": "usage", "touchpoint": "x", "success": "yes"}, "valid boolean"),
    ({"seq": 1, "ts": TS, "kind": "usage", "touchpoint": "has space"}, "pattern"),
    ({"seq": 1, "ts": TS, "kind": "usage", "touchpoint": "x", "unit": "cup"}, "unit given without quantity"),
    ({"seq": 1, "ts": TS, "kind": "feedback"}, "at least one of"),
    ({"seq": 1, "ts": TS, "kind": "feedback", "nps": 11}, "less than or equal"),
    ({"seq": 1, "ts": TS, "kind": "usage", "touchpoint": "x", "colour": "red"}, "Extra inputs"),
    # Issue 12: what PostgreSQL cannot store, and timestamps read differently by it, are refused here.
    ({"seq": 1, "ts": "20261130", "kind": "usage", "touchpoint": "x"}, "RFC 3339"),
    ({"seq": 1, "ts": "1764496800", "kind": "usage", "touchpoint": "x"}, "RFC 3339"),
    ({"seq": 1, "ts": "2026-11-30T00:00:00+23:59", "kind": "usage", "touchpoint": "x"}, "RFC 3339"),
    ({"seq": 1, "ts": "2026-02-30T00:00:00Z", "kind": "usage", "touchpoint": "x"}, "day is out of range"),
    ({"seq": 1, "ts": TS, "kind": "usage", "touchpoint": "x", "duration_s": 1e-50}, "too small"),
    ({"seq": 1, "ts": TS, "kind": "state", "signal_dbm": -1e-45}, "too small"),
    ({"seq": 1, "ts": TS, "kind": "state", "uptime_s": 1e308}, "less than or equal"),
    ({"seq": 1, "ts": TS, "kind": "state", "energy_wh": 1e300}, "less than or equal"),
    ({"seq": 1, "ts": TS, "kind": "state", "metrics": {"t": 1e300}}, "less than or equal"),
    ({"seq": 1, "ts": TS, "kind": "lifecycle", "stage": "setup", "detail": {"n": "a\u0000b"}}, "pattern"),
    ({"seq": 1, "ts": TS, "kind": "lifecycle", "stage": "setup", "detail": {"n": "x" * 257}}, "at most 256"),
])
def test_bad_events_are_refused_with_a_reason(event, problem):
    with pytest.raises(ValidationError) as err:
        batch_adapter().validate_json(_batch(event), strict=True)
    assert problem in str(err.value)


def test_nan_and_repeated_sequence_numbers_are_refused():
    with pytest.raises(ValidationError):
        batch_adapter().validate_json(b'{"v":1,"events":[{"seq":1,"ts":"' + TS.encode()
                                      + b'","kind":"state","battery_pct":NaN}]}', strict=True)
    with pytest.raises(ValidationError, match="repeat"):
        batch_adapter().validate_json(_batch({"seq": 1, "ts": TS, "kind": "recovery", "code": "E"},
                                             {"seq": 1, "ts": TS, "kind": "recovery", "code": "F"}), strict=True)


def test_sql_applies_exactly_the_contracts_non_null_defaults():
    found = {}
    for model in (UsageEvent, ErrorEvent, RecoveryEvent, StateEvent, FeedbackEvent, LifecycleEvent):
        kind = model.model_fields["kind"].default
        for name, field in model.model_fields.items():
            if name not in {"kind", "metrics", "detail"} and field.default is not None and not field.is_required():
                found[(kind, name)] = field.default
    assert found == SQL_DEFAULTS


def test_topics_and_schema():
    assert telemetry_topic("dev-1") == "devices/dev-1/telemetry"
    assert device_id_from_topic("devices/dev-1/telemetry") == "dev-1"
    assert device_id_from_topic("devices/dev-1/other") is None
    assert device_id_from_topic("devices/a/b/telemetry") is None
    schema = json_schema()
    assert schema["$id"].endswith(":v1") and "events" in schema["properties"]


def test_committed_json_schema_matches_the_models():
    committed = json.loads((PROJECT_ROOT / "docs" / "telemetry.schema.json").read_text())
    assert committed == json.loads(json.dumps(json_schema())), \
        "regenerate it: cxp contract schema --out docs/telemetry.schema.json"


def test_timestamps_are_parsed_once_with_their_offset():
    batch = batch_adapter().validate_json(_batch({"seq": 1, "ts": "2026-03-01t15:30:00.123456789+05:30",
                                                  "kind": "recovery", "code": "E"}), strict=True)
    assert batch.events[0].ts == datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert b'"ts":"2026-03-01T15:30:00.123456+05:30"' in batch_adapter().dump_json(batch)
