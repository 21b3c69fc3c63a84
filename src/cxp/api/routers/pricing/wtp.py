"""Willingness to pay: Van Westendorp and Gabor–Granger from JSON, CSV uploads or stored survey answers;
constant-elasticity fits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, BinaryIO

import numpy as np
from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError

from cxp.api.deps import HeavyConnDep, PricingKey
from cxp.api.errors import ErrorBody, ErrorDetail, NotFound, Unprocessable
from cxp.api.routers.pricing.common import ERR_404, NO_NUL, TextQuery, as_decimal
from cxp.api.routers.pricing.wtp_schemas import (
    MAX_SURVEY_ROWS,
    DemandPoint,
    ElasticityIn,
    ElasticityOut,
    GaborGrangerAnswerIn,
    GaborGrangerIn,
    GaborGrangerOut,
    PricePoint,
    PriceRange,
    VanWestendorpAnswer,
    VanWestendorpIn,
    VanWestendorpOut,
)
from cxp.api.uploads import (
    CsvColumns,
    CsvProblems,
    JsonOrCsv,
    JsonOrCsvDep,
    file_line_loc,
    iter_csv,
    json_or_csv_openapi,
)
from cxp.pricing import service
from cxp.pricing.core import wtp
from cxp.pricing.errors import PricingError, UncomputableError, UnusableValueError

router = APIRouter()

_ERR_415 = {415: {"model": ErrorBody, "description": "Unsupported content type"}}
VAN_WESTENDORP_COLUMNS = CsvColumns(required=wtp.VW_COLUMNS, optional=("respondent_id",), ignore_unknown=True)
GABOR_GRANGER_COLUMNS = CsvColumns(required=("price", "would_buy"), optional=("respondent_id",), ignore_unknown=True)


def _van_westendorp_out(res: wtp.VanWestendorpResult) -> VanWestendorpOut:
    curves = [PricePoint(price=as_decimal(p), too_cheap=a, cheap=b, expensive=c, too_expensive=d)
              for p, a, b, c, d in zip(res.prices.tolist(), res.too_cheap.tolist(), res.cheap.tolist(),
                                       res.expensive.tolist(), res.too_expensive.tolist(), strict=True)]
    acceptable = res.acceptable_range
    return VanWestendorpOut(
        n=res.n, dropped_inconsistent=res.dropped_inconsistent, optimal_price=as_decimal(res.optimal_price),
        indifference_price=as_decimal(res.indifference_price),
        marginal_cheapness=as_decimal(res.marginal_cheapness),
        marginal_expensiveness=as_decimal(res.marginal_expensiveness),
        acceptable_range=(PriceRange(low=as_decimal(acceptable[0]), high=as_decimal(acceptable[1]))
                          if acceptable else None),
        curves=curves)


def _gabor_granger_out(res: wtp.GaborGrangerResult) -> GaborGrangerOut:
    points = [DemandPoint(price=p, demand=d, answers=n, revenue_index=as_decimal(r))
              for p, d, n, r in zip(res.prices, res.demand, res.answers, res.revenue_index, strict=True)]
    return GaborGrangerOut(revenue_maximising_price=res.revenue_maximising_price, points=points)


def _csv_records(file: BinaryIO, item: type[BaseModel], columns: CsvColumns) -> list[dict[str, Any]]:
    """CSV rows validated one by one as `item`; problems name the line and column."""
    problems = CsvProblems(file_line_loc)
    records = []
    for row in iter_csv(file, columns=columns, loc=file_line_loc, max_rows=MAX_SURVEY_ROWS):
        try:
            records.append(item.model_validate(row.cells).model_dump())
        except ValidationError as exc:
            problems.add_invalid(row.line, exc, row.cells)
    problems.raise_any()
    return records


def _invalid_json(exc: ValidationError) -> Unprocessable:
    details = [ErrorDetail(loc=["body", *(p if isinstance(p, int) else str(p) for p in e["loc"])], message=e["msg"])
               for e in exc.errors(include_url=False)[:50]]
    first = details[0]
    return Unprocessable(f"invalid request: {'.'.join(str(p) for p in first.loc)}: {first.message}", details=details)


def _survey_records(body: JsonOrCsv, model: type[BaseModel], item: type[BaseModel], field: str,
                    columns: CsvColumns) -> list[dict[str, Any]]:
    if body.kind == "csv":
        return _csv_records(body.file, item, columns)
    try:
        parsed = model.model_validate_json(body.json_bytes())
    except ValidationError as exc:
        raise _invalid_json(exc) from exc
    return [r.model_dump() for r in getattr(parsed, field)]


def _van_westendorp_upload(body: JsonOrCsv) -> VanWestendorpOut:
    records = _survey_records(body, VanWestendorpIn, VanWestendorpAnswer, "responses", VAN_WESTENDORP_COLUMNS)
    res = wtp.van_westendorp(responses=wtp.van_westendorp_from_records(records=records))
    return _van_westendorp_out(res)


def _gabor_granger_upload(body: JsonOrCsv) -> GaborGrangerOut:
    records = _survey_records(body, GaborGrangerIn, GaborGrangerAnswerIn, "answers", GABOR_GRANGER_COLUMNS)
    res = wtp.gabor_granger(answers=wtp.gabor_granger_from_records(records=records))
    return _gabor_granger_out(res)


@router.post("/wtp/van-westendorp", response_model=VanWestendorpOut, summary="Van Westendorp price sensitivity",
             openapi_extra=json_or_csv_openapi(VanWestendorpIn,
                                               "respondent_id,too_cheap,cheap,expensive,too_expensive"),
             responses=_ERR_415)
async def post_van_westendorp(_: PricingKey, body: JsonOrCsvDep) -> VanWestendorpOut:
    """JSON responses or a CSV upload; inconsistent respondents (answers out of order) are dropped and counted."""
    return await run_in_threadpool(_van_westendorp_upload, body)


@router.post("/wtp/gabor-granger", response_model=GaborGrangerOut, summary="Gabor–Granger demand and revenue",
             openapi_extra=json_or_csv_openapi(GaborGrangerIn, "respondent_id,price,would_buy"),
             responses=_ERR_415)
async def post_gabor_granger(_: PricingKey, body: JsonOrCsvDep) -> GaborGrangerOut:
    """JSON answers or a CSV upload (would_buy: yes/no, true/false or 1/0)."""
    return await run_in_threadpool(_gabor_granger_upload, body)


Survey = Annotated[str | None, Query(min_length=1, max_length=100, pattern=NO_NUL,
                                     description="The `survey` value in feedback events' detail")]


@contextmanager
def _no_answers(survey: str) -> Iterator[None]:
    """Stored answers too few (or too malformed) to analyse: there is no result to GET."""
    try:
        yield
    except (UncomputableError, UnusableValueError):
        raise  # answers there are, but they cannot be computed: 422 as for any request
    except PricingError as exc:
        raise NotFound(f"no analysable answers to survey {survey!r}: {exc}") from exc


@router.get("/wtp/van-westendorp", response_model=VanWestendorpOut, responses=ERR_404,
            summary="Van Westendorp from survey answers in feedback events")
def get_van_westendorp(_: PricingKey, conn: HeavyConnDep, product: TextQuery = None,
                       survey: Survey = None) -> VanWestendorpOut:
    """Feedback events whose detail holds {"survey": survey} and the four prices; 404 if too few."""
    survey = survey or "van_westendorp"
    with _no_answers(survey):
        res = service.get_van_westendorp(conn=conn, product=product, survey=survey)
    return _van_westendorp_out(res)


@router.get("/wtp/gabor-granger", response_model=GaborGrangerOut, responses=ERR_404,
            summary="Gabor–Granger from survey answers in feedback events")
def get_gabor_granger(_: PricingKey, conn: HeavyConnDep, product: TextQuery = None,
                      survey: Survey = None) -> GaborGrangerOut:
    """Feedback events whose detail is {"survey": survey, price, would_buy}; 404 if there are none."""
    survey = survey or "gabor_granger"
    with _no_answers(survey):
        res = service.get_gabor_granger(conn=conn, product=product, survey=survey)
    return _gabor_granger_out(res)


@router.post("/wtp/elasticity", response_model=ElasticityOut, summary="Constant-elasticity (log-log) fit")
def fit_elasticity(_: PricingKey, body: ElasticityIn) -> ElasticityOut:
    """Needs two distinct prices; with exactly two points the fit is exact (no standard error)."""
    fit = wtp.fit_elasticity(prices=[float(p) for p in body.prices], quantities=[float(q) for q in body.quantities])
    if not (np.isfinite(fit.elasticity) and np.isfinite(fit.intercept)):
        raise Unprocessable("the prices are too close together for a fit")
    return ElasticityOut.model_validate(fit)
