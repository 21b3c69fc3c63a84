"""The one reader of uploaded CSV (and JSON-or-CSV) bodies: size cap, UTF-8, header check, rows numbered by line.

Line numbers are 1-based lines of the file with the header as line 1: the first data row is line 2, blank
lines count (and are skipped). Every problem names that line, and the column where there is one.

The reader is strict: no value of an upload spans lines, so a quoted value that runs over a line break (an
unterminated quote, which would swallow the rows after it), text after a closing quote and NUL bytes are
refused with the line and the character column of the fault.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from cxp.api.errors import ApiError, ErrorDetail, Unprocessable

MIB = 1024 * 1024
MAX_UPLOAD_BYTES = 10 * MIB
MAX_REPORTED_PROBLEMS = 200

# Where a problem sits, as an error detail's `loc`: (line, *path inside the row) → loc.
LineLoc = Callable[..., list[str | int]]


def line_loc(line: int, *path: str | int) -> list[str | int]:
    """`["line", 4, "activated_at"]`: the form of the registry imports."""
    return ["line", line, *path]


def file_line_loc(line: int, *path: str | int) -> list[str | int]:
    """`["file", "line 4", "cheap"]`: the form of the survey uploads (`file` is the multipart field)."""
    return ["file", f"line {line}", *path]


class UnsupportedMediaType(ApiError):
    """The request body's content type is not one the endpoint reads."""

    status, code = 415, "unsupported_media_type"


@dataclass(frozen=True)
class CsvColumns:
    """The header a CSV upload needs: every `required` column, others from `optional` (or any, if `ignore_unknown`)."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    ignore_unknown: bool = False

    @property
    def known(self) -> tuple[str, ...]:
        """Every column the endpoint reads, in documented order."""
        return (*self.required, *self.optional)


@dataclass(frozen=True)
class CsvRow:
    """One data row: its line number and its non-empty cells (stripped) by column; an empty cell is absent."""

    line: int
    cells: dict[str, str]


def check_size(data: bytes, *, max_bytes: int = MAX_UPLOAD_BYTES) -> None:
    """422 when an upload is over the cap (callers read at most `max_bytes + 1` bytes)."""
    if len(data) > max_bytes:
        raise _too_big(max_bytes)


def _too_big(max_bytes: int) -> Unprocessable:
    return Unprocessable(f"the upload is larger than {max_bytes // MIB} MiB; split it")


def _quote_fault(first_line: str, line: int) -> tuple[int, int, str] | None:
    """The first quoting fault of the row whose first physical line is `first_line` (line `line`), or None.

    Scanning stops at the first line break, quoted or not, so the row's first line is all it needs."""
    quoted, field_start, opened = False, True, (line, 1)
    text, i = first_line, 0
    while i < len(text):
        ch = text[i]
        if quoted and ch == '"' and text[i + 1:i + 2] == '"':
            i += 2
            continue
        if quoted and ch == '"':
            if text[i + 1:i + 2] not in (",", "\r", "\n", ""):
                return (line, i + 2, "text after the closing quote of the value opened at line"
                        f" {opened[0]}, column {opened[1]}")
            quoted = False
        elif quoted and ch in "\r\n":
            return (*opened, "this quoted value runs over a line break (an unterminated quote?)")
        elif ch == '"' and field_start:
            quoted, opened = True, (line, i + 1)
        elif ch in "\r\n":
            return None
        field_start = not quoted and ch == ","
        i += 1
    return (*opened, "this quote is never closed") if quoted else None


def _bad_quote(first_line: str, line: int, loc: LineLoc, fallback: str) -> Unprocessable:
    """422 naming the line and column of the quoting fault in the row starting on `line`."""
    fault = _quote_fault(first_line, line)
    if fault is None:
        return Unprocessable(f"line {line}: not valid CSV: {fallback}",
                             details=[ErrorDetail(loc=loc(line), message=fallback)])
    at_line, column, what = fault
    return Unprocessable(f"line {at_line}, column {column}: not valid CSV: {what}",
                         details=[ErrorDetail(loc=loc(at_line), message=f"column {column}: {what}")])


class _SpansLines(Exception):
    """A row asked for a second physical line: a quoted value runs over a line break."""


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)")
_CHUNK = 64 * 1024
MAX_LINE_CHARS = 1024 * 1024  # no row of any upload comes near; a longer "line" is not CSV text


class _Lines:
    """Physical lines of an upload, decoded as they are read: the csv module's input, one row's lines at a time.

    Memory stays at one chunk plus one line: the upload is never held whole. Each line is checked for NUL, the
    whole for its size cap; `begin_row` marks the start of a row, which may then take one line only."""

    def __init__(self, stream: BinaryIO, *, max_bytes: int, loc: LineLoc) -> None:
        self.stream, self.max_bytes, self.loc = stream, max_bytes, loc
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.read_bytes, self.number, self.pending, self.pos, self.eof = 0, 0, "", 0, False
        self.row_first: str | None = None

    def begin_row(self) -> None:
        self.row_first = None

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        while True:
            match = _LINE.match(self.pending, self.pos)
            # a CR at the end of what is decoded may be the first half of a CRLF still unread
            if self.eof or (match and (match.end() < len(self.pending) or not match.group().endswith("\r"))):
                break
            if len(self.pending) - self.pos > MAX_LINE_CHARS:
                raise Unprocessable(f"line {self.number + 1}: longer than {MAX_LINE_CHARS // MIB} MiB without a"
                                    " line break; the upload must be CSV text",
                                    details=[ErrorDetail(loc=self.loc(self.number + 1), message="line too long")])
            self._fill()
        if match:
            text, self.pos = match.group(), match.end()
        elif self.pos < len(self.pending):
            text, self.pos = self.pending[self.pos:], len(self.pending)
        else:
            raise StopIteration
        self.number += 1
        if self.row_first is not None:
            raise _SpansLines
        if (at := text.find("\x00")) >= 0:
            raise Unprocessable(f"line {self.number}, column {at + 1}: a NUL byte; the upload must be text",
                                details=[ErrorDetail(loc=self.loc(self.number),
                                                     message=f"NUL byte at column {at + 1}")])
        self.row_first = text
        return text

    def _fill(self) -> None:
        chunk = self.stream.read(_CHUNK)
        self.eof = not chunk
        buffered = len(self.decoder.getstate()[0])
        self.read_bytes += len(chunk)
        if self.read_bytes > self.max_bytes:
            raise _too_big(self.max_bytes)
        try:
            decoded = self.decoder.decode(chunk, final=self.eof)
        except UnicodeDecodeError as exc:
            at = self.read_bytes - len(chunk) - buffered + exc.start
            raise Unprocessable(f"the upload is not UTF-8 text (byte {at})") from exc
        self.pending, self.pos = self.pending[self.pos:] + decoded, 0


def _header(names: list[str], columns: CsvColumns, loc: LineLoc) -> None:
    """422 naming line 1 when the header lacks a required column, repeats one or has an unknown one."""
    expected = ", ".join(columns.known)
    missing = [c for c in columns.required if c not in names]
    if missing:
        raise Unprocessable(f"line 1: the header lacks column(s) {', '.join(missing)}; expected {expected}",
                            details=[ErrorDetail(loc=loc(1, c), message="missing column") for c in missing])
    repeated = sorted({n for n in names if n and names.count(n) > 1})
    if repeated:
        raise Unprocessable(f"line 1: columns named twice: {', '.join(repeated)}",
                            details=[ErrorDetail(loc=loc(1, c), message="column named twice") for c in repeated])
    unknown = sorted(set(names) - set(columns.known))
    if unknown and not columns.ignore_unknown:
        raise Unprocessable(f"line 1: unknown columns {', '.join(unknown)}; expected {expected}",
                            details=[ErrorDetail(loc=loc(1, u), message="unknown column") for u in unknown])


def iter_csv(stream: BinaryIO, *, columns: CsvColumns, loc: LineLoc, max_bytes: int = MAX_UPLOAD_BYTES,
             max_rows: int | None = None) -> Iterator[CsvRow]:
    """The data rows of a CSV upload read from `stream` as they are parsed; a 422 names the line (and column) at
    fault. A caller that stores rows only once the iterator is exhausted keeps imports all-or-nothing."""
    lines = _Lines(stream, max_bytes=max_bytes, loc=loc)
    reader = csv.reader(lines, strict=True)
    count = 0
    try:
        header = next(reader, [])
        names = [h.strip() for h in header]
        _header(names, columns, loc)
        wanted = [(i, n) for i, n in enumerate(names) if n in columns.known]
        while True:
            lines.begin_row()
            row = next(reader, None)
            if row is None:
                break
            if not any(cell.strip() for cell in row):
                continue  # blank lines carry nothing
            if len(row) > len(names):
                raise Unprocessable(f"line {lines.number}: more fields than header columns",
                                    details=[ErrorDetail(loc=loc(lines.number), message="more fields than columns")])
            if max_rows is not None and count >= max_rows:
                raise Unprocessable(f"line {lines.number}: at most {max_rows} rows")
            count += 1
            yield CsvRow(lines.number, {n: row[i].strip() for i, n in wanted if i < len(row) and row[i].strip()})
    except _SpansLines as exc:  # a row is one line: a longer one holds a line break in quotes
        raise _bad_quote(lines.row_first or "", lines.number - 1, loc, "a value spans lines") from exc
    except csv.Error as exc:
        raise _bad_quote(lines.row_first or "", lines.number, loc, str(exc)) from exc
    if not count:
        raise Unprocessable("the CSV has a header but no rows")


def read_csv(data: bytes, *, columns: CsvColumns, loc: LineLoc, max_bytes: int = MAX_UPLOAD_BYTES,
             max_rows: int | None = None) -> list[CsvRow]:
    """Every data row of CSV bytes already in memory (small uploads and tests); see `iter_csv`."""
    return list(iter_csv(io.BytesIO(data), columns=columns, loc=loc, max_bytes=max_bytes, max_rows=max_rows))


@dataclass
class CsvProblems:
    """Problems found in the rows, reported together in one 422 (the first one in the message)."""

    loc: LineLoc
    details: list[ErrorDetail] = field(default_factory=list)
    count: int = 0

    def add(self, line: int, *path: str | int, message: str) -> None:
        """One problem at `line` (and a column, or a path inside the row)."""
        self.count += 1
        if len(self.details) < MAX_REPORTED_PROBLEMS:
            self.details.append(ErrorDetail(loc=self.loc(line, *path), message=message))

    def add_invalid(self, line: int, exc: ValidationError, cells: dict[str, str] | None = None) -> None:
        """Each validation error of a row's model, with the cell's text when the error is about one cell."""
        for error in exc.errors(include_url=False):
            path = [p if isinstance(p, int) else str(p) for p in error["loc"]]
            shown = (cells or {}).get(str(path[0])) if len(path) == 1 else None
            self.add(line, *path, message=error["msg"] + (f" (got {shown!r})" if shown is not None else ""))

    def raise_any(self, *, outcome: str = "") -> None:
        """422 with every problem found (`outcome`, e.g. "; nothing was imported", follows the count)."""
        if not self.details:
            return
        first = self.details[0]
        where = f"line {first.loc[1]}" if isinstance(first.loc[1], int) else str(first.loc[1])
        column = f", column {'.'.join(map(str, first.loc[2:]))!r}" if len(first.loc) > 2 else ""
        raise Unprocessable(f"invalid CSV, {self.count} problem(s){outcome}. First: {where}{column}: {first.message}",
                            details=self.details)


# ------------------------------------------------------------------ bodies that are JSON or CSV


SPOOL_MEMORY_BYTES = 256 * 1024  # an upload's body past this size waits on disk, not in the process's memory


@dataclass(frozen=True)
class JsonOrCsv:
    """The body of an upload that may be JSON or CSV text, spooled (on disk past `SPOOL_MEMORY_BYTES`)."""

    kind: Literal["json", "csv"]
    file: BinaryIO

    def json_bytes(self) -> bytes:
        """The whole body, for a JSON parser that needs it at once (422 over the cap)."""
        self.file.seek(0)
        data = self.file.read(MAX_UPLOAD_BYTES + 1)
        check_size(data)
        return data


async def _spooled_body(request: Request) -> BinaryIO:
    """The request body written to a spooled temporary file as it arrives (422 past the cap, read no further)."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115 - closed with the request
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_UPLOAD_BYTES:
            spool.close()
            raise _too_big(MAX_UPLOAD_BYTES)
        spool.write(chunk)
    spool.seek(0)
    return spool


async def read_json_or_csv(request: Request) -> AsyncIterator[JsonOrCsv]:
    """JSON (`application/json`), a multipart upload (field `file`) or a CSV body (`text/csv`), spooled and capped."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=10)
        except StarletteHTTPException:  # Starlette's own 400 for a malformed multipart body
            raise
        except Exception as exc:  # noqa: BLE001 - any other unreadable multipart body is the caller's problem too
            raise Unprocessable(f"unreadable multipart body: {exc}") from exc
        upload = form.get("file")
        if isinstance(upload, UploadFile):
            file: BinaryIO = upload.file  # Starlette spools multipart files itself (to disk past 1 MiB)
        elif isinstance(upload, str):
            file = io.BytesIO(upload.encode())  # a form field, not a file: small by the form parser's own limit
        else:
            raise Unprocessable("send the CSV in the multipart field 'file'",
                                details=[ErrorDetail(loc=["body", "file"], message="missing")])
        kind: Literal["json", "csv"] = "csv"
    elif ctype in ("application/json", "text/csv", "text/plain"):
        file = await _spooled_body(request)
        kind = "json" if ctype == "application/json" else "csv"
    else:
        raise UnsupportedMediaType(
            f"send application/json, text/csv or multipart/form-data (field 'file'), not {ctype or 'no content type'}")
    try:
        yield JsonOrCsv(kind, file)
    finally:
        file.close()


JsonOrCsvDep = Annotated[JsonOrCsv, Depends(read_json_or_csv)]


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its `$defs` inlined (so it can sit in an OpenAPI requestBody as is)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def json_or_csv_openapi(model: type[BaseModel], columns: str) -> dict[str, Any]:
    """`openapi_extra` documenting a body read by `read_json_or_csv`: the JSON model, a multipart file, CSV text."""
    csv_text = {"type": "string", "description": f"CSV with a header row: {columns}"}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": _inline_refs(model.model_json_schema())},
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                           "properties": {"file": {"type": "string", "format": "binary",
                                                                   "description": f"CSV: {columns}"}}}},
        "text/csv": {"schema": csv_text},
    }}}
