"""Fair use of the database pool under one key's burst: `cxp bench fairness`.

Loads a small fleet into a database of its own, then twice starts the API (`cxp api serve`, 4 pooled
connections, result cache off so every analytics request computes): once with the limits off (no per-key slots,
no pool of its own for cheap requests, 30 s pool wait — the behaviour issue 11 measured) and once with the
settings' defaults. Each time one product key fires N concurrent heavy analytics requests while an admin reads
the registry in a loop; it prints the heavy requests' status counts and the admin reads' p50/p99 and statuses.
Issue 11's figures before: 40 requests, 27 got 503; the admin's read waited 30 s and got 503.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from cxp.core.config import PROJECT_ROOT, StackSettings, get_settings
from cxp.stack import start_stack
from cxp.stack.api_process import start_api, stop_api
from cxp.store.apikeys import create_key
from cxp.store.db import connect
from cxp.store.migrate import apply_migrations
from cxp.tools.fleet import bench_fleet_params, ensure_fleet

BENCH_DB = "cxp_bench_fairness"
HEAVY = "/v1/experience/health?level=device&weeks={weeks}&limit=10"
ADMIN = "/v1/registry/products?limit=10"


def _get(url: str, token: str) -> tuple[int, float]:
    """Status and seconds of one GET."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        exc.read()
        status = exc.code
    except OSError:
        status = 0  # connection refused or reset: counted apart from HTTP statuses
    return status, time.perf_counter() - start


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _round(url: str, *, product: str, admin: str, requests: int, weeks: int) -> None:
    """One burst from one key with the admin loop beside it; prints the figures."""
    done = threading.Event()
    admin_reads: list[tuple[int, float]] = []

    def admin_loop() -> None:
        while not done.is_set():
            admin_reads.append(_get(url + ADMIN, admin))
            time.sleep(0.05)

    _get(url + ADMIN, admin)  # the admin key is verified (and cached) before the burst
    loop = threading.Thread(target=admin_loop, name="admin-loop")
    loop.start()
    start = time.perf_counter()
    with ThreadPoolExecutor(requests) as pool:
        # distinct weeks per request, so concurrent callers do not share one computation
        heavy = list(pool.map(lambda i: _get(url + HEAVY.format(weeks=weeks + i % 4), product), range(requests)))
    burst_s = time.perf_counter() - start
    done.set()
    loop.join()
    statuses = Counter(s for s, _ in heavy)
    ok = [t for s, t in heavy if s == 200]
    print(f"  heavy: {requests} concurrent from one key in {burst_s:.1f} s: statuses {dict(sorted(statuses.items()))};"
          f" 200s p50 {statistics.median(ok) if ok else float('nan'):.2f} s", flush=True)
    times = [t * 1000 for _, t in admin_reads]
    print(f"  admin: {len(admin_reads)} registry reads: p50 {_pct(times, 0.5):.0f} ms, p99 {_pct(times, 0.99):.0f} ms,"
          f" max {max(times, default=float('nan')):.0f} ms; statuses"
          f" {dict(sorted(Counter(s for s, _ in admin_reads).items()))}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, load the fleet once, run the burst with the limits off and on."""
    parser = argparse.ArgumentParser(prog="cxp bench fairness", description=__doc__)
    parser.add_argument("--requests", type=int, default=40, help="concurrent heavy requests from one key")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--days", type=int, default=56)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--weeks", type=int, default=8, help="weeks of health each heavy request computes")
    parser.add_argument("--port", type=int, default=None, help="the bench API's port (default: CXP_API__PORT + 2)")
    args = parser.parse_args(argv)

    base = get_settings()
    settings = base.model_copy(update={
        "db": base.db.model_copy(update={"name": BENCH_DB, "pool_min": 1, "pool_max": 4}),
        "api": base.api.model_copy(update={"port": args.port or base.api.port + 2, "cache_ttl_s": 0.0,
                                           "cache_fresh_s": 0.0}),
        "stack": StackSettings(dir=PROJECT_ROOT / ".stack" / "bench-fairness")})
    start_stack(settings.model_copy(update={"stack": base.stack}))
    with connect(settings.db) as conn:
        apply_migrations(conn)
        ensure_fleet(conn, params=bench_fleet_params(devices=args.devices, days=args.days, seed=args.seed),
                     workers=2, reload=False, out=lambda line: print(line, flush=True))
        product = create_key(conn, name="bench fairness", role="product").token
        admin = create_key(conn, name="bench fairness", role="admin").token
    modes = (("before (limits off: heavy_per_key=0, light_pool_size=0, pool_timeout_s=30)",
              {"heavy_per_key": 0, "light_pool_size": 0, "pool_timeout_s": 30.0}),
             (f"after (heavy_per_key={settings.api.heavy_per_key}, light_pool_size={settings.api.light_pool_size},"
              f" pool_timeout_s={settings.api.pool_timeout_s:g})", {}))
    for title, limits in modes:
        run = settings.model_copy(update={"api": settings.api.model_copy(update=limits)})
        stop_api(run)
        url = start_api(run)
        try:
            print(f"{title}; 4 pooled connections, result cache off:", flush=True)
            _round(url, product=product, admin=admin, requests=args.requests, weeks=args.weeks)
        finally:
            stop_api(run)


if __name__ == "__main__":
    main()
