"""Telemetry writes: one transaction per gateway batch, COPY into staging, check, expand and insert in SQL."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import psycopg

from cxp.store.errors import StoreError, StoreUnavailable, mapped_errors
from cxp.store.ingest_sql import CHECK_EXPAND_INSERT as _CHECK_EXPAND_INSERT  # a name benchmarks swap
from cxp.store.ingest_sql import EVENT_COLUMNS, STAGING, TYPED_CHECK_INSERT, TYPED_FRESH_INSERT, TYPED_STAGING


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
    # The validated events as COPY text lines of `ingest_rows` after msg_no (bulk imports): device_key, then the
    # EVENT_COLUMNS values as `copy_text_value` writes them. Staged by COPY instead of expanding the JSON `payload`
    # in SQL; `payload` is then the bytes as received, for dead letters only.
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


NULL = "\\N"  # COPY text's NULL


def copy_text_value(value: object) -> str:
    """A value as COPY text (escaped)."""
    if value is None:
        return NULL
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


def _stage_rows(cur: psycopg.Cursor, messages: Sequence[IngestMessage]) -> None:
    """COPY typed messages into `ingest_messages` and their events into `ingest_rows` (text format: PostgreSQL parses
    each value as it parses the JSON path's, so both paths store and hash the same values)."""
    cur.execute(TYPED_STAGING)
    with cur.copy("COPY ingest_messages (msg_no, device_key, received_at, activated_at) FROM STDIN") as copy:
        copy.write(b"".join(b"%d\t%d\t%r\t%r\n" % (i, m.device_key, m.received_at, m.activated_at)
                            for i, m in enumerate(messages)))
    with cur.copy(f"COPY ingest_rows (msg_no, device_key, {', '.join(EVENT_COLUMNS)}) FROM STDIN") as copy:
        copy.write(b"".join(b"%d\t%s" % (i, line) for i, m in enumerate(messages) for line in m.rows))


class _NotAllFresh(Exception):
    """Some event of the batch was stored already (or is being stored): the optimistic insert is undone."""


def _fresh_insert(conn: psycopg.Connection, cur: psycopg.Cursor, params: dict) -> tuple | None:
    """The staged rows inserted on the assumption that none is stored yet; None (and nothing written) when one was."""
    try:
        with conn.transaction():  # a savepoint: the staged rows stay, the registrations go
            cur.execute(TYPED_FRESH_INSERT, params)
            fine, events_in, events_stored, states_stored, out_of_bounds = cur.fetchone()
            if not fine:
                raise _NotAllFresh()
    except (_NotAllFresh, psycopg.errors.UniqueViolation):
        return None
    return events_in, events_stored, states_stored, out_of_bounds, [], 0


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
            params = {"skew": bounds.max_future_skew_s, "max_age": bounds.max_age_s}
            with conn.cursor() as cur:
                if typed:
                    _stage_rows(cur, messages)
                    found = _fresh_insert(conn, cur, params)
                    if found is None:
                        cur.execute(TYPED_CHECK_INSERT, params)
                        found = cur.fetchone()
                else:
                    cur.execute(STAGING)
                    with cur.copy("COPY ingest_staging (msg_no, device_key, received_at, activated_at, payload)"
                                  " FROM STDIN") as copy:
                        copy.write(_copy_text(messages))
                    cur.execute(_CHECK_EXPAND_INSERT, params)
                    found = cur.fetchone()
                events_in, events_stored, states_stored, out_of_bounds, conflicts, raced = found
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
