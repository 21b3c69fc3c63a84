"""Follows the local broker's log: connects, disconnects and denied publishes per broker username.

Mosquitto 2.0 has no counter of refused publishes; it logs `Denied PUBLISH from <client id> (…)` at debug level
only. The follower runs as a child process of the gateway (spawned like the writer): at debug level the broker
writes three to four lines per message, and scanning them in the receiving process would take the GIL from
paho's network thread. It writes per-username rows (`store.broker_clients`) every stats interval and keeps fleet
totals in shared counters that the gateway puts into its stats snapshot (hence `GET /v1/ingest/status`). It
rotates the log past `mqtt.broker_log_max_bytes` (rename to `.1`, SIGHUP: Mosquitto reopens its log on reload).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cxp.core.config import Settings
from cxp.identity.broker import ROTATION_MARK, BrokerPaths, reload_broker
from cxp.store.broker_clients import BrokerClientUpdate, record_broker_clients
from cxp.store.db import connect
from cxp.store.errors import StoreError

log = logging.getLogger("cxp.gateway.broker_log")

# Only the lines that matter, found by one C-level scan of each chunk (the rest are skipped unparsed).
# Formats of Mosquitto 2.0.11 (src/handle_connect.c, src/loop.c, src/handle_publish.c, src/mosquitto.c), with
# the default `<epoch seconds>: ` timestamp.
_EVENTS = re.compile(
    rb"^(?P<ts>\d+): (?:"
    rb"New client connected from (?P<addr>\S+?):\d+ as (?P<cid>\S+) \(p\d+, c\d+, k\d+, u'(?P<user>[^']*)'\)\."
    rb"|Client (?P<gone>\S+) (?:closed its connection|disconnected(?!, not authorised)|has exceeded timeout"
    rb"|been disconnected)"
    rb"|Bad socket read/write on client (?P<bad>\S+):"
    rb"|Client (?P<old>\S+) already connected, closing old connection\."
    rb"|Denied PUBLISH from (?P<denied>\S+) \(d\d, q\d, r\d, m\d+, '(?P<topic>[^']*)'"
    rb"|mosquitto version \S+ (?P<life>starting|terminating))",
    re.MULTILINE,
)
_READ = 4 * 1024 * 1024
_REPLAY_BYTES = 8 * 1024 * 1024


def device_of(username: str) -> str:
    """The device id a broker username belongs to (`<device id>~<n>` during a token rotation)."""
    return username.partition(ROTATION_MARK)[0]


@dataclass
class _Pending:
    connected: bool | None = None
    last_connected_at: datetime | None = None
    last_address: str | None = None
    last_disconnected_at: datetime | None = None
    denied: int = 0
    last_denied_at: datetime | None = None
    last_denied_topic: str | None = None


@dataclass
class LogState:
    """What the lines read so far say: who is connected (client id → username) and what changed since the flush."""

    client_user: dict[str, str] = field(default_factory=dict)
    pending: dict[str, _Pending] = field(default_factory=dict)
    restarted: bool = False
    denied_total: int = 0
    connects_total: int = 0

    @property
    def connected_now(self) -> int:
        """Connected clients known from the log (those connected before the lines read are not known)."""
        return len(self.client_user)

    def _p(self, username: str) -> _Pending:
        return self.pending.setdefault(username, _Pending())

    def _gone(self, cid: str, at: datetime) -> None:
        user = self.client_user.pop(cid, None)
        if user is not None and user not in self.client_user.values():
            p = self._p(user)
            p.connected, p.last_disconnected_at = False, at

    def feed(self, chunk: bytes, *, count: bool = True) -> None:
        """Apply every interesting line of a chunk of whole lines; `count=False` replays state only."""
        for m in _EVENTS.finditer(chunk):
            at = datetime.fromtimestamp(int(m["ts"]), UTC)
            if m["cid"] is not None:
                cid, user = m["cid"].decode(errors="replace"), m["user"].decode(errors="replace")
                self.client_user[cid] = user
                p = self._p(user)
                p.connected, p.last_connected_at, p.last_address = True, at, m["addr"].decode(errors="replace")
                self.connects_total += count
            elif m["gone"] is not None or m["bad"] is not None or m["old"] is not None:
                self._gone((m["gone"] or m["bad"] or m["old"]).decode(errors="replace"), at)
            elif m["denied"] is not None:
                if not count:
                    continue
                cid = m["denied"].decode(errors="replace")
                p = self._p(self.client_user.get(cid, cid))
                p.denied += 1
                p.last_denied_at, p.last_denied_topic = at, m["topic"].decode(errors="replace")
                self.denied_total += 1
            elif m["life"] is not None:
                # A broker start or stop ends every connection.
                self.client_user.clear()
                self.pending.clear()
                self.restarted = True

    def restore(self, updates: list[BrokerClientUpdate]) -> None:
        """Put back changes that could not be written, under any newer ones seen since."""
        for u in updates:
            p = self.pending.get(u.username)
            if p is None:
                self.pending[u.username] = _Pending(u.connected, u.last_connected_at, u.last_address,
                                                    u.last_disconnected_at, u.denied_publishes, u.last_denied_at,
                                                    u.last_denied_topic)
                continue
            p.denied += u.denied_publishes
            p.connected = p.connected if p.connected is not None else u.connected
            p.last_connected_at = p.last_connected_at or u.last_connected_at
            p.last_address = p.last_address or u.last_address
            p.last_disconnected_at = p.last_disconnected_at or u.last_disconnected_at
            p.last_denied_at = p.last_denied_at or u.last_denied_at
            p.last_denied_topic = p.last_denied_topic or u.last_denied_topic

    def take(self) -> tuple[list[BrokerClientUpdate], bool]:
        """The changes since the last call (and whether the broker restarted meanwhile), then forget them."""
        updates = [BrokerClientUpdate(username=u, device_id=device_of(u), connected=p.connected,
                                      last_connected_at=p.last_connected_at, last_address=p.last_address,
                                      last_disconnected_at=p.last_disconnected_at, denied_publishes=p.denied,
                                      last_denied_at=p.last_denied_at, last_denied_topic=p.last_denied_topic)
                   for u, p in self.pending.items()]
        restarted, self.pending, self.restarted = self.restarted, {}, False
        return updates, restarted


class LogReader:
    """Reads whole new lines of a log file, follows it across a rotation (rename + reopen), rotates it when big."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = None
        self._rest = b""

    def _open(self) -> bool:
        try:
            self._f = open(self.path, "rb")  # noqa: SIM115 - kept open across reads
        except FileNotFoundError:
            return False
        self._rest = b""
        return True

    def chunks(self) -> Iterator[bytes]:
        """Whole lines written since the last call (across a rotation: the old file's rest first)."""
        if self._f is None and not self._open():
            return
        while True:
            data = self._f.read(_READ)
            if data:
                data, self._rest = self._rest + data, b""
                cut = data.rfind(b"\n") + 1
                data, self._rest = data[:cut], data[cut:]
                if data:
                    yield data
                continue
            # At the end: a new file under the name means the broker reopened its log, so the old one is complete.
            try:
                if os.stat(self.path).st_ino == os.fstat(self._f.fileno()).st_ino:
                    return
            except FileNotFoundError:
                return
            self._f.close()
            if not self._open():
                return

    def skip_to_tail(self, max_bytes: int) -> None:
        """Start reading at the first whole line of the file's last `max_bytes`."""
        if self._f is None and not self._open():
            return
        end = self._f.seek(0, os.SEEK_END)
        if end > max_bytes:
            self._f.seek(end - max_bytes)
            self._f.readline()
        else:
            self._f.seek(0)

    def size(self) -> int:
        """Bytes in the file currently under the log's name (0 when absent)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def rotate(self, settings: Settings) -> bool:
        """Rename the log to `.1` (replacing an older one) and ask the broker to reopen it (SIGHUP)."""
        try:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        except FileNotFoundError:
            return False
        return reload_broker(settings)

    def close(self) -> None:
        """Close the open file."""
        if self._f is not None:
            self._f.close()
            self._f = None


def broker_log_path(settings: Settings) -> Path:
    """The local broker's log file (written by `cxp stack up`'s config)."""
    return BrokerPaths.of(settings).base / "mosquitto.log"


def follow(settings_json: str, stopping, totals, parent: int, *, poll_s: float = 0.2) -> None:
    """Child-process entry: follow the broker log until `stopping` is set or the gateway (pid `parent`) is gone;
    totals = [denied, connects, connected]."""
    settings = Settings.model_validate_json(settings_json)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    reader, state = LogReader(broker_log_path(settings)), LogState()
    # Replay the end of the current file for who is connected, without counting what happened before this gateway
    # started; only the end, because at debug level the file is mostly publishes and the replay competes with ingest.
    reader.skip_to_tail(_REPLAY_BYTES)
    for chunk in reader.chunks():
        state.feed(chunk, count=False)
    conn, last_flush = None, time.monotonic()
    while True:
        # A gateway killed (SIGKILL) never sets `stopping`: end with it rather than follow the log forever. The pid
        # comes from the gateway, as it may die before this process has even started.
        stop = stopping.wait(poll_s) or os.getppid() != parent
        for chunk in reader.chunks():
            state.feed(chunk)
        totals[0], totals[1], totals[2] = state.denied_total, state.connects_total, state.connected_now
        if reader.size() > settings.mqtt.broker_log_max_bytes and reader.rotate(settings):
            log.info("rotated the broker log at %d bytes", settings.mqtt.broker_log_max_bytes)
        if stop or time.monotonic() - last_flush >= min(settings.gateway.stats_interval_s, 5.0):
            updates, restarted = state.take()
            if updates or restarted:
                try:
                    if conn is None or conn.closed:
                        conn = connect(settings.db, autocommit=True)
                    record_broker_clients(conn, updates=updates, all_disconnected=restarted)
                except StoreError as exc:
                    # Kept for the next attempt: connections and counts must not be lost to a database blip.
                    log.warning("could not record broker clients: %s", exc)
                    state.restore(updates)
                    state.restarted |= restarted
                    if conn is not None:
                        conn.close()
                    conn = None
            last_flush = time.monotonic()
        if stop:
            break
    reader.close()
    if conn is not None:
        conn.close()
