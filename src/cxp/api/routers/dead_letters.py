"""Dead-letter replay (role `admin`): validate pending dead letters again after a fix and store those that pass,
each exactly once; small replays answer at once, large ones run as a job."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import psycopg
from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from cxp.api.deps import AdminKey, ConnDep, JobsDep, SettingsDep
from cxp.api.errors import NotFound
from cxp.api.jobs import Job, Progress
from cxp.core.config import Settings
from cxp.deadletters import ReplayResult, count_pending, replay_dead_letters

router = APIRouter(prefix="/v1/dead-letters", tags=["ingest operations"])

JOB_KIND = "dead_letter_replay"
_SAMPLE = 20  # still-invalid letters shown with their reason


class ReplayIn(BaseModel):
    """Which pending dead letters to replay (oldest first); the filters of `cxp dead-letters replay`."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str | None, Field(max_length=100, description="Only dead letters of this reason")] = None
    ids: Annotated[
        list[Annotated[int, Field(ge=1, le=2**63 - 1)]] | None,
        Field(max_length=10_000, description="Only these dead letters"),
    ] = None
    limit: Annotated[int, Field(ge=1, le=100_000_000, description="Examine at most this many")] = 1000
    dry_run: Annotated[bool, Field(description="Validate and write, then roll everything back")] = False


class ReplayOut(BaseModel):
    """What a replay did, in dead letters (events_stored: events and heartbeats)."""

    examined: int
    stored: int
    dead_lettered_again: int
    still_invalid: int
    truncated: int
    events_stored: int
    dry_run: bool
    still_invalid_sample: dict[str, str] = Field(description=f"Up to {_SAMPLE} still-invalid letters: id → reason")


class ReplayProgress(BaseModel):
    """Dead letters examined so far, of those pending when the job started."""

    done: int
    total: int


class ReplayJobOut(BaseModel):
    """A replay running as a job; `result` once done."""

    job_id: UUID
    kind: str
    status: Literal["queued", "running", "done", "failed"]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    created_by: str | None
    error: str | None
    request: dict[str, Any]
    progress: ReplayProgress | None
    result: ReplayOut | None
    links: dict[str, str]


def _out(result: ReplayResult, dry_run: bool) -> ReplayOut:
    sample = dict(list(result.still_invalid.items())[:_SAMPLE])
    return ReplayOut(
        examined=result.examined,
        stored=len(result.stored),
        dead_lettered_again=len(result.dead_lettered_again),
        still_invalid=len(result.still_invalid),
        truncated=len(result.truncated),
        events_stored=result.events_stored,
        dry_run=dry_run,
        still_invalid_sample={str(k): v for k, v in sample.items()},
    )


def _location(job: Job) -> str:
    return f"/v1/dead-letters/replay/{job.job_id}"


def _job_out(job: Job) -> ReplayJobOut:
    result = None
    if job.status == "done" and isinstance(job.summary, dict):
        result = ReplayOut.model_validate(job.summary)
    progress = (
        None if job.progress_total is None else ReplayProgress(done=job.progress_done or 0, total=job.progress_total)
    )
    return ReplayJobOut(
        job_id=job.job_id,
        kind=job.kind,
        status=job.status,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        created_by=job.created_by,
        error=job.error,
        request=job.request,
        progress=progress,
        result=result,
        links={"self": _location(job)},
    )


def _replay_job(settings: Settings, body: ReplayIn, total: int):
    def run(conn: psycopg.Connection, job_id: UUID, progress: Progress) -> dict[str, Any]:
        progress(0, total)
        result = replay_dead_letters(
            conn,
            settings=settings,
            reason=body.reason,
            ids=body.ids,
            limit=body.limit,
            dry_run=body.dry_run,
            progress=lambda done: progress(done, max(total, done)),
        )
        return _out(result, body.dry_run).model_dump(mode="json")

    return run


@router.post(
    "/replay",
    response_model=ReplayOut,
    summary="Re-ingest dead letters that pass validation now, each exactly once (large replays as a job)",
    responses={
        202: {
            "model": ReplayJobOut,
            "description": "Too large to run now: queued as a job",
            "headers": {"Location": {"schema": {"type": "string"}, "description": "The job"}},
        }
    },
)
def create_replay(key: AdminKey, conn: ConnDep, settings: SettingsDep, jobs: JobsDep, body: ReplayIn) -> Any:
    """Pending letters matching the filters are validated again; those that pass are stored and marked replayed in
    the transaction that stores them, so a second replay never stores them again. Above
    `api.sync_replay_letters` letters or `api.sync_replay_bytes` payload bytes the replay runs as a job: 202 with
    the job and `Location`; poll `GET /v1/dead-letters/replay/{job_id}`."""
    letters, size = count_pending(conn, reason=body.reason, ids=body.ids, limit=body.limit)
    if letters > settings.api.sync_replay_letters or size > settings.api.sync_replay_bytes:
        job = jobs.submit(
            kind=JOB_KIND,
            request={**body.model_dump(mode="json"), "pending": letters},
            fn=_replay_job(settings, body, letters),
            created_by=key.key_id,
            transaction=False,
        )
        return JSONResponse(
            _job_out(job).model_dump(mode="json"), status_code=202, headers={"Location": _location(job)}
        )
    result = replay_dead_letters(
        conn, settings=settings, reason=body.reason, ids=body.ids, limit=body.limit, dry_run=body.dry_run
    )
    return _out(result, body.dry_run)


@router.get("/replay/{job_id}", response_model=ReplayJobOut, summary="A replay job: status, progress, result")
def get_replay_job(_: AdminKey, jobs: JobsDep, job_id: Annotated[UUID, Path()]) -> ReplayJobOut:
    """The job a large `POST /v1/dead-letters/replay` started."""
    job = jobs.get(job_id)
    if job is None or job.kind != JOB_KIND:
        raise NotFound(f"no replay job {job_id}")
    return _job_out(job)
