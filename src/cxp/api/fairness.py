"""Fair use of the database pool and the cores: a few heavy computations per API key, a few in all at once.

One key firing 40 analytics requests used to take every pooled connection, so other keys got 503 and an
admin's registry read waited 30 s. Each key now has a bounded number of slots for heavy work; a request over it
is refused at once with 429 and Retry-After (no queue to hold callers or threads), and cheap requests use a
small pool of their own (see `create_app`).

Across keys, `ComputeGate` bounds the computations running at once (one per core by default). On a 10,000-device
fleet twenty users opening cold views ran eight computations side by side on two cores: each took 3–8× longer,
the API grew to 1.9 GB, and with every pooled connection held by a computation even cheap reads got 503 (155 of
173 requests in the `cxp bench api` cold run). Waiting for a slot holds no connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from cxp.api.errors import ComputeBusy, TooManyRequests


class KeySlots:
    """A bounded semaphore per key id; `limit <= 0` admits everything."""

    def __init__(self, *, limit: int, retry_after_s: int) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self._in_use: dict[str, int] = {}
        self._guard = threading.Lock()
        self.refused = 0

    @contextmanager
    def hold(self, key_id: str) -> Iterator[None]:
        """One of `key_id`'s slots for the duration of the block, else TooManyRequests at once."""
        if self.limit <= 0:
            yield
            return
        with self._guard:
            used = self._in_use.get(key_id, 0)
            if used >= self.limit:
                self.refused += 1
                raise TooManyRequests(
                    f"this API key already has {used} heavy requests running (limit {self.limit}); retry after"
                    f" {self.retry_after_s} s", retry_after_s=self.retry_after_s)
            self._in_use[key_id] = used + 1
        try:
            yield
        finally:
            with self._guard:
                left = self._in_use[key_id] - 1
                if left:
                    self._in_use[key_id] = left
                else:  # no entry per idle key: the map stays as small as the keys currently busy
                    del self._in_use[key_id]

    def in_use(self, key_id: str) -> int:
        """Slots `key_id` holds now."""
        with self._guard:
            return self._in_use.get(key_id, 0)


class ComputeGate:
    """At most `slots` heavy computations at once (`slots <= 0`: no limit); a caller waits up to `wait_s` for one."""

    def __init__(self, *, slots: int, wait_s: float, retry_after_s: int,
                 after: Callable[[], object] | None = None) -> None:
        self.slots = slots
        self.wait_s = wait_s
        self.retry_after_s = retry_after_s
        self._after = after  # run once each computation has given its slot back (e.g. return freed memory)
        self._free = threading.BoundedSemaphore(max(slots, 1))
        self.refused = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        """A computation slot for the duration of the block, else ComputeBusy after `wait_s`."""
        if self.slots <= 0:
            yield
            return
        if not self._free.acquire(timeout=self.wait_s):
            self.refused += 1
            raise ComputeBusy(
                f"all {self.slots} computation slots stayed busy for {self.wait_s:g} s; retry after"
                f" {self.retry_after_s} s", retry_after_s=self.retry_after_s)
        try:
            yield
        finally:
            self._free.release()
            if self._after is not None:
                self._after()
