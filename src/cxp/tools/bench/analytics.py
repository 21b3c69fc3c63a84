"""Benchmark: fleet health for 10,000 devices × 90 days from the rollups vs from raw events (`cxp bench analytics`)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from cxp.tools.fleet import bench_fleet_params, ensure_fleet

BENCH_DB = "cxp_bench_analytics"


def _time(label: str, fn: Callable[[], Any], out: Callable[[str], None]) -> tuple[float, Any]:
    """Run fn once, print and return its wall time with its result."""
    t0 = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - t0
    out(f"  {label}: {elapsed:.2f} s")
    return elapsed, result


def main(argv: list[str] | None = None) -> None:
    """Load (once) a simulated fleet into its own database; time fleet health from the rollups and from raw events."""
    from cxp.analytics.query import AnalyticsQuery
    from cxp.analytics.service import get_health, refresh_kept_health
    from cxp.core.config import Settings
    from cxp.stack import start_stack
    from cxp.store.db import connect
    from cxp.store.migrate import apply_migrations

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workers", type=int, default=2, help="simulator processes feeding the writer")
    parser.add_argument("--reload", action="store_true", help="reload even if the fleet is already stored")
    parser.add_argument("--via-import", action="store_true", help="load the fleet through `cxp import` (JSON lines)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per source (the best is reported)")
    args = parser.parse_args(argv)

    def out(line: str) -> None:
        print(line, flush=True)

    env = Settings()  # ports from the environment (CXP_DB__PORT…); only the database name is the bench's
    settings = env.model_copy(update={"db": env.db.model_copy(update={"name": BENCH_DB})})
    status = start_stack(settings)
    if not status.db_up:
        raise SystemExit(f"database not reachable: {status}")
    params = bench_fleet_params(devices=args.devices, days=args.days, seed=args.seed)
    end = (params["start"] + timedelta(days=args.days - 1)).date()
    weeks = args.days // 7
    with connect(settings.db) as conn:
        migrated = bool(apply_migrations(conn))
        ensure_fleet(conn, params=params, workers=args.workers, reload=args.reload, out=out, migrated=migrated,
                     settings=settings if args.via_import else None)
        sizes = conn.execute(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM device_state),"
            " (SELECT count(*) FROM rollup_hourly), (SELECT count(*) FROM rollup_daily)"
        ).fetchone()
        out(
            f"rows: events {sizes[0]:,}, heartbeats {sizes[1]:,}, rollup_hourly {sizes[2]:,}, rollup_daily {sizes[3]:,}"
        )
        t0 = time.perf_counter()
        fresh, stale = refresh_kept_health(conn=conn)  # kept like the rollups before the rollup path reads them
        out(f"kept health rows: {fresh:,} fresh, {stale:,} stale, brought up to date in"
            f" {time.perf_counter() - t0:.2f} s")
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
