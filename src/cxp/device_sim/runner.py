"""Publishing a fleet: plan its uploads and messages (pure), back-fill a period at full speed, or replay live.

Every path packs a device's events with its own DeviceBatcher. The runners send through an Uplink, so
messages wait in each device's bounded offline buffer while the broker is unreachable and go out
after reconnecting, within the publisher's in-flight window.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

from pydantic_core import to_json
from tqdm import tqdm

from cxp.contract.models import CONTRACT_VERSION, batch_adapter
from cxp.contract.topics import telemetry_topic
from cxp.device_sim.behaviour import Record, iter_records, resolve_device
from cxp.device_sim.client import DeviceBatcher, Encoder, OutboundMessage, Publisher, check_max_events
from cxp.device_sim.errors import ConfigError
from cxp.device_sim.fleet import DAY_MS, Device, Fleet, from_ms, to_ms
from cxp.device_sim.uplink import Uplink

Order = Literal["day", "time"]


class Upload(NamedTuple):
    """One upload slot of a device: the event dicts recorded since its previous slot, sent at `due_ms`."""

    due_ms: int
    device_index: int
    device_id: str
    topic: str
    events: list[dict[str, Any]]


class PlannedMessage(NamedTuple):
    """One MQTT message ready to publish, due at `due_ms` (epoch ms, also its sent_at)."""

    due_ms: int
    device_index: int
    device_id: str
    topic: str
    payload: bytes
    events: int
    counts: dict[str, int]
    first_ms: int
    last_ms: int

    @property
    def due(self) -> datetime:
        """When the device uploads this message."""
        return from_ms(self.due_ms)


@dataclass
class PublishReport:
    """What a run published: totals, events per (device_id, kind), the event time span, and what was lost.

    `peak_buffered_messages` is the most messages the devices held at once, waiting for the broker;
    `dropped_*` count what their full offline buffers dropped while it was unreachable, and
    `undelivered_messages` what was still buffered when the run gave up waiting for it.
    """

    messages: int = 0
    events: int = 0
    bytes: int = 0
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    elapsed_s: float = 0.0
    all_acked: bool | None = None
    peak_buffered_messages: int = 0
    dropped_messages: int = 0
    dropped_events: int = 0
    undelivered_messages: int = 0

    def add(self, device_id: str, message: OutboundMessage) -> None:
        """Account for one message handed to the publisher."""
        self.messages += 1
        self.events += message.events
        self.bytes += len(message.payload)
        counts = self.counts
        for kind, n in message.counts.items():
            key = (device_id, kind)
            counts[key] = counts.get(key, 0) + n
        if message.first_ts is not None and (self.first_ts is None or message.first_ts < self.first_ts):
            self.first_ts = message.first_ts
        if message.last_ts is not None and (self.last_ts is None or message.last_ts > self.last_ts):
            self.last_ts = message.last_ts

    @property
    def events_per_s(self) -> float:
        """Events published per wall-clock second."""
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def events_by_kind(self) -> dict[str, int]:
        """Event totals per kind."""
        out: dict[str, int] = {}
        for (_, kind), n in self.counts.items():
            out[kind] = out.get(kind, 0) + n
        return out


def encode_records(*, device_id: str | None, sent_at: datetime | None, events: Sequence[dict[str, Any]]) -> bytes:
    """A payload from the simulator's own event dicts, serialised as they are.

    They are built valid and in the models' field order, so this gives the bytes of dumping the
    validated batch at a third of the cost (a unit test checks both claims).
    """
    batch: dict[str, Any] = {"v": CONTRACT_VERSION}
    if device_id is not None:
        batch["device_id"] = device_id
    if sent_at is not None:
        batch["sent_at"] = sent_at
    batch["events"] = events
    return to_json(batch)


def encode_records_validated(
    *, device_id: str | None, sent_at: datetime | None, events: Sequence[dict[str, Any]]
) -> bytes:
    """`encode_records` after running the batch through the contract's TypeAdapter (same bytes, slower)."""
    batch_adapter().validate_python(
        {"v": CONTRACT_VERSION, "device_id": device_id, "sent_at": sent_at, "events": events}
    )
    return encode_records(device_id=device_id, sent_at=sent_at, events=events)


def _encoder(validate: bool) -> Encoder:
    return encode_records_validated if validate else encode_records


def _window(fleet: Fleet, start: datetime | None, end: datetime | None) -> tuple[int, int]:
    start_ms = to_ms(start if start is not None else fleet.start)
    end_ms = to_ms(end if end is not None else fleet.end)
    if end_ms <= start_ms:
        raise ConfigError("end must be after start")
    return start_ms, end_ms


def _device_uploads(
    fleet: Fleet, dev: Device, start_ms: int, end_ms: int, prefix: str, upload_interval_s: float | None
) -> Iterator[Upload]:
    product = fleet.product_of(dev)
    interval = int((upload_interval_s if upload_interval_s is not None else product.upload_interval_s) * 1000)
    if interval <= 0:
        raise ConfigError("upload_interval_s must be positive")
    phase = int(fleet.profile(dev).upload_phase_s * 1000) % interval
    topic = telemetry_topic(dev.device_id, prefix)
    device_id, index = dev.device_id, dev.index
    group: list[dict[str, Any]] = []
    group_due = 0
    record: Record
    for record in iter_records(fleet=fleet, device=dev, end_ms=end_ms):
        t = record[0]
        if t < start_ms:
            continue
        due = min(((t - phase) // interval + 1) * interval + phase, end_ms)
        if group and due != group_due:
            yield Upload(group_due, index, device_id, topic, group)
            group = []
        group_due = due
        group.append(record[1])
    if group:
        yield Upload(group_due, index, device_id, topic, group)


def _plan_uploads(
    fleet: Fleet,
    devices: Iterable[Device | str] | None,
    start_ms: int,
    end_ms: int,
    prefix: str,
    upload_interval_s: float | None,
    order: Order,
) -> Iterator[Upload]:
    if order not in ("day", "time"):
        raise ConfigError("order must be 'day' or 'time'")
    devs = fleet.devices if devices is None else [resolve_device(fleet, d) for d in devices]
    streams = [_device_uploads(fleet, d, start_ms, end_ms, prefix, upload_interval_s) for d in devs]
    if order == "time":
        return heapq.merge(*streams, key=lambda u: (u.due_ms, u.device_index))
    return _merge_by_day(streams, start_ms)


def _merge_by_day(streams: list[Iterator[Upload]], start_ms: int) -> Iterator[Upload]:
    heads = [next(s, None) for s in streams]
    live = [i for i, u in enumerate(heads) if u is not None]
    day_end = (start_ms // DAY_MS + 1) * DAY_MS
    while live:
        still = []
        for i in live:
            upload, stream = heads[i], streams[i]
            while upload is not None and upload.due_ms < day_end:
                yield upload
                upload = next(stream, None)
            heads[i] = upload
            if upload is not None:
                still.append(i)
        live = still
        day_end += DAY_MS


def _packed(uploads: Iterable[Upload], max_events: int, validate: bool) -> Iterator[PlannedMessage]:
    """The messages of the uploads, each device's packed by its own DeviceBatcher."""
    encode = _encoder(validate)
    batchers: dict[str, DeviceBatcher] = {}
    for upload in uploads:
        batcher = batchers.get(upload.device_id)
        if batcher is None:
            batcher = batchers[upload.device_id] = DeviceBatcher(
                device_id=upload.device_id, max_events_per_message=max_events, encode=encode
            )
        batcher.extend(upload.events)
        batcher.flush(sent_at=from_ms(upload.due_ms))
        while (message := batcher.pop_message()) is not None:
            yield PlannedMessage(
                upload.due_ms,
                upload.device_index,
                upload.device_id,
                upload.topic,
                message.payload,
                message.events,
                message.counts,
                # Whole milliseconds, so rounding the float is exact (and cheaper than fleet.to_ms here).
                round(message.first_ts.timestamp() * 1000),  # type: ignore[union-attr]
                round(message.last_ts.timestamp() * 1000),  # type: ignore[union-attr]
            )


def device_messages(
    *,
    fleet: Fleet,
    device: Device | str,
    start: datetime | None = None,
    end: datetime | None = None,
    topic_prefix: str = "devices",
    max_events_per_message: int = 50,
    upload_interval_s: float | None = None,
    validate: bool = False,
) -> Iterator[PlannedMessage]:
    """One device's messages for [start, end): the events since its previous upload slot, split at the max.

    Upload slots sit on the device's own grid (its product's upload interval, or `upload_interval_s`,
    at a per-device phase); the last batch is sent at `end`.
    """
    check_max_events(max_events_per_message)
    dev = resolve_device(fleet, device)
    start_ms, end_ms = _window(fleet, start, end)
    uploads = _device_uploads(fleet, dev, start_ms, end_ms, topic_prefix, upload_interval_s)
    yield from _packed(uploads, max_events_per_message, validate)


def plan_messages(
    *,
    fleet: Fleet,
    start: datetime | None = None,
    end: datetime | None = None,
    topic_prefix: str = "devices",
    max_events_per_message: int = 50,
    devices: Iterable[Device | str] | None = None,
    upload_interval_s: float | None = None,
    validate: bool = False,
    order: Order = "day",
) -> Iterator[PlannedMessage]:
    """Every message of the fleet (or `devices`) for [start, end); pure and broker-free.

    Each device's messages come in its own upload order. Across devices, `order="day"` yields UTC day
    by UTC day (device by device within a day; cheap, for back-fills), `order="time"` strictly by
    upload time, ties by device index (a heap merge, about a quarter slower; for live replay).
    `validate=True` also runs every batch through the contract's TypeAdapter (slower; same payloads).
    """
    check_max_events(max_events_per_message)
    start_ms, end_ms = _window(fleet, start, end)
    uploads = _plan_uploads(fleet, devices, start_ms, end_ms, topic_prefix, upload_interval_s, order)
    return _packed(uploads, max_events_per_message, validate)


def _finish(report: PublishReport, uplink: Uplink, ack_timeout_s: float) -> None:
    """Send what the devices still buffer, wait for the acknowledgements, and record what was lost."""
    report.undelivered_messages = uplink.finish(timeout_s=ack_timeout_s)
    report.peak_buffered_messages = uplink.peak_buffered
    report.dropped_messages = uplink.dropped_messages
    report.dropped_events = uplink.dropped_events
    acked = uplink.wait_all_acked(ack_timeout_s)
    report.all_acked = acked and report.undelivered_messages == 0


def simulate_backfill(
    *,
    fleet: Fleet,
    publisher: Publisher | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    topic_prefix: str = "devices",
    max_events_per_message: int = 50,
    offline_buffer_messages: int = 10_000,
    progress: bool = True,
    devices: Iterable[Device | str] | None = None,
    ack_timeout_s: float = 300.0,
    validate: bool = False,
    publishers: Mapping[str, Publisher] | None = None,
) -> PublishReport:
    """Publish every event of [start, end) as fast as the publisher accepts it; waits for the acks at the end.

    While the broker is unreachable the devices keep their uploads in their offline buffers (at most
    `offline_buffer_messages` each) and send them after reconnecting; the report counts what they dropped.
    Give either one shared `publisher` or `publishers`: each device's own connection (device id → DeviceLink).
    """
    start_ms, end_ms = _window(fleet, start, end)
    devs = list(fleet.devices) if devices is None else [resolve_device(fleet, d) for d in devices]
    report = PublishReport()
    uplink = Uplink(
        publisher=publisher,
        publishers=publishers,
        max_events_per_message=max_events_per_message,
        offline_buffer_messages=offline_buffer_messages,
        encode=_encoder(validate),
        on_sent=report.add,
    )
    # Uploads come UTC day by UTC day, device by device, so progress counts device-days done.
    position = {d.index: i for i, d in enumerate(devs)}
    first_day, last_day = start_ms // DAY_MS, (end_ms - 1) // DAY_MS
    total = len(devs) * (last_day - first_day + 1)
    t0 = time.perf_counter()
    with tqdm(total=total, unit="dev-day", desc="backfill", disable=not progress, dynamic_ncols=True) as bar:
        for n, upload in enumerate(_plan_uploads(fleet, devs, start_ms, end_ms, topic_prefix, None, "day"), 1):
            uplink.upload(
                device_id=upload.device_id, topic=upload.topic, events=upload.events, sent_at=from_ms(upload.due_ms)
            )
            if progress and n % 256 == 0:
                day = min(upload.due_ms // DAY_MS, last_day) - first_day
                done = day * len(devs) + position[upload.device_index]
                if done > bar.n:
                    bar.update(done - bar.n)
                bar.set_postfix(events=report.events, msgs=report.messages, refresh=False)
        if progress:
            bar.update(total - bar.n)
            bar.set_postfix(events=report.events, msgs=report.messages, refresh=False)
    _finish(report, uplink, ack_timeout_s)
    report.elapsed_s = time.perf_counter() - t0
    return report


def simulate_live(
    *,
    fleet: Fleet,
    publisher: Publisher | None = None,
    duration_s: float,
    speed: float = 1.0,
    start: datetime | None = None,
    topic_prefix: str = "devices",
    max_events_per_message: int = 50,
    offline_buffer_messages: int = 10_000,
    devices: Iterable[Device | str] | None = None,
    upload_interval_s: float | None = None,
    progress: bool = False,
    ack_timeout_s: float = 60.0,
    validate: bool = False,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], object] = time.sleep,
    publishers: Mapping[str, Publisher] | None = None,
) -> PublishReport:
    """Publish events as their upload time comes due in real time, simulated time running `speed`× faster.

    Covers simulated [start, start + duration_s·speed). By default start is chosen so that simulated time
    never runs ahead of the wall clock (now, or earlier when speed > 1), so no event is in the future.
    A device's timeline is simulated from the fleet start, so a fleet that starts long before `start`
    spends a while catching up before the first message. `stop` ends the run early. While the broker
    is unreachable uploads wait in the devices' offline buffers, as in `simulate_backfill`.
    """
    if duration_s <= 0 or speed <= 0:
        raise ConfigError("duration_s and speed must be positive")
    now = clock()
    start_ms = int((now - duration_s * max(speed - 1.0, 0.0)) * 1000) if start is None else to_ms(start)
    end_ms = start_ms + int(duration_s * speed * 1000)
    report = PublishReport()
    uplink = Uplink(
        publisher=publisher,
        publishers=publishers,
        max_events_per_message=max_events_per_message,
        offline_buffer_messages=offline_buffer_messages,
        encode=_encoder(validate),
        on_sent=report.add,
    )
    t0 = time.perf_counter()
    wall0 = now

    def wait(delay: float) -> bool:
        if stop is not None:
            return not stop.wait(delay)
        sleep(delay)
        return True

    with tqdm(total=round(duration_s, 1), unit="s", desc="live", disable=not progress, dynamic_ncols=True) as bar:
        shown = 0.0
        for upload in _plan_uploads(fleet, devices, start_ms, end_ms, topic_prefix, upload_interval_s, "time"):
            if stop is not None and stop.is_set():
                break
            delay = wall0 + (upload.due_ms - start_ms) / 1000.0 / speed - clock()
            if delay > 0 and not wait(delay):
                break
            uplink.upload(
                device_id=upload.device_id, topic=upload.topic, events=upload.events, sent_at=from_ms(upload.due_ms)
            )
            if progress:
                done = round((upload.due_ms - start_ms) / 1000.0 / speed, 1)
                if done > shown:
                    bar.update(done - shown)
                    shown = done
                bar.set_postfix(events=report.events, msgs=report.messages, refresh=False)
    _finish(report, uplink, ack_timeout_s)
    report.elapsed_s = time.perf_counter() - t0
    return report
