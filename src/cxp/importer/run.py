"""Import one history file exactly once: the gateway's contract validation, dedupe on (device, seq) and dead letters,
a chunk of ~`chunk_events` events per transaction together with the file's checkpoint.

A file is known by its SHA-256: the checkpoint (`import_files`) says how far it was committed, so an import cut off
at any point resumes after its last committed chunk (and whatever a chunk re-sends is a duplicate by (device, seq)
anyway). A file imported to the end is skipped the next time unless `force`, which reads it again and stores only
what is not stored yet. Afterwards the dirty rollup buckets the import marked are refreshed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from cxp.core.config import Settings
from cxp.importer.chunks import Chunk, prepared_chunks
from cxp.importer.errors import ImportBusy, ImportFileError
from cxp.importer.readers import Mark, detect_format
from cxp.store.db import connect
from cxp.store.errors import mapped_errors
from cxp.store.ingest import TimeBounds, write_batch_isolating
from cxp.store.registry import DeviceCache
from cxp.store.rollups import refresh_all_pending

# progress(done, total): bytes (JSON lines, CSV) or rows (Parquet) committed so far
Progress = Callable[[int, int], None]


@dataclass
class ImportResult:
    """What one import of one file did (counts of this run; `resumed_at_line` > 0 when it continued one)."""

    name: str
    format: str
    sha256: str
    size_bytes: int
    skipped: bool = False
    resumed_at_line: int = 0
    last_line: int = 0
    messages: int = 0
    events_in: int = 0
    events_stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0  # reading, validating and storing (the rollup refresh after is `rollup_seconds`)
    rollup_device_days: int = 0
    rollup_seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        """Events (stored or duplicate) per second of this run."""
        return self.events_in / self.seconds if self.seconds > 0 else 0.0


def file_sha256(path: Path) -> str:
    """The file's identity for its checkpoint."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def total_units(path: Path, fmt: str) -> int:
    """What progress counts to: the file's bytes, or its rows for Parquet."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return path.stat().st_size


class _Split(Exception):
    """Packed rows the database refused: retry them one row per message, so only the bad rows are dead-lettered."""

    def __init__(self, indexes: list[int]) -> None:
        super().__init__(indexes)
        self.indexes = indexes


_CLAIM = """
INSERT INTO import_files AS f (file_sha256, name, format, size_bytes) VALUES (%(sha)s, %(name)s, %(fmt)s, %(size)s)
ON CONFLICT (file_sha256) DO UPDATE SET name = excluded.name, updated_at = now()
RETURNING f.status, f.position, f.line
"""

_ADVANCE = """
UPDATE import_files SET position = %(position)s, line = %(line)s, events_in = events_in + %(events_in)s,
       events_stored = events_stored + %(stored)s, duplicates = duplicates + %(dups)s,
       dead_lettered = dead_lettered + %(dead)s, updated_at = now()
WHERE file_sha256 = %(sha)s AND position = %(expected)s
"""


def import_file(
    conn: psycopg.Connection,
    *,
    settings: Settings,
    path: Path,
    name: str | None = None,
    fmt: str | None = None,
    force: bool = False,
    chunk_events: int = 5000,
    refresh: bool = True,
    progress: Progress | None = None,
    in_process: bool | None = None,
) -> ImportResult:
    """Import one file (resuming its checkpoint); `conn` must be in autocommit mode (each chunk commits)."""
    name = name or path.name
    fmt = detect_format(Path(name), fmt)
    try:
        sha, size = file_sha256(path), path.stat().st_size
    except OSError as exc:
        raise ImportFileError(f"{name}: {exc.strerror or exc}") from None
    result = ImportResult(name, fmt, sha, size)
    started = time.perf_counter()
    with mapped_errors():
        if not conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 22))", (sha,)).fetchone()[0]:
            raise ImportBusy(f"{name} is being imported by another process")
        try:
            _run(
                conn,
                settings=settings,
                path=path,
                fmt=fmt,
                force=force,
                chunk_events=chunk_events,
                progress=progress,
                result=result,
                in_process=in_process,
            )
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 22))", (sha,))
        result.seconds = time.perf_counter() - started
        if refresh and not result.skipped:
            result.rollup_device_days = refresh_all_pending(conn).device_days
            result.rollup_seconds = time.perf_counter() - started - result.seconds
    return result


def _run(
    conn: psycopg.Connection,
    *,
    settings: Settings,
    path: Path,
    fmt: str,
    force: bool,
    chunk_events: int,
    progress: Progress | None,
    result: ImportResult,
    in_process: bool | None,
) -> None:
    status, position, line = conn.execute(
        _CLAIM, {"sha": result.sha256, "name": result.name, "fmt": fmt, "size": result.size_bytes}
    ).fetchone()
    if status == "done" and not force:
        result.skipped, result.last_line = True, line
        return
    if status == "done":  # forced: read it all again; what is stored already is a duplicate
        conn.execute(
            "UPDATE import_files SET status = 'running', position = 0, line = 0, finished_at = NULL,"
            " updated_at = now() WHERE file_sha256 = %s",
            (result.sha256,),
        )
        position = line = 0
    result.resumed_at_line = line
    total = total_units(path, fmt)
    bounds = TimeBounds(
        max_future_skew_s=float(settings.gateway.max_future_skew_s),
        max_age_s=float(settings.retention_days * 86400) if settings.retention_days else None,
    )
    with connect(settings.db) as lookups:
        devices = DeviceCache()  # for re-validating the rows of a packed message the database refused
        devices.load(lookups)
        for chunk, mark in prepared_chunks(settings=settings, devices=devices.lookup, path=path, fmt=fmt,
                                           name=result.name, position=position, line=line,
                                           chunk_events=chunk_events, in_process=in_process):
            _commit(conn, chunk=chunk, mark=mark, expected=position, bounds=bounds, settings=settings, result=result)
            position = mark.position
            result.last_line = mark.line
            if progress is not None:
                progress(position, total)
    conn.execute(
        "UPDATE import_files SET status = 'done', finished_at = now(), updated_at = now() WHERE file_sha256 = %s",
        (result.sha256,),
    )


def _commit(
    conn: psycopg.Connection,
    *,
    chunk: Chunk,
    mark: Mark,
    expected: int,
    bounds: TimeBounds,
    settings: Settings,
    result: ImportResult,
) -> None:
    """One chunk's rows, dead letters and checkpoint in one transaction."""
    with conn.transaction():
        # Not flushed to disk at each chunk's commit: a crash loses the last chunks together with their checkpoint
        # (one transaction), so the import resumes before them; the final commit (status done) flushes them all.
        conn.execute("SET LOCAL synchronous_commit = off")
        while True:
            try:
                with conn.transaction():
                    written = write_batch_isolating(
                        conn,
                        messages=chunk.messages,
                        dead_letters=chunk.letters,
                        bounds=bounds,
                        payload_cap=settings.gateway.dead_letter_payload_cap,
                    )
                    packed = [i for i, _, _ in written.rejected if chunk.packed[i] is not None]
                    if packed:
                        raise _Split(packed)
            except _Split as split:
                chunk.split(split.indexes)
                continue
            break
        stored = written.events_stored + written.states_stored
        moved = conn.execute(
            _ADVANCE,
            {
                "sha": result.sha256,
                "position": mark.position,
                "line": mark.line,
                "expected": expected,
                "events_in": written.events_in,
                "stored": stored,
                "dups": written.duplicates,
                "dead": written.dead_lettered,
            },
        ).rowcount
        if moved != 1:
            raise ImportBusy(f"{result.name}: its checkpoint moved under this import")
    result.messages += len(chunk.messages)
    result.events_in += written.events_in
    result.events_stored += stored
    result.duplicates += written.duplicates
    result.dead_lettered += written.dead_lettered
