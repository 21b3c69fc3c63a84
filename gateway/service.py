"""The gateway process: paho-mqtt 2 (MQTT v5, persistent session, manual acks) feeding a batch writer."""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from contract import telemetry_subscription
from core.config import Settings
from gateway.errors import BrokerUnavailable
from gateway.stats import GatewayStats
from gateway.validate import Accepted, validate_message
from store.db import connect
from store.errors import StoreError, StoreUnavailable
from store.ingest import DeadLetter, IngestMessage, TimeBounds, WriteResult, write_batch_isolating
from store.registry import DeviceIdentity, get_device_identity, list_device_identities
from store.rollups import refresh_rollups

log = logging.getLogger("cxp.gateway")

_UNKNOWN_TTL_S = 30.0  # how long an unknown device id is remembered before the registry is asked again


class _Inbound(NamedTuple):
    topic: str
    payload: bytes
    mid: int
    qos: int
    received_at: float


class DeviceCache:
    """Registered devices by id; misses go to the database, unknown ids are remembered briefly."""

    def __init__(self) -> None:
        self._known: dict[str, DeviceIdentity] = {}
        self._unknown: dict[str, float] = {}
        self.conn = None

    def load(self, conn) -> None:
        """Replace the cache with the registry's contents."""
        self.conn = conn
        self._known = list_device_identities(conn)
        self._unknown.clear()

    @property
    def size(self) -> int:
        """How many registered devices are cached."""
        return len(self._known)

    def lookup(self, device_id: str) -> DeviceIdentity | None:
        """The device's identity, or None when it is not registered."""
        found = self._known.get(device_id)
        if found is not None:
            return found
        now = time.monotonic()
        if self._unknown.get(device_id, 0.0) > now:
            return None
        found = get_device_identity(self.conn, device_id=device_id)
        if found is None:
            self._unknown[device_id] = now + _UNKNOWN_TTL_S
        else:
            self._known[device_id] = found
        return found


class Gateway:
    """Subscribes to every device's telemetry and stores it exactly once, acking only after commit."""

    def __init__(self, settings: Settings, *, stats_file: Path | None = None, rollups: bool = True) -> None:
        self.settings = settings
        self.cfg = settings.gateway
        self.stats = GatewayStats()
        self.stats_file = stats_file
        self.rollups = rollups
        self.inbox: queue.SimpleQueue[_Inbound] = queue.SimpleQueue()
        self.stopping = threading.Event()
        self.devices = DeviceCache()
        self.bounds = TimeBounds(
            max_future_skew_s=float(self.cfg.max_future_skew_s),
            max_age_s=float(settings.retention_days * 86400) if settings.retention_days else None,
        )
        self.connected = threading.Event()
        self.client = self._make_client()
        self._conn = None

    # ------------------------------------------------------------------ MQTT side

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.cfg.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        if self.settings.mqtt.username:
            client.username_pw_set(self.settings.mqtt.username, self.settings.mqtt.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        log.info("connected to broker (session present: %s)", flags.session_present)
        client.subscribe(telemetry_subscription(self.settings.mqtt.topic_prefix), qos=1)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if not self.stopping.is_set():
            log.warning("disconnected from broker (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        # Only enqueue: the network thread must keep reading; the writer does the work.
        self.inbox.put(_Inbound(msg.topic, msg.payload, msg.mid, msg.qos, time.time()))

    def _connect_broker(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        props.ReceiveMaximum = self.cfg.receive_maximum  # the bounded in-flight window
        try:
            self.client.connect(self.settings.mqtt.host, self.settings.mqtt.port,
                                keepalive=self.settings.mqtt.keepalive_s, clean_start=False, properties=props)
        except OSError as exc:
            raise BrokerUnavailable(f"cannot reach broker at {self.settings.mqtt.host}:"
                                    f"{self.settings.mqtt.port}: {exc}") from exc
        self.client.loop_start()

    # ------------------------------------------------------------------ DB side

    def _db(self):
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.settings.db)
            self.devices.load(self._conn)
        return self._conn

    def _drop_db(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail any way
                self._conn.close()
        self._conn = None

    def _take_batch(self) -> list[_Inbound]:
        try:
            first = self.inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.cfg.batch_max_wait_ms / 1000
        while len(batch) < self.cfg.batch_max_messages:
            try:
                batch.append(self.inbox.get_nowait())
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self.inbox.get(timeout=min(remaining, 0.02)))
                except queue.Empty:
                    continue
        return batch

    def _prepare(self, batch: list[_Inbound]) -> tuple[list[IngestMessage], list[DeadLetter], list]:
        messages: list[IngestMessage] = []
        letters: list[DeadLetter] = []
        sent: list = []
        cap = self.cfg.dead_letter_payload_cap
        for item in batch:
            verdict = validate_message(topic=item.topic, payload=item.payload, lookup_device=self.devices.lookup,
                                       max_payload_bytes=self.cfg.max_payload_bytes,
                                       topic_prefix=self.settings.mqtt.topic_prefix)
            if isinstance(verdict, Accepted):
                messages.append(IngestMessage(item.topic, item.topic.split("/")[1], verdict.device_key,
                                              item.payload, item.received_at, verdict.activated_at.timestamp()))
                sent.append(verdict.sent_at)
            else:
                letters.append(DeadLetter(datetime.fromtimestamp(item.received_at, UTC), item.topic,
                                          verdict.device_id, verdict.reason.value, verdict.detail,
                                          item.payload[:cap], len(item.payload)))
        return messages, letters, sent

    def _write_with_retry(self, batch: list[_Inbound]) -> tuple[WriteResult, list, int] | None:
        """Write the batch, retrying while the database is away; None when stopping gave up on it."""
        backoff = 0.2
        while True:
            try:
                conn = self._db()
                messages, letters, sent = self._prepare(batch)
                result = write_batch_isolating(conn, messages=messages, dead_letters=letters, bounds=self.bounds,
                                               payload_cap=self.cfg.dead_letter_payload_cap)
                return result, sent, len(messages) - len(result.rejected)
            except StoreUnavailable as exc:
                self.stats.db_retries += 1
                self._drop_db()
                if self.stopping.is_set():
                    # Unacked messages stay with the broker and come back on the next start.
                    log.warning("database unavailable while stopping; leaving %d messages unacked", len(batch))
                    return None
                log.warning("database unavailable (%s); retrying in %.1fs, nothing acked", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, self.cfg.retry_max_backoff_s)

    def _process(self, batch: list[_Inbound]) -> bool:
        """Store then ack one batch; False when it was left unacked."""
        started = time.perf_counter()
        written = self._write_with_retry(batch)
        if written is None:
            return False
        result, sent, stored_messages = written
        committed = time.time()
        for item in batch:
            if item.qos > 0:
                self.client.ack(item.mid, item.qos)
        s = self.stats
        s.received += len(batch)
        s.messages_stored += stored_messages
        s.events_stored += result.events_stored
        s.states_stored += result.states_stored
        s.duplicates += result.duplicates
        s.dead_lettered += result.dead_lettered
        latencies = [(committed - t.timestamp()) * 1000 for t in sent if t is not None]
        s.add_batch(batch_ms=(time.perf_counter() - started) * 1000, latencies_ms=latencies)
        return True

    def _writer_loop(self) -> None:
        while not self.stopping.is_set():
            batch = self._take_batch()
            if batch:
                self._process(batch)
        # Flush what was received before the stop; later deliveries stay unacked for redelivery.
        while True:
            rest: list[_Inbound] = []
            while len(rest) < self.cfg.batch_max_messages:
                try:
                    rest.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            if not rest or not self._process(rest):
                break

    def _rollup_loop(self) -> None:
        conn = None
        while not self.stopping.wait(self.settings.gateway.rollup_interval_s):
            try:
                conn = conn if conn is not None and not conn.closed else connect(self.settings.db)
                step = refresh_rollups(conn)
                if step.device_days:
                    log.debug("rollups refreshed: %s", step)
            except StoreError as exc:
                log.warning("rollup refresh failed: %s", exc)
                conn = None

    def _stats_loop(self) -> None:
        while not self.stopping.wait(self.cfg.stats_interval_s):
            log.info("stats %s", json.dumps(self.stats.snapshot()))

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; flush, ack, exit 0."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        self._db()
        self._connect_broker()
        threads = [threading.Thread(target=self._stats_loop, name="stats", daemon=True)]
        if self.rollups:
            threads.append(threading.Thread(target=self._rollup_loop, name="rollups", daemon=True))
        for t in threads:
            t.start()
        log.info("gateway running: %d devices registered", self.devices.size)
        self._writer_loop_until_stopped()
        return 0

    def _writer_loop_until_stopped(self) -> None:
        writer = threading.Thread(target=self._writer_loop, name="writer")
        writer.start()
        while writer.is_alive():
            writer.join(timeout=0.5)
        rc = self.client.disconnect()
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("disconnect returned %s", rc)
        self.client.loop_stop()
        snapshot = self.stats.snapshot()
        log.info("stopped; final stats %s", json.dumps(snapshot))
        if self.stats_file is not None:
            self.stats_file.write_text(json.dumps(snapshot))
        self._drop_db()

