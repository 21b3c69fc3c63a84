"""Message planning and the back-fill / live runners, with a fake publisher (no broker)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

import pytest

from cxp.contract import TelemetryBatch, batch_adapter, device_id_from_topic
from cxp.device_sim import (
    ConfigError,
    build_fleet,
    device_events,
    device_messages,
    plan_messages,
    simulate_backfill,
    simulate_live,
)
from cxp.device_sim.fleet import to_ms
from tests.device_sim.conftest import START


def _payloads(fleet, **kw) -> list[tuple[str, bytes]]:
    return [(m.topic, m.payload) for m in plan_messages(fleet=fleet, **kw)]


def test_same_seed_gives_byte_identical_payloads() -> None:
    a = _payloads(build_fleet(seed=42, devices=25, start=START, days=4))
    b = _payloads(build_fleet(seed=42, devices=25, start=START, days=4))
    c = _payloads(build_fleet(seed=43, devices=25, start=START, days=4))
    assert a == b
    assert a != c
    assert len(a) > 100


def test_every_payload_conforms_to_the_contract(small_fleet) -> None:
    adapter = batch_adapter()
    last_seq: dict[str, int] = {}
    per_device: Counter[str] = Counter()
    for msg in plan_messages(fleet=small_fleet, max_events_per_message=7):
        batch = adapter.validate_json(msg.payload)
        assert isinstance(batch, TelemetryBatch)
        assert device_id_from_topic(msg.topic, "devices") == batch.device_id == msg.device_id
        assert 1 <= len(batch.events) <= 7 and len(batch.events) == msg.events
        assert Counter(e.kind for e in batch.events) == Counter(msg.counts)
        device = small_fleet.device(batch.device_id)
        for e in batch.events:
            assert e.seq > last_seq.get(batch.device_id, -1)
            last_seq[batch.device_id] = e.seq
            assert device.activated_at <= e.ts < small_fleet.end
            assert e.ts <= batch.sent_at
        assert batch.sent_at <= small_fleet.end
        per_device[batch.device_id] += len(batch.events)
    for device in small_fleet.devices:
        assert per_device[device.device_id] == sum(1 for _ in device_events(fleet=small_fleet, device=device))


def test_fast_payload_equals_the_validated_model_dump(small_fleet) -> None:
    adapter = batch_adapter()
    fast = list(plan_messages(fleet=small_fleet))
    checked = list(plan_messages(fleet=small_fleet, validate=True))
    assert [m.payload for m in fast] == [m.payload for m in checked]
    for msg in fast[::37]:
        assert adapter.dump_json(adapter.validate_json(msg.payload), exclude_none=True) == msg.payload


def test_batches_follow_the_upload_interval(small_fleet) -> None:
    device = next(d for d in small_fleet.devices if d.product == "thermo-x1")
    interval = small_fleet.product_of(device).upload_interval_s * 1000
    msgs = list(device_messages(fleet=small_fleet, device=device))
    dues = [m.due_ms for m in msgs]
    assert dues == sorted(dues)
    for m in msgs:
        assert m.due_ms - interval <= m.first_ms <= m.last_ms < m.due_ms or m.due_ms == to_ms(small_fleet.end)
    one_big = list(
        device_messages(fleet=small_fleet, device=device, upload_interval_s=10 * 86_400, max_events_per_message=1000)
    )
    assert sum(m.events for m in one_big) == sum(m.events for m in msgs)
    assert len(one_big) < len(msgs)


def test_windows_of_messages_cover_the_same_events(small_fleet) -> None:
    mid = small_fleet.start + timedelta(days=4, hours=5, minutes=3)
    devices = small_fleet.devices[:8]

    def events(**kw) -> list[tuple[str, int, str]]:
        out = []
        for msg in plan_messages(fleet=small_fleet, devices=devices, **kw):
            for e in json.loads(msg.payload)["events"]:
                out.append((msg.device_id, e["seq"], e["ts"]))
        return sorted(out)

    whole = events()
    assert whole == sorted(events(end=mid) + events(start=mid))


def test_time_order_is_strict_and_day_order_is_coarse(small_fleet) -> None:
    strict = list(plan_messages(fleet=small_fleet, order="time"))
    assert [(m.due_ms, m.device_index) for m in strict] == sorted((m.due_ms, m.device_index) for m in strict)
    coarse = list(plan_messages(fleet=small_fleet))
    assert sorted(m.payload for m in coarse) == sorted(m.payload for m in strict)
    days = [m.due_ms // 86_400_000 for m in coarse]
    assert all(a <= b + 1 for a, b in zip(days, days[1:], strict=False))


def test_backfill_reports_what_it_published(small_fleet, fake_publisher) -> None:
    report = simulate_backfill(
        fleet=small_fleet, publisher=fake_publisher, topic_prefix="lab", max_events_per_message=20, progress=False
    )
    assert report.messages == len(fake_publisher.messages) > 0
    assert report.all_acked is True
    total = 0
    per_key: Counter[tuple[str, str]] = Counter()
    for topic, payload in fake_publisher.messages:
        device_id = device_id_from_topic(topic, "lab")
        assert device_id is not None
        for e in json.loads(payload)["events"]:
            per_key[(device_id, e["kind"])] += 1
            total += 1
    assert report.events == total
    assert dict(per_key) == report.counts
    assert report.first_ts is not None and small_fleet.start <= report.first_ts <= report.last_ts < small_fleet.end
    assert sum(report.events_by_kind().values()) == total
    assert report.bytes == sum(len(p) for _, p in fake_publisher.messages)


def test_live_releases_messages_when_due(small_fleet, fake_publisher) -> None:
    now = [small_fleet.start.timestamp() + 86_400 * 3]
    slept: list[float] = []
    published_at: list[float] = []

    def clock() -> float:
        return now[0]

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    original = fake_publisher.publish

    def publish(topic: str, payload: bytes) -> None:
        published_at.append(now[0])
        original(topic, payload)

    fake_publisher.publish = publish
    report = simulate_live(
        fleet=small_fleet,
        publisher=fake_publisher,
        duration_s=3600,
        speed=4.0,
        clock=clock,
        sleep=sleep,
        devices=small_fleet.devices[:10],
    )
    assert report.messages == len(fake_publisher.messages) > 0
    assert published_at == sorted(published_at)
    start = small_fleet.start.timestamp() + 86_400 * 3 - 3600 * 3
    for (_, payload), wall in zip(fake_publisher.messages, published_at, strict=True):
        batch = batch_adapter().validate_json(payload)
        first_ts, last_ts = batch.events[0].ts.timestamp(), batch.events[-1].ts.timestamp()
        assert start <= first_ts
        # Simulated time never runs ahead of the wall clock, so nothing arrives from the future.
        assert last_ts <= batch.sent_at.timestamp() <= wall + 1e-6


def test_argument_errors(small_fleet, fake_publisher) -> None:
    with pytest.raises(ConfigError):
        list(plan_messages(fleet=small_fleet, max_events_per_message=0))
    with pytest.raises(ConfigError):
        list(plan_messages(fleet=small_fleet, start=small_fleet.end, end=small_fleet.start))
    with pytest.raises(ConfigError):
        simulate_live(fleet=small_fleet, publisher=fake_publisher, duration_s=0)
