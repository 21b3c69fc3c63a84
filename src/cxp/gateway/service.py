"""The gateway: a receiving process (paho-mqtt 2, MQTT v5, persistent session, manual acks) and a
writer process (validation + TimescaleDB). A message is acked only after its batch is committed."""

from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import deque
from pathlib import Path
from typing import NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from cxp.contract import shared_telemetry_subscription
from cxp.core.config import MAX_PACKET_BYTES, Settings
from cxp.gateway.broker_log import broker_log_path, follow
from cxp.gateway.errors import BrokerUnavailable, GatewayError
from cxp.gateway.stats import GatewayStats
from cxp.gateway.writer import AfterRefresh, BatchResult, Item, Writer, rollup_loop, run_writer
from cxp.identity.broker import GATEWAY_ACCOUNT, service_secret
from cxp.identity.errors import IdentityError
from cxp.store.db import connect
from cxp.store.errors import StoreError
from cxp.store.ops import record_gateway_stats

log = logging.getLogger("cxp.gateway")


class _Inbound(NamedTuple):
    topic: str
    payload: bytes
    mid: int
    qos: int
    received_at: float


class Gateway:
    """Subscribes to every device's telemetry and stores it exactly once, acking only after commit."""

    def __init__(self, settings: Settings, *, stats_file: Path | None = None, rollups: bool = True,
                 after_refresh: AfterRefresh | None = None) -> None:
        self.settings = settings
        self.after_refresh = after_refresh  # called after each rollup refresh (alert evaluation)
        self.cfg = settings.gateway
        self.stats = GatewayStats()
        self.stats_file = stats_file
        self.rollups = rollups
        self.inbox: queue.SimpleQueue[_Inbound | None] = queue.SimpleQueue()
        self.stopping = threading.Event()
        self.client = self._make_client()
        self._ctx = multiprocessing.get_context("spawn")  # no fork of a process that runs threads
        self._writer_stopping = self._ctx.Event()
        # Batches sent to the writer and not yet answered, oldest first: (batch id, [(mid, qos)], items); the
        # items are kept so that a restarted writer can be given them again.
        self._pending: deque[tuple[int, list[tuple[int, int]], list[Item]]] = deque()
        self.writer_restarts = 0
        self._pending_lock = threading.Lock()  # guards `_pending` only: held briefly, never across a pipe write
        # Serialises writes to the writer's pipe (the dispatcher's batches, a restart's hand-over). A write blocks while
        # the writer is busy; holding `_pending_lock` through it starved the acker, whose unread results then blocked
        # the writer: a deadlock once more than a pipe's worth of results was due (a broker flooding past Receive
        # Maximum, as Mosquitto 2.0.11 does with shared subscriptions; docs/scaling.md).
        self._send_lock = threading.Lock()
        self._writer_failed = False
        self._inline: Writer | None = None  # the writer when it runs in this process
        # Fleet totals from the broker log follower (denied publishes, connects, connected now); shared memory.
        self._broker_totals = self._ctx.Array("q", 3, lock=False)
        self._follower_stopping = self._ctx.Event()
        self._follower = None
        # 1 while this instance's writer process holds the group's leader lock (rollups, alerts, retention).
        self._leader = self._ctx.Value("b", 0, lock=False)
        self.subscription = shared_telemetry_subscription(self.cfg.share_group, settings.mqtt.topic_prefix)

    # ------------------------------------------------------------------ MQTT side

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.cfg.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        # The broker refuses anonymous clients: the gateway logs in as its service account (read-only on telemetry).
        client.username_pw_set(GATEWAY_ACCOUNT, self._secret())
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        return client

    def _secret(self) -> str:
        try:
            return service_secret(self.settings, GATEWAY_ACCOUNT)
        except IdentityError as exc:
            raise BrokerUnavailable(str(exc)) from exc

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        log.info("connected to broker as %s (session present: %s); subscribing to %s", self.cfg.client_id,
                 flags.session_present, self.subscription)
        # Retain Handling 1: retained messages only when the subscription is new, not at each reconnect of the
        # persistent session (a retained bad message was dead-lettered again at every restart). No UNSUBSCRIBE of the
        # other form (plain vs group) here: a session that changes mode is discarded once (`--forget-session`).
        client.subscribe(self.subscription,
                         options=SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self.stopping.is_set():
            log.warning("disconnected from broker (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        # Only enqueue: the network thread must keep reading; the writer process does the work.
        now = time.time()
        if self.stats.first_received_at is None:
            self.stats.first_received_at = now
        self.inbox.put(_Inbound(msg.topic, msg.payload, msg.mid, msg.qos, now))

    def _connect_broker(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        props.ReceiveMaximum = self.cfg.receive_maximum  # the bounded in-flight window
        # The contract's maximum (as the broker's): a broker that would send more drops it rather than the gateway.
        props.MaximumPacketSize = MAX_PACKET_BYTES
        try:
            self.client.connect(self.settings.mqtt.host, self.settings.mqtt.port,
                                keepalive=self.settings.mqtt.keepalive_s, clean_start=False, properties=props)
        except OSError as exc:
            raise BrokerUnavailable(f"cannot reach broker at {self.settings.mqtt.host}:"
                                    f"{self.settings.mqtt.port}: {exc}") from exc
        self.client.loop_start()

    # ------------------------------------------------------------------ the writer process

    def _start_inline_writer(self) -> None:
        self._inline = Writer(self.settings, self._writer_stopping)
        self._inline.db()
        if self.rollups:
            threading.Thread(target=rollup_loop, name="rollups", daemon=True,
                             args=(self.settings, self._writer_stopping, self.after_refresh, self._leader)).start()
        log.info("gateway running: %d devices registered (writer in-process)", self._inline.devices.size)

    def _start_writer(self) -> None:
        batches_r, self._batches = self._ctx.Pipe(duplex=False)
        self._results, results_w = self._ctx.Pipe(duplex=False)
        self._writer = self._ctx.Process(
            target=run_writer, name="cxp-gateway-writer", daemon=True,
            args=(self.settings.model_dump_json(), batches_r, results_w, self._writer_stopping, self.rollups,
                  self.after_refresh, self._leader),
        )
        self._writer.start()
        batches_r.close()
        results_w.close()
        if not self._results.poll(60):
            raise GatewayError("the writer process did not start within 60 s")
        status, detail = self._results.recv()
        if status != "ready":
            raise GatewayError(f"the writer process could not start: {detail}")
        log.info("writer process pid %d", self._writer.pid)
        if not self.writer_restarts:
            log.info("gateway running: %d devices registered", detail)

    def _restart_writer(self) -> bool:
        """Start a new writer process and hand it every unanswered batch again, with backoff; False when stopping."""
        backoff = 0.5
        while not self.stopping.is_set():
            self._send_lock.acquire()  # no new batch reaches the pipe before the unanswered ones are handed over
            try:
                with self._pending_lock:
                    self._writer.join(timeout=5)
                    for old in (self._batches, self._results):
                        old.close()
                    self.writer_restarts += 1
                    # A process killed inside Event.is_set()/wait() leaves the Event's lock held for ever: a new one.
                    self._writer_stopping = self._ctx.Event()
                    if self.stopping.is_set():
                        self._writer_stopping.set()
                    self._start_writer()
                    again = [(batch_id, items) for batch_id, _mids, items in self._pending]
            except (GatewayError, OSError) as exc:
                self._send_lock.release()
                log.error("restarting the writer process failed: %s; retrying in %.1f s", exc, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, self.cfg.retry_max_backoff_s)
                continue
            # Handed over by a thread (which then releases the send lock) while this one goes back to reading results:
            # the writer answers as it goes, and a pipe full of unread answers would block it. Already committed batches
            # come back as duplicates: storage stays exactly once.
            threading.Thread(target=self._hand_over, args=(again,), name="hand-over", daemon=True).start()
            log.warning("writer process restarted (%d so far); %d batches handed over again", self.writer_restarts,
                        len(again))
            return True
        return False

    def _hand_over(self, batches: list[tuple[int, list[Item]]]) -> None:
        try:
            for batch_id, items in batches:
                self._batches.send((batch_id, items))
        except OSError as exc:  # the new writer died too: the acker notices and restarts it again
            log.warning("handing batches over to the restarted writer failed: %s", exc)
        finally:
            self._send_lock.release()

    def _settle(self, result: BatchResult, mids: list[tuple[int, int]]) -> None:
        """Ack a committed batch's messages and count it; an uncommitted batch stays unacked."""
        s = self.stats
        s.db_retries += result.db_retries
        if not result.committed:
            return
        for mid, qos in mids:
            if qos > 0:
                self.client.ack(mid, qos)
        s.received += len(mids)
        s.messages_stored += result.stored_messages
        s.events_stored += result.events_stored
        s.states_stored += result.states_stored
        s.duplicates += result.duplicates
        s.dead_lettered += result.dead_lettered
        s.add_batch(batch_ms=result.batch_ms, latencies_ms=result.latencies_ms,
                    receive_latencies_ms=result.receive_latencies_ms, skewed=result.skewed)

    def _acker_loop(self) -> None:
        """Ack each batch the writer process reports committed, in order; restart a writer that dies."""
        while True:
            try:
                result: BatchResult = self._results.recv()
            except (EOFError, OSError):
                if self.stopping.is_set() or self._writer.exitcode == 0:
                    break
                log.error("the writer process died (exit %s); restarting it", self._writer.exitcode)
                if self._restart_writer():
                    continue
                break
            with self._pending_lock:
                batch_id, mids, _items = self._pending.popleft()
            if batch_id != result.batch_id:
                log.error("writer answered batch %d while %d was expected; stopping", result.batch_id, batch_id)
                self._writer_failed = True
                self.stopping.set()
                break
            self._settle(result, mids)
        if not self.stopping.is_set():
            log.error("the writer process ended unexpectedly; stopping without acking the rest")
            self._writer_failed = True
            self.stopping.set()

    def _take_batch(self) -> list[_Inbound]:
        try:
            first = self.inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        if first is None:  # the stop signal's wake-up
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
        return [m for m in batch if m is not None]

    def _dispatch(self, batch: list[_Inbound], batch_id: int) -> None:
        items = [Item(m.topic, m.payload, m.received_at) for m in batch]
        if self._inline is not None:
            self._settle(self._inline.write(batch_id, items), [(m.mid, m.qos) for m in batch])
            return
        with self._send_lock:
            with self._pending_lock:
                self._pending.append((batch_id, [(m.mid, m.qos) for m in batch], items))
            try:
                self._batches.send((batch_id, items))
            except OSError:  # the writer died: the acker restarts it and hands this batch over again
                log.warning("writer process gone; batch %d waits for its restart", batch_id)

    def _dispatch_loop(self) -> None:
        ids = itertools.count()
        while not self.stopping.is_set():
            batch = self._take_batch()
            if batch and not self._writer_failed:
                self._dispatch(batch, next(ids))
        if self._writer_failed:
            return
        # Flush what was received before the stop; later deliveries stay unacked for redelivery.
        while True:
            rest: list[_Inbound] = []
            while len(rest) < self.cfg.batch_max_messages:
                try:
                    rest.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            if not rest:
                break
            rest = [m for m in rest if m is not None]
            if rest:
                self._dispatch(rest, next(ids))
        if self._inline is None:
            with self._send_lock:
                self._batches.send(None)

    def _start_follower(self) -> None:
        """Follow the local broker's log in a child process (connections and denied publishes per username)."""
        if not self.cfg.follow_broker_log or not broker_log_path(self.settings).exists():
            log.info("not following the broker log (off, or the broker is not this stack's)")
            return
        self._follower = self._ctx.Process(target=follow, name="cxp-gateway-broker-log", daemon=True,
                                           args=(self.settings.model_dump_json(), self._follower_stopping,
                                                 self._broker_totals, os.getpid()))
        self._follower.start()

    def _stop_follower(self) -> None:
        if self._follower is not None:
            self._follower_stopping.set()
            self._follower.join(timeout=10)
            if self._follower.is_alive():
                self._follower.terminate()

    def snapshot(self) -> dict:
        """The counters reported: the gateway's own, plus the broker's as its log shows them (when followed)."""
        snapshot = self.stats.snapshot()
        snapshot["writer_restarts"] = self.writer_restarts
        snapshot.update(client_id=self.cfg.client_id, share_group=self.cfg.share_group or None,
                        leader=bool(self._leader.value), pid=os.getpid())
        if self._follower is not None:
            denied, connects, connected = self._broker_totals[:]
            snapshot.update(broker_denied_publishes=denied, broker_connects=connects,
                            broker_clients_connected=connected)
        return snapshot

    def _stats_loop(self) -> None:
        conn = None
        while not self.stopping.wait(self.cfg.stats_interval_s):
            snapshot = self.snapshot()
            log.info("stats %s", json.dumps(snapshot))
            # Operators read these through the API; losing one report is harmless, so errors only log.
            conn = self._record(conn, snapshot)
        if conn is not None:
            conn.close()

    def _record(self, conn, snapshot: dict):
        """Store one snapshot (the API's per-instance status); returns the connection to reuse, None after a failure."""
        try:
            if conn is None or conn.closed:
                conn = connect(self.settings.db)
            record_gateway_stats(conn, gateway_id=self.cfg.client_id,
                                 snapshot={**snapshot, "stats_interval_s": self.cfg.stats_interval_s})
            return conn
        except StoreError as exc:
            log.warning("could not record stats: %s", exc)
            if conn is not None:
                conn.close()
            return None

    # ------------------------------------------------------------------ lifecycle

    def _on_signal(self, *_args) -> None:
        self.stopping.set()
        # Wakes the dispatcher: once (after a database failover, SIGTERM, measured) its SimpleQueue.get(timeout=0.2)
        # on the empty inbox never returned, and the gateway never stopped. SimpleQueue.put is safe in a handler.
        self.inbox.put(None)
        # While stopping, the writer gives up on a database that is down instead of retrying forever.
        self._writer_stopping.set()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; flush, ack, exit 0 (1 when the writer process failed)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        if self.cfg.writer_process:
            self._start_writer()
        else:
            self._start_inline_writer()
        self._start_follower()
        self._connect_broker()
        acker = threading.Thread(target=self._acker_loop if self._inline is None else lambda: None, name="acker")
        acker.start()
        threading.Thread(target=self._stats_loop, name="stats", daemon=True).start()
        try:
            self._dispatch_loop()
        except (BrokenPipeError, OSError) as exc:
            log.error("lost the writer process: %s", exc)
            self._writer_failed = True
        acker.join(timeout=None if not self._writer_failed else 5)
        if self._inline is None:
            self._writer.join(timeout=30)
        else:
            self._writer_stopping.set()
            self._inline.close()
        rc = self.client.disconnect()
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("disconnect returned %s", rc)
        self.client.loop_stop()
        self._stop_follower()
        snapshot = {**self.snapshot(), "leader": False, "stopped": True}
        log.info("stopped; final stats %s", json.dumps(snapshot))
        # A clean stop is reported, so the status tells a stopped instance from a dead one (no report, no stop).
        final = self._record(None, snapshot)
        if final is not None:
            final.close()
        if self.stats_file is not None:
            self.stats_file.write_text(json.dumps(snapshot))
        return 1 if self._writer_failed else 0


def forget_session(settings: Settings) -> None:
    """Discard the broker's persistent session of `settings.gateway.client_id` (its subscriptions and queue): clean
    start with session expiry 0, then disconnect. For a gateway moving between plain and group subscription, or an
    instance retired for good (its queued share would otherwise wait until the session expires)."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=settings.gateway.client_id,
                         protocol=MQTTProtocolVersion.MQTTv5)
    try:
        client.username_pw_set(GATEWAY_ACCOUNT, service_secret(settings, GATEWAY_ACCOUNT))
    except IdentityError as exc:
        raise BrokerUnavailable(str(exc)) from exc
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    done = threading.Event()
    client.on_connect = lambda *_args: done.set()
    try:
        client.connect(settings.mqtt.host, settings.mqtt.port, clean_start=True, properties=props)
    except OSError as exc:
        raise BrokerUnavailable(f"cannot reach broker at {settings.mqtt.host}:{settings.mqtt.port}: {exc}") from exc
    client.loop_start()
    try:
        if not done.wait(10):
            raise BrokerUnavailable("the broker did not answer the clean start within 10 s")
    finally:
        client.disconnect()
        client.loop_stop()
