"""Benchmark: every product-manager view and the pricing comparison, cold, at several fleet sizes, with the slope
(`cxp bench views`, issue 15).

Each size gets a database of its own (`cxp_bench_views_<devices>x<days>`, loaded once by the simulator's loader or
`--via-import`). A view is its service function called as the API calls it on a cache miss (the API's result
cache is not involved): best of `--repeat` runs. The slope is the exponent b of time ≈ a · devices^b fitted over
the sizes (1: linear; the issue's target is ≤ 1), printed with each view's time at the largest size.
`cxp bench analytics` runs the same timings (and databases) beside issue 15's other figures.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import date, timedelta
from typing import Any

import numpy as np

from cxp.tools.fleet import bench_fleet_params, ensure_fleet

PRODUCT = "thermo-x1"


def views() -> dict[str, Callable[[Any, Any], Any]]:
    """(view name → call(conn, end)) of every `/v1/experience/*` view the dashboard opens, and the comparison."""
    from cxp.analytics import service as a
    from cxp.analytics.query import AnalyticsQuery as Q
    from cxp.pricing import service as p

    return {
        "report": lambda c, end: a.get_fleet_report(conn=c, query=Q(end=end), weeks=4),
        "health product": lambda c, end: a.get_health(conn=c, query=Q(end=end), level="product", weeks=12),
        # as /v1/experience/health?level=device&latest=true&limit=100 answers: the first page of latest scores
        "health device": lambda c, end: a.get_health(conn=c, query=Q(product=PRODUCT, end=end), level="device",
                                                     weeks=12).latest()[:100],
        "touchpoints": lambda c, end: a.get_touchpoints(conn=c, query=Q(end=end)),
        "voice": lambda c, end: a.get_voice(conn=c, query=Q(end=end)),
        "churn risk": lambda c, end: a.list_churn_risk(conn=c, query=Q(product=PRODUCT, end=end), limit=50),
        "journey": lambda c, end: a.get_journey(conn=c, query=Q(end=end)),
        "disruptions": lambda c, end: a.get_disruptions(conn=c, query=Q(end=end)),
        "personas": lambda c, end: a.get_segments(conn=c, query=Q(product=PRODUCT, end=end)),
        "engagement rate": lambda c, end: a.get_engagement_rate(conn=c, query=Q(end=end)),
        "capability ladder": lambda c, end: a.get_capability_ladder(conn=c, query=Q(end=end)),
        "journey map": lambda c, end: a.get_journey_map(conn=c, query=Q(end=end)),
        "referrals": lambda c, end: a.get_referrals(conn=c, query=Q(end=end)),
        "pricing comparison": lambda c, end: p.get_model_comparison(conn=c, product=PRODUCT),
    }


def slope(sizes: list[int], seconds: list[float]) -> float | None:
    """The exponent b of seconds ≈ a · sizes^b (least squares on logs); None with fewer than two sizes."""
    pairs = [(s, t) for s, t in zip(sizes, seconds, strict=True) if t > 0]
    if len(pairs) < 2:
        return None
    x, y = np.log([s for s, _ in pairs]), np.log([t for _, t in pairs])
    return float(np.polyfit(x, y, 1)[0])


def bench_db(devices: int, days: int) -> str:
    """The database of one fleet size (shared with `cxp bench analytics`)."""
    return f"cxp_bench_views_{devices}x{days}"


def add_arguments(parser: argparse.ArgumentParser, *, sizes: str | None = "2500,5000,10000", repeat: int = 1,
                  repeat_help: str = "timed runs per view and size (the best is kept)") -> None:
    """The fleet and timing options `cxp bench views` and `cxp bench analytics` share."""
    parser.add_argument("--sizes", default=sizes, help="fleet sizes in devices, comma-separated (default 2500,5000,"
                                                       "10000)")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workers", type=int, default=2, help="simulator processes feeding the loader")
    parser.add_argument("--via-import", action="store_true", help="load the fleets through `cxp import`")
    parser.add_argument("--reload", action="store_true", help="reload even if a fleet is already stored")
    parser.add_argument("--repeat", type=int, default=repeat, help=f"{repeat_help}; default {repeat}")
    parser.add_argument("--only", default="", help="comma-separated view names (default: all)")
    parser.add_argument("--one-connection", action="store_true",
                        help="lend the views no second connection (the API lends one when its pool has it free)")


def parse_sizes(text: str) -> list[int]:
    """Comma-separated fleet sizes, ascending and distinct."""
    return sorted({int(s) for s in text.split(",") if s.strip()})


def pick(only: str) -> dict[str, Callable[[Any, Any], Any]]:
    """The views named in `only` (comma-separated; empty: all), in the table's order."""
    chosen = views()
    if only:
        wanted = [v.strip() for v in only.split(",")]
        unknown = [v for v in wanted if v not in chosen]
        if unknown:
            raise SystemExit(f"unknown views {unknown}; known: {list(chosen)}")
        chosen = {k: v for k, v in chosen.items() if k in wanted}
    return chosen


@contextmanager
def fleet_db(*, devices: int, days: int, seed: int, workers: int, reload: bool, via_import: bool,
             out: Callable[[str], None], spare: bool = True) -> Iterator[tuple[Any, date]]:
    """A connection to the size's database with its fleet loaded (once), and the fleet's last day; `spare`: a
    second connection lent to the views as the API lends one (`lending_connections`)."""
    from cxp.analytics.queries import lending_connections
    from cxp.core.config import Settings
    from cxp.stack import start_stack
    from cxp.store.db import connect, create_pool, idle_connection
    from cxp.store.migrate import apply_migrations

    env = Settings()  # ports from the environment (CXP_DB__PORT…); only the database name is the bench's
    settings = env.model_copy(update={"db": env.db.model_copy(update={"name": bench_db(devices, days)})})
    status = start_stack(settings)
    if not status.db_up:
        raise SystemExit(f"database not reachable: {status}")
    params = bench_fleet_params(devices=devices, days=days, seed=seed)
    with connect(settings.db) as conn, ExitStack() as lent:
        migrated = bool(apply_migrations(conn))
        ensure_fleet(conn, params=params, workers=workers, reload=reload, out=out, migrated=migrated,
                     settings=settings if via_import else None)
        if spare:
            pool = lent.enter_context(create_pool(settings.db.model_copy(update={"pool_min": 1, "pool_max": 1}),
                                                  name="cxp-bench-spare"))
            lent.enter_context(lending_connections(lambda: idle_connection(pool)))
        yield conn, (params["start"] + timedelta(days=days - 1)).date()


def time_views(*, sizes: list[int], days: int, seed: int, workers: int, reload: bool, via_import: bool, repeat: int,
               chosen: dict[str, Callable[[Any, Any], Any]], out: Callable[[str], None],
               spare: bool = True) -> dict[str, list[float]]:
    """Load (once) a fleet per size and time every chosen view cold at each; return view → best seconds per size."""
    from cxp.analytics.service import refresh_kept_health

    times: dict[str, list[float]] = {name: [] for name in chosen}
    for devices in sizes:
        with fleet_db(devices=devices, days=days, seed=seed, workers=workers, reload=reload, via_import=via_import,
                      out=out, spare=spare) as (conn, end):
            events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            t0 = time.perf_counter()
            fresh, stale = refresh_kept_health(conn=conn)  # like the rollups: kept before the views read them
            out(f"kept health rows: {fresh:,} fresh, {stale:,} stale, brought up to date in"
                f" {time.perf_counter() - t0:.2f} s")
            out(f"{devices:,} devices × {days} days ({events:,} events), cold views (best of {repeat}):")
            for name, call in chosen.items():
                runs = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    call(conn, end)
                    runs.append(time.perf_counter() - t0)
                times[name].append(min(runs))
                out(f"  {name:20s} {min(runs):8.2f} s")
    return times


def all_views(times: dict[str, list[float]]) -> list[float]:
    """All views' seconds summed per size."""
    return [sum(column) for column in zip(*times.values(), strict=True)]


def table(sizes: list[int], times: dict[str, list[float]]) -> list[str]:
    """The table of best seconds per view and size with each view's slope, all views' row, and the RESULT line."""
    def fmt(b: float | None) -> str:
        return "–" if b is None or math.isnan(b) else f"{b:.2f}"

    lines = [f"\n{'view':20s}{''.join(f'{s:>10,}' for s in sizes)}   slope (time ∝ devices^b)"]
    for name, ts in times.items():
        lines.append(f"{name:20s}{''.join(f'{t:10.2f}' for t in ts)}   {fmt(slope(sizes, ts))}")
    total = all_views(times)
    lines.append(f"{'all views':20s}{''.join(f'{t:10.2f}' for t in total)}   {fmt(slope(sizes, total))}")
    worst = max(times, key=lambda k: times[k][-1])
    lines.append(f"RESULT slowest view at {sizes[-1]:,} devices: {worst} {times[worst][-1]:.2f} s;"
                 f" all {len(times)} views {total[-1]:.1f} s")
    return lines


def main(argv: list[str] | None = None) -> None:
    """Load (once) a fleet per size; time every view cold at each size; print the table and the slopes."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    sizes = parse_sizes(args.sizes)

    def out(line: str) -> None:
        print(line, flush=True)

    times = time_views(sizes=sizes, days=args.days, seed=args.seed, workers=args.workers, reload=args.reload,
                       via_import=args.via_import, repeat=args.repeat, chosen=pick(args.only), out=out,
                       spare=not args.one_connection)
    for line in table(sizes, times):
        out(line)


if __name__ == "__main__":
    main()
