"""Gateway counters and latency samples, logged periodically and written as JSON at exit."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

_SKEWED_KEPT = 10_000  # devices with skewed clocks remembered (bounded memory)
_SAMPLES = 200_000  # the most recent latency samples kept (a fixed ring: bounded memory, cheap percentiles)


class _Ring:
    """The most recent `size` float samples."""

    def __init__(self, size: int = _SAMPLES) -> None:
        self._data = np.empty(size, dtype=np.float64)
        self._next = 0
        self._count = 0

    def extend(self, values: list[float]) -> None:
        """Append samples, overwriting the oldest."""
        size = len(self._data)
        for start in range(0, len(values), size):
            chunk = np.asarray(values[start:start + size], dtype=np.float64)
            end = self._next + len(chunk)
            if end <= size:
                self._data[self._next:end] = chunk
            else:
                split = size - self._next
                self._data[self._next:] = chunk[:split]
                self._data[:end - size] = chunk[split:]
            self._next = end % size
            self._count = min(self._count + len(chunk), size)

    def percentile(self, q: float) -> float | None:
        """The q-th percentile of the kept samples, or None before the first."""
        if self._count == 0:
            return None
        return round(float(np.percentile(self._data[:self._count], q)), 2)


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
    first_received_at: float | None = None  # epoch s of the first message received
    last_commit_at: float | None = None  # epoch s of the last batch committed
    _batch_ms: _Ring = field(default_factory=_Ring)
    _publish_to_commit_ms: _Ring = field(default_factory=_Ring)
    _receive_to_commit_ms: _Ring = field(default_factory=_Ring)
    # Devices whose sent_at is ahead of receipt or before their activation: latest offset (s), at most _SKEWED_KEPT.
    skewed_clocks: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_batch(self, *, batch_ms: float, latencies_ms: list[float], receive_latencies_ms: list[float] = (),
                  skewed: dict[str, float] | None = None) -> None:
        """Record one committed batch's timings and the devices with implausible clocks."""
        with self._lock:
            self.batches += 1
            self.last_commit_at = time.time()
            self._batch_ms.extend([batch_ms])
            self._publish_to_commit_ms.extend(latencies_ms)
            self._receive_to_commit_ms.extend(list(receive_latencies_ms))
            for device_id, offset in (skewed or {}).items():
                if device_id in self.skewed_clocks or len(self.skewed_clocks) < _SKEWED_KEPT:
                    self.skewed_clocks[device_id] = offset

    def snapshot(self) -> dict[str, float | int | None]:
        """Counters, and latency percentiles over the most recent samples."""
        with self._lock:
            percentiles = {
                "batch_ms_p50": self._batch_ms.percentile(50),
                "batch_ms_p99": self._batch_ms.percentile(99),
                "publish_to_commit_ms_p50": self._publish_to_commit_ms.percentile(50),
                "publish_to_commit_ms_p99": self._publish_to_commit_ms.percentile(99),
                # From the gateway's receipt (its own clock): unaffected by device clocks.
                "receive_to_commit_ms_p50": self._receive_to_commit_ms.percentile(50),
                "receive_to_commit_ms_p99": self._receive_to_commit_ms.percentile(99),
                "skewed_clock_devices": len(self.skewed_clocks),
                "skewed_clock_sample": dict(sorted(self.skewed_clocks.items())[:10]),
            }
        return {
            "received": self.received,
            "messages_stored": self.messages_stored,
            "events_stored": self.events_stored,
            "states_stored": self.states_stored,
            "duplicates": self.duplicates,
            "dead_lettered": self.dead_lettered,
            "batches": self.batches,
            "db_retries": self.db_retries,
            "uptime_s": round(time.monotonic() - self.started, 1),
            # first message in → last commit: the span that throughput is measured over
            "active_s": (round(self.last_commit_at - self.first_received_at, 3)
                         if self.first_received_at and self.last_commit_at else None),
            "first_received_at": self.first_received_at,
            "last_commit_at": self.last_commit_at,
            **percentiles,
        }
