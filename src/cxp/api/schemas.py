"""Shapes shared by the routers: pages of items, tabular (CSV) output, common query parameters."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import Query
from fastapi.responses import Response
from pydantic import BaseModel

from cxp.core.csvout import neutralise

T = TypeVar("T")

# For `responses=` of endpoints that take FormatQuery: the CSV alternative documented next to the JSON.
CSV_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "JSON, or CSV with format=csv"}}

FormatQuery = Annotated[Literal["json", "csv"], Query(description="json, or csv for a download of the table")]


class Page(BaseModel, Generic[T]):
    """One page of a list: the items, how many there are in all, and where this page starts."""

    items: list[T]
    total: int
    limit: int
    offset: int


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
