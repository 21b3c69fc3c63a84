"""History import (role `admin`): upload a JSON-lines, CSV or Parquet telemetry file; it is imported as a job, exactly
once and resumably, like `cxp import` (docs/telemetry.md, "History import")."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from uuid import UUID

import psycopg
from fastapi import APIRouter, File, Query, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from cxp.api.deps import AdminKey, JobsDep, SettingsDep
from cxp.api.errors import ErrorBody, NotFound, Unprocessable
from cxp.api.jobs import Job, Progress
from cxp.core.config import Settings
from cxp.importer import check_file, detect_format, import_file

router = APIRouter(prefix="/v1/imports", tags=["ingest operations"])

JOB_KIND = "history_import"
_COPY_BLOCK = 1024 * 1024


class ImportOut(BaseModel):
    """What the import stored (events: events and heartbeats); `skipped` when the file had been imported before."""

    name: str
    format: str
    sha256: str
    size_bytes: int
    skipped: bool
    resumed_at_line: int
    last_line: int
    messages: int
    events_in: int
    events_stored: int
    duplicates: int
    dead_lettered: int
    seconds: float
    events_per_s: float
    rollup_device_days: int
    rollup_seconds: float


class ImportProgress(BaseModel):
    """Bytes (JSON lines, CSV) or rows (Parquet) committed so far, of the file's."""

    done: int
    total: int


class ImportJobOut(BaseModel):
    """An import job; `result` once done."""

    job_id: UUID
    kind: str
    status: Literal["queued", "running", "done", "failed"]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    created_by: str | None
    error: str | None
    request: dict[str, Any]
    progress: ImportProgress | None
    result: ImportOut | None
    links: dict[str, str] = Field(description="self: this job")


def _location(job: Job) -> str:
    return f"/v1/imports/{job.job_id}"


def _job_out(job: Job) -> ImportJobOut:
    result = ImportOut.model_validate(job.summary) if job.status == "done" and isinstance(job.summary, dict) else None
    progress = (
        None if job.progress_total is None else ImportProgress(done=job.progress_done or 0, total=job.progress_total)
    )
    return ImportJobOut(
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


def _import_job(settings: Settings, *, path: Path, name: str, fmt: str, force: bool):
    def run(conn: psycopg.Connection, job_id: UUID, progress: Progress) -> dict[str, Any]:
        try:
            result = import_file(conn, settings=settings, path=path, name=name, fmt=fmt, force=force, progress=progress)
        finally:
            path.unlink(missing_ok=True)
        return ImportOut(**asdict(result), events_per_s=round(result.events_per_s, 1)).model_dump(mode="json")

    return run


def _keep(upload: UploadFile, *, suffix: str, max_bytes: int) -> tuple[Path, int]:
    """The upload copied to a file of its own (the job outlives the request); 422 past the cap."""
    with tempfile.NamedTemporaryFile(prefix="cxp-import-", suffix=suffix, delete=False) as out:
        path, size = Path(out.name), 0
        try:
            while block := upload.file.read(_COPY_BLOCK):
                size += len(block)
                if size > max_bytes:
                    raise Unprocessable(f"the file is larger than {max_bytes:,} bytes; split it or use `cxp import`")
                out.write(block)
        except BaseException:
            out.close()
            path.unlink(missing_ok=True)
            raise
    return path, size


@router.post(
    "",
    status_code=202,
    response_model=ImportJobOut,
    summary="Import a telemetry history file (JSON lines, CSV or Parquet) as a job, exactly once",
    responses={
        202: {"headers": {"Location": {"schema": {"type": "string"}, "description": "The job"}}},
        400: {"model": ErrorBody, "description": "The multipart body could not be parsed"},
        422: {"description": "Not a file of its format, or without the columns of the flat layout"},
    },
)
def create_import(
    key: AdminKey,
    settings: SettingsDep,
    jobs: JobsDep,
    file: Annotated[UploadFile, File(description="The history file; its suffix names the format unless `format`")],
    format: Annotated[Literal["jsonl", "csv", "parquet"] | None, Query(description="The file's format")] = None,  # noqa: A002
    force: Annotated[
        bool, Query(description="Read a file imported before again (stores only what is missing)")
    ] = False,
) -> Any:
    """The file is checked (format, header or Parquet schema) and kept, then imported by a job: 202 with the job and
    `Location`; poll `GET /v1/imports/{job_id}`. Each line or row goes through the gateway's contract validation,
    (device, seq) dedupe and dead letters (with the file's name and line); a file is known by its SHA-256, so uploading
    one whose import was cut off resumes it, and one imported before is skipped unless `force`."""
    name = Path(file.filename or "").name or "upload"
    fmt = detect_format(Path(name), format)
    path, size = _keep(file, suffix=Path(name).suffix or f".{fmt}", max_bytes=settings.api.max_history_import_bytes)
    try:
        if size == 0:
            raise Unprocessable(f"{name} is empty")
        check_file(path, fmt, name=name)
        job = jobs.submit(
            kind=JOB_KIND,
            request={"name": name, "format": fmt, "size_bytes": size, "force": force},
            fn=_import_job(settings, path=path, name=name, fmt=fmt, force=force),
            created_by=key.key_id,
            transaction=False,
        )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return JSONResponse(_job_out(job).model_dump(mode="json"), status_code=202, headers={"Location": _location(job)})


@router.get("/{job_id}", response_model=ImportJobOut, summary="An import job: status, progress, result")
def get_import_job(_: AdminKey, jobs: JobsDep, job_id: Annotated[UUID, PathParam()]) -> ImportJobOut:
    """The job a `POST /v1/imports` started."""
    job = jobs.get(job_id)
    if job is None or job.kind != JOB_KIND:
        raise NotFound(f"no import job {job_id}")
    return _job_out(job)
