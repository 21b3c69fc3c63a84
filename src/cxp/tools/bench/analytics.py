"""Benchmark: fleet health for 10,000 devices × 90 days from the rollups vs from raw events (`python -m cxp.tools.bench.analytics`).

Also home of `load_fleet`, the broker-free bulk loader used by the benchmark and the analytics tests: it
registers a simulated fleet, writes the simulator's payloads through `store.ingest.write_batch` (the
gateway's own write path, without MQTT) and refreshes the rollups. This module is a tool, like
`loadtests/`: it imports the simulator, which the analytics library itself never does.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

BENCH_DB = "cxp_bench_analytics"
_DEVICES_PER_TASK = 25
# Bulk loads pack a device's events into few messages: fewer staging rows, same stored events.
_BULK_UPLOAD_INTERVAL_S = 6 * 3600
_BULK_EVENTS_PER_MESSAGE = 1000


@dataclass(frozen=True)
class LoadReport:
    """What `load_fleet` stored and how long each step took."""

    devices: int
    messages: int
    events_stored: int
    states_stored: int
    dead_lettered: int
    load_s: float
    rollup_s: float


def _plan_chunk(args: tuple[dict[str, Any], int, int]) -> list[tuple[str, bytes, int]]:
    """Worker: rebuild the fleet and plan the messages of devices [lo, hi) as (device_id, payload, due_ms)."""
    from cxp.device_sim import build_fleet, plan_messages

    params, lo, hi = args
    fleet = build_fleet(**params)
    return [
        (m.device_id, m.payload, m.due_ms)
        for m in plan_messages(
            fleet=fleet,
            devices=fleet.devices[lo:hi],
            upload_interval_s=_BULK_UPLOAD_INTERVAL_S,
            max_events_per_message=_BULK_EVENTS_PER_MESSAGE,
        )
    ]


def load_fleet(
    conn: psycopg.Connection,
    *,
    fleet_params: dict[str, Any],
    workers: int = 2,
    batch_messages: int = 1000,
    progress: Callable[[str], None] | None = None,
) -> LoadReport:
    """Register `build_fleet(**fleet_params)`, write all its telemetry with write_batch, refresh the rollups."""
    from cxp.device_sim import build_fleet
    from cxp.store.ingest import IngestMessage, write_batch
    from cxp.store.rollups import refresh_all_pending
    from cxp.tools.fleet import register_fleet

    fleet = build_fleet(**fleet_params)
    register_fleet(conn, fleet=fleet)
    ids = [d.device_id for d in fleet.devices]
    keys = {
        device_id: (key, activated.timestamp())
        for device_id, key, activated in conn.execute(
            "SELECT device_id, device_key, activated_at FROM devices WHERE device_id = ANY(%s)", (ids,)
        ).fetchall()
    }
    n = len(fleet.devices)
    tasks = [(fleet_params, lo, min(lo + _DEVICES_PER_TASK, n)) for lo in range(0, n, _DEVICES_PER_TASK)]
    t0 = time.perf_counter()
    totals = [0, 0, 0, 0]
    batch: list[IngestMessage] = []
    done_devices = 0

    def flush() -> None:
        result = write_batch(conn, messages=batch)
        totals[0] += len(batch)
        totals[1] += result.events_stored
        totals[2] += result.states_stored
        totals[3] += result.dead_lettered
        batch.clear()

    # Generation runs in worker processes while this process writes (the database does the rest).
    chunks: Iterator[list[tuple[str, bytes, int]]]
    if workers > 0:
        pool = mp.get_context("spawn").Pool(workers)
        chunks = pool.imap(_plan_chunk, tasks)
    else:
        pool = None
        chunks = map(_plan_chunk, tasks)
    try:
        for k, chunk in enumerate(chunks):
            for device_id, payload, due_ms in chunk:
                key, activated = keys[device_id]
                batch.append(IngestMessage("bulk", device_id, key, payload, due_ms / 1000.0 + 1.0, activated))
                if len(batch) >= batch_messages:
                    flush()
            done_devices = tasks[k][2]
            if progress and (k % 40 == 39 or done_devices == n):
                elapsed = time.perf_counter() - t0
                progress(f"loaded {done_devices:,}/{n:,} devices, {totals[1] + totals[2]:,} rows in {elapsed:.0f}s")
        if batch:
            flush()
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    t1 = time.perf_counter()
    if progress:
        progress("refreshing rollups")
    refresh_all_pending(conn)
    t2 = time.perf_counter()
    return LoadReport(n, totals[0], totals[1], totals[2], totals[3], t1 - t0, t2 - t1)


def _loaded(conn: psycopg.Connection, params: dict[str, Any]) -> bool:
    """Whether the database already holds this fleet fully rolled up (same device count and day span)."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM devices), (SELECT count(*) FROM rollup_dirty),"
        " (SELECT min(day) FROM rollup_daily), (SELECT max(day) FROM rollup_daily)"
    ).fetchone()
    start: date = params["start"].date()
    last = start + timedelta(days=params["days"] - 1)
    return row is not None and row[0] == params["devices"] and row[1] == 0 and row[2] == start and row[3] == last


def bench_fleet_params(*, devices: int, days: int, seed: int) -> dict[str, Any]:
    """The benchmark fleet: starts on a Monday so weekly periods line up with the simulated days."""
    return {"seed": seed, "devices": devices, "start": datetime(2025, 1, 6, tzinfo=UTC), "days": days,
            "error_prone": ("brew-c3", "brew")}


def ensure_fleet(
    conn: psycopg.Connection, *, params: dict[str, Any], workers: int, reload: bool, out: Callable[[str], None]
) -> None:
    """Load the fleet into this (benchmark) database unless it already holds it fully rolled up."""
    from cxp.store.admin import truncate_data

    if not reload and _loaded(conn, params):
        out(f"the database already holds the fleet ({params['devices']:,} devices × {params['days']} days);"
            " --reload to rebuild")
        return
    out(f"loading {params['devices']:,} devices × {params['days']} days (write_batch, no MQTT)…")
    truncate_data(conn)
    report = load_fleet(conn, fleet_params=params, workers=workers, progress=out)
    out(f"loaded {report.events_stored:,} events + {report.states_stored:,} heartbeats in {report.load_s:.0f} s,"
        f" rollups in {report.rollup_s:.0f} s")
    conn.execute("ANALYZE")


def _time(label: str, fn: Callable[[], Any], out: Callable[[str], None]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - t0
    out(f"  {label}: {elapsed:.2f} s")
    return elapsed, result


def main(argv: list[str] | None = None) -> None:
    """Load (once) a simulated fleet into its own database, then time fleet health from the rollups and from raw events."""
    from cxp.analytics.query import AnalyticsQuery
    from cxp.analytics.service import get_health
    from cxp.core.config import DbSettings, Settings
    from cxp.stack import start_stack
    from cxp.store.db import connect
    from cxp.store.migrate import apply_migrations

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workers", type=int, default=2, help="simulator processes feeding the writer")
    parser.add_argument("--reload", action="store_true", help="reload even if the fleet is already stored")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per source (the best is reported)")
    args = parser.parse_args(argv)

    def out(line: str) -> None:
        print(line, flush=True)

    settings = Settings(db=DbSettings(name=BENCH_DB))
    status = start_stack(settings)
    if not status.db_up:
        raise SystemExit(f"database not reachable: {status}")
    params = bench_fleet_params(devices=args.devices, days=args.days, seed=args.seed)
    end = (params["start"] + timedelta(days=args.days - 1)).date()
    weeks = args.days // 7
    with connect(settings.db) as conn:
        apply_migrations(conn)
        ensure_fleet(conn, params=params, workers=args.workers, reload=args.reload, out=out)
        sizes = conn.execute(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM device_state),"
            " (SELECT count(*) FROM rollup_hourly), (SELECT count(*) FROM rollup_daily)"
        ).fetchone()
        out(
            f"rows: events {sizes[0]:,}, heartbeats {sizes[1]:,}, rollup_hourly {sizes[2]:,}, rollup_daily {sizes[3]:,}"
        )
        out(f"fleet health, {weeks} weekly periods ending {end} (device scores → fleet):")
        best: dict[str, float] = {}
        for source in ("rollups", "raw"):
            runs = []
            for i in range(args.repeat):
                elapsed, rep = _time(
                    f"{source:7s} run {i + 1}",
                    lambda s=source: get_health(
                        conn=conn, query=AnalyticsQuery(end=end), level="fleet", weeks=weeks, source=s
                    ),
                    out,
                )
                runs.append(elapsed)
            best[source] = min(runs)
            last = rep.latest()[0]
            out(f"  {source:7s} → fleet score {last.score:.1f} ({last.band}) in week {last.period_start}")
        out(
            f"RESULT fleet health {args.devices:,} devices × {args.days} days: rollups {best['rollups']:.1f} s,"
            f" raw events {best['raw']:.1f} s, ratio {best['raw'] / best['rollups']:.1f}×"
        )


if __name__ == "__main__":
    main()
