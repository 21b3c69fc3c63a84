"""Computed analytics results, kept while the data under them is unchanged (and at most `ttl_s`).

Health, personas or disruptions over a large fleet take seconds to compute and change only when the
rollups change. The data version is PostgreSQL's own count of row changes in the tables the analytics
read, so a refresh of the rollups or a registry edit invalidates at once, and a quiet fleet is served
from memory.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

import psycopg

T = TypeVar("T")

# The product-hourly tables: a refresh after a device moved product may rewrite only their rows
VERSION_TABLES = ("rollup_daily", "rollup_hourly", "rollup_product_hourly", "rollup_product_error_hourly", "devices",
                  "accounts", "products", "touchpoints", "plan_versions", "experiments", "touchpoint_survey")


def data_version(conn: psycopg.Connection) -> int:
    """A number that changes whenever a row of the analysed tables is inserted, updated or deleted."""
    row = conn.execute("SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint FROM pg_stat_user_tables"
                       " WHERE relname = ANY(%s)", (list(VERSION_TABLES),)).fetchone()
    return int(row[0])


class ResultCache:
    """A bounded LRU of results by (key, data version), one computation per key at a time."""

    def __init__(self, *, ttl_s: float, max_entries: int = 256, fresh_s: float = 0.0,
                 gate: Callable[[], AbstractContextManager[None]] = nullcontext) -> None:
        self.ttl_s = ttl_s
        self._gate = gate  # entered around each computation, before its connection is taken
        # With live ingest the rollups change every few seconds; an answer younger than `fresh_s` is served
        # even so, which bounds recomputation of a view to once per `fresh_s` (answers lag by at most that).
        self.fresh_s = min(fresh_s, ttl_s)
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[int, float, Any, float]] = OrderedDict()
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _lookup(self, key: Hashable, version: int) -> tuple[bool, Any]:
        with self._guard:
            hit = self._entries.get(key)
            now = time.monotonic()
            if hit is not None and (hit[0] == version and hit[1] > now or hit[3] + self.fresh_s > now):
                self._entries.move_to_end(key)
                self.hits += 1
                return True, hit[2]
        return False, None

    def get_or_compute(
        self,
        key: Hashable,
        *,
        connection: Callable[[], AbstractContextManager[psycopg.Connection]],
        compute: Callable[[psycopg.Connection], T],
    ) -> T:
        """The cached result for `key` at the current data version, computing it once when missing.

        `connection()` lends a connection only while it is needed (reading the data version, computing), so
        callers waiting for another caller's computation of the same key hold none: a burst of identical
        requests cannot drain the pool.
        """
        if self.ttl_s <= 0:
            with self._gate(), connection() as conn:
                return compute(conn)
        with connection() as conn:
            version = data_version(conn)
        found, value = self._lookup(key, version)
        if found:
            return value
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # concurrent callers of one key wait for the first computation instead of repeating it
            found, value = self._lookup(key, version)
            if found:
                return value
            with self._gate(), connection() as conn:
                value = compute(conn)
            with self._guard:
                self.misses += 1
                now = time.monotonic()
                self._entries[key] = (version, now + self.ttl_s, value, now)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    old, _ = self._entries.popitem(last=False)
                    self._locks.pop(old, None)
            return value
