"""Work the gateway's rollup thread hands on after each refresh, wired here: the gateway imports neither alerts nor
analytics."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg

from cxp.analytics.errors import AnalyticsError
from cxp.core.config import Settings
from cxp.store.db import connect
from cxp.store.errors import StoreError

log = logging.getLogger("cxp.keepers")
AfterRefresh = Callable[[psycopg.Connection, Settings, int], None]


class Chain:
    """One after-refresh hook calling each of its hooks in turn (a class, not a closure: the gateway's writer process
    receives it pickled)."""

    def __init__(self, *hooks: AfterRefresh) -> None:
        self.hooks = hooks

    def __call__(self, conn: psycopg.Connection, settings: Settings, refreshed_device_days: int) -> None:
        for hook in self.hooks:
            hook(conn, settings, refreshed_device_days)


def chain(*hooks: AfterRefresh | None) -> AfterRefresh | None:
    """The given hooks as one (None: none given)."""
    present = [h for h in hooks if h is not None]
    return Chain(*present) if present else None


class HealthKeeper:
    """Keeps the kept health rows current on the primary, in a thread of its own so its seconds of analytics never
    delay a refresh: every device's last 13 weeks on the first call and once a new week is over, the weeks marked
    stale on the others; at most once per `interval_s`."""

    def __init__(self, settings: Settings, *, interval_s: float) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self.passes = 0
        self._thread: threading.Thread | None = None
        self._started: float | None = None
        self._full_week: object = None  # the week (Monday) of the last full pass

    def __call__(self, conn: psycopg.Connection, settings: Settings, refreshed_device_days: int) -> None:
        """The after-refresh hook: start a pass unless one is running or the last started less than interval_s ago."""
        if self._thread is not None and self._thread.is_alive():
            return
        if self._started is not None and time.monotonic() - self._started < self.interval_s:
            return
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self.run_pass, name="kept-health", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the pass under way, if any."""
        if self._thread is not None:
            self._thread.join(timeout)

    def run_pass(self) -> None:
        """One pass; failures are logged, never raised (the kept rows are an optimisation: readers compute them)."""
        from cxp.analytics.service import refresh_kept_health

        today = datetime.now(UTC).date()
        week = today - timedelta(days=today.weekday())
        try:
            with connect(self.settings.db) as conn:
                fresh, stale = refresh_kept_health(conn=conn, only_stale=week == self._full_week)
            self._full_week = week
            self.passes += 1
            log.debug("kept health rows: %d fresh, %d stale", fresh, stale)
        except (AnalyticsError, StoreError, psycopg.Error) as exc:
            log.warning("keeping the health rows failed: %s", exc)
        except Exception:  # a bug here must not pass silently
            log.exception("keeping the health rows failed")
