"""The device-side client: pack events into contract payloads, buffer them offline, publish them over MQTT."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cxp.contract import MAX_PAYLOAD_BYTES
from cxp.contract.models import CONTRACT_VERSION, TelemetryBatch, batch_adapter
from cxp.device_sim.errors import ConfigError, PublisherError, PublishTimeout, SequenceError


class OversizeMessage(PublisherError):
    """A message above the contract's maximum payload: the broker would drop it, so it is refused here."""

MAX_EVENTS_PER_MESSAGE = 1000  # the contract's limit on one batch


class Publisher(Protocol):
    """What the runner needs from a publisher (MqttPublisher, or a fake in tests)."""

    def try_publish(self, topic: str, payload: bytes) -> bool:
        """Publish one message, waiting while the in-flight window is full; False (not taken) while disconnected."""

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait until the connection is up; False on timeout."""

    def wait_all_acked(self, timeout_s: float) -> bool:
        """Wait until every published message is acknowledged; False on timeout."""


class OutboundMessage(NamedTuple):
    """One packed message of a device, as it waits in the offline buffer."""

    payload: bytes
    events: int
    # Events per kind, when the message was packed, and its first and last event time (None when unknown,
    # e.g. an event dict holding its ts as text).
    counts: dict[str, int]
    sent_at: datetime | None
    first_ts: datetime | None
    last_ts: datetime | None


# encode(device_id=..., sent_at=..., events=...) -> payload bytes
Encoder = Callable[..., bytes]


def encode_batch(*, device_id: str | None, sent_at: datetime | None, events: Sequence[Any]) -> bytes:
    """One TelemetryBatch payload (JSON bytes, None fields left out) from contract events or event dicts."""
    adapter = batch_adapter()
    if events and isinstance(events[0], Mapping):
        batch = adapter.validate_python(
            {"v": CONTRACT_VERSION, "device_id": device_id, "sent_at": sent_at, "events": events}
        )
    else:
        batch = TelemetryBatch(device_id=device_id, sent_at=sent_at, events=list(events))
    return adapter.dump_json(batch, exclude_none=True)


def pack_events(
    *,
    device_id: str | None,
    sent_at: datetime | None,
    events: Sequence[Any],
    max_events_per_message: int,
) -> list[bytes]:
    """Payloads of at most `max_events_per_message` events each, in order."""
    check_max_events(max_events_per_message)
    return [
        encode_batch(device_id=device_id, sent_at=sent_at, events=events[i : i + max_events_per_message])
        for i in range(0, len(events), max_events_per_message)
    ]


def check_max_events(n: int) -> None:
    """Refuse a max_events_per_message outside what one contract batch may hold."""
    if not 1 <= n <= MAX_EVENTS_PER_MESSAGE:
        raise ConfigError(f"max_events_per_message must be within [1, {MAX_EVENTS_PER_MESSAGE}]")


# Events are contract models or event dicts. The checks below test the exact type `dict` first and
# inline: the Mapping check and a function call per event cost more than the rest of the packing.


def _event_ts(event: Any) -> datetime | None:
    ts = event.get("ts") if type(event) is dict or isinstance(event, Mapping) else event.ts
    return ts if isinstance(ts, datetime) else None


def _describe(payload: bytes, sent_at: datetime | None, events: Sequence[Any]) -> OutboundMessage:
    counts: dict[str, int] = {}
    for event in events:
        kind = event["kind"] if type(event) is dict or isinstance(event, Mapping) else event.kind
        counts[kind] = counts.get(kind, 0) + 1
    return OutboundMessage(payload, len(events), counts, sent_at, _event_ts(events[0]), _event_ts(events[-1]))


class DeviceBatcher:
    """Collects one device's events, packs them into payloads and keeps them in a bounded offline buffer.

    Pure: no I/O and no clock. `record()` assigns the next seq; `add()` keeps an event's own seq but
    refuses one that does not increase. Events are contract models or event dicts. When the buffer is
    full the oldest message is dropped (and counted). `encode` turns (device_id, sent_at, events) into a
    payload; the default validates with the contract.
    """

    def __init__(
        self,
        *,
        device_id: str,
        max_events_per_message: int = 50,
        offline_buffer_messages: int = 10_000,
        next_seq: int = 0,
        include_device_id: bool = True,
        encode: Encoder = encode_batch,
    ) -> None:
        check_max_events(max_events_per_message)
        if offline_buffer_messages < 1:
            raise ConfigError("offline_buffer_messages must be at least 1")
        if next_seq < 0:
            raise ConfigError("next_seq must be non-negative")
        self.device_id = device_id
        self.max_events_per_message = max_events_per_message
        self.offline_buffer_messages = offline_buffer_messages
        self._include_device_id = include_device_id
        self._encode = encode
        self._next_seq = next_seq
        self._pending: list[Any] = []
        self._buffer: deque[OutboundMessage] = deque()
        self.dropped_messages = 0
        self.dropped_events = 0

    @property
    def next_seq(self) -> int:
        """The seq the next recorded event gets."""
        return self._next_seq

    @property
    def pending_events(self) -> int:
        """Events added but not yet packed."""
        return len(self._pending)

    @property
    def buffered_messages(self) -> int:
        """Packed messages waiting to be sent."""
        return len(self._buffer)

    def __len__(self) -> int:
        return len(self._buffer)

    def add(self, event: Any) -> None:
        """Queue a contract event (or event dict) that already has its seq (must be >= next_seq)."""
        self.extend((event,))

    def extend(self, events: Iterable[Any]) -> None:
        """Queue several events in order, each as `add` does."""
        pending, next_seq = self._pending, self._next_seq
        for event in events:
            seq = event["seq"] if type(event) is dict or isinstance(event, Mapping) else event.seq
            if seq < next_seq:
                self._next_seq = next_seq
                raise SequenceError(f"seq {seq} does not increase (next is {next_seq})")
            next_seq = seq + 1
            pending.append(event)
        self._next_seq = next_seq

    def record(self, model: type, /, **fields: Any) -> Any:
        """Build an event of contract class `model` with the next seq and queue it; returns the event."""
        event = model(seq=self._next_seq, **fields)
        self.add(event)
        return event

    def flush(self, *, sent_at: datetime | None = None) -> int:
        """Pack pending events into the offline buffer; returns the number of messages packed."""
        if not self._pending:
            return 0
        events, self._pending = self._pending, []
        device_id = self.device_id if self._include_device_id else None
        step = self.max_events_per_message
        chunks = [events] if len(events) <= step else [events[i : i + step] for i in range(0, len(events), step)]
        for chunk in chunks:
            payload = self._encode(device_id=device_id, sent_at=sent_at, events=chunk)
            self._push(_describe(payload, sent_at, chunk))
        return len(chunks)

    def _push(self, message: OutboundMessage) -> None:
        if len(self._buffer) >= self.offline_buffer_messages:
            lost = self._buffer.popleft()
            self.dropped_messages += 1
            self.dropped_events += lost.events
        self._buffer.append(message)

    def peek(self) -> bytes | None:
        """The oldest buffered message, left in the buffer."""
        return self._buffer[0].payload if self._buffer else None

    def peek_message(self) -> OutboundMessage | None:
        """The oldest buffered message with what it holds, left in the buffer."""
        return self._buffer[0] if self._buffer else None

    def pop(self) -> bytes | None:
        """Take the oldest buffered message (None when empty)."""
        return self._buffer.popleft().payload if self._buffer else None

    def requeue(self, payload: bytes, *, n_events: int = 0) -> None:
        """Put a message whose send failed back at the front; dropped (and counted) if the buffer is full."""
        if len(self._buffer) >= self.offline_buffer_messages:
            self.dropped_messages += 1
            self.dropped_events += n_events
            return
        self._buffer.appendleft(OutboundMessage(payload, n_events, {}, None, None, None))

    def drain(self) -> Iterator[bytes]:
        """Pop buffered messages oldest first until the buffer is empty."""
        while self._buffer:
            yield self._buffer.popleft().payload

    def pop_message(self) -> OutboundMessage | None:
        """Take the oldest buffered message with what it holds (None when empty)."""
        return self._buffer.popleft() if self._buffer else None


class AckedPublisher:
    """What a QoS 1 publisher shares: counters of published and acknowledged messages under one condition."""

    _cond: threading.Condition
    published: int
    acked: int

    def wait_all_acked(self, timeout_s: float) -> bool:
        """Wait until every published message is acknowledged; False if `timeout_s` passes first."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.published > self.acked:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 1.0))
        return True


class MqttPublisher(AckedPublisher):
    """One MQTT v5 connection publishing QoS 1 with a bounded window of unacknowledged messages.

    `publish` blocks while `max_inflight` messages await their PUBACK (fewer if the broker's Receive
    Maximum is lower), so memory stays bounded however many devices share the connection. paho
    reconnects in its network thread and re-sends unacknowledged messages after a reconnect
    (at-least-once: the gateway dedupes by seq). `try_publish` blocks the same way while connected but
    refuses messages while disconnected, so that devices keep them in their own offline buffers.

    The window is enforced here rather than by paho's own in-flight limit, which paho 2.2 implements by
    scanning every outgoing message on each PUBACK (measured: half the throughput at 1000 in flight);
    `paho_inflight_limit=True` sets paho's limit to `max_inflight` as well.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        keepalive_s: int = 30,
        max_inflight: int = 1000,
        paho_inflight_limit: bool = False,
        qos: int = 1,
        reconnect_min_delay_s: int = 1,
        reconnect_max_delay_s: int = 30,
        connect_timeout_s: float = 10.0,
        publish_timeout_s: float | None = 60.0,
        session_expiry_s: int = 0,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        if max_inflight < 1:
            raise ConfigError("max_inflight must be at least 1")
        if qos not in (1, 2):
            # QoS 0 has no acknowledgement to bound the window with, and is lost while disconnected.
            raise ConfigError("qos must be 1 or 2")
        self.host, self.port, self.client_id = host, port, client_id
        self.qos = qos
        self.max_inflight = max_inflight
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s
        self.publish_timeout_s = publish_timeout_s
        self.session_expiry_s = session_expiry_s
        self.max_payload_bytes = max_payload_bytes
        self.oversize = 0  # messages refused here because the broker would refuse them
        self.published = 0
        self.acked = 0
        self.rejected = 0
        self.connects = 0
        self.disconnects = 0
        self.last_error: str | None = None
        self._cond = threading.Condition()
        self._window = max_inflight
        self._connected = False
        self._refused: str | None = None
        self._closed = False
        self._started = False
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        if username is not None:
            client.username_pw_set(username, password)
        client.max_inflight_messages_set(max_inflight if paho_inflight_limit else 0)
        # paho's own queue stays unbounded: our window bounds it, and a paho-level limit would drop silently.
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=reconnect_min_delay_s, max_delay=reconnect_max_delay_s)
        # A failing callback must not kill paho's network thread (it would stop acks and reconnects).
        client.suppress_exceptions = True
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client

    # -- paho callbacks (network thread) -----------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Properties | None
    ) -> None:
        with self._cond:
            if reason.is_failure:
                self._refused = str(reason)
                self.last_error = f"connect refused: {reason}"
            else:
                self._connected = True
                self._refused = None
                self.connects += 1
                server_max = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
                # More unacknowledged messages than the broker's Receive Maximum is a protocol error; paho
                # cannot lower its in-flight limit once connected, so our window enforces it instead.
                self._window = min(self.max_inflight, server_max) if server_max else self.max_inflight
            self._cond.notify_all()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Properties | None
    ) -> None:
        with self._cond:
            if self._connected:
                self.disconnects += 1
            self._connected = False
            if reason.is_failure:
                self.last_error = f"disconnected: {reason}"
            self._cond.notify_all()

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Properties | None
    ) -> None:
        with self._cond:
            self.acked += 1
            if reason.is_failure:
                self.rejected += 1
                self.last_error = f"publish rejected: {reason}"
            self._cond.notify_all()

    # -- API ------------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the connection is up right now."""
        return self._connected

    @property
    def window(self) -> int:
        """The current bound on unacknowledged messages: max_inflight, or the broker's lower Receive Maximum."""
        return self._window

    @property
    def unacked(self) -> int:
        """Messages published and not yet acknowledged."""
        return self.published - self.acked

    def connect(self, *, wait: bool = True) -> Self:
        """Connect and start the network thread; waits for the broker's CONNACK.

        With `wait=False` it returns at once and the network thread keeps trying, also while the broker
        refuses connections; `try_publish` returns False until the connection is up.
        """
        if self._started:
            return self
        props = None
        if self.session_expiry_s:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry_s
        connect = self._client.connect if wait else self._client.connect_async
        try:
            connect(
                self.host,
                self.port,
                keepalive=self.keepalive_s,
                clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                properties=props,
            )
        except (OSError, ValueError) as exc:
            raise PublisherError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        self._client.loop_start()
        self._started = True
        if not wait:
            return self
        deadline = time.monotonic() + self.connect_timeout_s
        with self._cond:
            while not self._connected and self._refused is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            refused, connected = self._refused, self._connected
        if not connected:
            self._stop()
            if refused is not None:
                raise PublisherError(f"broker refused the connection: {refused}")
            raise PublishTimeout(f"no CONNACK from {self.host}:{self.port} within {self.connect_timeout_s} s")
        return self

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish one message; blocks while the window of unacknowledged messages is full.

        While disconnected paho keeps the message (within the window) and sends it after reconnecting.
        Raises PublishTimeout when the window stays full for `publish_timeout_s` (broker gone for long),
        OversizeMessage (counted in stats) for a payload above the contract's maximum.
        """
        self._check_size(topic, payload)
        self._reserve(only_connected=False)
        self._send(topic, payload)

    def try_publish(self, topic: str, payload: bytes) -> bool:
        """Publish one message if the connection is up, blocking while the window is full.

        Returns False, the message not taken, while disconnected or when the connection drops during the
        wait, so that the caller keeps it in its own offline buffer. Raises like `publish`.
        """
        self._check_size(topic, payload)
        if not self._reserve(only_connected=True):
            return False
        self._send(topic, payload)
        return True

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait until the connection is up; False if `timeout_s` passes first."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._connected:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 1.0))
        return True

    def _check_size(self, topic: str, payload: bytes) -> None:
        # The broker answers a larger message with 0x95 and drops it: refuse it here, where it can be reported.
        if len(payload) > self.max_payload_bytes:
            with self._cond:
                self.oversize += 1
                self.last_error = f"{len(payload)}-byte message refused: above the {self.max_payload_bytes}-byte limit"
            raise OversizeMessage(f"cannot publish on {topic!r}: {self.last_error}")

    def _reserve(self, *, only_connected: bool) -> bool:
        """Take a place in the window of unacknowledged messages, waiting while it is full."""
        if not self._started or self._closed:
            raise PublisherError("publisher is not connected (call connect())")
        deadline = None if self.publish_timeout_s is None else time.monotonic() + self.publish_timeout_s
        with self._cond:
            while True:
                if only_connected and not self._connected:
                    return False
                if self.published - self.acked < self._window:
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise PublishTimeout(
                        f"{self.published - self.acked} messages unacknowledged for {self.publish_timeout_s} s"
                        + (f" ({self.last_error})" if self.last_error else "")
                    )
                self._cond.wait(left if left is None else min(left, 1.0))
            self.published += 1
        return True

    def _send(self, topic: str, payload: bytes) -> None:
        # Outside our lock: paho calls on_publish under its own lock, so holding ours here could deadlock.
        try:
            info = self._client.publish(topic, payload, qos=self.qos)
        except ValueError as exc:
            with self._cond:
                self.published -= 1
            raise PublisherError(f"cannot publish on {topic!r}: {exc}") from exc
        # NO_CONN is fine: the message is queued and sent after paho reconnects.
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            with self._cond:
                self.published -= 1
            raise PublisherError(f"publish on {topic!r} failed: {mqtt.error_string(info.rc)}")

    def stats(self) -> dict[str, Any]:
        """Counters for logs and reports."""
        return {
            "published": self.published,
            "acked": self.acked,
            "rejected": self.rejected,
            "oversize": self.oversize,
            "unacked": self.unacked,
            "window": self._window,
            "connects": self.connects,
            "disconnects": self.disconnects,
            "connected": self._connected,
            "last_error": self.last_error,
        }

    def close(self, *, timeout_s: float = 0.0) -> None:
        """Optionally wait for acknowledgements, then disconnect and stop the network thread."""
        if self._closed:
            return
        if timeout_s > 0 and self._started:
            self.wait_all_acked(timeout_s)
        self._closed = True
        self._stop()

    def _stop(self) -> None:
        # Closing must not fail on an already broken socket.
        with contextlib.suppress(Exception):
            self._client.disconnect()
        self._client.loop_stop()
        self._started = False

    def __enter__(self) -> Self:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()
