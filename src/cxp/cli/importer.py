"""`cxp import FILE…`: history files (JSON lines, CSV, Parquet) through the gateway's validation, dedupe and dead
letters, resumable; the work is in `cxp.importer`."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from cxp.cli.common import console, fail, load_settings


def import_history(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="History files: .jsonl (one contract message per line with its"
            " device_id), .csv or .parquet (one event per row, docs/telemetry.md)."
        ),
    ],
    fmt: Annotated[
        str | None, typer.Option("--format", help="jsonl, csv or parquet (default: from the suffix).")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Read a file imported before again (stores only what is missing).")
    ] = False,
    chunk_events: Annotated[
        int, typer.Option(min=1, max=100_000, help="Events per transaction (and checkpoint).")
    ] = 5000,
    rollups: Annotated[bool, typer.Option(help="Refresh the rollups the import made dirty afterwards.")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Import telemetry history exactly once; an interrupted import resumes where it stopped (prints JSON per file)."""
    from cxp.importer import HistoryImportError, detect_format, import_file
    from cxp.store.db import connect
    from cxp.store.errors import StoreError

    settings = load_settings()
    failed = False
    try:
        with connect(settings.db) as conn:
            for path in files:
                try:
                    kind = detect_format(path, fmt)
                    bar = Progress(
                        TextColumn("{task.description}"),
                        BarColumn(),
                        DownloadColumn() if kind != "parquet" else TextColumn("{task.completed:,} rows"),
                        TimeRemainingColumn(),
                        console=console,
                        disable=not progress,
                        transient=True,
                    )
                    with bar:
                        task = bar.add_task(path.name, total=None)
                        result = import_file(
                            conn,
                            settings=settings,
                            path=path,
                            fmt=kind,
                            force=force,
                            chunk_events=chunk_events,
                            refresh=rollups,
                            progress=lambda done, total, bar=bar, task=task: bar.update(
                                task, completed=done, total=total
                            ),
                        )
                except HistoryImportError as exc:
                    console.print(f"[red]error:[/red] {escape(str(exc))}")
                    failed = True
                    continue
                print(json.dumps({**asdict(result), "events_per_s": round(result.events_per_s)}), flush=True)
    except StoreError as exc:
        fail(str(exc))
    if failed:
        raise typer.Exit(1)
