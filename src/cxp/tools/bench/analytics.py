"""Benchmark: issue 15's analytics figures in one run, against its targets (`cxp bench analytics`).

1. every product-manager view and the pricing comparison, cold, at each of `--sizes` with the slope (as
   `cxp bench views`, whose databases `cxp_bench_views_<devices>x<days>` it uses: each fleet is loaded once);
2. fleet health (every device scored, the weekly periods rolled up to the fleet) from the rollups vs from raw
   events on the largest size's fleet: the ratio;
3. what keeping the precomputation current costs (as `cxp bench refresh`, its own fleet and database): one day's
   refresh for `--refresh-devices`, the gateway's ingest rate beside the refresh loop vs alone (`--no-refresh`: skip);
4. `TARGET` lines: each measured figure against the issue's target, met or not.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from cxp.tools.bench import refresh as bench_refresh
from cxp.tools.bench import views as bench_views

# The targets, stated for 10,000 devices × 90 days.
TARGET_DEVICES = 10_000
VIEW_S, REPORT_S = 1.0, 2.0
MAX_SLOPE = 1.0
MIN_RATIO = 50.0
REFRESH_DAY_S = 30.0
MIN_GATEWAY_RATIO = 0.8


def _time(label: str, fn: Callable[[], Any], out: Callable[[str], None]) -> tuple[float, Any]:
    """Run fn once, print and return its wall time with its result."""
    t0 = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - t0
    out(f"  {label}: {elapsed:.2f} s")
    return elapsed, result


def fleet_health(conn: Any, *, devices: int, days: int, end: date, repeat: int, out: Callable[[str], None]) -> float:
    """Time fleet health from the rollups and from raw events (best of `repeat` each); print them, return the ratio."""
    from cxp.analytics.query import AnalyticsQuery
    from cxp.analytics.service import get_health, refresh_kept_health

    weeks = days // 7
    rows = conn.execute(
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM device_state),"
        " (SELECT count(*) FROM rollup_hourly), (SELECT count(*) FROM rollup_daily)"
    ).fetchone()
    out(f"rows: events {rows[0]:,}, heartbeats {rows[1]:,}, rollup_hourly {rows[2]:,}, rollup_daily {rows[3]:,}")
    t0 = time.perf_counter()
    fresh, stale = refresh_kept_health(conn=conn)  # kept like the rollups before the rollup path reads them
    out(f"kept health rows: {fresh:,} fresh, {stale:,} stale, brought up to date in {time.perf_counter() - t0:.2f} s")
    out(f"fleet health, {weeks} weekly periods ending {end} (device scores → fleet):")
    best: dict[str, float] = {}
    for source in ("rollups", "raw"):
        runs = []
        for i in range(repeat):
            elapsed, rep = _time(
                f"{source:7s} run {i + 1}",
                lambda s=source: get_health(conn=conn, query=AnalyticsQuery(end=end), level="fleet", weeks=weeks,
                                            source=s),
                out,
            )
            runs.append(elapsed)
        best[source] = min(runs)
        last = rep.latest()[0]
        out(f"  {source:7s} → fleet score {last.score:.1f} ({last.band}) in week {last.period_start}")
    ratio = best["raw"] / best["rollups"]
    out(f"RESULT fleet health {devices:,} devices × {days} days: rollups {best['rollups']:.1f} s,"
        f" raw events {best['raw']:.1f} s, ratio {ratio:.1f}×")
    return ratio


def refresh_lines(result: dict) -> list[str]:
    """The figures of `refresh.run` as lines."""
    fleet, day, loop = result["fleet"], result["refresh_one_day"], result["refresh_loop"]
    alone, beside = result["gateway_alone"], result["gateway_beside_refresh"]
    return [
        f"loaded {result['loaded']['events']:,} events + {result['loaded']['heartbeats']:,} heartbeats"
        f" in {result['loaded']['seconds']} s",
        f"  refresh of one day: {day['device_days']:,} device-days in {day['seconds']:.2f} s"
        f" ({day['ms_per_device_day']} ms per device-day)",
        f"  gateway alone: {alone['events_per_s']:,} events/s ({alone['events']:,} events)",
        f"  gateway beside the refresh loop: {beside['events_per_s']:,} events/s ({beside['events']:,} events;"
        f" loop busy share {loop['busy_share']}, {loop['passes']} passes of {loop['device_days_per_pass']:,}"
        f" device-days, median catch-up {loop['catch_up_s_median']} s)",
        f"RESULT refresh {fleet['devices']:,} devices: one day {day['seconds']:.2f} s;"
        f" gateway beside the refresh loop / alone {result['ratio_beside_vs_alone']:.3f}",
    ]


@dataclass(frozen=True)
class Figures:
    """What one run measured (None: not measured)."""

    devices: int  # the largest fleet size
    days: int
    seconds: dict[str, float]  # view → best seconds at the largest size
    slopes: dict[str, float | None]  # view → slope over the sizes
    total_slope: float | None = None  # all views' summed time's slope
    ratio: float | None = None  # fleet health: raw events / rollups
    refresh: dict | None = None  # refresh.run's result


def _verdict(ok: bool) -> str:
    """The word a TARGET line ends with."""
    return "met" if ok else "NOT MET"


def _shown(x: float, digits: int) -> float:
    """x as printed: targets are judged on it, so no line reads "1.00 s — NOT MET"."""
    return round(x, digits)


def targets(fig: Figures) -> list[str]:
    """A `TARGET` line per issue-15 target: the measured figure and whether it meets the target."""
    lines = []
    if fig.devices != TARGET_DEVICES:
        lines.append(f"(the targets are for {TARGET_DEVICES:,} devices × 90 days; this run's largest fleet:"
                     f" {fig.devices:,} devices × {fig.days} days)")
    at = f"at {fig.devices:,} devices"
    if "report" in fig.seconds:
        s = fig.seconds["report"]
        lines.append(f"TARGET report view {at} ≤ {REPORT_S:g} s: {s:.2f} s — {_verdict(_shown(s, 2) <= REPORT_S)}")
    others = {k: v for k, v in fig.seconds.items() if k != "report"}
    if others:
        name = max(others, key=others.__getitem__)
        over = [k for k, v in others.items() if _shown(v, 2) > VIEW_S]
        lines.append(f"TARGET slowest other view {at} ≤ {VIEW_S:g} s: {name} {others[name]:.2f} s"
                     f" — {_verdict(not over)}" + (f" ({len(over)} over: {', '.join(over)})" if over else ""))
    slopes = {k: b for k, b in fig.slopes.items() if b is not None and not math.isnan(b)}
    if slopes:
        name = max(slopes, key=slopes.__getitem__)
        total = "" if fig.total_slope is None or math.isnan(fig.total_slope) else f", all views {fig.total_slope:.2f}"
        lines.append(f"TARGET slope (time ∝ devices^b) ≤ {MAX_SLOPE:g}: max {slopes[name]:.2f} ({name}){total}"
                     f" — {_verdict(_shown(slopes[name], 2) <= MAX_SLOPE)}")
    else:
        lines.append(f"TARGET slope (time ∝ devices^b) ≤ {MAX_SLOPE:g}: not measured (one fleet size)")
    if fig.ratio is not None:
        lines.append(f"TARGET fleet health raw events / rollups ≥ {MIN_RATIO:g}×: {fig.ratio:.1f}×"
                     f" — {_verdict(_shown(fig.ratio, 1) >= MIN_RATIO)}")
    if fig.refresh is None:
        lines.append(f"TARGET one day's refresh ≤ {REFRESH_DAY_S:g} s: not measured (--no-refresh)")
        lines.append(f"TARGET gateway beside the refresh loop / alone ≥ {MIN_GATEWAY_RATIO:g}: not measured"
                     " (--no-refresh)")
    else:
        day, n = fig.refresh["refresh_one_day"], fig.refresh["fleet"]["devices"]
        ok = _shown(day["seconds"], 2) <= REFRESH_DAY_S
        lines.append(f"TARGET one day's refresh ({n:,} devices, {day['device_days']:,} device-days)"
                     f" ≤ {REFRESH_DAY_S:g} s: {day['seconds']:.2f} s — {_verdict(ok)}")
        r = fig.refresh["ratio_beside_vs_alone"]
        lines.append(f"TARGET gateway beside the refresh loop / alone ≥ {MIN_GATEWAY_RATIO:g}: {r:.3f}"
                     f" — {_verdict(_shown(r, 3) >= MIN_GATEWAY_RATIO)}")
    return lines


def main(argv: list[str] | None = None) -> None:
    """Time the views per size, fleet health raw vs rollups, the refresh cost; print them and the targets."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # the views' options; --repeat also counts fleet health's runs per source (best of two, as this command had)
    bench_views.add_arguments(parser, sizes=None, repeat=2,
                              repeat_help="timed runs per view and size and per fleet-health source (the best is kept)")
    parser.add_argument("--devices", type=int, default=None, help="one fleet size: the same as --sizes DEVICES")
    parser.add_argument("--no-refresh", action="store_true", help="skip the refresh cost (it loads its own fleet)")
    parser.add_argument("--refresh-devices", type=int, default=None, help="the refresh's fleet (default: the largest"
                                                                          " size)")
    parser.add_argument("--refresh-days", type=int, default=4, help="the refresh's simulated days ending yesterday")
    parser.add_argument("--busy-share", type=float, default=None,
                        help="the refresh loop's busy share (default: the gateway's setting)")
    args = parser.parse_args(argv)
    if args.devices is not None and args.sizes is not None:
        parser.error("--devices is --sizes with one size: give one of them")
    sizes = ([args.devices] if args.devices is not None
             else bench_views.parse_sizes(args.sizes if args.sizes is not None else "2500,5000,10000"))
    chosen = bench_views.pick(args.only)

    def out(line: str) -> None:
        print(line, flush=True)

    out(f"== every view cold, {', '.join(f'{s:,}' for s in sizes)} devices × {args.days} days")
    times = bench_views.time_views(sizes=sizes, days=args.days, seed=args.seed, workers=args.workers,
                                   reload=args.reload, via_import=args.via_import, repeat=args.repeat, chosen=chosen,
                                   out=out, spare=not args.one_connection)
    for line in bench_views.table(sizes, times):
        out(line)

    largest = sizes[-1]
    out(f"\n== fleet health from the rollups vs raw events, {largest:,} devices × {args.days} days")
    # the largest size's database: the same generator and parameters as this command's own fleet had
    with bench_views.fleet_db(devices=largest, days=args.days, seed=args.seed, workers=args.workers, reload=False,
                              via_import=args.via_import, out=out) as (conn, end):
        ratio = fleet_health(conn, devices=largest, days=args.days, end=end, repeat=args.repeat, out=out)

    refreshed = None
    if not args.no_refresh:
        n = args.refresh_devices or largest
        out(f"\n== keeping them current: one day's refresh and the gateway beside it, {n:,} devices ×"
            f" {args.refresh_days} days (database {bench_refresh.BENCH_DB})")
        refreshed = bench_refresh.run(devices=n, days=args.refresh_days, seed=args.seed, workers=args.workers,
                                      busy_share=args.busy_share)
        for line in refresh_lines(refreshed):
            out(line)

    out("\n== issue 15's targets")
    fig = Figures(devices=largest, days=args.days, seconds={k: ts[-1] for k, ts in times.items()},
                  slopes={k: bench_views.slope(sizes, ts) for k, ts in times.items()},
                  total_slope=bench_views.slope(sizes, bench_views.all_views(times)),
                  ratio=ratio, refresh=refreshed)
    for line in targets(fig):
        out(line)


if __name__ == "__main__":
    main()
