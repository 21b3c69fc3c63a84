"""`idle_connection`: a second connection for a computation when the pool has one free, never a wait for one."""

from __future__ import annotations

import time

import pytest

from cxp.store.db import create_pool, idle_connection

pytestmark = pytest.mark.integration


def test_idle_connection_lends_a_free_one_and_none_when_the_pool_is_all_held(settings):
    with create_pool(settings.db.model_copy(update={"pool_min": 1, "pool_max": 1}), name="cxp-test-idle") as pool:
        with idle_connection(pool) as spare:
            assert spare is not None and spare.execute("SELECT 1").fetchone() == (1,)
            t0 = time.monotonic()
            with idle_connection(pool, wait_s=0.05) as none_free:
                assert none_free is None
            assert time.monotonic() - t0 < 5  # not the pool's own 30 s timeout
        with idle_connection(pool) as again:  # given back
            assert again is not None


def test_a_busy_pool_is_not_probed_for_each_lend(settings, monkeypatch):
    with create_pool(settings.db.model_copy(update={"pool_min": 1, "pool_max": 1}), name="cxp-test-probe") as pool:
        probes: list[int] = []
        monkeypatch.setattr(pool, "probe", lambda: probes.append(1))
        with pool.connection():
            for _ in range(3):
                with idle_connection(pool, wait_s=0.01) as none_free:
                    assert none_free is None
        assert probes == []  # busy, not down: no connection opened outside the pool to tell
