"""Readers of history files: JSON lines (one contract message per line) and the flat per-event layout of CSV and
Parquet (one event per row), each yielding pieces of a file with where they came from and where the file may be
resumed after them.

A piece is one message to validate: a JSON line as it is, or consecutive rows of one device packed into one
message (at most the contract's 1,000 events). Rows that cannot even be turned into an event (a cell that is not a
number, unparsable JSON in `detail`) come out as `BadRow`s, dead-lettered with their line. Positions are byte
offsets after a whole line (JSON lines, CSV) or row counts (Parquet).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cxp.contract.validate import duplicate_key
from cxp.importer.errors import ImportFileError

FORMATS = ("jsonl", "csv", "parquet")
MAX_EVENTS_PER_MESSAGE = 1000  # the contract's limit

# The flat per-event layout of CSV and Parquet: the contract's event fields, one column each, and the device.
INT_COLUMNS = ("seq", "nps", "csat", "ces")
FLOAT_COLUMNS = ("duration_s", "quantity", "latency_ms", "battery_pct", "signal_dbm", "uptime_s", "energy_wh")
BOOL_COLUMNS = ("success",)
JSON_COLUMNS = ("detail", "metrics")
TEXT_COLUMNS = ("device_id", "ts", "kind", "touchpoint", "unit", "code", "severity", "stage")
REQUIRED_COLUMNS = ("device_id", "seq", "ts", "kind")
COLUMNS = (
    *REQUIRED_COLUMNS,
    "touchpoint",
    "success",
    "duration_s",
    "quantity",
    "unit",
    "latency_ms",
    "code",
    "severity",
    "nps",
    "csat",
    "ces",
    "stage",
    "detail",
    "battery_pct",
    "signal_dbm",
    "uptime_s",
    "energy_wh",
    "metrics",
)

_TRUE, _FALSE = frozenset({"true", "t", "1", "yes"}), frozenset({"false", "f", "0", "no"})
_DEVICE_ID = re.compile(rb'"device_id"\s*:\s*"([^"\\]{1,64})"')


@dataclass(frozen=True, slots=True)
class Piece:
    """One message to validate: its device (None when the line names none), bytes and first..last line."""

    device_id: str | None
    payload: bytes
    first_line: int
    last_line: int
    rows: tuple[dict[str, Any], ...] = ()  # packed rows: each row's event, to retry them one by one


@dataclass(frozen=True, slots=True)
class BadRow:
    """A line or row that is not an event at all."""

    line: int
    device_id: str | None
    reason: str
    detail: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Mark:
    """Everything before this point has been yielded: resume at `position`, counting lines from `line`."""

    position: int
    line: int


Item = Piece | BadRow | Mark


def detect_format(path: Path, declared: str | None = None) -> str:
    """The file's format: declared, or from its suffix (.jsonl/.ndjson/.json, .csv, .parquet/.pq)."""
    if declared:
        if declared not in FORMATS:
            raise ImportFileError(f"unknown format {declared!r}; one of {', '.join(FORMATS)}")
        return declared
    suffix = path.suffix.lower()
    for fmt, suffixes in (
        ("jsonl", (".jsonl", ".ndjson", ".json")),
        ("csv", (".csv",)),
        ("parquet", (".parquet", ".pq")),
    ):
        if suffix in suffixes:
            return fmt
    raise ImportFileError(f"{path.name}: cannot tell the format from {suffix or 'no suffix'!r}; pass --format")


def read_items(path: Path, fmt: str, *, position: int = 0, line: int = 0, mark_every: int = 5000) -> Iterator[Item]:
    """The file's pieces from `position` (the `line`-th line or row ended there), with a Mark every ~`mark_every`
    events, at piece boundaries."""
    if fmt == "jsonl":
        return _jsonl(path, position, line, mark_every)
    if fmt == "csv":
        return _csv(path, position, line, mark_every)
    return _parquet(path, position, mark_every)


# ------------------------------------------------------------------------------------------------- JSON lines


def _jsonl(path: Path, position: int, line: int, mark_every: int) -> Iterator[Item]:
    with path.open("rb") as f:
        f.seek(position)
        since = 0
        for raw in f:
            line += 1
            position += len(raw)
            body = raw.strip()
            if body:
                found = _DEVICE_ID.search(body)
                yield Piece(found.group(1).decode() if found else None, body, line, line)
                since += body.count(b'"seq"') or 1
            if since >= mark_every:
                yield Mark(position, line)
                since = 0
        yield Mark(position, line)


# ------------------------------------------------------------------------------------------------ flat layout


def _to_int(column: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{column}: {text.strip()!r} is not an integer") from None


def _to_float(column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{column}: {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{column}: {text.strip()!r} is not a finite number")
    return value


def _to_bool(column: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{column}: {text.strip()!r} is not true or false")


class _NotFinite(ValueError):
    pass


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise _NotFinite(f"{text} is not a finite number")
    return value


def _no_constant(name: str) -> float:
    raise _NotFinite(f"{name} is not a finite number")  # NaN, Infinity, -Infinity: not JSON, though Python reads them


# Built once: json.loads with hooks builds a decoder per call (~1.6 µs a cell).
_JSON_CELL = json.JSONDecoder(parse_float=_finite, parse_constant=_no_constant)


def _to_json(column: str, text: str) -> Any:
    if text == "{}":  # most cells of detail and metrics
        return {}
    try:
        found = _JSON_CELL.decode(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{column}: not JSON ({exc.msg})") from None
    except _NotFinite as exc:
        raise ValueError(f"{column}: {exc}") from None
    # A colon ends each key written, or sits in a string: as many colons as distinct keys of a flat object means
    # no key repeats; otherwise the strict parse the contract runs on a JSON line decides.
    if type(found) is not dict or text.count(":") != len(found):
        repeated = duplicate_key(text.encode())
        if repeated is not None:
            raise ValueError(f"{column}: key {repeated!r} repeats within one JSON object")
    return found


# Text cells (CSV, or text columns of Parquet) of the typed columns, by column.
_FROM_TEXT = {
    **dict.fromkeys(INT_COLUMNS, _to_int),
    **dict.fromkeys(FLOAT_COLUMNS, _to_float),
    **dict.fromkeys(BOOL_COLUMNS, _to_bool),
    **dict.fromkeys(JSON_COLUMNS, _to_json),
}


def _cell(column: str, value: Any) -> Any:
    """A typed value from a CSV cell (text) or a Parquet value; ValueError names what is wrong. What comes out is
    always JSON-serialisable (the contract judges the types)."""
    kind = type(value)
    if kind is str:
        convert = _FROM_TEXT.get(column)
        return value if convert is None else convert(column, value)
    if kind is int or kind is bool:
        return value
    if kind is float:
        if not math.isfinite(value):
            raise ValueError(f"{column}: {value!r} is not a finite number")
        return value
    if isinstance(value, datetime):  # a Parquet timestamp: RFC 3339 as the contract wants it
        if value.tzinfo is None:
            raise ValueError(f"{column}: timestamp without a time zone")
        return value.isoformat()
    if isinstance(value, dict | list):
        try:
            return json.loads(json.dumps(value, default=str, allow_nan=False))
        except ValueError:
            raise ValueError(f"{column}: holds a number that is not finite") from None
    return str(value)  # dates, decimals, bytes…: as text, which the contract refuses where it wants a number


def _event(row: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(device_id, event) of one row; ValueError when a cell cannot be typed."""
    event: dict[str, Any] = {}
    device_id = row.get("device_id")
    for column, value in row.items():
        if value is None or value == "" or column == "device_id":
            continue
        event[column] = _cell(column, value)
    return (str(device_id) if device_id is not None else None), event


_MESSAGE_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)  # built once: json.dumps builds one per call


def one_message(device_id: str | None, events: list[dict[str, Any]]) -> bytes:
    """The contract message of these (typed) events of one device."""
    body: dict[str, Any] = {"device_id": device_id, "events": events} if device_id else {"events": events}
    return _MESSAGE_JSON.encode(body).encode()


class _Packer:
    """Consecutive rows of one device packed into one message."""

    def __init__(self) -> None:
        self.device: str | None = None
        self.events: list[dict[str, Any]] = []
        self.first = self.last = 0

    def add(self, line: int, row: dict[str, Any]) -> Iterator[Item]:
        try:
            device_id, event = _event(row)
        except ValueError as exc:
            yield from self.bad(line, row, exc)
            return
        yield from self.add_event(line, device_id, event)

    def bad(self, line: int, row: dict[str, Any], exc: ValueError) -> Iterator[Item]:
        yield from self.flush()
        payload = json.dumps({k: v for k, v in row.items() if v not in (None, "")}, default=str).encode()
        yield BadRow(line, row.get("device_id") or None, "schema", str(exc), payload)

    def add_event(self, line: int, device_id: str | None, event: dict[str, Any]) -> Iterator[Item]:
        if device_id != self.device or len(self.events) >= MAX_EVENTS_PER_MESSAGE or not device_id:
            yield from self.flush()
            self.device, self.first = device_id, line
        self.events.append(event)
        self.last = line

    def flush(self) -> Iterator[Item]:
        if self.events:
            rows = tuple(self.events) if len(self.events) > 1 else ()
            yield Piece(self.device, one_message(self.device, self.events), self.first, self.last, rows)
        self.events, self.device = [], None


def _header(names: list[str], source: str) -> list[str]:
    names = [n.strip() for n in names]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    unknown = [c for c in names if c not in COLUMNS]
    if missing or unknown:
        raise ImportFileError(
            f"{source}: the flat layout needs columns {', '.join(REQUIRED_COLUMNS)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)} (known: {', '.join(COLUMNS)})" if unknown else "")
        )
    if len(set(names)) != len(names):
        raise ImportFileError(f"{source}: a column repeats in the header")
    return names


class _CsvColumns:
    """How a CSV file's cells become an event: (cell index, field, converter or None for text) of each column."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.device = names.index("device_id")
        self.fields = tuple((i, name, _FROM_TEXT.get(name)) for i, name in enumerate(names) if name != "device_id")

    def event(self, cells: list[str]) -> dict[str, Any]:
        """The typed event of a row's cells (empty cells left out); ValueError names a cell that is not typed."""
        return {name: text if convert is None else convert(name, text)
                for i, name, convert in self.fields if (text := cells[i])}


def _csv(path: Path, position: int, line: int, mark_every: int) -> Iterator[Item]:
    with path.open("rb") as f:
        head = f.readline()
        try:
            names = _header(next(csv.reader([head.decode("utf-8-sig")])), f"{path.name} line 1")
        except (UnicodeDecodeError, StopIteration):
            raise ImportFileError(f"{path.name} line 1: no CSV header") from None
        columns = _CsvColumns(names)
        if position == 0:
            position, line = len(head), 1
        f.seek(position)
        packer, since = _Packer(), 0
        for raw in f:
            line += 1
            position += len(raw)
            if raw.strip():
                yield from _csv_row(packer, raw, line, columns)
                since += 1
            if since >= mark_every:
                yield from packer.flush()
                yield Mark(position, line)
                since = 0
        yield from packer.flush()
        yield Mark(position, line)


def _csv_row(packer: _Packer, raw: bytes, line: int, columns: _CsvColumns) -> Iterator[Item]:
    try:
        text = raw.decode("utf-8")
        cells = next(csv.reader([text], strict=True))
    except (UnicodeDecodeError, csv.Error, StopIteration) as exc:
        yield from packer.flush()
        yield BadRow(line, None, "schema", f"not a CSV row: {exc}", raw.rstrip(b"\r\n"))
        return
    if len(cells) != len(columns.names):
        yield from packer.flush()
        yield BadRow(line, None, "schema", f"{len(cells)} cells for {len(columns.names)} columns",
                     raw.rstrip(b"\r\n"))
        return
    try:
        event = columns.event(cells)
    except ValueError as exc:
        yield from packer.bad(line, dict(zip(columns.names, cells, strict=True)), exc)
        return
    yield from packer.add_event(line, cells[columns.device] or None, event)


def _parquet(path: Path, position: int, mark_every: int) -> Iterator[Item]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ImportFileError(f"{path.name}: not a Parquet file ({exc})") from None
    names = _header(pf.schema_arrow.names, path.name)
    row = 0
    packer, since = _Packer(), 0
    for group in range(pf.num_row_groups):
        size = pf.metadata.row_group(group).num_rows
        if row + size <= position:
            row += size
            continue
        table = pf.read_row_group(group, columns=names)
        for batch in table.to_batches(max_chunksize=mark_every):
            for record in batch.to_pylist():
                row += 1
                if row <= position:
                    continue
                yield from packer.add(row, record)
                since += 1
                if since >= mark_every:
                    yield from packer.flush()
                    yield Mark(row, row)
                    since = 0
    yield from packer.flush()
    yield Mark(row, row)


def check_file(path: Path, fmt: str, *, name: str | None = None) -> None:
    """Refuse at once a file that cannot be imported whole (for uploads, before a job is started): Parquet that does
    not open or lacks the layout's columns, CSV without the header, text that is not UTF-8."""
    name = name or path.name
    with path.open("rb") as f:
        head = f.read(4096)
        if fmt == "parquet":
            if head[:4] != b"PAR1":
                raise ImportFileError(f"{name}: not a Parquet file (no PAR1 magic)")
        else:
            try:
                head.decode("utf-8")
            except UnicodeDecodeError as exc:
                if exc.start < len(head) - 4:  # a character cut by the 4 KiB boundary is fine
                    raise ImportFileError(f"{name}: not UTF-8 text (byte {exc.start + 1})") from None
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            names = pq.ParquetFile(path).schema_arrow.names
        except (pa.ArrowException, OSError) as exc:
            raise ImportFileError(f"{name}: not a Parquet file ({exc})") from None
        _header(names, name)
    elif fmt == "csv":
        with path.open("rb") as f:
            head_line = f.readline().decode("utf-8-sig", errors="replace")
        _header(next(csv.reader([head_line]), []), f"{name} line 1")
