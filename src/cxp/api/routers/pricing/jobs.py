"""Backtest jobs: their records, the report when done, and the bills (stored compactly, served paged or as CSV)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import numpy as np
from fastapi import APIRouter, Query
from fastapi.responses import Response

from cxp.api.deps import JobsDep, PageDep, PricingKey
from cxp.api.errors import Conflict, NotFound
from cxp.api.jobs import Job, JobRunner
from cxp.api.routers.pricing.backtest_schemas import BILL_COLUMNS, BacktestReport, BillRow
from cxp.api.routers.pricing.common import ERR_404, ERR_409, PREFIX, OutputModel
from cxp.api.schemas import CSV_RESPONSES, FormatQuery, Page, csv_response
from cxp.pricing.core.backtest import BacktestResult
from cxp.pricing.core.money import RoundingRule

router = APIRouter()

JOB_KIND = "backtest"


class JobSummary(OutputModel):
    """A background job's record."""

    job_id: UUID
    kind: str
    status: Literal["queued", "running", "done", "failed"]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    created_by: str | None
    error: str | None
    links: dict[str, str]


class JobOut(JobSummary):
    """A job with its request and, once done, the backtest report (bills: `links.bills`)."""

    request: dict[str, Any]
    result: BacktestReport | None


def job_location(job: Job) -> str:
    """The job's URL path."""
    return f"{PREFIX}/jobs/{job.job_id}"


def _links(job: Job) -> dict[str, str]:
    links = {"self": job_location(job)}
    if job.status == "done":
        links["bills"] = f"{job_location(job)}/bills"
    return links


def _job_summary(job: Job) -> JobSummary:
    return JobSummary(job_id=job.job_id, kind=job.kind, status=job.status, created_at=job.created_at,
                      started_at=job.started_at, finished_at=job.finished_at, created_by=job.created_by,
                      error=job.error, links=_links(job))


def job_out(job: Job) -> JobOut:
    """A job's record with its request and, when done, its report."""
    report = None
    if job.status == "done" and isinstance(job.result, dict) and "report" in job.result:
        report = BacktestReport.model_validate(job.result["report"])
    return JobOut(**_job_summary(job).model_dump(), request=job.request, result=report)


def bill_table(result: BacktestResult) -> dict[str, Any]:
    """The bills as compact JSON for a job's result: integer quanta per plan × account × month."""
    return {
        "currency": result.currency,
        "rule": result.rule.model_dump(mode="json"),
        "plan_keys": list(result.plan_keys),
        "account_ids": list(result.cube.account_ids),
        "segments": list(result.cube.segments),
        "months": [m.isoformat() for m in result.cube.months],
        "active": result.cube.active_mask().astype(np.int8).tolist(),
        "quanta": {k: result.bills[k].tolist() for k in result.plan_keys},
    }


def _bill_rows(table: dict[str, Any], plan: str | None = None) -> list[dict[str, Any]]:
    """Long form of a compact bill table, in `BacktestResult.rows()` order (plan, then account, then month)."""
    rule = RoundingRule.model_validate(table["rule"])
    months = [date.fromisoformat(m) for m in table["months"]]
    active = np.asarray(table["active"], dtype=bool).reshape(len(table["account_ids"]), len(months))
    accounts, month_indexes = np.nonzero(active)
    out = []
    for key in table["plan_keys"]:
        if plan is not None and key != plan:
            continue
        quanta = table["quanta"][key]
        for i, j in zip(accounts.tolist(), month_indexes.tolist(), strict=True):
            out.append({"plan": key, "account_id": table["account_ids"][i], "segment": table["segments"][i],
                        "month": months[j], "bill": rule.from_quanta(int(quanta[i][j])),
                        "currency": table["currency"]})
    return out


@router.get("/jobs", response_model=Page[JobSummary], summary="Backtest jobs, newest first")
def list_jobs(_: PricingKey, jobs: JobsDep, page: PageDep) -> Page[JobSummary]:
    """Without results: fetch one job for its report."""
    items, total = jobs.list(kind=JOB_KIND, limit=page.limit, offset=page.offset)
    return Page[JobSummary](items=[_job_summary(j) for j in items], total=total, limit=page.limit,
                            offset=page.offset)


def _backtest_job(jobs: JobRunner, job_id: UUID) -> Job:
    job = jobs.get(job_id)
    if job is None or job.kind != JOB_KIND:
        raise NotFound(f"no backtest job {job_id}")
    return job


@router.get("/jobs/{job_id}", response_model=JobOut, summary="A backtest job: status, report when done, error",
            responses=ERR_404)
def get_job(_: PricingKey, jobs: JobsDep, job_id: UUID) -> JobOut:
    """`status` is queued, running, done (with `result`) or failed (with `error`)."""
    return job_out(_backtest_job(jobs, job_id))


@router.get("/jobs/{job_id}/bills", response_model=Page[BillRow], summary="A finished backtest job's bills",
            responses={**CSV_RESPONSES, **ERR_404, **ERR_409})
def get_job_bills(
    _: PricingKey,
    jobs: JobsDep,
    page: PageDep,
    job_id: UUID,
    plan: Annotated[str | None, Query(max_length=80, description="Only this plan key")] = None,
    format: FormatQuery = "json",
) -> Page[BillRow] | Response:
    """One row per plan × active account-month; `format=csv` downloads all of them."""
    job = _backtest_job(jobs, job_id)
    if job.status != "done" or not isinstance(job.result, dict) or "bills" not in job.result:
        raise Conflict(f"job {job_id} is {job.status}" + (f": {job.error}" if job.error else "; no bills yet"))
    rows = _bill_rows(job.result["bills"], plan)
    if format == "csv":
        return csv_response(rows, filename=f"backtest-{job_id}-bills", columns=BILL_COLUMNS)
    items = [BillRow.model_validate(r) for r in rows[page.offset:page.offset + page.limit]]
    return Page[BillRow](items=items, total=len(rows), limit=page.limit, offset=page.offset)
