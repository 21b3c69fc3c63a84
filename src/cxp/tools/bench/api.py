"""API load benchmark: Locust (headless, bounded time) on the API over a 10,000-device × 90-day fleet.

`cxp bench api` — loads the fleet once (into the database `cxp bench views` / `analytics` use for that size, so a
fleet either of them loaded is reused: `cxp_bench_views_<devices>x<days>`), starts
the API on it in the background, times the first (uncached) answer of every view the load opens, then
runs loadtests/locustfile_api.py once per phase and prints requests/s and p50/p95/p99 per endpoint: `cold`
with the result cache off (every request computes its view), `warm` with it on (views served from the cache
while the data is unchanged; backtests computed on every call).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from cxp.core.config import PROJECT_ROOT, Settings
from cxp.stack import start_stack
from cxp.stack.api_process import api_pid, start_api, stop_api
from cxp.store.apikeys import create_key
from cxp.store.db import connect
from cxp.store.migrate import apply_migrations
from cxp.tools.bench.api_views import PRICING_VIEWS, PRODUCT_VIEWS
from cxp.tools.bench.process import PeakRss
from cxp.tools.bench.views import bench_db
from cxp.tools.fleet import bench_fleet_params, ensure_fleet

LOCUSTFILE = PROJECT_ROOT / "loadtests" / "locustfile_api.py"


def _timed_get(url: str, token: str) -> tuple[float, int]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=900) as response:
        response.read()
        return time.perf_counter() - t0, response.status


def _print_stats(path: Path, phase: str) -> None:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    print(f"{phase}: {'endpoint':<38}{'requests':>9}{'fail':>6}{'req/s':>8}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}")
    for r in rows:
        name = r["Name"] if r["Name"] != "Aggregated" else "ALL"
        print(f"{name[:43]:<44}{int(r['Request Count']):>9}{int(r['Failure Count']):>6}"
              f"{float(r['Requests/s']):>8.1f}{r['50%']:>8}{r['95%']:>8}{r['99%']:>8}")
    failures = path.with_name(path.name.replace("_stats.csv", "_failures.csv"))
    if failures.exists():
        with open(failures, newline="") as handle:
            for r in csv.DictReader(handle):
                print(f"  failed {r['Occurrences']}× {r['Method']} {r['Name']}: {r['Error'][:160]}")
    total = next(r for r in rows if r["Name"] == "Aggregated")
    print(f"RESULT API {phase} {float(total['Requests/s']):.1f} req/s, p50 {total['50%']} ms, p95 {total['95%']} ms,"
          f" p99 {total['99%']} ms, failures {total['Failure Count']}/{total['Request Count']}")


def main(argv: list[str] | None = None) -> None:
    """Load (once), start the API, time cold answers, run Locust, print per-endpoint figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--users", type=int, default=20, help="concurrent Locust users")
    parser.add_argument("--spawn-rate", type=float, default=5)
    parser.add_argument("--duration", default="60s", help="Locust run time (e.g. 60s, 3m)")
    parser.add_argument("--api-workers", type=int, default=1,
                        help="uvicorn worker processes (each keeps its own result cache)")
    parser.add_argument("--port", type=int, default=18001)
    parser.add_argument("--reload", action="store_true", help="reload the fleet even if it is stored")
    parser.add_argument("--via-import", action="store_true", help="load the fleet through `cxp import` (JSON lines)")
    parser.add_argument("--phases", default="cold,warm",
                        help="Locust runs: cold (result cache off), warm (cache on), comma-separated")
    args = parser.parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if not phases or set(phases) - {"cold", "warm"}:
        parser.error("--phases takes cold and/or warm")

    env = Settings()  # ports and stack from the environment (CXP_DB__PORT…); the database and API port are the bench's
    settings = env.model_copy(update={
        "db": env.db.model_copy(update={"name": bench_db(args.devices, args.days), "pool_max": 8}),
        "api": env.api.model_copy(update={"port": args.port}),
        "stack": env.stack.model_copy(update={"dir": env.stack.dir / "bench-api"})})
    start_stack(env.model_copy(update={"db": settings.db}))  # the usual stack; creates the bench database
    with connect(settings.db) as conn:
        apply_migrations(conn)
        ensure_fleet(conn, params=bench_fleet_params(devices=args.devices, days=args.days, seed=args.seed),
                     workers=2, reload=args.reload, out=lambda line: print(line, flush=True),
                     settings=settings if args.via_import else None)
        # a key per Locust user, as each person of a team has: the API limits heavy requests per key
        product_keys, pricing_keys = ([create_key(conn, name=f"bench api {role} {i}", role=role).token
                                       for i in range(args.users)] for role in ("product", "pricing"))
    for phase in phases:
        cache_ttl_s = 0.0 if phase == "cold" else env.api.cache_ttl_s
        api = settings.api.model_copy(update={"cache_ttl_s": cache_ttl_s})
        phase_settings = settings.model_copy(update={"api": api})
        _run_phase(phase_settings, phase=phase, args=args, product_keys=product_keys, pricing_keys=pricing_keys,
                   first_answers=phase == phases[0])


def _run_phase(settings: Settings, *, phase: str, args: argparse.Namespace, product_keys: list[str],
               pricing_keys: list[str], first_answers: bool) -> None:
    """(Re)start the API with this phase's cache setting, time first answers once, run Locust, print the table."""
    stop_api(settings)
    url = start_api(settings, workers=args.api_workers)
    print(f"API on {url} with {args.api_workers} workers over {settings.db.name}, result cache"
          f" {'off' if settings.api.cache_ttl_s <= 0 else 'on'} ({phase})", flush=True)
    install = urllib.request.Request(f"{url}/v1/pricing/examples/install", method="POST",
                                     headers={"Authorization": f"Bearer {pricing_keys[0]}"})
    with urllib.request.urlopen(install, timeout=60) as response:
        response.read()  # the example plans the pricing users backtest
    pid = api_pid(settings)
    if pid is None:
        raise SystemExit("the API started but its pid file is gone")
    try:
        with PeakRss(psutil.Process(pid)) as memory:
            if first_answers:
                print("first (uncached) answer of every view, computed one at a time:")
                for views, token in ((PRODUCT_VIEWS, product_keys[0]), (PRICING_VIEWS, pricing_keys[0])):
                    for paths in views.values():
                        for path in paths:
                            elapsed, status = _timed_get(url + path, token)
                            print(f"  {path:<80} {elapsed:6.2f} s  ({status})", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                prefix = Path(tmp) / "api"
                cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
                       "-u", str(args.users), "-r", str(args.spawn_rate), "-t", args.duration, "--host", url,
                       "--csv", str(prefix), "--product-key", ",".join(product_keys),
                       "--pricing-key", ",".join(pricing_keys)]
                print(f"locust ({phase}): {args.users} users for {args.duration} (3 product managers : 1 pricing"
                      " analyst)", flush=True)
                subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                _print_stats(Path(f"{prefix}_stats.csv"), phase)
        print(f"RESULT API {phase} peak RSS {memory.peak / 1_000_000:,.0f} MB (the API process and its workers,"
              " sampled every 20 ms over the first answers and the Locust run)", flush=True)
    finally:
        stop_api(settings)


if __name__ == "__main__":
    main()
