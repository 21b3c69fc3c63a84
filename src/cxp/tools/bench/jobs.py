"""Serving a large backtest job's bills: `cxp bench jobs` prints the API's RSS and the time per read.

Bills a synthetic cohort (default 2,000 accounts × 24 months × 8 plans, vectorised, no telemetry needed),
stores them as a finished job through the job runner's own writer (`job_results.write_bills`, COPY), starts
the API process (`cxp api serve`) on a free loopback port and times, while sampling the API's RSS:
job status, job list, the first page (`bills?limit=10`), a page near the end by offset and by cursor,
and the whole CSV stream. The job is deleted at the end.
Issue 11's figures before (bills in one jsonb value, 6.7 M bills): `bills?limit=10` 24.7 s,
CSV 106 s / 343 MB, API 8.3 GB, job status 3–4 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
from psycopg.types.json import Jsonb

from cxp.core.config import Settings, StackSettings, get_settings
from cxp.pricing.core.backtest import backtest
from cxp.pricing.examples import example_plans
from cxp.pricing.exports import bill_tuples
from cxp.stack import start_stack
from cxp.stack.api_process import start_api, stop_api
from cxp.store import job_results
from cxp.store.apikeys import create_key
from cxp.store.db import connect
from cxp.store.migrate import apply_migrations
from cxp.tools.bench.backtest import synthetic_cube
from cxp.tools.bench.process import PeakRss, free_port, rss

MB = 1_000_000


def _plans(count: int) -> list:
    """`count` example plans; beyond the examples, renamed copies of them."""
    base = example_plans()
    out = []
    for i in range(count):
        plan = base[i % len(base)]
        out.append(plan if i < len(base) else plan.model_copy(update={"plan_id": f"{plan.plan_id}-{i}"}))
    return out


def _get(url: str, token: str) -> tuple[float, int, bytes]:
    """(seconds, bytes, the first 64 KiB) of one GET read to the end."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    t0 = time.perf_counter()
    size, head = 0, b""
    with urllib.request.urlopen(request, timeout=3600) as response:
        while chunk := response.read(1 << 16):
            head = head or chunk
            size += len(chunk)
    return time.perf_counter() - t0, size, head


def main(argv: list[str] | None = None) -> None:
    """Store the job, start the API, time the reads, print the figures, clean up."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--plans", type=int, default=8)
    args = parser.parse_args(argv)

    base = get_settings()
    start_stack(base)
    t0 = time.perf_counter()
    cube = synthetic_cube(accounts=args.accounts, periods=args.months, seed=11)
    result = backtest(cube=cube, plans=_plans(args.plans))
    billed = time.perf_counter() - t0
    job_id = uuid.uuid4()
    with connect(base.db) as conn:
        apply_migrations(conn)
        token = create_key(conn, name="bench jobs", role="pricing").token
        t0 = time.perf_counter()
        with conn.transaction():
            conn.execute("INSERT INTO jobs (job_id, kind, status, request, summary, started_at, finished_at)"
                         " VALUES (%s, 'backtest', 'done', %s, %s, now(), now())",
                         (job_id, Jsonb({"bench": "jobs"}), Jsonb({"bench": "jobs"})))
            bills = job_results.write_bills(conn, job_id=job_id, plan_keys=result.plan_keys, rows=bill_tuples(result))
        stored = time.perf_counter() - t0
        conn.execute("VACUUM ANALYZE job_bills")
        table_mb = conn.execute("SELECT pg_total_relation_size('job_bills')").fetchone()[0] / MB
    print(f"job {job_id}: {args.accounts:,} accounts × {args.months} months × {args.plans} plans = {bills:,} bills; "
          f"billed in {billed:.1f} s, stored (COPY) in {stored:.1f} s; job_bills now {table_mb:,.0f} MB", flush=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings: Settings = base.model_copy(update={"api": base.api.model_copy(update={"port": free_port()}),
                                                         "stack": StackSettings(dir=Path(tmp))})
            url = start_api(settings)
            try:
                proc = psutil.Process(int((Path(tmp) / "api.pid").read_text()))
                jobs_url = f"{url}/v1/pricing/jobs/{job_id}"
                _get(f"{jobs_url}/bills?limit=10", token)  # warm-up: first request loads routes and the pool
                idle = rss(proc)
                deep_offset = max(bills - 20, 0)
                deep = json.loads(_get(f"{jobs_url}/bills?limit=10&offset={deep_offset}", token)[2])
                print(f"API on {url}, RSS idle {idle / MB:.0f} MB", flush=True)
                print(f"{'read':<44}{'time':>10}{'bytes':>14}{'API RSS peak':>14}")
                reads = [("job status", jobs_url), ("job list", f"{url}/v1/pricing/jobs?limit=100"),
                         ("bills?limit=10", f"{jobs_url}/bills?limit=10"),
                         (f"bills?limit=10&cursor=(after row {deep_offset + 10:,})",
                          f"{jobs_url}/bills?limit=10&cursor={deep['next_cursor']}"),
                         (f"bills?limit=10&offset={deep_offset:,}", f"{jobs_url}/bills?limit=10&offset={deep_offset}"),
                         ("bills?format=csv (streamed)", f"{jobs_url}/bills?format=csv")]
                for name, target in reads:
                    with PeakRss(proc) as sampler:
                        seconds, size, _ = _get(target, token)
                    print(f"{name:<44}{seconds:>9.3f}s{size:>14,}{sampler.peak / MB:>12.0f}MB", flush=True)
                    print(f"RESULT jobs {name}: {seconds:.3f} s, {size:,} bytes, API RSS peak"
                          f" {sampler.peak / MB:.0f} MB ({bills:,} bills)", flush=True)
            finally:
                stop_api(settings)
    finally:
        with connect(base.db) as conn, contextlib.suppress(Exception):
            conn.execute("DELETE FROM jobs WHERE job_id = %s", (job_id,))


if __name__ == "__main__":
    main()
