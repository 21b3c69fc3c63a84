"""Telemetry writes: one transaction per gateway batch, COPY into staging, check, expand and insert in SQL."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import psycopg

from cxp.store.errors import StoreError, StoreUnavailable, mapped_errors


class IngestMessage(NamedTuple):
    """A contract-valid message from a registered device, as received."""

    topic: str
    device_id: str
    device_key: int
    payload: bytes
    received_at: float  # epoch seconds
    activated_at: float  # epoch seconds
    raw: bytes | None = None  # the bytes as received, when `payload` is their validated re-serialisation
    source: str | None = None  # where an imported message came from ("file.csv line 7"): prefixes dead letters
    # The validated events as COPY text lines (`event_copy_line`, bulk imports): staged by COPY instead of expanding
    # the JSON `payload` in SQL; `payload` is then the bytes as received, for dead letters only.
    rows: Sequence[bytes] | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be stored, with why."""

    received_at: datetime
    topic: str
    device_id: str | None
    reason: str
    detail: str | None
    payload: bytes
    payload_bytes: int


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """How far event times may stray from the receipt time."""

    max_future_skew_s: float = 300.0
    max_age_s: float | None = None  # the retention horizon, when retention is on


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one batch write stored."""

    events_in: int
    events_stored: int
    states_stored: int
    dead_lettered: int
    rejected: tuple[tuple[int, str, str], ...] = field(default=())  # (message index, reason, detail)

    @property
    def duplicates(self) -> int:
        """Events already stored by an earlier delivery of the same message."""
        return self.events_in - self.events_stored - self.states_stored


_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS ingest_staging (
    msg_no integer NOT NULL, device_key integer NOT NULL, received_at float8 NOT NULL,
    activated_at float8 NOT NULL, payload json NOT NULL
) ON COMMIT DELETE ROWS
"""

# Payloads passed strict contract validation, so every field parses here; expanding them in SQL
# keeps the per-event work off the gateway's Python thread. The contract's defaults are applied here
# (SQL_DEFAULTS below; tests/contract pins them to the models). A message whose events break a time
# bound, or reuse a device's seq with other content (`seq_conflict`), is rejected whole and reported back
# for dead-lettering in the same transaction.
#
# Seq identity (migration 015): `device_seq` holds one row per (device, seq) stored, with the stored event's
# content hash. An event whose (device, seq) is there with the same hash is a duplicate; with another hash, a
# conflict; within one batch, the first message holding a (device, seq) is the reference (identical repeats within
# the batch meet the unique indexes' ON CONFLICT DO NOTHING). Events whose (device, seq) was not known are stored
# and registered. `raced` counts (device, seq) that were neither registered here nor known before: another
# transaction stored them after this statement's snapshot, so the caller rolls back and retries.
_CHECK_EXPAND_INSERT = """
WITH ev AS MATERIALIZED (
    SELECT s.msg_no, s.device_key, e.*,
           event_content_hash(e.kind, e.ts, e.touchpoint, e.success, e.duration_s, e.quantity, e.unit, e.latency_ms,
                              e.code, e.severity, e.nps, e.csat, e.ces, e.stage, e.detail, e.battery_pct,
                              e.signal_dbm, e.uptime_s, e.energy_wh, e.metrics) AS h
    FROM ingest_staging s
    CROSS JOIN LATERAL json_to_recordset(s.payload -> 'events') AS e(
        seq bigint, ts timestamptz, kind text, touchpoint text, success boolean, duration_s real,
        quantity double precision, unit text, latency_ms real, code text, severity text,
        nps smallint, csat smallint, ces smallint, stage text, detail jsonb,
        battery_pct real, signal_dbm real, uptime_s double precision, energy_wh double precision,
        metrics jsonb)
),
verdict AS MATERIALIZED (
    SELECT s.msg_no,
           CASE WHEN b.last_ts > to_timestamp(s.received_at + %(skew)s) THEN 'future_timestamp'
                WHEN b.first_ts < to_timestamp(s.activated_at) THEN 'before_activation'
                WHEN b.first_ts < to_timestamp(s.received_at - %(max_age)s::float8) THEN 'too_old'
           END AS reason,
           b.first_ts, b.last_ts, to_timestamp(s.received_at) AS received, to_timestamp(s.activated_at) AS activated
    FROM ingest_staging s
    JOIN (SELECT msg_no, min(ts) AS first_ts, max(ts) AS last_ts FROM ev GROUP BY msg_no) b USING (msg_no)
),
cand AS MATERIALIZED (
    SELECT ev.* FROM ev JOIN verdict v USING (msg_no) WHERE v.reason IS NULL
),
first_of AS MATERIALIZED (
    SELECT DISTINCT ON (device_key, seq) device_key, seq, msg_no, h FROM cand ORDER BY device_key, seq, msg_no
),
known AS MATERIALIZED (
    SELECT d.device_key, d.seq, d.ts, d.kind, d.content_hash
    FROM device_seq d JOIN first_of f USING (device_key, seq)
),
clash AS MATERIALIZED (
    SELECT c.msg_no, c.device_key, c.seq, k.ts AS stored_ts, k.kind AS stored_kind,
           CASE WHEN k.seq IS NULL THEN f.msg_no END AS first_msg
    FROM cand c JOIN first_of f USING (device_key, seq) LEFT JOIN known k USING (device_key, seq)
    WHERE c.h <> coalesce(k.content_hash, f.h)
),
good AS MATERIALIZED (
    SELECT c.* FROM cand c WHERE NOT EXISTS (SELECT 1 FROM clash x WHERE x.msg_no = c.msg_no)
),
fresh AS MATERIALIZED (
    SELECT g.* FROM good g
    WHERE NOT EXISTS (SELECT 1 FROM known k WHERE k.device_key = g.device_key AND k.seq = g.seq)
),
reg AS (
    INSERT INTO device_seq (device_key, seq, ts, kind, content_hash)
    SELECT device_key, seq, ts, kind, h FROM fresh ORDER BY device_key, seq, msg_no
    ON CONFLICT DO NOTHING
    RETURNING device_key, seq
),
new_events AS (
    INSERT INTO events (device_key, ts, seq, kind, touchpoint, success, duration_s, quantity, unit,
                        latency_ms, code, severity, nps, csat, ces, stage, detail)
    SELECT device_key, ts, seq, kind::event_kind, touchpoint,
           CASE WHEN kind = 'usage' THEN coalesce(success, true) END, duration_s, quantity, unit, latency_ms,
           code, CASE WHEN kind = 'error' THEN coalesce(severity, 'error') END, nps, csat, ces, stage,
           NULLIF(detail, '{}'::jsonb)
    FROM fresh WHERE kind <> 'state'
    ON CONFLICT DO NOTHING
    RETURNING device_key, ts
),
new_states AS (
    INSERT INTO device_state (device_key, ts, seq, battery_pct, signal_dbm, uptime_s, energy_wh, metrics)
    SELECT device_key, ts, seq, battery_pct, signal_dbm, uptime_s, energy_wh, NULLIF(metrics, '{}'::jsonb)
    FROM fresh WHERE kind = 'state'
    ON CONFLICT DO NOTHING
    RETURNING device_key, ts
),
dirty AS (
    INSERT INTO rollup_dirty (device_key, day)
    SELECT DISTINCT device_key, (ts AT TIME ZONE 'UTC')::date
    FROM (SELECT * FROM new_events UNION ALL SELECT * FROM new_states) AS n
),
seq_stats AS (
    INSERT INTO device_seq_stats AS t (device_key, min_seq, max_seq, seqs)
    SELECT device_key, min(seq), max(seq), count(*) FROM reg GROUP BY device_key ORDER BY device_key
    ON CONFLICT (device_key) DO UPDATE SET min_seq = least(t.min_seq, excluded.min_seq),
        max_seq = greatest(t.max_seq, excluded.max_seq), seqs = t.seqs + excluded.seqs, updated_at = now()
),
conflicts AS (
    SELECT msg_no, count(*) AS n,
           json_agg(json_build_object('seq', seq, 'stored', stored, 'new', new) ORDER BY seq)
               FILTER (WHERE rank <= 5) AS shown
    FROM (
        SELECT x.msg_no, x.seq, row_number() OVER (PARTITION BY x.msg_no ORDER BY x.seq) AS rank,
               (SELECT j FROM ingest_staging s, json_array_elements(s.payload -> 'events') j
                WHERE s.msg_no = x.msg_no AND (j ->> 'seq')::bigint = x.seq) AS new,
               CASE WHEN x.first_msg IS NOT NULL THEN
                        (SELECT json_build_object('in_this_batch', true, 'event', j)
                         FROM ingest_staging s, json_array_elements(s.payload -> 'events') j
                         WHERE s.msg_no = x.first_msg AND (j ->> 'seq')::bigint = x.seq)
                    ELSE coalesce(
                        CASE WHEN x.stored_kind = 'state' THEN
                                 (SELECT (jsonb_strip_nulls(to_jsonb(d) - 'device_key')
                                          || '{"kind": "state"}')::json
                                  FROM device_state d
                                  WHERE d.device_key = x.device_key AND d.ts = x.stored_ts AND d.seq = x.seq)
                             ELSE (SELECT (jsonb_strip_nulls(to_jsonb(e) - 'device_key'))::json FROM events e
                                   WHERE e.device_key = x.device_key AND e.ts = x.stored_ts AND e.seq = x.seq)
                        END,
                        json_build_object('seq', x.seq, 'ts', x.stored_ts, 'kind', x.stored_kind))
               END AS stored
        FROM clash x
    ) c
    GROUP BY msg_no
)
SELECT (SELECT count(*) FROM good), (SELECT count(*) FROM new_events), (SELECT count(*) FROM new_states),
       (SELECT coalesce(json_agg(json_build_array(msg_no, reason, CASE reason
            WHEN 'future_timestamp' THEN format('event at %%s is after receipt %%s + %%s s',
                                                 last_ts, received, %(skew)s)
            WHEN 'before_activation' THEN format('event at %%s precedes activation %%s', first_ts, activated)
            ELSE format('event at %%s is older than the retention horizon (%%s s)', first_ts, %(max_age)s)
            END)), '[]') FROM verdict WHERE reason IS NOT NULL),
       (SELECT coalesce(json_agg(json_build_array(msg_no, 'seq_conflict',
            json_build_object('conflicts', n, 'shown', shown)::text) ORDER BY msg_no), '[]') FROM conflicts),
       (SELECT count(*) FROM (SELECT DISTINCT device_key, seq FROM fresh) f
        WHERE NOT EXISTS (SELECT 1 FROM reg r WHERE r.device_key = f.device_key AND r.seq = f.seq))
"""

# The typed twin of the statement above for messages whose events arrive as rows (bulk imports): the same checks,
# registry and inserts, reading `ingest_rows` instead of expanding JSON, and showing a conflicting event from its row.
EVENT_COLUMNS = (
    "seq", "ts", "kind", "touchpoint", "success", "duration_s", "quantity", "unit", "latency_ms", "code", "severity",
    "nps", "csat", "ces", "stage", "detail", "battery_pct", "signal_dbm", "uptime_s", "energy_wh", "metrics",
)

_TYPED_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS ingest_messages (
    msg_no integer NOT NULL, device_key integer NOT NULL, received_at float8 NOT NULL, activated_at float8 NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS ingest_rows (
    msg_no integer NOT NULL, device_key integer NOT NULL, seq bigint, ts timestamptz, kind text, touchpoint text,
    success boolean, duration_s real, quantity double precision, unit text, latency_ms real, code text,
    severity text, nps smallint, csat smallint, ces smallint, stage text, detail jsonb, battery_pct real,
    signal_dbm real, uptime_s double precision, energy_wh double precision, metrics jsonb
) ON COMMIT DELETE ROWS
"""

_JSON_EV = _CHECK_EXPAND_INSERT[
    _CHECK_EXPAND_INSERT.index("    SELECT s.msg_no") : _CHECK_EXPAND_INSERT.index("),\nverdict")
]
_TYPED_EV = """    SELECT r.*,
           event_content_hash(r.kind, r.ts, r.touchpoint, r.success, r.duration_s, r.quantity, r.unit, r.latency_ms,
                              r.code, r.severity, r.nps, r.csat, r.ces, r.stage, r.detail, r.battery_pct,
                              r.signal_dbm, r.uptime_s, r.energy_wh, r.metrics) AS h
    FROM ingest_rows r
"""
_JSON_NEW = """(SELECT j FROM ingest_staging s, json_array_elements(s.payload -> 'events') j
                WHERE s.msg_no = x.msg_no AND (j ->> 'seq')::bigint = x.seq)"""
_JSON_FIRST = """(SELECT json_build_object('in_this_batch', true, 'event', j)
                         FROM ingest_staging s, json_array_elements(s.payload -> 'events') j
                         WHERE s.msg_no = x.first_msg AND (j ->> 'seq')::bigint = x.seq)"""
_ROW_JSON = "jsonb_strip_nulls(to_jsonb(r) - 'msg_no' - 'device_key')::json"
_TYPED_CHECK_INSERT = (
    _CHECK_EXPAND_INSERT.replace(_JSON_EV, _TYPED_EV)
    .replace(_JSON_NEW, f"(SELECT {_ROW_JSON} FROM ingest_rows r WHERE r.msg_no = x.msg_no AND r.seq = x.seq LIMIT 1)")
    .replace(_JSON_FIRST, f"(SELECT json_build_object('in_this_batch', true, 'event', {_ROW_JSON}) FROM ingest_rows r"
                          " WHERE r.msg_no = x.first_msg AND r.seq = x.seq LIMIT 1)")
    .replace("FROM ingest_staging s\n    JOIN (SELECT msg_no", "FROM ingest_messages s\n    JOIN (SELECT msg_no")
)
assert "ingest_staging" not in _TYPED_CHECK_INSERT and "json_to_recordset" not in _TYPED_CHECK_INSERT

# Non-null defaults of the contract's event fields, as this SQL applies them: (kind, field) -> value.
SQL_DEFAULTS = {("usage", "success"): True, ("error", "severity"): "error"}

_DEAD_LETTER_COPY = ("COPY dead_letters (received_at, topic, device_id, reason, detail, payload, payload_bytes)"
                     " FROM STDIN")


def _copy_text(messages: Sequence[IngestMessage]) -> bytes:
    """COPY text rows. Serialised JSON holds no raw tab or newline; only backslashes need escaping."""
    return b"".join(
        b"%d\t%d\t%r\t%r\t%s\n" % (i, m.device_key, m.received_at, m.activated_at, m.payload.replace(b"\\", b"\\\\"))
        for i, m in enumerate(messages)
    )


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


def _copy_text_value(value: object) -> str:
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if type(value) is str:
        return _COPY_SPECIAL.sub(lambda m: _COPY_ESCAPES[m.group()], value) if _COPY_SPECIAL.search(value) else value
    if type(value) is float:
        return repr(value)  # the shortest text that reads back as the same double, as the gateway's JSON writes it
    if type(value) is datetime:
        return value.isoformat()
    return str(value)


_COPY_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def event_copy_line(device_key: int, values: Sequence[object]) -> bytes:
    """One event as a COPY text line of `ingest_rows` after its msg_no: the device, then EVENT_COLUMNS values
    (str, int, float, bool, aware datetime, JSON text for jsonb, or None)."""
    return f"{device_key}\t{chr(9).join(map(_copy_text_value, values))}\n".encode()


def _stage_rows(cur: psycopg.Cursor, messages: Sequence[IngestMessage]) -> None:
    """COPY typed messages into `ingest_messages` and their events into `ingest_rows` (text format: PostgreSQL parses
    each value as it parses the JSON path's, so both paths store and hash the same values)."""
    cur.execute(_TYPED_STAGING)
    with cur.copy("COPY ingest_messages (msg_no, device_key, received_at, activated_at) FROM STDIN") as copy:
        copy.write(b"".join(b"%d\t%d\t%r\t%r\n" % (i, m.device_key, m.received_at, m.activated_at)
                            for i, m in enumerate(messages)))
    with cur.copy(f"COPY ingest_rows (msg_no, device_key, {', '.join(EVENT_COLUMNS)}) FROM STDIN") as copy:
        copy.write(b"".join(b"%d\t%s" % (i, line) for i, m in enumerate(messages) for line in m.rows))


def dead_letter_for(message: IngestMessage, *, reason: str, detail: str, payload_cap: int) -> DeadLetter:
    """The dead letter of a message the database refused: the bytes as received."""
    raw = message.payload if message.raw is None else message.raw
    if message.source is not None:
        detail = f"{message.source}: {detail}"
    return DeadLetter(datetime.fromtimestamp(message.received_at, UTC), message.topic, message.device_id,
                      reason, detail, raw[:payload_cap], len(raw))


class _SeqRace(Exception):
    """Another transaction stored a (device, seq) of this batch after the batch's statement began."""


_RACE_RETRIES = 5


def write_batch(
    conn: psycopg.Connection,
    *,
    messages: Sequence[IngestMessage],
    dead_letters: Sequence[DeadLetter] = (),
    bounds: TimeBounds = TimeBounds(),
    payload_cap: int = 8192,
) -> WriteResult:
    """Store messages and dead letters in one transaction; messages breaking a time bound or reusing a device's seq
    with other content are dead-lettered."""
    for attempt in range(_RACE_RETRIES + 1):
        try:
            return _write_batch_once(conn, messages=messages, dead_letters=dead_letters, bounds=bounds,
                                     payload_cap=payload_cap)
        except _SeqRace:
            # Rolled back: the next attempt sees what the other transaction committed (a duplicate or a conflict).
            if attempt == _RACE_RETRIES:
                raise StoreError(f"seq registry still contended after {_RACE_RETRIES} retries") from None
        except StoreError as exc:
            # Two writers registering overlapping seqs can deadlock; one is cancelled and simply tries again.
            if not isinstance(exc.__cause__, psycopg.errors.DeadlockDetected) or attempt == _RACE_RETRIES:
                raise
    raise AssertionError("unreachable")


def _write_batch_once(
    conn: psycopg.Connection,
    *,
    messages: Sequence[IngestMessage],
    dead_letters: Sequence[DeadLetter],
    bounds: TimeBounds,
    payload_cap: int,
) -> WriteResult:
    events_in = events_stored = states_stored = 0
    rejected: list[tuple[int, str, str]] = []
    letters = list(dead_letters)
    with mapped_errors(), conn.transaction():
        if messages:
            typed = all(m.rows is not None for m in messages)
            with conn.cursor() as cur:
                if typed:
                    _stage_rows(cur, messages)
                else:
                    cur.execute(_STAGING)
                    with cur.copy("COPY ingest_staging (msg_no, device_key, received_at, activated_at, payload)"
                                  " FROM STDIN") as copy:
                        copy.write(_copy_text(messages))
                cur.execute(_TYPED_CHECK_INSERT if typed else _CHECK_EXPAND_INSERT,
                            {"skew": bounds.max_future_skew_s, "max_age": bounds.max_age_s})
                events_in, events_stored, states_stored, out_of_bounds, conflicts, raced = cur.fetchone()
            if raced:
                raise _SeqRace()
            # psycopg has parsed the json already
            rejected = sorted(tuple(r) for r in [*out_of_bounds, *conflicts])
            letters += [dead_letter_for(messages[i], reason=reason, detail=detail, payload_cap=payload_cap)
                        for i, reason, detail in rejected]
        if letters:
            with conn.cursor() as cur, cur.copy(_DEAD_LETTER_COPY) as copy:
                for dl in letters:
                    copy.write_row((dl.received_at, dl.topic, dl.device_id, dl.reason, dl.detail,
                                    dl.payload, dl.payload_bytes))
    return WriteResult(events_in, events_stored, states_stored, len(letters), tuple(rejected))


def write_batch_isolating(
    conn: psycopg.Connection,
    *,
    messages: Sequence[IngestMessage],
    dead_letters: Sequence[DeadLetter] = (),
    bounds: TimeBounds = TimeBounds(),
    payload_cap: int = 8192,
) -> WriteResult:
    """Like write_batch, but when the database refuses the batch, bisect it and dead-letter each message
    it refuses ('store_rejected'): k poison messages in n cost O(k log n) transactions, not n."""
    try:
        return write_batch(conn, messages=messages, dead_letters=dead_letters, bounds=bounds,
                           payload_cap=payload_cap)
    except StoreError as exc:
        if isinstance(exc, StoreUnavailable):  # the caller retries the whole batch
            raise
    totals = [0, 0, 0, 0]
    rejected: list[tuple[int, str, str]] = []
    refused: list[DeadLetter] = list(dead_letters)

    def store(lo: int, hi: int, known_bad: bool) -> None:
        if not known_bad:
            try:
                one = write_batch(conn, messages=messages[lo:hi], bounds=bounds, payload_cap=payload_cap)
            except StoreError as exc:
                if isinstance(exc, StoreUnavailable):
                    raise
                if hi - lo == 1:
                    detail = str(exc)[:500]
                    refused.append(dead_letter_for(messages[lo], reason="store_rejected", detail=detail,
                                                   payload_cap=payload_cap))
                    rejected.append((lo, "store_rejected", detail))
                    return
            else:
                for k, value in enumerate((one.events_in, one.events_stored, one.states_stored, one.dead_lettered)):
                    totals[k] += value
                rejected.extend((lo + i, reason, detail) for i, reason, detail in one.rejected)
                return
        mid = (lo + hi) // 2
        store(lo, mid, False)
        store(mid, hi, False)

    store(0, len(messages), True)  # the whole batch was just refused: split it straight away
    if refused:
        write_batch(conn, messages=(), dead_letters=refused)
    return WriteResult(totals[0], totals[1], totals[2], totals[3] + len(refused), tuple(sorted(rejected)))
