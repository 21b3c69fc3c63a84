"""The gateway's writer process: validates batches, stores them, and reports what was committed.

It runs in its own process so that validation and COPY formatting do not compete for the GIL with
the paho network thread of the receiving process; the receiver acks a batch only when this process
reports it committed.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from typing import NamedTuple

import psycopg

from cxp.contract.validate import Accepted, validate_message
from cxp.core.config import Settings
from cxp.core.logs import configure_logging
from cxp.store.db import connect
from cxp.store.errors import StoreError, StoreUnavailable
from cxp.store.ingest import DeadLetter, IngestMessage, TimeBounds, write_batch_isolating
from cxp.store.leader import LeaderLock
from cxp.store.registry import DeviceCache
from cxp.store.retention import drop_old_chunks
from cxp.store.rollups import refresh_paced

log = logging.getLogger("cxp.gateway.writer")

class Item(NamedTuple):
    """One received message as the receiver hands it over."""

    topic: str
    payload: bytes
    received_at: float


class BatchResult(NamedTuple):
    """What happened to one batch; `committed` False means: do not ack, the broker will redeliver."""

    batch_id: int
    committed: bool
    stored_messages: int
    events_stored: int
    states_stored: int
    duplicates: int
    dead_lettered: int
    latencies_ms: list[float]
    batch_ms: float
    db_retries: int
    receive_latencies_ms: list[float] = []  # noqa: RUF012 - a NamedTuple default, never mutated
    skewed: dict[str, float] = {}  # noqa: RUF012 - device id -> sent_at minus receipt, s, for implausible clocks


class Writer:
    """Validates and stores batches, retrying while the database is away."""

    def __init__(self, settings: Settings, stopping: Event) -> None:
        self.settings = settings
        self.cfg = settings.gateway
        self.stopping = stopping
        self.devices = DeviceCache()
        self.bounds = TimeBounds(
            max_future_skew_s=float(self.cfg.max_future_skew_s),
            max_age_s=float(settings.retention_days * 86400) if settings.retention_days else None,
        )
        self._conn = None

    def db(self):
        """The writer's connection, (re)opened and the device cache (re)loaded when needed."""
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.settings.db)
            self.devices.load(self._conn)
        return self._conn

    def close(self) -> None:
        """Close the database connection."""
        self._drop_db()

    def _drop_db(self) -> None:
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail any way
                log.debug("closing a broken connection failed", exc_info=True)
        self._conn = None

    def _prepare(self, items: list[Item]) -> tuple[list[IngestMessage], list[DeadLetter], list]:
        messages: list[IngestMessage] = []
        letters: list[DeadLetter] = []
        sent: list = []
        cap = self.cfg.dead_letter_payload_cap
        lookup = self.devices.lookup
        prefix = self.settings.mqtt.topic_prefix
        for topic, payload, received_at in items:
            verdict = validate_message(topic=topic, payload=payload, lookup_device=lookup,
                                       max_payload_bytes=self.cfg.max_payload_bytes, topic_prefix=prefix)
            if type(verdict) is Accepted:
                messages.append(IngestMessage(topic, verdict.device_id, verdict.device_key, verdict.canonical,
                                              received_at, verdict.activated_epoch, payload))
                sent.append((verdict.sent_at, received_at, verdict.activated_epoch, verdict.device_id))
            else:
                letters.append(DeadLetter(datetime.fromtimestamp(received_at, UTC), topic, verdict.device_id,
                                          verdict.reason.value, verdict.detail, payload[:cap], len(payload)))
        return messages, letters, sent

    def write(self, batch_id: int, items: list[Item]) -> BatchResult:
        """Store one batch; on a database outage retry with backoff, or give up when stopping."""
        started = time.perf_counter()
        backoff, retries = 0.2, 0
        while True:
            try:
                conn = self.db()
                messages, letters, sent = self._prepare(items)
                result = write_batch_isolating(conn, messages=messages, dead_letters=letters, bounds=self.bounds,
                                               payload_cap=self.cfg.dead_letter_payload_cap)
                break
            except StoreUnavailable as exc:
                retries += 1
                self._drop_db()
                if self.stopping.is_set():
                    # Unacked messages stay with the broker and come back on the next start.
                    log.warning("database unavailable while stopping; leaving %d messages unacked", len(items))
                    return BatchResult(batch_id, False, 0, 0, 0, 0, 0, [], 0.0, retries)
                log.warning("database unavailable (%s); retrying in %.1fs, nothing acked", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, self.cfg.retry_max_backoff_s)
        committed = time.time()
        latencies: list[float] = []
        skewed: dict[str, float] = {}
        skew = self.cfg.max_future_skew_s
        for sent_at, received_at, activated_at, device_id in sent:
            if sent_at is None:
                continue
            at = sent_at.timestamp()
            # A device clock ahead of receipt or behind its own activation (a 1970 clock) says nothing about latency.
            if at > received_at + skew or at < activated_at:
                skewed[device_id] = round(at - received_at, 1)
            else:
                latencies.append((committed - at) * 1000)
        return BatchResult(batch_id, True, len(messages) - len(result.rejected), result.events_stored,
                           result.states_stored, result.duplicates, result.dead_lettered, latencies,
                           (time.perf_counter() - started) * 1000, retries,
                           [(committed - r) * 1000 for _, r, _, _ in sent], skewed)


AfterRefresh = Callable[[psycopg.Connection, Settings, int], None]


def rollup_loop(settings: Settings, stopping: Event, after_refresh: AfterRefresh | None = None,
                leader_flag: Synchronized | None = None) -> None:
    """While this gateway leads its group: refresh dirty rollups every rollup_interval_s, then call `after_refresh`,
    and drop raw chunks past `retention_days` every retention_interval_s; until `stopping` is set.

    Leadership is a PostgreSQL advisory lock on a connection of its own (`store.leader`): one gateway of the group
    does this work, and another takes over within one interval when it dies. `leader_flag` (shared memory) tells the
    receiving process, which reports it. `after_refresh(conn, settings, refreshed device-days)` is the hook alert
    evaluation runs in (injected by the CLI: the gateway does not import what it calls).
    """
    leader = LeaderLock(settings.db, name=settings.gateway.client_id)
    conn = None
    last_retention = 0.0
    try:
        while not stopping.wait(settings.gateway.rollup_interval_s):
            leading = leader.hold()
            if leader_flag is not None:
                leader_flag.value = int(leading)
            if not leading:
                continue
            try:
                conn = conn if conn is not None and not conn.closed else connect(settings.db)
                step = refresh_paced(conn, batch_device_days=settings.gateway.rollup_batch_device_days,
                                     max_busy_share=settings.gateway.rollup_max_busy_share, stopping=stopping)
                if step.device_days:
                    log.debug("rollups refreshed: %s", step)
                if after_refresh is not None:
                    after_refresh(conn, settings, step.device_days)
                due = time.monotonic() - last_retention >= settings.gateway.retention_interval_s
                if settings.retention_days and due:
                    dropped = drop_old_chunks(conn, keep_days=settings.retention_days)
                    last_retention = time.monotonic()
                    if any(dropped.values()):
                        log.info("retention: dropped raw chunks older than %d days: %s", settings.retention_days,
                                 dropped)
            except StoreError as exc:
                log.warning("rollup refresh failed: %s", exc)
                conn = None
    finally:
        leader.release()
        if leader_flag is not None:
            leader_flag.value = 0


def run_writer(settings_json: str, batches: Connection, results: Connection, stopping: Event,
               rollups: bool, after_refresh: AfterRefresh | None = None, leader_flag: Synchronized | None = None,
               ) -> None:
    """Process entry: read batches until None or EOF, answer each with a BatchResult."""
    # The receiver coordinates shutdown; a terminal's Ctrl-C must not kill this process mid-flush.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    settings = Settings.model_validate_json(settings_json)
    configure_logging(settings.log_level)
    writer = Writer(settings, stopping)
    try:
        writer.db()
    except StoreError as exc:
        results.send(("error", str(exc)))
        return
    results.send(("ready", writer.devices.size))
    if rollups:
        threading.Thread(target=rollup_loop, args=(settings, stopping, after_refresh, leader_flag), name="rollups",
                         daemon=True).start()
    while True:
        try:
            job = batches.recv()
        except EOFError:
            break
        if job is None:
            break
        batch_id, items = job
        results.send(writer.write(batch_id, items))
    stopping.set()  # ends the rollup thread
    writer.close()
    results.close()
