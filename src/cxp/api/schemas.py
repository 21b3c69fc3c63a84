"""Shapes shared by the routers: pages of items, tabular (CSV) output, common query parameters."""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import Query
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, BeforeValidator, WithJsonSchema

from cxp.core.csvout import neutralise

T = TypeVar("T")

# For `responses=` of endpoints that take FormatQuery: the CSV alternative documented next to the JSON.
CSV_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "JSON, or CSV with format=csv"}}

FormatQuery = Annotated[Literal["json", "csv"], Query(description="json, or csv for a download of the table")]


_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_day_text(value: Any) -> Any:
    """Only `YYYY-MM-DD` text (or a date) is a day: pydantic would take `0` or `1700000000` as a Unix time."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DAY.fullmatch(value):
        return value
    raise ValueError("a day is written YYYY-MM-DD")


def day_type(first: date, last: date) -> Any:
    """A calendar day as `YYYY-MM-DD` within [first, last], with the bounds in the OpenAPI schema
    (`formatMinimum`/`formatMaximum`, and a pattern for the years) as the server enforces them."""

    def within(value: date) -> date:
        if not first <= value <= last:
            raise ValueError(f"the day must lie between {first} and {last}")
        return value

    years = {(1970, 2199): r"(19[7-9][0-9]|2[01][0-9]{2})", (1970, 2200): r"(19[7-9][0-9]|2[01][0-9]{2}|2200)"}
    schema: dict[str, Any] = {"type": "string", "format": "date", "formatMinimum": first.isoformat(),
                              "formatMaximum": last.isoformat(),
                              "description": f"YYYY-MM-DD, from {first} to {last}"}
    if (first.year, last.year) in years and (first.month, first.day, last.month, last.day) == (1, 1, 12, 31):
        schema["pattern"] = f"^{years[(first.year, last.year)]}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
    return Annotated[date, BeforeValidator(_iso_day_text), AfterValidator(within), WithJsonSchema(schema)]


class Page(BaseModel, Generic[T]):
    """One page of a list: the items, how many there are in all, and where this page starts."""

    items: list[T]
    total: int
    limit: int
    offset: int
    # Lists that page by keyset: pass it as `cursor` for the next page. Null on the last page, and always on
    # lists that page by offset only (computed results).
    next_cursor: str | None = None


def paged(items: Sequence[T], *, limit: int, offset: int) -> dict[str, Any]:
    """A Page body for an already materialised list."""
    return {"items": list(items[offset:offset + limit]), "total": len(items), "limit": limit, "offset": offset}


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | int | float | str | bool):
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping | list | tuple):
        return "; ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, Mapping) else "; ".join(
            str(v) for v in value)
    return str(value)


def as_row(obj: Any) -> dict[str, Any]:
    """A flat dict of a dataclass or pydantic object (nested dicts become key=value cells)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        data = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    elif isinstance(obj, BaseModel):
        data = obj.model_dump()
    else:
        data = dict(obj)
    return {k: _cell(v) for k, v in data.items()}


def csv_response(rows: Iterable[Any], *, filename: str, columns: Sequence[str] | None = None) -> Response:
    """A CSV download of rows (dataclasses, models or dicts); formula-leading text cells are neutralised."""
    flat = [as_row(r) for r in rows]
    cols = list(columns) if columns else (list(flat[0]) if flat else [])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: neutralise(v) for k, v in row.items()} for row in flat)
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'})
