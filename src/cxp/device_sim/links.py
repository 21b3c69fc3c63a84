"""Many devices, one process: each device's own MQTT v5 connection over TLS, all serviced by one network loop.

A thread per paho client (`loop_start`) costs a thread stack and a scheduler slot per device; thousands of
devices instead share one selector loop driving paho's external-loop API (`socket`, `loop_read`,
`loop_write`, `loop_misc`, `want_write`). The one blocking step paho has, the TCP connect + TLS handshake
inside `reconnect()`, runs in a small pool of connect workers; the socket joins the loop once it is open.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import selectors
import socket
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode
from tenacity import RetryCallState, Retrying, wait_exponential_jitter

from cxp.contract import MAX_PAYLOAD_BYTES
from cxp.device_sim.client import AckedPublisher, OversizeMessage
from cxp.device_sim.credentials import CredentialKind, DeviceCredential
from cxp.device_sim.errors import ConfigError, ConnectRefused, PublisherError, PublishTimeout

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class RefusalKind(StrEnum):
    """Why a connection attempt failed."""

    AUTH = "auth"  # CONNACK with a failure reason: 0x86 bad user name or password, 0x87 not authorized, …
    TLS = "tls"  # the TLS handshake failed (server not trusted, hostname mismatch, client certificate refused)
    CLOSED = "closed"  # the broker closed the connection before its CONNACK (TLS 1.3 reports a refused cert so)
    NETWORK = "network"  # nothing listening, timeout


class LinkState(StrEnum):
    """Where a device's connection is."""

    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"  # refused or dropped; the next attempt is scheduled
    CLOSED = "closed"


@dataclass(frozen=True)
class Refusal:
    """One failed attempt: its kind, the MQTT reason code when the broker sent one, and the detail."""

    kind: RefusalKind
    code: int | None
    detail: str

    def error(self, device_id: str) -> ConnectRefused:
        """This refusal as the simulator's typed error."""
        return ConnectRefused(f"device {device_id}: {self.kind} refusal: {self.detail}", kind=self.kind,
                              code=self.code)


def tls_context(credential: DeviceCredential) -> ssl.SSLContext:
    """TLS ≥ 1.2 verifying the broker against the credential's CA, host name / IP checked, client cert if any."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(credential.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if credential.kind is CredentialKind.CERTIFICATE:
            context.load_cert_chain(certfile=str(credential.cert_file), keyfile=str(credential.key_file))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"device {credential.device_id}: cannot load its TLS files: {exc}") from exc
    # create_default_context already sets CERT_REQUIRED and check_hostname; asserted so a refactor cannot drop them.
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    return context


def backoff_s(failures: int, *, initial_s: float, max_s: float) -> float:
    """Delay before the next attempt after `failures` consecutive failures: exponential with jitter, capped."""
    state = RetryCallState(retry_object=Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = max(failures, 1)
    return wait_exponential_jitter(multiplier=initial_s, max=max_s, jitter=initial_s)(state)


class DeviceLink(AckedPublisher):
    """One device's connection: connects with its own credential, retries with bounded backoff, publishes QoS 1.

    Implements the runner's Publisher protocol for one device: `try_publish` refuses (False) while the
    device is not connected, so its messages stay in its own offline buffer, and blocks while
    `max_inflight` messages await their PUBACK. A PUBACK with a failure reason (0x87: the ACL refused the
    topic) is counted in `rejected`. Created by `ConnectionLoop.open`.
    """

    def __init__(self, *, loop: ConnectionLoop, credential: DeviceCredential, context: ssl.SSLContext | None,
                 max_inflight: int, keepalive_s: int, publish_timeout_s: float | None, backoff_initial_s: float,
                 backoff_max_s: float) -> None:
        if max_inflight < 1:
            raise ConfigError("max_inflight must be at least 1")
        self._loop = loop
        self.credential = credential
        self.device_id = credential.device_id
        self.max_inflight = max_inflight
        self.keepalive_s = keepalive_s
        self.publish_timeout_s = publish_timeout_s
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.state = LinkState.IDLE
        self.attempts = self.connects = self.disconnects = 0
        self.published = self.acked = self.rejected = self.oversize = 0
        self.refusals: Counter[str] = Counter()
        self.last_refusal: Refusal | None = None
        self._failures = 0
        self._got_connack = False
        self._window = max_inflight
        self._cond = threading.Condition()
        self._pending: tuple[DeviceCredential, ssl.SSLContext | None] | None = None
        self._timer = 0  # bumped to cancel a scheduled attempt
        # Loop-thread state: the registered socket and its selector events.
        self._sock: Any = None
        self._events = 0
        self._client = self._new_client(credential, context)

    def _new_client(self, credential: DeviceCredential, context: ssl.SSLContext | None) -> mqtt.Client:
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=credential.client_id,
                             protocol=mqtt.MQTTv5)
        if context is not None:
            client.tls_set_context(context)
        if credential.kind is CredentialKind.TOKEN:
            client.username_pw_set(credential.username, credential.secret.get_secret_value())  # type: ignore[union-attr]
        # Our window bounds what is in flight; paho's own limit scans every message on each PUBACK.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.suppress_exceptions = True
        client.on_connect, client.on_disconnect, client.on_publish = (self._on_connect, self._on_disconnect,
                                                                      self._on_publish)
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = client.on_socket_unregister_write = self._on_write_interest
        # Stores host/port/keepalive only; every attempt is a reconnect() in a connect worker.
        client.connect_async(credential.host, credential.port, keepalive=self.keepalive_s,
                             clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY)
        return client

    # -- connect worker ----------------------------------------------------------------------------------------

    def _attempt(self) -> None:
        with self._cond:
            if self.state in (LinkState.CLOSED, LinkState.CONNECTED, LinkState.CONNECTING):
                return
            self.state = LinkState.CONNECTING
            self.attempts += 1
            self._got_connack = False
            if self._pending is not None:
                self._swap_client(*self._pending)
                self._pending = None
        refusal = None
        try:
            self._client.reconnect()
        except (ssl.SSLError, ssl.CertificateError) as exc:
            refusal = Refusal(RefusalKind.TLS, None, f"TLS handshake failed: {exc}")
        except (OSError, ValueError) as exc:
            refusal = Refusal(RefusalKind.NETWORK, None, f"cannot reach {self.credential.host}:"
                                                         f"{self.credential.port}: {exc}")
        if refusal is None:
            self._loop.call(self._opened)
        else:
            self._loop.call(lambda: self._failed(refusal))

    def _swap_client(self, credential: DeviceCredential, context: ssl.SSLContext | None) -> None:
        old, self._client = self._client, self._new_client(credential, context)
        self.credential = credential
        # paho has no public way to hand over unacknowledged messages; the new client re-sends them after CONNACK.
        for message in list(old._out_messages.values()):
            self._client.publish(message.topic, message.payload, qos=message.qos)

    # -- loop thread -------------------------------------------------------------------------------------------

    def _opened(self) -> None:
        sock = self._client.socket()
        if sock is None:
            return
        if self.state is LinkState.CLOSED:
            self._client.disconnect()
        self._sock = sock
        self._events = READ | (WRITE if self._client.want_write() else 0)
        self._loop.register(sock, self._events, self)

    def _failed(self, refusal: Refusal) -> None:
        with self._cond:
            self._record(refusal)
            self._cond.notify_all()
        self._retry_later()

    def _record(self, refusal: Refusal) -> None:
        self.last_refusal = refusal
        self.refusals[refusal.kind] += 1
        self._failures += 1

    def _retry_later(self) -> None:
        with self._cond:
            if self.state is LinkState.CLOSED:
                return
            self.state = LinkState.BACKOFF
            self._timer += 1
            token = self._timer
            delay = backoff_s(self._failures, initial_s=self.backoff_initial_s, max_s=self.backoff_max_s)
        self._loop.schedule(delay, lambda: self._timer == token and self._loop.submit(self._attempt))

    def _readable(self) -> None:
        rc = self._client.loop_read()
        # Decrypted bytes already inside the SSL object do not wake the selector again.
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and (sock := self._client.socket()) is not None \
                and isinstance(sock, ssl.SSLSocket) and sock.pending():
            rc = self._client.loop_read()

    def _writable(self) -> None:
        self._client.loop_write()

    def _misc(self) -> None:
        self._client.loop_misc()
        self._set_interest()

    def _set_interest(self) -> None:
        if self._sock is None:
            return
        events = READ | (WRITE if self._client.want_write() else 0)
        if events != self._events:
            self._events = events
            self._loop.modify(self._sock, events, self)

    def _on_write_interest(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # Called from the publishing thread too: the loop re-reads want_write() when it applies the change.
        self._loop.call(self._set_interest)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # Before paho closes the descriptor, so the selector forgets it before the number can be reused.
        self._loop.call(lambda: self._unregister(sock))

    def _unregister(self, sock: Any) -> None:
        if self._sock is sock:
            self._sock = None
            self._events = 0
        self._loop.unregister(sock)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Any) -> None:
        with self._cond:
            self._got_connack = True
            if reason.is_failure:
                self._record(Refusal(RefusalKind.AUTH, reason.value, f"CONNACK {reason} (0x{reason.value:02x})"))
            else:
                self.state = LinkState.CONNECTED
                self.connects += 1
                self._failures = 0
                server_max = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
                self._window = min(self.max_inflight, server_max) if server_max else self.max_inflight
            self._cond.notify_all()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       properties: Any) -> None:
        with self._cond:
            if self.state is LinkState.CONNECTED:
                self.disconnects += 1
            elif not self._got_connack and self.state is LinkState.CONNECTING:
                self._record(Refusal(RefusalKind.CLOSED, None, f"closed by the broker before CONNACK: {reason}"))
            if self.state is not LinkState.CLOSED:
                self.state = LinkState.BACKOFF
            self._cond.notify_all()
        self._retry_later()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Any) -> None:
        with self._cond:
            self.acked += 1
            if reason.is_failure:
                self.rejected += 1
            self._cond.notify_all()

    # -- API (any thread) --------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the device is connected right now."""
        return self.state is LinkState.CONNECTED

    @property
    def unacked(self) -> int:
        """Messages published and not yet acknowledged."""
        return self.published - self.acked

    def set_credential(self, credential: DeviceCredential) -> None:
        """Connect with this credential from the next attempt on (a rotated or corrected one); retries now."""
        if credential.device_id != self.device_id:
            raise ConfigError(f"credential of {credential.device_id} given to device {self.device_id}")
        context = self._loop.context(credential)
        with self._cond:
            self._pending = (credential, context)
            retry_now = self.state is LinkState.BACKOFF
            if retry_now:
                self._timer += 1
        if retry_now:
            self._loop.submit(self._attempt)

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait until connected; False if `timeout_s` passes first (see `last_refusal` for why)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.state is not LinkState.CONNECTED:
                left = deadline - time.monotonic()
                if left <= 0 or self.state is LinkState.CLOSED:
                    return False
                self._cond.wait(min(left, 1.0))
        return True

    def wait_outcome(self, timeout_s: float) -> Refusal | None:
        """Wait for the first attempt's outcome: None once connected, else the refusal (PublishTimeout: neither)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.state is not LinkState.CONNECTED and self.last_refusal is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PublishTimeout(f"device {self.device_id}: no outcome within {timeout_s} s")
                self._cond.wait(min(left, 1.0))
            return None if self.state is LinkState.CONNECTED else self.last_refusal

    def require_connected(self, timeout_s: float) -> DeviceLink:
        """This link once connected; ConnectRefused (typed by kind) if its first outcome is a refusal."""
        refusal = self.wait_outcome(timeout_s)
        if refusal is not None:
            raise refusal.error(self.device_id)
        return self

    def try_publish(self, topic: str, payload: bytes) -> bool:
        """Publish QoS 1 if connected (blocking while the window is full); False, not taken, while disconnected.

        A payload above the contract's maximum raises OversizeMessage (counted): the broker would drop it."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            with self._cond:
                self.oversize += 1
            raise OversizeMessage(f"device {self.device_id}: {len(payload)}-byte message refused: above the "
                                  f"{MAX_PAYLOAD_BYTES}-byte limit")
        deadline = None if self.publish_timeout_s is None else time.monotonic() + self.publish_timeout_s
        with self._cond:
            while True:
                if self.state is not LinkState.CONNECTED:
                    return False
                if self.published - self.acked < self._window:
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise PublishTimeout(f"device {self.device_id}: {self.unacked} messages unacknowledged for "
                                         f"{self.publish_timeout_s} s")
                self._cond.wait(1.0 if left is None else min(left, 1.0))
            self.published += 1
        # Outside our lock: paho calls on_publish under its own lock.
        try:
            info = self._client.publish(topic, payload, qos=1)
        except ValueError as exc:
            with self._cond:
                self.published -= 1
            raise PublisherError(f"cannot publish on {topic!r}: {exc}") from exc
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            with self._cond:
                self.published -= 1
            raise PublisherError(f"publish on {topic!r} failed: {mqtt.error_string(info.rc)}")
        return True

    def stats(self) -> dict[str, Any]:
        """Counters for logs and reports."""
        return {"device_id": self.device_id, "state": str(self.state), "attempts": self.attempts,
                "connects": self.connects, "disconnects": self.disconnects, "refusals": dict(self.refusals),
                "published": self.published, "acked": self.acked, "rejected": self.rejected,
                "oversize": self.oversize,
                "last_refusal": None if self.last_refusal is None else self.last_refusal.detail}

    def close(self) -> None:
        """Disconnect and stop retrying (idempotent)."""
        with self._cond:
            if self.state is LinkState.CLOSED:
                return
            self.state = LinkState.CLOSED
            self._timer += 1
            self._cond.notify_all()
        self._loop.call(self._client.disconnect)


class ConnectionLoop:
    """One network thread servicing every DeviceLink's socket, plus a few connect workers for TLS handshakes.

    `tls=False` exists only so that `cxp bench device-tls` can measure what TLS costs against a plain
    loopback listener with the same client code; devices never connect without TLS.
    """

    def __init__(self, *, connect_workers: int = 4, tick_s: float = 0.5, max_inflight: int = 20,
                 keepalive_s: int = 60, publish_timeout_s: float | None = 60.0, backoff_initial_s: float = 0.5,
                 backoff_max_s: float = 30.0, tls: bool = True) -> None:
        if connect_workers < 1 or tick_s <= 0 or backoff_initial_s <= 0 or backoff_max_s < backoff_initial_s:
            raise ConfigError("connect_workers ≥ 1, tick_s > 0 and 0 < backoff_initial_s ≤ backoff_max_s")
        self._link_options = {"max_inflight": max_inflight, "keepalive_s": keepalive_s,
                              "publish_timeout_s": publish_timeout_s, "backoff_initial_s": backoff_initial_s,
                              "backoff_max_s": backoff_max_s}
        self._tick_s = tick_s
        self._tls = tls
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, READ, None)
        self._ops: deque[Callable[[], object]] = deque()
        self._woken = False
        self._lock = threading.Lock()
        self._timers: list[tuple[float, int, Callable[[], object]]] = []
        self._seq = itertools.count()
        self._contexts: dict[tuple[str, str | None, str | None], ssl.SSLContext] = {}
        self.links: list[DeviceLink] = []
        self._pool = ThreadPoolExecutor(max_workers=connect_workers, thread_name_prefix="cxp-connect")
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="cxp-device-loop", daemon=True)
        self._thread.start()

    def context(self, credential: DeviceCredential) -> ssl.SSLContext | None:
        """The TLS context for a credential (None without TLS); token devices trusting the same CA share one."""
        if not self._tls:
            return None
        key = (str(credential.ca_file), str(credential.cert_file) if credential.cert_file else None,
               str(credential.key_file) if credential.key_file else None)
        with self._lock:
            found = self._contexts.get(key)
        if found is None:
            found = tls_context(credential)
            if credential.kind is CredentialKind.TOKEN:
                with self._lock:
                    self._contexts[key] = found
        return found

    def open(self, credential: DeviceCredential) -> DeviceLink:
        """A link for this device, its first connection attempt queued for a connect worker."""
        link = DeviceLink(loop=self, credential=credential, context=self.context(credential), **self._link_options)
        with self._lock:
            self.links.append(link)
        self.submit(link._attempt)
        return link

    def open_all(self, credentials: Iterable[DeviceCredential]) -> dict[str, DeviceLink]:
        """Links for many devices (device id → link)."""
        return {c.device_id: self.open(c) for c in credentials}

    def wait_all_connected(self, timeout_s: float) -> int:
        """Wait until every link is connected; returns how many are."""
        deadline = time.monotonic() + timeout_s
        for link in list(self.links):
            link.wait_connected(max(deadline - time.monotonic(), 0.0))
        return sum(link.connected for link in self.links)

    def stats(self) -> dict[str, Any]:
        """Totals over all links."""
        links = list(self.links)
        refusals: Counter[str] = Counter()
        for link in links:
            refusals.update(link.refusals)
        return {"links": len(links), "connected": sum(link.connected for link in links),
                "attempts": sum(link.attempts for link in links), "connects": sum(link.connects for link in links),
                "disconnects": sum(link.disconnects for link in links), "refusals": dict(refusals),
                "published": sum(link.published for link in links), "acked": sum(link.acked for link in links),
                "rejected": sum(link.rejected for link in links)}

    # -- plumbing used by the links ------------------------------------------------------------------------------

    def submit(self, fn: Callable[[], object]) -> None:
        """Run `fn` in a connect worker (ignored once closing)."""
        if not self._stop:
            with contextlib.suppress(RuntimeError):
                self._pool.submit(fn)

    def call(self, fn: Callable[[], object]) -> None:
        """Run `fn` in the loop thread: now when already there, else at its next wake-up."""
        if threading.current_thread() is self._thread:
            fn()
            return
        with self._lock:
            self._ops.append(fn)
            wake, self._woken = not self._woken, True
        if wake:
            with contextlib.suppress(BlockingIOError, OSError):
                self._wake_w.send(b"\0")

    def schedule(self, delay_s: float, fn: Callable[[], object]) -> None:
        """Run `fn` in the loop thread after `delay_s`."""
        self.call(lambda: heapq.heappush(self._timers, (time.monotonic() + delay_s, next(self._seq), fn)))

    def register(self, sock: Any, events: int, link: DeviceLink) -> None:
        """Watch a link's socket (loop thread)."""
        self._selector.register(sock, events, link)

    def modify(self, sock: Any, events: int, link: DeviceLink) -> None:
        """Change what a link's socket is watched for (loop thread)."""
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.modify(sock, events, link)

    def unregister(self, sock: Any) -> None:
        """Stop watching a socket (loop thread)."""
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(sock)

    # -- the loop ------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        next_tick = time.monotonic() + self._tick_s
        while not self._stop:
            now = time.monotonic()
            timeout = min(next_tick, self._timers[0][0] if self._timers else next_tick) - now
            for key, mask in self._selector.select(max(timeout, 0.0)):
                link = key.data
                if link is None:
                    with contextlib.suppress(BlockingIOError, OSError):
                        self._wake_r.recv(4096)
                    continue
                if mask & READ and link._sock is key.fileobj:
                    link._readable()
                if mask & WRITE and link._sock is key.fileobj:
                    link._writable()
            self._run_ops()
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                heapq.heappop(self._timers)[2]()
            if now >= next_tick:
                next_tick = now + self._tick_s
                for link in list(self.links):
                    if link._sock is not None:
                        link._misc()

    def _run_ops(self) -> None:
        with self._lock:
            ops, self._ops, self._woken = self._ops, deque(), False
        for op in ops:
            op()

    def close(self, *, timeout_s: float = 5.0) -> None:
        """Disconnect every link, stop the loop and the connect workers."""
        for link in list(self.links):
            link.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(link._sock is not None for link in self.links):
            time.sleep(0.02)
        self._stop = True
        self.call(lambda: None)
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        for link in self.links:
            with contextlib.suppress(Exception):
                if link._client.socket() is not None:
                    link._client._sock_close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> ConnectionLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
