"""The one reader of uploaded CSV (and JSON-or-CSV) bodies: size cap, UTF-8, header check, rows numbered by line.

Line numbers are 1-based lines of the file with the header as line 1: the first data row is line 2, blank
lines count (and are skipped). Every problem names that line, and the column where there is one.

The reader is strict: no value of an upload spans lines, so a quoted value that runs over a line break (an
unterminated quote, which would swallow the rows after it), text after a closing quote and NUL bytes are
refused with the line and the character column of the fault.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

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
        raise Unprocessable(f"the upload is larger than {max_bytes // MIB} MiB; split it")


def decode_text(data: bytes) -> str:
    """UTF-8 text (a byte-order mark is dropped), or 422 naming the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Unprocessable(f"the upload is not UTF-8 text (byte {exc.start})") from exc


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and character column of `offset` in `text`."""
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1


def _check_nul(text: str, loc: LineLoc) -> None:
    """422 naming the line and column of the first NUL character (the database cannot store one)."""
    if (at := text.find("\x00")) >= 0:
        line, column = _position(text, at)
        raise Unprocessable(f"line {line}, column {column}: a NUL byte; the upload must be text",
                            details=[ErrorDetail(loc=loc(line), message=f"NUL byte at column {column}")])


def _quote_fault(text: str, line: int) -> tuple[int, int, str] | None:
    """The first quoting fault of the row starting on `line`: (line, column, what), or None."""
    offset = 0
    for _ in range(line - 1):
        offset = text.index("\n", offset) + 1
    quoted, field_start, opened = False, True, (line, 1)
    i = offset
    while i < len(text):
        ch = text[i]
        if quoted and ch == '"' and text[i + 1:i + 2] == '"':
            i += 2
            continue
        if quoted and ch == '"':
            if text[i + 1:i + 2] not in (",", "\r", "\n", ""):
                return (*_position(text, i + 1), "text after the closing quote of the value opened at line"
                        f" {opened[0]}, column {opened[1]}")
            quoted = False
        elif quoted and ch in "\r\n":
            return (*opened, "this quoted value runs over a line break (an unterminated quote?)")
        elif ch == '"' and field_start:
            quoted, opened = True, _position(text, i)
        elif ch in "\r\n":
            return None
        field_start = not quoted and ch == ","
        i += 1
    return (*opened, "this quote is never closed") if quoted else None


def _bad_quote(text: str, line: int, loc: LineLoc, fallback: str) -> Unprocessable:
    """422 naming the line and column of the quoting fault in the row starting on `line`."""
    fault = _quote_fault(text, line)
    if fault is None:
        return Unprocessable(f"line {line}: not valid CSV: {fallback}",
                             details=[ErrorDetail(loc=loc(line), message=fallback)])
    at_line, column, what = fault
    return Unprocessable(f"line {at_line}, column {column}: not valid CSV: {what}",
                         details=[ErrorDetail(loc=loc(at_line), message=f"column {column}: {what}")])


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


def read_csv(data: bytes, *, columns: CsvColumns, loc: LineLoc, max_bytes: int = MAX_UPLOAD_BYTES,
             max_rows: int | None = None) -> list[CsvRow]:
    """The data rows of an uploaded CSV with a header row, or a 422 naming the line (and column) at fault."""
    check_size(data, max_bytes=max_bytes)
    text = decode_text(data)
    _check_nul(text, loc)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[CsvRow] = []
    line = 1
    try:
        header = next(reader, [])
        names = [h.strip() for h in header]
        _header(names, columns, loc)
        wanted = [(i, n) for i, n in enumerate(names) if n in columns.known]
        while True:
            line = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                break
            if reader.line_num != line:  # a row is one line: a longer one holds a line break in quotes
                raise _bad_quote(text, line, loc, "a value spans lines")
            if not any(cell.strip() for cell in row):
                continue  # blank lines carry nothing
            if len(row) > len(names):
                raise Unprocessable(f"line {line}: more fields than header columns",
                                    details=[ErrorDetail(loc=loc(line), message="more fields than columns")])
            if max_rows is not None and len(rows) >= max_rows:
                raise Unprocessable(f"line {line}: at most {max_rows} rows")
            cells = {n: row[i].strip() for i, n in wanted if i < len(row) and row[i].strip()}
            rows.append(CsvRow(line, cells))
    except csv.Error as exc:
        raise _bad_quote(text, line, loc, str(exc)) from exc
    if not rows:
        raise Unprocessable("the CSV has a header but no rows")
    return rows


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


@dataclass(frozen=True)
class JsonOrCsv:
    """The raw body of an upload that may be JSON or CSV text."""

    kind: Literal["json", "csv"]
    data: bytes


async def read_json_or_csv(request: Request) -> JsonOrCsv:
    """JSON (`application/json`), a multipart upload (field `file`) or a CSV body (`text/csv`), size-capped."""
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
            data = await upload.read(MAX_UPLOAD_BYTES + 1)
        elif isinstance(upload, str):
            data = upload.encode()
        else:
            raise Unprocessable("send the CSV in the multipart field 'file'",
                                details=[ErrorDetail(loc=["body", "file"], message="missing")])
        kind: Literal["json", "csv"] = "csv"
    elif ctype in ("application/json", "text/csv", "text/plain"):
        data = await request.body()
        kind = "json" if ctype == "application/json" else "csv"
    else:
        raise UnsupportedMediaType(
            f"send application/json, text/csv or multipart/form-data (field 'file'), not {ctype or 'no content type'}")
    check_size(data)
    return JsonOrCsv(kind, data)


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
