"""DeviceBatcher packing and offline buffering; MqttPublisher guards that need no broker."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxp.contract import ErrorEvent, StateEvent, UsageEvent, batch_adapter
from cxp.device_sim import (
    ConfigError,
    DeviceBatcher,
    MqttPublisher,
    PublisherError,
    SequenceError,
    SimError,
    pack_events,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _usage(seq: int) -> UsageEvent:
    return UsageEvent(seq=seq, ts=T0 + timedelta(seconds=seq), touchpoint="brew", quantity=1, unit="cup")


@settings(max_examples=40, deadline=None)
@given(n=st.integers(min_value=1, max_value=230), max_events=st.integers(min_value=1, max_value=60))
def test_batches_split_at_the_maximum(n: int, max_events: int) -> None:
    batcher = DeviceBatcher(device_id="brew-c3-000001", max_events_per_message=max_events)
    for _ in range(n):
        batcher.record(UsageEvent, ts=T0, touchpoint="brew")
    assert batcher.flush(sent_at=T0) == -(-n // max_events)
    seqs = []
    for payload in batcher.drain():
        batch = batch_adapter().validate_json(payload)
        assert 1 <= len(batch.events) <= max_events
        assert batch.device_id == "brew-c3-000001" and batch.sent_at == T0
        seqs += [e.seq for e in batch.events]
    assert seqs == list(range(n))
    assert batcher.buffered_messages == 0 and batcher.pending_events == 0


def test_record_assigns_and_add_keeps_seq() -> None:
    batcher = DeviceBatcher(device_id="thermo-x1-000002", next_seq=10)
    e = batcher.record(StateEvent, ts=T0, battery_pct=50.0)
    assert e.seq == 10 and batcher.next_seq == 11
    batcher.add(ErrorEvent(seq=15, ts=T0, code="X"))
    assert batcher.next_seq == 16
    with pytest.raises(SequenceError):
        batcher.add(_usage(15))
    with pytest.raises(SimError):
        batcher.add(_usage(3))
    assert batcher.flush() == 1
    payload = batcher.pop()
    assert payload is not None
    assert [ev["seq"] for ev in json.loads(payload)["events"]] == [10, 15]
    assert batcher.flush() == 0 and batcher.pop() is None


def test_offline_buffer_drops_the_oldest_and_counts() -> None:
    batcher = DeviceBatcher(device_id="ebike-s2-000003", max_events_per_message=2, offline_buffer_messages=3)
    for seq in range(10):
        batcher.add(_usage(seq))
    assert batcher.flush(sent_at=T0) == 5
    assert batcher.buffered_messages == len(batcher) == 3
    assert batcher.dropped_messages == 2 and batcher.dropped_events == 4
    oldest = batcher.peek()
    assert oldest is not None and [e["seq"] for e in json.loads(oldest)["events"]] == [4, 5]
    sent = batcher.pop()
    assert sent == oldest
    batcher.requeue(sent, n_events=2)
    assert batcher.peek() == oldest and batcher.dropped_messages == 2
    batcher.add(_usage(10))
    batcher.flush()
    batcher.requeue(b"{}", n_events=1)
    assert batcher.dropped_messages == 4 and batcher.dropped_events == 7
    assert [json.loads(p)["events"][0]["seq"] for p in batcher.drain()] == [6, 8, 10]


def test_batcher_guards() -> None:
    with pytest.raises(ConfigError):
        DeviceBatcher(device_id="x", max_events_per_message=0)
    with pytest.raises(ConfigError):
        DeviceBatcher(device_id="x", max_events_per_message=1001)
    with pytest.raises(ConfigError):
        DeviceBatcher(device_id="x", offline_buffer_messages=0)


def test_pack_events_matches_the_batcher() -> None:
    events = [_usage(i) for i in range(7)]
    packed = pack_events(device_id="brew-c3-000001", sent_at=T0, events=events, max_events_per_message=3)
    batcher = DeviceBatcher(device_id="brew-c3-000001", max_events_per_message=3)
    for e in events:
        batcher.add(e)
    batcher.flush(sent_at=T0)
    assert packed == list(batcher.drain())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_publisher_errors_share_one_root() -> None:
    pub = MqttPublisher(host="127.0.0.1", port=_closed_port(), client_id="cxp-sim-test", connect_timeout_s=2)
    with pytest.raises(PublisherError):
        pub.publish("devices/x/telemetry", b"{}")
    with pytest.raises(SimError):
        pub.connect()
    assert pub.wait_all_acked(0.01) is True
    pub.close()
    with pytest.raises(ConfigError):
        MqttPublisher(host="127.0.0.1", port=1, client_id="c", max_inflight=0)
    with pytest.raises(ConfigError):
        MqttPublisher(host="127.0.0.1", port=1, client_id="c", qos=0)
