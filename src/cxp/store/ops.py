"""Ingest operations data: gateway counter snapshots, dead letters, rollup backlog."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from cxp.store.errors import mapped_errors

STATS_KEEP = "1 day"


def record_gateway_stats(conn: psycopg.Connection, *, gateway_id: str, snapshot: dict[str, Any]) -> None:
    """Store one counter snapshot of a gateway and prune snapshots older than a day."""
    with mapped_errors():
        conn.execute("INSERT INTO gateway_stats (gateway_id, snapshot) VALUES (%s, %s)", (gateway_id, Jsonb(snapshot)))
        conn.execute(f"DELETE FROM gateway_stats WHERE at < now() - interval '{STATS_KEEP}'")


@dataclass(frozen=True)
class GatewayThroughput:
    """A gateway's latest counters and its rates over the recent window."""

    gateway_id: str
    last_report_at: datetime
    seconds_since_report: float
    snapshot: dict[str, Any]
    window_s: float | None
    messages_per_s: float | None
    events_per_s: float | None
    dead_letters_per_s: float | None

    @property
    def reporting(self) -> bool:
        """Reported within three stats intervals (and at most 5 s late)."""
        interval = float(self.snapshot.get("stats_interval_s") or 10.0)
        return self.seconds_since_report < max(3 * interval, interval + 5.0)

    @property
    def state(self) -> str:
        """`stopped` (its last report said so), `running` (reporting) or `dead` (silent without a clean stop)."""
        return "stopped" if self.snapshot.get("stopped") else "running" if self.reporting else "dead"


def list_gateway_throughput(conn: psycopg.Connection, *, window_s: int = 60) -> list[GatewayThroughput]:
    """Each gateway that reported in the last day: its latest snapshot and rates against the one `window_s` earlier."""
    with mapped_errors():
        rows = conn.execute(
            """
            WITH latest AS (
                SELECT DISTINCT ON (gateway_id) gateway_id, at, snapshot FROM gateway_stats
                ORDER BY gateway_id, at DESC)
            SELECT l.gateway_id, l.at, extract(epoch FROM now() - l.at), l.snapshot, b.at, b.snapshot
            FROM latest l LEFT JOIN LATERAL (
                SELECT at, snapshot FROM gateway_stats g
                WHERE g.gateway_id = l.gateway_id AND g.at <= l.at - make_interval(secs => %s)
                ORDER BY at DESC LIMIT 1) b ON true
            ORDER BY l.at DESC
            """,
            (window_s,),
        ).fetchall()
    out = []
    for gateway_id, at, age, snap, base_at, base in rows:
        rates: dict[str, float | None] = {"messages": None, "events": None, "dead": None}
        window = None
        # A restarted gateway resets its counters: a drop means no comparable base.
        if base is not None and snap.get("messages_stored", 0) >= base.get("messages_stored", 0):
            window = (at - base_at).total_seconds()
            rates["messages"] = (snap["messages_stored"] - base["messages_stored"]) / window
            rates["events"] = (snap["events_stored"] + snap["states_stored"]
                               - base["events_stored"] - base["states_stored"]) / window
            rates["dead"] = (snap["dead_lettered"] - base["dead_lettered"]) / window
        out.append(GatewayThroughput(gateway_id, at, float(age), snap, window, rates["messages"], rates["events"],
                                     rates["dead"]))
    return out


@dataclass(frozen=True)
class DeadLetter:
    """One refused message and why."""

    id: int
    received_at: datetime
    topic: str
    device_id: str | None
    reason: str
    detail: str | None
    payload_bytes: int
    payload_preview: str | None


def list_dead_letters(
    conn: psycopg.Connection, *, reason: str | None = None, device_id: str | None = None,
    since: datetime | None = None, limit: int = 100, offset: int = 0, before: tuple[datetime, int] | None = None,
) -> tuple[list[DeadLetter], int]:
    """Dead letters, newest first (older than the (received_at, id) `before`, if given; payload preview: the first
    500 bytes as text), and their total count."""
    where = ("(%(reason)s::text IS NULL OR reason = %(reason)s)"
             " AND (%(device)s::text IS NULL OR device_id = %(device)s)"
             " AND (%(since)s::timestamptz IS NULL OR received_at >= %(since)s)")
    # the plain bound on received_at lets its index start the scan at the cursor; the row compare breaks ties
    keyset = "" if before is None else " AND received_at <= %(at)s AND (received_at, id) < (%(at)s, %(id)s)"
    params = {"reason": reason, "device": device_id, "since": since, "limit": limit, "offset": offset,
              "at": before[0] if before else None, "id": before[1] if before else None}
    with mapped_errors():
        rows = conn.execute(
            "SELECT id, received_at, topic, device_id, reason, detail, payload_bytes,"
            " convert_from(substring(payload FROM 1 FOR 500), 'SQL_ASCII')"
            f" FROM dead_letters WHERE {where}{keyset} ORDER BY received_at DESC, id DESC"
            " LIMIT %(limit)s OFFSET %(offset)s", params).fetchall()
        total = conn.execute(f"SELECT count(*) FROM dead_letters WHERE {where}", params).fetchone()[0]
    return [DeadLetter(*r) for r in rows], total


def count_dead_letters_by_reason(conn: psycopg.Connection, *, since: datetime | None = None) -> dict[str, int]:
    """How many messages were dead-lettered per reason."""
    with mapped_errors():
        rows = conn.execute("SELECT reason, count(*) FROM dead_letters WHERE %(since)s::timestamptz IS NULL"
                            " OR received_at >= %(since)s GROUP BY reason ORDER BY count(*) DESC",
                            {"since": since}).fetchall()
    return {r: int(n) for r, n in rows}


@dataclass(frozen=True)
class StorageLag:
    """How far stored data and derived rollups are behind."""

    latest_event_at: datetime | None
    latest_state_at: datetime | None
    rollup_backlog_device_days: int
    oldest_dirty_day: date | None


def get_storage_lag(conn: psycopg.Connection) -> StorageLag:
    """Newest stored telemetry and the rollup backlog (device-days waiting for a refresh)."""
    with mapped_errors():
        row = conn.execute(
            "SELECT (SELECT max(ts) FROM events), (SELECT max(ts) FROM device_state),"
            " (SELECT count(*) FROM (SELECT DISTINCT device_key, day FROM rollup_dirty) d),"
            " (SELECT min(day) FROM rollup_dirty)").fetchone()
    return StorageLag(row[0], row[1], int(row[2]), row[3])


@dataclass(frozen=True)
class SeqGapDevice:
    """A device whose stored seqs have holes: `missing` seqs between its lowest and highest were never stored."""

    device_id: str
    missing: int
    min_seq: int
    max_seq: int
    seqs_stored: int
    updated_at: datetime


@dataclass(frozen=True)
class SeqGaps:
    """Sequence gaps across the fleet (loss at the broker or on the device, or messages not arrived yet)."""

    devices_tracked: int
    devices_with_gaps: int
    missing_total: int
    top: list[SeqGapDevice]


def get_seq_gaps(conn: psycopg.Connection, *, top: int = 10) -> SeqGaps:
    """Totals of missing seqs and the `top` devices with the most (from `device_seq_stats`, kept at commit)."""
    with mapped_errors():
        tracked, with_gaps, missing = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE missing > 0), coalesce(sum(missing), 0) FROM device_seq_stats"
        ).fetchone()
        rows = conn.execute(
            "SELECT d.device_id, s.missing, s.min_seq, s.max_seq, s.seqs, s.updated_at FROM device_seq_stats s"
            " JOIN devices d USING (device_key) WHERE s.missing > 0 ORDER BY s.missing DESC, d.device_id LIMIT %s",
            (top,)).fetchall()
    return SeqGaps(int(tracked), int(with_gaps), int(missing), [SeqGapDevice(*r) for r in rows])
