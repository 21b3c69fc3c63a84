"""API memory while a 20 MiB CSV import is read, checked and stored: `cxp bench import-memory`.

Starts the API process (`cxp api serve`) on a free loopback port, registers one product, builds a devices CSV
just under the import cap (default 19.5 MiB, ~300k rows) and posts it as a multipart upload to
`/v1/registry/devices/import`, sampling the API process's RSS every 20 ms. Prints RSS before, the peak, the
growth, the time and the answer. Issue 11's remaining item: before streaming, the import held the raw bytes,
their decoded text and a dict per row at once.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import psutil

from cxp.core.config import Settings, StackSettings, get_settings
from cxp.stack import start_stack
from cxp.stack.api_process import start_api, stop_api
from cxp.store.apikeys import create_key
from cxp.store.db import connect
from cxp.store.migrate import apply_migrations
from cxp.tools.bench.process import free_port, rss

MB = 1_000_000
MIB = 1024 * 1024


def devices_csv(path: Path, *, product_id: str, target_bytes: int) -> int:
    """Write a devices CSV of about `target_bytes` to `path`; the number of rows."""
    prefix = uuid.uuid4().hex[:8]
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        size = out.write("device_id,product_id,activated_at,plan,experiment_arm\r\n")
        while size < target_bytes - 200:
            size += out.write(f"bench-{prefix}-{rows:08d},{product_id},2026-01-01T00:00:00Z,basic,control\r\n")
            rows += 1
    return rows


def _multipart(path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"devices.csv\"\r\n"
            "Content-Type: text/csv\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _post(url: str, token: str, body: bytes, ctype: str, out: dict[str, object]) -> None:
    request = urllib.request.Request(f"{url}/v1/registry/devices/import", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": ctype})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            out["status"], out["body"] = response.status, response.read().decode()[:200]
    except urllib.error.HTTPError as exc:
        out["status"], out["body"] = exc.code, exc.read().decode()[:300]


def main(argv: list[str] | None = None) -> None:
    """Start the API, post the import while sampling RSS, print the figures, stop the API."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=float, default=19.5, help="size of the CSV, in MiB (the cap is 20)")
    parser.add_argument("--repeat", type=int, default=2, help="imports in a row (the peak is the highest)")
    args = parser.parse_args(argv)

    base = get_settings()
    start_stack(base)
    product_id = "bench-import-product"
    with connect(base.db) as conn:
        apply_migrations(conn)
        token = create_key(conn, name="bench import", role="admin").token
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "devices.csv"
        rows = devices_csv(csv_path, product_id=product_id, target_bytes=int(args.mib * MIB))
        body, ctype = _multipart(csv_path)
        settings: Settings = base.model_copy(update={"api": base.api.model_copy(update={"port": free_port()}),
                                                     "stack": StackSettings(dir=Path(tmp))})
        url = start_api(settings)
        try:
            proc = psutil.Process(int((Path(tmp) / "api.pid").read_text()))
            product = json.dumps({"name": "Bench product", "heartbeat_interval_s": 300}).encode()
            urllib.request.urlopen(urllib.request.Request(
                f"{url}/v1/registry/products/{product_id}", data=product, method="PUT",
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}), timeout=60).read()
            print(f"API on {url}: devices CSV {csv_path.stat().st_size / MIB:.1f} MiB, {rows:,} rows", flush=True)
            for i in range(args.repeat):
                before, peak, out = rss(proc), 0, {}
                post = threading.Thread(target=_post, args=(url, token, body, ctype, out))
                t0 = time.perf_counter()
                post.start()
                while post.is_alive():
                    peak = max(peak, rss(proc))
                    time.sleep(0.02)
                elapsed = time.perf_counter() - t0
                print(f"RESULT import-memory #{i + 1}: {out.get('status')} in {elapsed:.1f} s; API RSS "
                      f"{before / MB:.0f} → peak {peak / MB:.0f} MB (+{(peak - before) / MB:.0f} MB) "
                      f"{str(out.get('body'))[:120]}", flush=True)
        finally:
            stop_api(settings)


if __name__ == "__main__":
    main()
