"""Gateway counters and latency samples, logged periodically and written as JSON at exit."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class GatewayStats:
    """Running counters of one gateway process."""

    received: int = 0
    messages_stored: int = 0
    events_stored: int = 0
    states_stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0
    db_retries: int = 0
    started: float = field(default_factory=time.monotonic)
    _batch_ms: list[float] = field(default_factory=list)
    _publish_to_commit_ms: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_batch(self, *, batch_ms: float, latencies_ms: list[float]) -> None:
        """Record one committed batch's timings (samples are capped to bound memory)."""
        with self._lock:
            self.batches += 1
            if len(self._batch_ms) < 200_000:
                self._batch_ms.append(batch_ms)
            room = 1_000_000 - len(self._publish_to_commit_ms)
            if room > 0:
                self._publish_to_commit_ms.extend(latencies_ms[:room])

    def snapshot(self) -> dict[str, float | int | None]:
        """Counters and latency percentiles so far."""
        with self._lock:
            batch = np.asarray(self._batch_ms) if self._batch_ms else None
            p2c = np.asarray(self._publish_to_commit_ms) if self._publish_to_commit_ms else None
        elapsed = time.monotonic() - self.started

        def pct(a: np.ndarray | None, q: float) -> float | None:
            return round(float(np.percentile(a, q)), 2) if a is not None else None

        return {
            "received": self.received,
            "messages_stored": self.messages_stored,
            "events_stored": self.events_stored,
            "states_stored": self.states_stored,
            "duplicates": self.duplicates,
            "dead_lettered": self.dead_lettered,
            "batches": self.batches,
            "db_retries": self.db_retries,
            "uptime_s": round(elapsed, 1),
            "batch_ms_p50": pct(batch, 50),
            "batch_ms_p99": pct(batch, 99),
            "publish_to_commit_ms_p50": pct(p2c, 50),
            "publish_to_commit_ms_p99": pct(p2c, 99),
        }
