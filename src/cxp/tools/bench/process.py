"""What the benchmarks measure of a process: a free loopback port for it, its RSS, its peak RSS over a span."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import psutil


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss(proc: psutil.Process) -> int:
    """RSS of a process and its children (e.g. uvicorn workers), in bytes."""
    total = 0
    for p in (proc, *proc.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class PeakRss:
    """Peak RSS of a process (and its children) while the `with` block runs, sampled every 20 ms."""

    def __init__(self, proc: psutil.Process) -> None:
        self.proc, self.peak, self._stop = proc, 0, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self.proc))
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self.peak = rss(self.proc)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss(self.proc))
