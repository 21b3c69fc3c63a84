"""The gateway's after-refresh keeper of the kept health rows, on the real database."""

from __future__ import annotations

import pickle
from datetime import timedelta

import pytest

from cxp.alerts.evaluator import after_rollup_refresh
from cxp.cli.keepers import HealthKeeper, chain
from tests.fixtures.health_fleet import FIRST_DAY, LAST_DAY, health_fleet, late_use

pytestmark = pytest.mark.integration


def _counts(db) -> tuple[int, int]:
    """(fresh rows, stale rows of whole weeks of the fleet's data its devices were customers in)."""
    return db.execute("SELECT count(*) FILTER (WHERE NOT stale), count(*) FILTER (WHERE stale AND week >= %s"
                      " AND week + 6 <= %s AND week + 6 >= (d.activated_at AT TIME ZONE 'UTC')::date)"
                      " FROM health_weekly JOIN devices d USING (device_key)", (FIRST_DAY, LAST_DAY)).fetchone()


def test_the_keeper_keeps_every_week_then_only_what_went_stale(db, settings):
    devices = health_fleet(db, 13)
    assert _counts(db)[0] == 0
    keeper = HealthKeeper(settings, interval_s=0)
    keeper(db, settings, 0)
    keeper.join(60)
    fresh, stale = _counts(db)
    assert keeper.passes == 1 and fresh >= 6 * 8 and stale == 0
    late_use(db, {"dev-001": devices["dev-001"]}, FIRST_DAY + timedelta(days=20), seq=100_000)
    assert _counts(db)[1] == 4, "late data marked its week and the three after it"
    keeper(db, settings, 1)
    keeper.join(60)
    assert keeper.passes == 2 and _counts(db) == (fresh, 0), "the stale weeks were kept again, nothing else added"


def test_the_keeper_waits_its_interval_and_never_runs_twice_at_once(db, settings):
    health_fleet(db, 14)
    keeper = HealthKeeper(settings, interval_s=3600)
    keeper(db, settings, 0)
    keeper(db, settings, 0)  # running, or started less than an hour ago: no second pass
    keeper.join(60)
    keeper(db, settings, 5)
    keeper.join(60)
    assert keeper.passes == 1


def test_chained_hooks_run_in_order_and_none_is_skipped(db, settings):
    calls: list[tuple[str, int]] = []
    hook = chain(None, lambda c, s, n: calls.append(("a", n)), None, lambda c, s, n: calls.append(("b", n)))
    assert hook is not None and chain(None, None) is None
    hook(db, settings, 7)
    assert calls == [("a", 7), ("b", 7)]


def test_the_gateways_hooks_survive_the_trip_to_its_writer_process(settings):
    hook = chain(after_rollup_refresh, HealthKeeper(settings, interval_s=300))
    copy = pickle.loads(pickle.dumps(hook))  # the writer process receives its hook pickled
    assert [type(h).__name__ for h in copy.hooks] == ["function", "HealthKeeper"]
    assert copy.hooks[1].interval_s == 300
