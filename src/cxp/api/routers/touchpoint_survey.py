"""Stated importance × quality per touchpoint (a classic importance–performance questionnaire): upload as JSON or
CSV, list; `GET /v1/experience/touchpoints` places it on the IPA chart beside the derived importance."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cxp.api.deps import ConnDep, ProductKey
from cxp.api.errors import ErrorBody, ErrorDetail, Unprocessable
from cxp.api.uploads import (
    CsvColumns,
    CsvProblems,
    JsonOrCsv,
    JsonOrCsvDep,
    file_line_loc,
    iter_csv,
    json_or_csv_openapi,
)
from cxp.store.survey import SurveyRow, list_survey, replace_survey

router = APIRouter(prefix="/v1/experience", tags=["experience"])

MAX_ROWS = 10_000
NAME = r"^[A-Za-z0-9_.-]{1,64}$"
COLUMNS = CsvColumns(
    required=("product_id", "touchpoint", "importance", "quality", "respondents", "scale_min", "scale_max")
)


class SurveyItem(BaseModel):
    """One touchpoint's mean stated importance and quality over `respondents`, on the scale [scale_min, scale_max]."""

    model_config = ConfigDict(extra="forbid")

    product_id: str = Field(pattern=NAME)
    touchpoint: str = Field(pattern=NAME)
    importance: float = Field(allow_inf_nan=False)
    quality: float = Field(allow_inf_nan=False)
    respondents: int = Field(gt=0, le=10_000_000)
    scale_min: float = Field(default=1.0, allow_inf_nan=False, ge=-1000, le=1000)
    scale_max: float = Field(default=5.0, allow_inf_nan=False, ge=-1000, le=1000)

    @model_validator(mode="after")
    def _on_scale(self) -> SurveyItem:
        if not self.scale_min < self.scale_max:
            raise ValueError("scale_min must be below scale_max")
        for name in ("importance", "quality"):
            if not self.scale_min <= getattr(self, name) <= self.scale_max:
                raise ValueError(f"{name} must lie on the scale [{self.scale_min:g}, {self.scale_max:g}]")
        return self


class SurveyIn(BaseModel):
    """The table: each product present replaces its earlier table as a whole."""

    model_config = ConfigDict(extra="forbid")

    rows: list[SurveyItem] = Field(min_length=1, max_length=MAX_ROWS)


class SurveyOut(BaseModel):
    """The stored table."""

    rows: list[SurveyItem]


def _records(body: JsonOrCsv) -> list[SurveyItem]:
    if body.kind == "json":
        try:
            return SurveyIn.model_validate_json(body.json_bytes()).rows
        except ValidationError as exc:
            details = [
                ErrorDetail(loc=["body", *(p if isinstance(p, int) else str(p) for p in e["loc"])], message=e["msg"])
                for e in exc.errors(include_url=False)[:50]
            ]
            raise Unprocessable(
                f"invalid survey: {'.'.join(map(str, details[0].loc))}: {details[0].message}", details=details
            ) from exc
    problems = CsvProblems(file_line_loc)
    items: list[SurveyItem] = []
    for row in iter_csv(body.file, columns=COLUMNS, loc=file_line_loc, max_rows=MAX_ROWS):
        try:
            items.append(SurveyItem.model_validate(row.cells))
        except ValidationError as exc:
            problems.add_invalid(row.line, exc, row.cells)
    problems.raise_any(outcome="; nothing was stored")
    return items


def _store(conn: Any, body: JsonOrCsv) -> SurveyOut:
    items = _records(body)
    seen: set[tuple[str, str]] = set()
    for item in items:
        key = (item.product_id, item.touchpoint)
        if key in seen:
            raise Unprocessable(f"touchpoint {item.product_id}/{item.touchpoint} appears twice; nothing was stored")
        seen.add(key)
    replace_survey(conn, rows=[SurveyRow(**item.model_dump()) for item in items])
    return SurveyOut(rows=[SurveyItem(**r.__dict__) for r in list_survey(conn)])


@router.put(
    "/touchpoint-survey",
    response_model=SurveyOut,
    summary="Store a stated importance × quality table",
    openapi_extra=json_or_csv_openapi(
        SurveyIn, "product_id,touchpoint,importance,quality,respondents,scale_min,scale_max"
    ),
    responses={
        400: {"model": ErrorBody, "description": "The multipart body could not be parsed"},
        415: {"model": ErrorBody, "description": "Unsupported content type"},
    },
)
async def put_touchpoint_survey(_: ProductKey, conn: ConnDep, body: JsonOrCsvDep) -> SurveyOut:
    """JSON `{"rows": [...]}` or a CSV upload; every product present replaces its earlier table; all rows or none."""
    return await run_in_threadpool(_store, conn, body)


@router.get("/touchpoint-survey", response_model=SurveyOut, summary="The stored stated importance × quality table")
def get_touchpoint_survey(
    _: ProductKey, conn: ConnDep, product: Annotated[str | None, Query(max_length=200)] = None
) -> SurveyOut:
    """Rows of one product or of all."""
    return SurveyOut(rows=[SurveyItem(**r.__dict__) for r in list_survey(conn, product=product)])
