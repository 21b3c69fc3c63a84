"""Deep pages of a list: offset vs keyset cursor, `cxp bench pages`.

Registers N devices (default 1,000,000, one product), starts the API process (`cxp api serve`) on a free
loopback port and times `GET /v1/registry/devices?product=…&limit=L`: page 1, page P by `offset=(P-1)·L`, and
page P by `cursor` (page P-1's `next_cursor`); then a walk of cursor pages from page 1. Prints the median of
`--repeat` requests per case. Every page also counts the list for `total` (the same cost at any depth), so
the page's SELECT alone is timed too (EXPLAIN ANALYZE, database side). Issue 11: "deep offset pages slow".
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from cxp.core.config import Settings, StackSettings, get_settings
from cxp.stack import start_stack
from cxp.stack.api_process import start_api, stop_api
from cxp.store.apikeys import create_key
from cxp.store.db import connect
from cxp.store.migrate import apply_migrations
from cxp.store.registry import DeviceRow, ProductRow, upsert_devices, upsert_products
from cxp.tools.bench.guard import _free_port

PRODUCT = "bench-pages"


def _register(settings: Settings, devices: int) -> str:
    with connect(settings.db) as conn:
        apply_migrations(conn)
        have = conn.execute("SELECT count(*) FROM devices WHERE product_id = %s", (PRODUCT,)).fetchone()[0]
        if have < devices:
            upsert_products(conn, products=[ProductRow(PRODUCT, "Bench pages", 3600, None)])
            at = datetime(2026, 1, 1, tzinfo=UTC)
            upsert_devices(conn, devices=(DeviceRow(f"bp-{i:08d}", PRODUCT, None, at) for i in range(devices)))
            conn.execute("ANALYZE devices")
        return create_key(conn, name="bench pages", role="admin").token


def _get(url: str, token: str) -> tuple[float, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        body = json.loads(response.read())
    return time.perf_counter() - t0, body


_PAGE_SQL = ("SELECT device_id, product_id, account_id, activated_at, plan, experiment_arm FROM devices"
             " WHERE product_id = %(product)s{after} ORDER BY device_id LIMIT %(limit)s OFFSET %(offset)s")


def _select_ms(settings: Settings, *, limit: int, offset: int = 0, after: str | None = None) -> float:
    """Database execution time of the device page's SELECT (median of 5, EXPLAIN ANALYZE)."""
    query = _PAGE_SQL.format(after="" if after is None else " AND device_id > %(after)s")
    params = {"product": PRODUCT, "limit": limit + 1, "offset": offset, "after": after}
    times = []
    with connect(settings.db) as conn:
        for _ in range(5):
            plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query, params).fetchone()[0]
            times.append(plan[0]["Execution Time"])
    return statistics.median(times)


def _cursors(lst: str, token: str, pages: int) -> list[str]:
    """The cursors of the first `pages` pages after page 1."""
    cursors, cursor = [], _get(lst, token)[1]["next_cursor"]
    while cursor and len(cursors) < pages:
        cursors.append(cursor)
        cursor = _get(f"{lst}&cursor={cursor}", token)[1]["next_cursor"]
    return cursors


def _median_ms(url: str, token: str, repeat: int) -> float:
    return statistics.median(_get(url, token)[0] for _ in range(repeat)) * 1000


def main(argv: list[str] | None = None) -> None:
    """Register the devices, start the API, time the pages, print the figures, stop the API."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--limit", type=int, default=100, help="items per page")
    parser.add_argument("--page", type=int, default=5000, help="the deep page")
    parser.add_argument("--walk", type=int, default=50, help="cursor pages walked from page 1 (timed)")
    parser.add_argument("--repeat", type=int, default=15, help="requests per case (the median is printed)")
    args = parser.parse_args(argv)

    base = get_settings()
    start_stack(base)
    t0 = time.perf_counter()
    token = _register(base, args.devices)
    print(f"{args.devices:,} devices registered in {time.perf_counter() - t0:.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        settings = base.model_copy(update={"api": base.api.model_copy(update={"port": _free_port()}),
                                           "stack": StackSettings(dir=Path(tmp))})
        url = start_api(settings)
        try:
            lst = f"{url}/v1/registry/devices?product={PRODUCT}&limit={args.limit}"
            deep_offset = (args.page - 1) * args.limit
            first = _median_ms(lst, token, args.repeat)
            by_offset = _median_ms(f"{lst}&offset={deep_offset}", token, args.repeat)
            # the cursor of page P: the `next_cursor` of page P-1 (read once by offset; a client walks to it)
            cursor = _get(f"{lst}&offset={deep_offset - args.limit}", token)[1]["next_cursor"]
            deep_cursor = _median_ms(f"{lst}&cursor={cursor}", token, args.repeat)
            walk = [_get(f"{lst}&cursor={c}", token)[0] for c in _cursors(lst, token, args.walk)]
            same = [d["device_id"] for d in _get(f"{lst}&offset={deep_offset}", token)[1]["items"]] == [
                d["device_id"] for d in _get(f"{lst}&cursor={cursor}", token)[1]["items"]]
            print(f"RESULT pages: {args.devices:,} devices of one product, limit {args.limit} (medians of"
                  f" {args.repeat}): page 1 {first:.1f} ms; page {args.page:,} by offset {by_offset:.1f} ms; page"
                  f" {args.page:,} by cursor {deep_cursor:.1f} ms (same items: {same}); a walk of {len(walk)} cursor"
                  f" pages from page 1: median {statistics.median(walk) * 1000:.1f} ms", flush=True)
            last_id = _get(f"{lst}&offset={deep_offset - 1}&limit=1", token)[1]["items"][0]["device_id"]
            print(f"RESULT pages, the page's SELECT alone (database): page 1 {_select_ms(base, limit=args.limit):.2f}"
                  f" ms; page {args.page:,} by offset {_select_ms(base, limit=args.limit, offset=deep_offset):.2f} ms;"
                  f" by cursor {_select_ms(base, limit=args.limit, after=last_id):.2f} ms", flush=True)
        finally:
            stop_api(settings)


if __name__ == "__main__":
    main()
