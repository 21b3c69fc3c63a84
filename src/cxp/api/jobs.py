"""Background jobs for long runs (large backtests): persisted in `jobs` (status, summary, progress), run on a small
thread pool with a connection pool of their own.

A job's bulk output (a backtest's bills) goes to its own table inside the job's transaction; the job row
keeps only its status, its progress and a small JSON summary, so reading a status never reads the output.
Jobs take connections only from the jobs' pool (one per worker, plus one for progress and status writes): a
long job never holds a connection a request is waiting for. Requests read and create job rows through the
pool they were given (`requests_pool`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from cxp.store.errors import StoreError

log = logging.getLogger("cxp.api.jobs")

# progress(done, total): how far a job is, committed at once (visible while the job's own transaction is open).
Progress = Callable[[int, int], None]
# fn(conn, job_id, progress) writes the job's output with conn (one transaction with its status) and returns its
# summary; it reports its progress as it goes.
JobFn = Callable[[psycopg.Connection, uuid.UUID, Progress], Any]


@dataclass(frozen=True)
class Job:
    """A job's record."""

    job_id: uuid.UUID
    kind: str
    status: str
    request: dict[str, Any]
    summary: Any
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    created_by: str | None
    progress_done: int | None = None
    progress_total: int | None = None


_COLUMNS = ("job_id, kind, status, request, summary, error, created_at, started_at, finished_at, created_by,"
            " progress_done, progress_total")


def job_error(exc: Exception) -> str:
    """What a job's caller is told about its failure: database and internal error texts stay in the log."""
    if isinstance(exc, psycopg.Error | StoreError | MemoryError):
        return f"internal error ({type(exc).__name__}); the job's output could not be computed or stored"
    return f"{type(exc).__name__}: {exc}"


def read_job(conn: psycopg.Connection, job_id: uuid.UUID) -> Job | None:
    """A job's record: status and summary columns only, never its output tables."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = %s", (job_id,)).fetchone()
    return Job(*row) if row else None


def list_jobs(conn: psycopg.Connection, *, kind: str | None, limit: int, offset: int,
              before: tuple[datetime, uuid.UUID] | None = None) -> tuple[list[Job], int]:
    """Jobs, newest first (older than the (created_at, job_id) `before`, if given), and how many there are (status
    and summary columns only)."""
    keyset = "" if before is None else " AND created_at <= %(at)s AND (created_at, job_id) < (%(at)s, %(id)s)"
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM jobs WHERE (%(kind)s::text IS NULL OR kind = %(kind)s){keyset}"
        " ORDER BY created_at DESC, job_id DESC LIMIT %(limit)s OFFSET %(offset)s",
        {"kind": kind, "limit": limit, "offset": offset, "at": before[0] if before else None,
         "id": before[1] if before else None}).fetchall()
    total = conn.execute("SELECT count(*) FROM jobs WHERE %(kind)s::text IS NULL OR kind = %(kind)s",
                         {"kind": kind}).fetchone()[0]
    return [Job(*r) for r in rows], total


class JobRunner:
    """Runs jobs in threads on the jobs' own connection pool; summaries are JSON stored in the database."""

    def __init__(self, *, pool: ConnectionPool, workers: int, requests_pool: ConnectionPool | None = None) -> None:
        self.pool = pool  # the jobs' own: a running job holds one of these, never one of the requests'
        self.requests_pool = requests_pool or pool
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cxp-job")

    def recover(self) -> int:
        """Jobs a previous process left unfinished are marked failed (their thread died with it)."""
        with self.pool.connection() as conn:
            cur = conn.execute("UPDATE jobs SET status = 'failed', finished_at = now(),"
                               " error = 'interrupted: the API process stopped before the job finished'"
                               " WHERE status IN ('queued', 'running')")
            return cur.rowcount

    def submit(self, *, kind: str, request: dict[str, Any], fn: JobFn, created_by: str | None,
               transaction: bool = True) -> Job:
        """Record a queued job and start it; `fn(conn, job_id, progress)` stores its output and returns a
        JSON-ready summary. With `transaction` False, `fn` gets an autocommit connection and commits its own work
        as it goes (a job of many independent transactions, like a dead-letter replay)."""
        job_id = uuid.uuid4()
        with self.requests_pool.connection() as conn:
            row = conn.execute(
                f"INSERT INTO jobs (job_id, kind, status, request, created_by) VALUES (%s, %s, 'queued', %s, %s)"
                f" RETURNING {_COLUMNS}", (job_id, kind, Jsonb(request), created_by)).fetchone()
        self.executor.submit(self._run, job_id, fn, transaction)
        return Job(*row)

    def _progress(self, job_id: uuid.UUID) -> Progress:
        def report(done: int, total: int) -> None:
            # its own short-lived connection: the job's transaction commits only at the end
            with self.pool.connection() as conn:
                conn.execute("UPDATE jobs SET progress_done = %s, progress_total = %s WHERE job_id = %s",
                             (done, total, job_id))

        return report

    def _run(self, job_id: uuid.UUID, fn: JobFn, transaction: bool = True) -> None:
        try:
            with self.pool.connection() as conn:
                conn.execute("UPDATE jobs SET status = 'running', started_at = now() WHERE job_id = %s", (job_id,))
                if not transaction:
                    summary = fn(conn, job_id, self._progress(job_id))
                with conn.transaction():
                    if transaction:
                        summary = fn(conn, job_id, self._progress(job_id))
                    conn.execute("UPDATE jobs SET status = 'done', finished_at = now(), summary = %s"
                                 " WHERE job_id = %s", (Jsonb(summary), job_id))
        except Exception as exc:  # noqa: BLE001 - a job's failure is recorded, never raised into the pool
            log.exception("job %s failed", job_id)
            with self.pool.connection() as conn:
                conn.execute("UPDATE jobs SET status = 'failed', finished_at = now(), error = %s WHERE job_id = %s",
                             (job_error(exc), job_id))

    def get(self, job_id: uuid.UUID) -> Job | None:
        """A job by id."""
        with self.requests_pool.connection() as conn:
            return read_job(conn, job_id)

    def list(self, *, kind: str | None = None, limit: int = 100, offset: int = 0,
             before: tuple[datetime, uuid.UUID] | None = None) -> tuple[list[Job], int]:
        """Jobs, newest first, and how many there are."""
        with self.requests_pool.connection() as conn:
            return list_jobs(conn, kind=kind, limit=limit, offset=offset, before=before)

    def shutdown(self) -> None:
        """Stop taking jobs; running ones finish."""
        self.executor.shutdown(wait=False, cancel_futures=True)
