"""Many devices uploading over one publisher: each device packs and buffers through its own DeviceBatcher."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from cxp.device_sim.client import DeviceBatcher, Encoder, OutboundMessage, Publisher, check_max_events, encode_batch
from cxp.device_sim.errors import ConfigError

Sent = Callable[[str, OutboundMessage], object]
# How often devices whose own connection was down are offered their messages again.
RETRY_PARKED_S = 0.2


class Uplink:
    """The devices' side of the broker connection, for a whole simulated fleet.

    Each device has a DeviceBatcher: an upload is packed into messages of at most
    `max_events_per_message` events and queued in the device's offline buffer (at most
    `offline_buffer_messages`; past that the device drops its oldest message, counted). Buffered
    messages go to the publisher, oldest `sent_at` first across devices, while it takes them: waiting
    while its in-flight window is full, keeping them buffered while the connection is down, and sending
    them once it is back. `on_sent(device_id, message)` is called for each message handed over.

    With `publishers` (device id → that device's own connection, e.g. a DeviceLink) each device sends
    through its own publisher: a device whose connection is down or refused keeps its messages (it is
    parked and offered them again every RETRY_PARKED_S) while the other devices go on sending.
    """

    def __init__(
        self,
        *,
        publisher: Publisher | None = None,
        publishers: Mapping[str, Publisher] | None = None,
        max_events_per_message: int = 50,
        offline_buffer_messages: int = 10_000,
        encode: Encoder = encode_batch,
        on_sent: Sent | None = None,
    ) -> None:
        check_max_events(max_events_per_message)
        if offline_buffer_messages < 1:
            raise ConfigError("offline_buffer_messages must be at least 1")
        if (publisher is None) == (publishers is None):
            raise ConfigError("give either one shared publisher or a publisher per device")
        self._publisher = publisher
        self._publishers = publishers
        self._parked: set[str] = set()
        self._retry_parked_at = 0.0
        self._max_events = max_events_per_message
        self._buffer_limit = offline_buffer_messages
        self._encode = encode
        self._on_sent = on_sent
        self._batchers: dict[str, DeviceBatcher] = {}
        self._topics: dict[str, str] = {}
        self._rank: dict[str, int] = {}
        # Devices with buffered messages, keyed by (sent_at of their oldest message, first-seen rank).
        self._ready: list[tuple[float, int, str]] = []
        self._queued: set[str] = set()
        self.sent_messages = 0
        # The most messages left waiting at once because the publisher could not take them.
        self.peak_buffered = 0
        self._buffered = 0

    @property
    def buffered_messages(self) -> int:
        """Messages packed and not yet handed to the publisher, over all devices."""
        return self._buffered

    @property
    def dropped_messages(self) -> int:
        """Messages the devices dropped because their offline buffer was full."""
        return sum(b.dropped_messages for b in self._batchers.values())

    @property
    def dropped_events(self) -> int:
        """Events in the dropped messages."""
        return sum(b.dropped_events for b in self._batchers.values())

    def batcher(self, device_id: str) -> DeviceBatcher:
        """The device's batcher (created on first use)."""
        batcher = self._batchers.get(device_id)
        if batcher is None:
            batcher = self._batchers[device_id] = DeviceBatcher(
                device_id=device_id,
                max_events_per_message=self._max_events,
                offline_buffer_messages=self._buffer_limit,
                encode=self._encode,
            )
            self._rank[device_id] = len(self._rank)
        return batcher

    def upload(self, *, device_id: str, topic: str, events: Iterable[Any], sent_at: datetime) -> None:
        """One upload of a device: pack its events into its offline buffer, then send what the publisher takes."""
        if self._publishers is not None and device_id not in self._publishers:
            raise ConfigError(f"device {device_id} has no connection of its own (no credential)")
        batcher = self.batcher(device_id)
        self._topics[device_id] = topic
        before = batcher.buffered_messages
        batcher.extend(events)
        batcher.flush(sent_at=sent_at)
        # A full buffer drops its oldest message for each new one, so the count comes from the batcher.
        self._buffered += batcher.buffered_messages - before
        self._enqueue(device_id, batcher)
        if not self.pump():
            self.peak_buffered = max(self.peak_buffered, self._buffered)

    def _enqueue(self, device_id: str, batcher: DeviceBatcher) -> None:
        head = batcher.peek_message()
        if head is None or device_id in self._queued:
            return
        key = head.sent_at.timestamp() if head.sent_at is not None else float("-inf")
        heapq.heappush(self._ready, (key, self._rank[device_id], device_id))
        self._queued.add(device_id)

    def pump(self) -> bool:
        """Hand buffered messages to the publisher(s) while they take them; True when none are left."""
        ready = self._ready
        if self._parked and time.monotonic() >= self._retry_parked_at:
            parked, self._parked = self._parked, set()
            for device_id in parked:
                self._enqueue(device_id, self._batchers[device_id])
        while ready:
            device_id = ready[0][2]
            batcher = self._batchers[device_id]
            message = batcher.peek_message()
            if message is not None:
                publisher = self._publisher if self._publishers is None else self._publishers[device_id]
                if not publisher.try_publish(self._topics[device_id], message.payload):  # type: ignore[union-attr]
                    if self._publishers is None:
                        return False
                    # Only this device is offline: it keeps its messages, the others go on.
                    heapq.heappop(ready)
                    self._queued.discard(device_id)
                    if not self._parked:
                        self._retry_parked_at = time.monotonic() + RETRY_PARKED_S
                    self._parked.add(device_id)
                    continue
                batcher.pop()
                self._buffered -= 1
                self.sent_messages += 1
                if self._on_sent is not None:
                    self._on_sent(device_id, message)
            heapq.heappop(ready)
            self._queued.discard(device_id)
            self._enqueue(device_id, batcher)
        return not self._parked

    def finish(self, *, timeout_s: float) -> int:
        """Send what is still buffered, waiting up to `timeout_s` for the connection(s); returns what is left."""
        deadline = time.monotonic() + timeout_s
        while not self.pump():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self._publishers is None:
                self._publisher.wait_connected(min(left, 1.0))  # type: ignore[union-attr]
            else:
                waiting = next(iter(self._parked))
                self._publishers[waiting].wait_connected(min(left, RETRY_PARKED_S))
                self._retry_parked_at = 0.0
        return self._buffered

    def wait_all_acked(self, timeout_s: float) -> bool:
        """Wait until every publisher has its messages acknowledged; False if `timeout_s` passes first."""
        deadline = time.monotonic() + timeout_s
        publishers = [self._publisher] if self._publishers is None else list(self._publishers.values())
        return all(p.wait_all_acked(max(deadline - time.monotonic(), 0.0)) for p in publishers)  # type: ignore[union-attr]
