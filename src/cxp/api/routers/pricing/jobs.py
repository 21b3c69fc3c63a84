"""Backtest jobs: their records, the report when done, and the bills (rows in `job_bills`, keyset-paged or streamed)."""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse
from psycopg_pool import ConnectionPool

from cxp.api.cursors import cursor_time, cursor_uuid, decode_cursor, page_of
from cxp.api.deps import JobsDep, KeysetPageDep, PageDep, PricingKey
from cxp.api.errors import Conflict, ErrorDetail, NotFound, Unprocessable
from cxp.api.jobs import Job, JobRunner
from cxp.api.routers.pricing.backtest_schemas import BILL_COLUMNS, BacktestReport, BillRow
from cxp.api.routers.pricing.common import ERR_404, ERR_409, PREFIX, OutputModel
from cxp.api.schemas import CSV_RESPONSES, FormatQuery, Page
from cxp.core.csvout import neutralise
from cxp.store import job_results

router = APIRouter()

JOB_KIND = "backtest"
# The CSV stream is sent in pieces of about this many characters.
_CSV_CHUNK = 64 * 1024


class JobProgress(OutputModel):
    """How far a job is: output rows (a backtest's bills) written of those to write."""

    done: int
    total: int


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
    progress: JobProgress | None = None  # null until the job knows how many rows it will write
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
                      error=job.error, links=_links(job),
                      progress=None if job.progress_total is None else JobProgress(done=job.progress_done or 0,
                                                                                   total=job.progress_total))


def job_out(job: Job) -> JobOut:
    """A job's record with its request and, when done, its report."""
    report = None
    if job.status == "done" and isinstance(job.summary, dict) and "report" in job.summary:
        report = BacktestReport.model_validate(job.summary["report"])
    return JobOut(**_job_summary(job).model_dump(), request=job.request, result=report)


class BillPage(Page[BillRow]):
    """A page of bills; pass `next_cursor` as `cursor` for the next one (null: this is the last)."""


def _cursor(job_id: UUID, record: job_results.BillRecord) -> str:
    raw = f"{job_id}:{record.plan_idx}:{record.row_idx}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(job_id: UUID, cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        owner, plan_idx, row_idx = raw.split(":")
        key = int(plan_idx), int(row_idx)
        if UUID(owner) != job_id or not all(0 <= k < 2**62 for k in key):
            raise ValueError("another job's cursor or a key out of range")
        return key
    except ValueError as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors too
        raise Unprocessable("cursor is not one this endpoint gave for this job",
                            details=[ErrorDetail(loc=["query", "cursor"], message="invalid cursor")]) from exc


def _bill_row(r: job_results.BillRecord) -> BillRow:
    return BillRow(plan=r.plan_key, account_id=r.account_id, segment=r.segment, month=r.month, bill=r.bill,
                   currency=r.currency)


def _safe(cache: dict[str, str], text: str) -> str:
    """`neutralise(text)`, remembered: the same few texts recur on every row."""
    out = cache.get(text)
    if out is None:
        if len(cache) > 100_000:
            cache.clear()
        out = cache[text] = neutralise(text)
    return out


def _csv_stream(pool: ConnectionPool, job_id: UUID, plan_idx: int | None) -> Iterator[str]:
    """The CSV in chunks, rows from a server-side cursor; a connection is held only while it streams."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(BILL_COLUMNS)
    safe: dict[str, str] = {}  # neutralised text cells: plans, segments, currency and accounts repeat
    with pool.connection() as conn:
        for _p, _r, plan, account, segment, month, bill, currency in job_results.stream_bills(
                conn, job_id=job_id, plan_idx=plan_idx):
            # date and Decimal go through str() as in csv_response (ISO date, exact text); None is an empty cell
            writer.writerow([_safe(safe, plan), _safe(safe, account), None if segment is None else _safe(safe, segment),
                             month, bill, _safe(safe, currency)])
            if buf.tell() >= _CSV_CHUNK:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
    yield buf.getvalue()


@router.get("/jobs", response_model=Page[JobSummary], summary="Backtest jobs, newest first")
def list_jobs(_: PricingKey, jobs: JobsDep, page: KeysetPageDep) -> Page[JobSummary]:
    """Without results: fetch one job for its report; `next_cursor` pages on by keyset."""
    before = None
    if page.cursor is not None:
        at, job_id = decode_cursor(page.cursor, "jobs", (str, str))
        before = (cursor_time(str(at)), cursor_uuid(str(job_id)))
    rows, total = jobs.list(kind=JOB_KIND, limit=page.limit + 1, offset=page.offset, before=before)
    items, cursor = page_of(rows, limit=page.limit, kind="jobs",
                            key=lambda j: (j.created_at.isoformat(), str(j.job_id)))
    return Page[JobSummary](items=[_job_summary(j) for j in items], total=total, limit=page.limit,
                            offset=page.offset, next_cursor=cursor)


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


@router.get("/jobs/{job_id}/bills", response_model=BillPage, summary="A finished backtest job's bills",
            responses={**CSV_RESPONSES, **ERR_404, **ERR_409})
def get_job_bills(
    _: PricingKey,
    jobs: JobsDep,
    page: PageDep,
    job_id: UUID,
    plan: Annotated[str | None, Query(max_length=80, description="Only this plan key")] = None,
    cursor: Annotated[str | None, Query(max_length=200, description="`next_cursor` of the previous page")] = None,
    format: FormatQuery = "json",
) -> BillPage | Response:
    """One row per plan × active account-month, in plan then account then month order; `format=csv` streams all.

    Page with `cursor` (keyset: each page costs the same however deep); `offset` still works, counted from
    the cursor's position.
    """
    job = _backtest_job(jobs, job_id)
    if job.status != "done":
        raise Conflict(f"job {job_id} is {job.status}" + (f": {job.error}" if job.error else "; no bills yet"))
    after = _after(job_id, cursor) if cursor else None
    with jobs.pool.connection() as conn:
        plans = job_results.plans(conn, job_id=job_id)
        if not plans:
            raise Conflict(f"job {job_id} has no stored bills")
        chosen = [p for p in plans if plan is None or p.plan_key == plan]
        plan_idx = None if plan is None else (chosen[0].plan_idx if chosen else -1)
        if format == "csv":
            return StreamingResponse(_csv_stream(jobs.pool, job_id, plan_idx), media_type="text/csv; charset=utf-8",
                                     headers={"Content-Disposition":
                                              f'attachment; filename="backtest-{job_id}-bills.csv"'})
        records = job_results.bill_page(conn, job_id=job_id, plan_idx=plan_idx, after=after, offset=page.offset,
                                        limit=page.limit)
    more = len(records) == page.limit
    return BillPage(items=[_bill_row(r) for r in records], total=sum(p.bills for p in chosen), limit=page.limit,
                    offset=page.offset, next_cursor=_cursor(job_id, records[-1]) if more and records else None)
