"""API memory and liveness while large bodies and stalled request heads arrive: `cxp bench guard`.

Starts the API process (`cxp api serve`, as the demo does) on a free loopback port, then runs three rounds of
N parallel POSTs of a large JSON body (default 8 × 50 MB): (a) without a key, (b) with a key and a declared
Content-Length over the limit, (c) with a key, chunked (no Content-Length). During each round it samples the
API process's RSS and times `/healthz`; it prints the RSS before and the peak, `/healthz` p50/max, the statuses,
how many bytes the clients managed to push, and how many body bytes the API's routes read (its own counter).
Then (d): 1,500 connections send half a request head and stall; how many the server closed after its deadline.
Issue 11's figures before the guard: 312 MB → 1.84 GB for (a), `/healthz` 4.9 s, each 401 after ~11 s;
1,500 half-sent heads held for 75 s+.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import select
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from cxp.core.config import ApiSettings, Settings, StackSettings, get_settings
from cxp.stack import start_stack
from cxp.stack.api_process import start_api, stop_api
from cxp.store.apikeys import create_key
from cxp.store.db import connect
from cxp.store.migrate import apply_migrations
from cxp.tools.bench.process import free_port, rss

MB = 1_000_000


@dataclass
class Round:
    """What one round of parallel posts saw."""

    statuses: list[int] = field(default_factory=list)
    pushed: list[int] = field(default_factory=list)
    health_s: list[float] = field(default_factory=list)
    peak_rss: int = 0


def _post(host: str, port: int, size: int, token: str | None, chunked: bool, out: Round, lock: threading.Lock) -> None:
    """One POST pushing up to `size` body bytes until the server answers or closes."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    framing = "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {size}\r\n"
    head = (f"POST /v1/pricing/plans HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{auth}{framing}"
            "\r\n").encode()
    piece = b" " * 65536
    chunk = (b"%x\r\n" % len(piece)) + piece + b"\r\n" if chunked else piece
    sent, answer = 0, b""
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        try:
            while sent < size:
                readable, writable, _ = select.select([sock], [sock], [], 10)
                if readable or not writable:
                    break  # answered, or the server reads no more and says nothing
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.setblocking(True)
        sock.settimeout(30)
        with contextlib.suppress(OSError):
            while b"\r\n" not in answer:
                data = sock.recv(4096)
                if not data:
                    break
                answer += data
    match = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    with lock:
        out.statuses.append(int(match.group(1)) if match else 0)
        out.pushed.append(sent)


def _round(url: str, proc: psutil.Process, *, parallel: int, size: int, token: str | None, chunked: bool) -> Round:
    out, lock = Round(), threading.Lock()
    host, port = url.removeprefix("http://").split(":")
    posts = [threading.Thread(target=_post, args=(host, int(port), size, token, chunked, out, lock))
             for _ in range(parallel)]
    for t in posts:
        t.start()
    while any(t.is_alive() for t in posts):
        out.peak_rss = max(out.peak_rss, rss(proc))
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"{url}/healthz", timeout=60) as response:
            response.read()
        out.health_s.append(time.perf_counter() - t0)
        time.sleep(0.05)
    for t in posts:
        t.join()
    out.peak_rss = max(out.peak_rss, rss(proc))
    return out


def _half_sent_heads(url: str, count: int, wait_s: float) -> tuple[int, float]:
    """Open `count` connections that send part of a request head and stall; (closed by the server, healthz s)."""
    host, port = url.removeprefix("http://").split(":")
    socks = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the blank line never comes
        socks.append(sock)
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"{url}/healthz", timeout=60) as response:
        response.read()
    health = time.perf_counter() - t0
    time.sleep(wait_s)
    closed = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            data = sock.recv(4096)
            closed += data == b"" or data.startswith(b"HTTP/1.1 408")
        except BlockingIOError:
            pass  # still open
        except OSError:
            closed += 1
        sock.close()
    return closed, health


def _body_bytes(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        text = response.read().decode()
    match = re.search(r"^cxp_api_body_bytes_total (\S+)$", text, re.M)
    return float(match.group(1)) if match else float("nan")


def main(argv: list[str] | None = None) -> None:
    """Start the API, run the three rounds, print the figures, stop the API."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parallel", type=int, default=8, help="concurrent POSTs per round")
    parser.add_argument("--mb", type=int, default=50, help="body size of each POST, in MB")
    parser.add_argument("--heads", type=int, default=1500, help="connections sending a half request head")
    args = parser.parse_args(argv)

    base = get_settings()
    start_stack(base)
    with connect(base.db) as conn:
        apply_migrations(conn)
        token = create_key(conn, name="bench guard", role="pricing").token
    with tempfile.TemporaryDirectory() as tmp:
        settings: Settings = base.model_copy(update={"api": base.api.model_copy(update={"port": free_port()}),
                                                     "stack": StackSettings(dir=Path(tmp))})
        url = start_api(settings)
        try:
            proc = psutil.Process(int((Path(tmp) / "api.pid").read_text()))
            print(f"API on {url}: {args.parallel} parallel POSTs of {args.mb} MB per round; "
                  f"limit {ApiSettings().max_body_bytes / 2**20:g} MiB", flush=True)
            print(f"{'round':<34}{'RSS before':>11}{'RSS peak':>10}{'healthz p50':>12}{'max':>8}"
                  f"{'pushed MB':>10}{'read MB':>9}  statuses")
            for name, key, chunked in (("(a) no key", None, False), ("(b) key, Content-Length", token, False),
                                       ("(c) key, chunked", token, True)):
                before, read0 = rss(proc), _body_bytes(url)
                r = _round(url, proc, parallel=args.parallel, size=args.mb * MB, token=key, chunked=chunked)
                read = _body_bytes(url) - read0
                print(f"{name:<34}{before / MB:>9.0f}MB{r.peak_rss / MB:>8.0f}MB"
                      f"{statistics.median(r.health_s) * 1000:>10.1f}ms{max(r.health_s) * 1000:>6.0f}ms"
                      f"{sum(r.pushed) / MB:>10.1f}{read / MB:>9.2f}  {sorted(set(r.statuses))}", flush=True)
                print(f"RESULT guard {name}: RSS {before / MB:.0f} → {r.peak_rss / MB:.0f} MB, healthz max "
                      f"{max(r.health_s) * 1000:.0f} ms, statuses {sorted(set(r.statuses))}", flush=True)
            wait = settings.api.header_timeout_s + 2
            closed, health = _half_sent_heads(url, args.heads, wait)
            print(f"RESULT guard (d) {args.heads} half-sent request heads: {closed} closed by the server "
                  f"{wait:g} s later (api.header_timeout_s {settings.api.header_timeout_s:g}); /healthz among them "
                  f"{health * 1000:.0f} ms", flush=True)
        finally:
            stop_api(settings)


if __name__ == "__main__":
    main()
