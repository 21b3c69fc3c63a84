"""The runners' path through each device's DeviceBatcher: offline buffering, its bound, and reconnects (no broker)."""

from __future__ import annotations

import json
import socket
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from cxp.contract import UsageEvent
from cxp.device_sim import (
    ConfigError,
    DeviceBatcher,
    MqttPublisher,
    Uplink,
    plan_messages,
    simulate_backfill,
    simulate_live,
)
from cxp.device_sim.fleet import from_ms

T0 = datetime(2025, 1, 1, tzinfo=UTC)


class OutagePublisher:
    """A fake broker connection that is down for the `try_publish` calls numbered in `down` (1-based)."""

    def __init__(self, down: range = range(0)) -> None:
        self.down = down
        self.calls = 0
        self.messages: list[tuple[str, bytes]] = []
        self.connected = True

    def try_publish(self, topic: str, payload: bytes) -> bool:
        self.calls += 1
        self.connected = self.calls not in self.down
        if self.connected:
            self.messages.append((topic, payload))
        return self.connected

    def wait_connected(self, timeout_s: float) -> bool:
        # The connection comes back while the devices wait for it.
        self.down = range(0)
        self.connected = True
        return True

    def wait_all_acked(self, timeout_s: float) -> bool:
        return True


def _usage(seq: int) -> UsageEvent:
    return UsageEvent(seq=seq, ts=T0 + timedelta(seconds=seq), touchpoint="brew", quantity=1, unit="cup")


def test_batcher_messages_say_what_they_hold() -> None:
    batcher = DeviceBatcher(device_id="brew-c3-000001", max_events_per_message=2)
    batcher.extend([_usage(0), {"seq": 1, "ts": T0 + timedelta(seconds=1), "kind": "feedback", "nps": 9}])
    batcher.add(_usage(2))
    assert batcher.flush(sent_at=T0 + timedelta(minutes=1)) == 2
    first = batcher.peek_message()
    assert first is not None and first.payload == batcher.peek()
    assert first.events == 2 and first.counts == {"usage": 1, "feedback": 1}
    assert (first.first_ts, first.last_ts, first.sent_at) == (T0, T0 + timedelta(seconds=1), T0 + timedelta(minutes=1))
    assert batcher.pop_message() == first
    second = batcher.pop_message()
    assert second is not None and second.counts == {"usage": 1} and second.first_ts == T0 + timedelta(seconds=2)
    assert batcher.pop_message() is None


def _seqs(payload: bytes) -> tuple[str, tuple[int, ...]]:
    batch = json.loads(payload)
    return batch["device_id"], tuple(e["seq"] for e in batch["events"])


def _upload_all(uplink: Uplink, fleet, **kw) -> list:
    planned = list(plan_messages(fleet=fleet, upload_interval_s=3600, max_events_per_message=1000, **kw))
    for msg in planned:
        events = json.loads(msg.payload)["events"]
        uplink.upload(device_id=msg.device_id, topic=msg.topic, events=events, sent_at=msg.due)
    return planned


def test_uplink_keeps_messages_while_down_and_sends_them_oldest_first_after(small_fleet) -> None:
    publisher = OutagePublisher(down=range(40, 10_000))
    sent: list[tuple[str, datetime]] = []
    uplink = Uplink(publisher=publisher, max_events_per_message=1000,
                    on_sent=lambda device_id, m: sent.append((device_id, m.sent_at)))
    planned = _upload_all(uplink, small_fleet, devices=small_fleet.devices[:6])
    assert 0 < uplink.buffered_messages == uplink.peak_buffered < len(planned)
    assert uplink.finish(timeout_s=1) == 0
    assert uplink.dropped_messages == 0 and uplink.sent_messages == len(planned)
    # Nothing lost, each device's messages in its own order; the backlog went out oldest first.
    by_device = defaultdict(list)
    for topic, payload in publisher.messages:
        by_device[topic].append(json.loads(payload)["events"][0]["seq"])
    assert all(seqs == sorted(seqs) for seqs in by_device.values())
    assert sum(len(s) for s in by_device.values()) == len(planned)
    backlog = [at for _, at in sent[39:]]
    assert backlog == sorted(backlog)


def test_uplink_drops_the_oldest_past_the_bound_and_counts_them(small_fleet) -> None:
    publisher = OutagePublisher(down=range(1, 10_000_000))
    uplink = Uplink(publisher=publisher, offline_buffer_messages=3, max_events_per_message=1000)
    planned = _upload_all(uplink, small_fleet, devices=small_fleet.devices[:8])
    per_device = Counter(m.device_id for m in planned)
    assert min(per_device.values()) > 3
    assert uplink.buffered_messages == 3 * len(per_device)
    assert uplink.dropped_messages == len(planned) - 3 * len(per_device)
    # Each device keeps its three newest messages.
    kept = [m for m in planned if sum(1 for n in planned if n.device_id == m.device_id and n.due > m.due) < 3]
    assert uplink.dropped_events == sum(m.events for m in planned) - sum(m.events for m in kept)
    assert uplink.finish(timeout_s=1) == 0
    assert sorted(_seqs(p) for _, p in publisher.messages) == sorted(_seqs(m.payload) for m in kept)


def test_backfill_through_an_outage_publishes_every_planned_message(small_fleet) -> None:
    publisher = OutagePublisher(down=range(200, 900))
    report = simulate_backfill(fleet=small_fleet, publisher=publisher, progress=False)
    planned = [(m.topic, m.payload) for m in plan_messages(fleet=small_fleet)]
    assert sorted(publisher.messages) == sorted(planned)
    assert report.messages == len(planned) and report.all_acked is True
    assert report.peak_buffered_messages > 0 and report.dropped_messages == 0 == report.undelivered_messages


def test_live_over_the_bound_reports_the_dropped_events(small_fleet) -> None:
    now = [small_fleet.start.timestamp() + 86_400 * 3]

    def sleep(s: float) -> None:
        now[0] += s

    publisher = OutagePublisher(down=range(30, 10_000_000))
    devices = small_fleet.devices[:10]
    report = simulate_live(fleet=small_fleet, publisher=publisher, duration_s=86_400, speed=1.0, devices=devices,
                           offline_buffer_messages=2, clock=lambda: now[0], sleep=sleep)
    start = from_ms(int((small_fleet.start.timestamp() + 86_400 * 3) * 1000))
    planned = list(plan_messages(fleet=small_fleet, devices=devices, start=start, end=start + timedelta(days=1)))
    assert report.dropped_messages > 0
    assert report.messages == len(publisher.messages)
    assert report.messages + report.dropped_messages == len(planned)
    assert report.events + report.dropped_events == sum(m.events for m in planned)
    assert report.all_acked is True


def test_uplink_guards() -> None:
    with pytest.raises(ConfigError):
        Uplink(publisher=OutagePublisher(), offline_buffer_messages=0)
    with pytest.raises(ConfigError):
        Uplink(publisher=OutagePublisher(), max_events_per_message=0)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_publisher_started_without_a_broker_takes_nothing() -> None:
    pub = MqttPublisher(host="127.0.0.1", port=_closed_port(), client_id="cxp-sim-test-offline",
                        reconnect_max_delay_s=1).connect(wait=False)
    try:
        assert pub.try_publish("devices/x/telemetry", b"{}") is False
        assert pub.wait_connected(0.3) is False
        assert pub.unacked == 0
    finally:
        pub.close()
