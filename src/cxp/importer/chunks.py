"""Chunks of a history file ready for the writer: pieces validated against the contract into messages whose events
are COPY lines, and dead letters for what is not valid. A big file is read and validated in a child process, ahead of
the writer, so validation (pure Python) and the database's work overlap on two cores instead of sharing one GIL."""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import operator
import os
import pickle
import queue
import signal
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from pydantic_core import to_json

from cxp.contract.models import TelemetryBatch
from cxp.contract.validate import Accepted, DeviceLookup, Reason, validate_message
from cxp.core.config import Settings
from cxp.importer.errors import HistoryImportError
from cxp.importer.readers import BadRow, Mark, Piece, one_message, read_items
from cxp.store.db import connect
from cxp.store.ingest import EVENT_COLUMNS, NULL, DeadLetter, IngestMessage, copy_text_value
from cxp.store.registry import DeviceCache

# Files at least this big (bytes; rows for Parquet) are validated in a child process (starting one costs ~0.5 s).
PROCESS_MIN_BYTES = 4 * 2**20
PROCESS_MIN_ROWS = 20_000
_AHEAD = 2  # chunks the child may be ahead of the writer


def _json_text(value: dict) -> str:
    # serialised as the gateway's canonical JSON serialises it, so both paths hash the same jsonb
    return copy_text_value(to_json(value).decode()) if value else NULL


def _float_text(value: float) -> str:
    return repr(value)  # the shortest text that reads back as the same double, as the gateway's JSON writes it


# How each column's validated value becomes COPY text: names (a restricted alphabet) and the kind need no escaping.
_ENCODERS: dict[str, Callable[[object], str]] = {
    "seq": str, "nps": str, "csat": str, "ces": str,
    "ts": datetime.isoformat,
    "kind": str, "touchpoint": str, "unit": str, "code": str,
    "severity": operator.attrgetter("value"), "stage": operator.attrgetter("value"),
    "success": lambda v: "t" if v else "f",
    "detail": _json_text, "metrics": _json_text,
    **dict.fromkeys(("duration_s", "quantity", "latency_ms", "battery_pct", "signal_dbm", "uptime_s", "energy_wh"),
                    _float_text),
}


@cache
def _encoders_of(kind: type) -> tuple[tuple[int, str, Callable[[object], str]], ...]:
    """(position in EVENT_COLUMNS, field, encoder) of an event class's fields; the other columns stay NULL."""
    return tuple((i, c, _ENCODERS[c]) for i, c in enumerate(EVENT_COLUMNS) if c in kind.model_fields)


def event_lines(device_key: int, batch: TelemetryBatch) -> tuple[bytes, ...]:
    """The batch's events as COPY text lines of the store's `ingest_rows` after msg_no ."""
    lines = []
    prefix = f"{device_key}\t"
    for event in batch.events:
        parts = [NULL] * len(EVENT_COLUMNS)
        values = event.__dict__
        for i, c, encode in _encoders_of(type(event)):
            value = values[c]
            if value is not None:
                parts[i] = encode(value)
        lines.append(f"{prefix}{chr(9).join(parts)}\n".encode())
    return tuple(lines)


class Chunk:
    """Validates the pieces of one chunk into messages and dead letters, keeping each message's lines."""

    def __init__(self, *, settings: Settings, devices: DeviceLookup | None, name: str, fmt: str) -> None:
        self.settings, self.devices, self.name = settings, devices, name
        self.unit = "row" if fmt == "parquet" else "line"
        self.received = time.time()
        self.messages: list[IngestMessage] = []
        self.packed: list[Piece | None] = []  # per message: the packed piece it came from, for a split
        self.letters: list[DeadLetter] = []

    def _where(self, first: int, last: int) -> str:
        unit = self.unit
        return f"{self.name} {unit} {first}" if first == last else f"{self.name} {unit}s {first}-{last}"

    def _letter(self, *, line: int, device_id: str | None, reason: str, detail: str, payload: bytes) -> None:
        cap = self.settings.gateway.dead_letter_payload_cap
        topic = self._topic(device_id) if device_id else f"import:{self.name}"
        self.letters.append(
            DeadLetter(
                datetime.fromtimestamp(self.received, UTC),
                topic,
                device_id,
                reason,
                f"{self._where(line, line)}: {detail}",
                payload[:cap],
                len(payload),
            )
        )

    def _topic(self, device_id: str) -> str:
        return f"{self.settings.mqtt.topic_prefix}/{device_id}/telemetry"

    def bad(self, row: BadRow) -> None:
        """A row that is not an event."""
        self._letter(line=row.line, device_id=row.device_id, reason=row.reason, detail=row.detail, payload=row.payload)

    def add(self, piece: Piece, *, split: bool = False) -> None:
        """Validate a piece; a packed piece that fails (or `split`) is validated row by row."""
        if piece.rows and split:
            for k, event in enumerate(piece.rows):
                line = piece.first_line + k
                self.add(Piece(piece.device_id, one_message(piece.device_id, [event]), line, line))
            return
        device_id = piece.device_id
        if device_id is None:
            self._letter(
                line=piece.first_line,
                device_id=None,
                reason=Reason.SCHEMA.value,
                detail="device_id: an imported message must name its device",
                payload=piece.payload,
            )
            return
        verdict = self._validate(device_id, piece.payload)
        if type(verdict) is not Accepted and verdict.reason == Reason.DEVICE_MISMATCH and not piece.rows:
            named = _named_device(piece.payload)  # the quick scan found a nested "device_id": parse properly
            if named and named != device_id:
                device_id, verdict = named, self._validate(named, piece.payload)
        if type(verdict) is Accepted:
            self.messages.append(
                IngestMessage(
                    self._topic(device_id),
                    verdict.device_id,
                    verdict.device_key,
                    piece.payload,
                    self.received,
                    verdict.activated_epoch,
                    None,
                    self._where(piece.first_line, piece.last_line),
                    event_lines(verdict.device_key, verdict.batch),
                )
            )
            self.packed.append(piece if piece.rows else None)
        elif piece.rows:
            self.add(piece, split=True)
        else:
            self._letter(
                line=piece.first_line,
                device_id=verdict.device_id,
                reason=verdict.reason.value,
                detail=verdict.detail,
                payload=piece.payload,
            )

    def _validate(self, device_id: str, payload: bytes):
        return validate_message(
            topic=self._topic(device_id),
            payload=payload,
            lookup_device=self.devices,
            max_payload_bytes=self.settings.gateway.max_payload_bytes,
            topic_prefix=self.settings.mqtt.topic_prefix,
            canonical=False,
        )

    def split(self, indexes: list[int]) -> None:
        """Replace the packed messages at `indexes` by one message per row."""
        pieces = [self.packed[i] for i in indexes]
        keep = set(range(len(self.messages))) - set(indexes)
        self.messages = [m for i, m in enumerate(self.messages) if i in keep]
        self.packed = [p for i, p in enumerate(self.packed) if i in keep]
        for piece in pieces:
            if piece is not None:
                self.add(piece, split=True)


def _named_device(payload: bytes) -> str | None:
    try:
        found = json.loads(payload)
    except ValueError:
        return None
    named = found.get("device_id") if isinstance(found, dict) else None
    return named if isinstance(named, str) else None


def _chunks(
    *, settings: Settings, devices: DeviceLookup, path: Path, fmt: str, name: str, position: int, line: int,
    chunk_events: int,
) -> Generator[tuple[Chunk, Mark], None, None]:
    chunk = Chunk(settings=settings, devices=devices, name=name, fmt=fmt)
    for item in read_items(path, fmt, position=position, line=line, mark_every=chunk_events):
        if type(item) is Piece:
            chunk.add(item)
        elif type(item) is BadRow:
            chunk.bad(item)
        else:
            yield chunk, item
            chunk = Chunk(settings=settings, devices=devices, name=name, fmt=fmt)


def prepared_chunks(
    *, settings: Settings, devices: DeviceLookup, path: Path, fmt: str, name: str, position: int = 0, line: int = 0,
    chunk_events: int = 5000, in_process: bool | None = None,
) -> Iterator[tuple[Chunk, Mark]]:
    """The file's chunks from `position`, each with the Mark after it, validated ahead of the caller: in a child
    process when `in_process` (default: PROCESS_MIN_BYTES, or PROCESS_MIN_ROWS of Parquet, or more), else in a
    thread. Chunks carry `devices` for re-validating split rows."""
    args = {"settings": settings, "path": path, "fmt": fmt, "name": name, "position": position, "line": line,
            "chunk_events": chunk_events}
    if in_process is None:
        in_process = _big(path, fmt)
    if not in_process:
        yield from _ahead_in_thread(_chunks(devices=devices, **args))
        return
    # Taken from the child (and unpickled) in a thread while the caller writes the chunk before.
    yield from _ahead_in_thread(_from_child(args, devices=devices, name=name))


def _from_child(args: dict, *, devices: DeviceLookup, name: str) -> Generator[tuple[Chunk, Mark], None, None]:
    """The chunks a child process reads and validates (`_produce`); the child ends with the iteration."""
    context = multiprocessing.get_context("spawn")  # nothing of this process (threads, connections) is inherited
    out = context.Queue(maxsize=_AHEAD)
    child = context.Process(target=_produce, kwargs={**args, "out": out, "parent": os.getpid()},
                            name="cxp-import-reader", daemon=True)
    child.start()
    try:
        while True:
            try:
                item = out.get(timeout=1.0)
            except queue.Empty:
                if not child.is_alive():
                    raise HistoryImportError(f"{name}: the reader process ended (exit code {child.exitcode})"
                                             ) from None
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            chunk, mark = item
            chunk.devices = devices
            yield chunk, mark
    finally:
        if child.is_alive():
            child.terminate()
        child.join(timeout=5)
        out.close()


def _big(path: Path, fmt: str) -> bool:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows >= PROCESS_MIN_ROWS
    return path.stat().st_size >= PROCESS_MIN_BYTES


def _ahead_in_thread(chunks: Generator[tuple[Chunk, Mark], None, None]) -> Iterator[tuple[Chunk, Mark]]:
    # chunk k+1 is made ready while the caller writes chunk k (psycopg releases the GIL while it waits)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="cxp-import") as reader:
            ahead = reader.submit(next, chunks, None)
            while (ready := ahead.result()) is not None:
                ahead = reader.submit(next, chunks, None)
                yield ready
    finally:
        chunks.close()  # the thread is done with it: its clean-up (a child process ended) runs now, not at GC


def _exit_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):  # Linux: the kernel ends this process with its parent
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _put(out: multiprocessing.Queue, item: object, parent: int) -> None:
    while True:
        try:
            out.put(item, timeout=1.0)
            return
        except queue.Full:
            if os.getppid() != parent:  # the writer is gone: nobody will read this
                raise SystemExit(1) from None


def _produce(*, out: multiprocessing.Queue, parent: int, settings: Settings, **args: object) -> None:
    """Child process: read and validate the file's chunks and hand them to the writer, then None (or the error)."""
    _exit_with_parent()
    try:
        with connect(settings.db) as lookups:
            devices = DeviceCache()
            devices.load(lookups)
            for chunk, mark in _chunks(settings=settings, devices=devices.lookup, **args):
                chunk.devices = None
                _put(out, (chunk, mark), parent)
        _put(out, None, parent)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - handed to the writer, which raises it
        try:
            pickle.dumps(exc)
        except Exception:  # noqa: BLE001
            exc = HistoryImportError(f"{type(exc).__name__}: {exc}")
        _put(out, exc, parent)
