"""The result cache: reused while the analysed tables are unchanged, recomputed after a change."""

from __future__ import annotations

import threading
from contextlib import contextmanager, nullcontext

import pytest

from cxp.analytics.queries._base import own_connection
from cxp.api.cache import ResultCache, data_version
from cxp.api.deps import Cached
from cxp.store.db import create_pool
from cxp.store.registry import AccountRow, upsert_accounts
from tests.fixtures.gateway import wait_for

pytestmark = pytest.mark.integration


def _lender(conn):
    """A `connection` factory lending one existing connection."""
    return lambda: nullcontext(conn)


def test_result_is_reused_until_the_data_changes(db) -> None:
    cache = ResultCache(ttl_s=600)
    calls: list[int] = []
    lend = _lender(db)

    def compute(conn) -> int:
        assert conn is db
        calls.append(1)
        return len(calls)

    assert cache.get_or_compute("k", connection=lend, compute=compute) == 1
    assert cache.get_or_compute("k", connection=lend, compute=compute) == 1
    assert cache.get_or_compute("other", connection=lend, compute=compute) == 2
    before = data_version(db)
    upsert_accounts(db, accounts=[AccountRow("acc-cache", "Cache test")])
    db.execute("SELECT pg_stat_force_next_flush()")
    db.execute("SELECT 1")  # the flush happens at the end of a transaction
    assert wait_for(lambda: data_version(db) != before, timeout=15)
    assert cache.get_or_compute("k", connection=lend, compute=compute) == 3
    assert (cache.hits, cache.misses) == (1, 3)


def test_fresh_answers_are_served_even_after_a_change(db) -> None:
    cache = ResultCache(ttl_s=600, fresh_s=600)
    calls: list[int] = []
    lend = _lender(db)
    assert cache.get_or_compute("k", connection=lend, compute=lambda c: calls.append(1) or len(calls)) == 1
    before = data_version(db)
    upsert_accounts(db, accounts=[AccountRow("acc-fresh", "Fresh test")])
    db.execute("SELECT pg_stat_force_next_flush()")
    db.execute("SELECT 1")
    assert wait_for(lambda: data_version(db) != before, timeout=15)
    assert cache.get_or_compute("k", connection=lend, compute=lambda c: calls.append(1) or len(calls)) == 1


def test_concurrent_callers_compute_once_and_ttl_zero_disables(db, stack) -> None:
    from cxp.store.db import connect

    cache = ResultCache(ttl_s=600)
    gate = threading.Event()
    calls: list[int] = []

    lent: list[int] = []

    def slow(conn) -> str:
        calls.append(1)
        gate.wait(5)
        return "done"

    @contextmanager
    def lend():
        with connect(stack.db) as conn:
            lent.append(1)
            yield conn

    results: list[str] = []

    def caller() -> None:
        results.append(cache.get_or_compute("slow", connection=lend, compute=slow))

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(calls) >= 1, timeout=5)
    gate.set()
    for t in threads:
        t.join(10)
    assert results == ["done"] * 4 and len(calls) == 1
    # each caller borrowed a connection to read the data version; only the computing one kept it longer
    assert 5 <= len(lent) <= 8
    off = ResultCache(ttl_s=0)
    assert [off.get_or_compute("k", connection=_lender(db), compute=lambda c: len(calls)) for _ in range(2)] == [1, 1]


def test_bounded_size_evicts_the_least_recent(db) -> None:
    cache = ResultCache(ttl_s=600, max_entries=2)
    for key in ("a", "b", "a", "c"):
        cache.get_or_compute(key, connection=_lender(db), compute=lambda c, k=key: k)
    assert list(cache._entries) == ["a", "c"]


def test_product_hours_rewritten_alone_change_the_data_version(db) -> None:
    """After a device moved product, a refresh may rewrite only `rollup_product_hourly`: answers must follow."""
    before = data_version(db)
    db.execute("INSERT INTO rollup_product_hourly (product_id, touchpoint, bucket, users)"
               " VALUES ('p-cache', 'brew', '2026-01-05 10:00+00', 3)")
    db.execute("SELECT pg_stat_force_next_flush()")
    db.execute("SELECT 1")
    assert wait_for(lambda: data_version(db) != before, timeout=15)


def test_a_cached_computation_may_borrow_a_second_connection_of_the_pool(settings) -> None:
    spare_db = settings.db.model_copy(update={"pool_min": 1, "pool_max": 2})
    with create_pool(spare_db, name="t-cached") as pool:
        cached = Cached(cache=ResultCache(ttl_s=600), pool=pool)

        def compute(conn):
            with own_connection(conn) as second:
                pids = {c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in (conn, second)}
            with own_connection(conn) as third, own_connection(conn) as fourth:  # the pool holds two: no third
                return len(pids), third is not conn, fourth is conn

        assert cached("lent", compute) == (2, True, True)
