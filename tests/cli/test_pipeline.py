"""End to end: a simulated fleet over the real broker into the real database, counted exactly."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from cxp.store.rollup_listings import list_daily, list_daily_from_scratch
from cxp.store.rollups import refresh_all_pending
from cxp.tools.simulate import simulate_fleet
from tests.fixtures.compare import assert_rows_equal
from tests.fixtures.gateway import wait_for

pytestmark = pytest.mark.integration


def _stored_counts(db) -> Counter:
    rows = db.execute(
        "SELECT d.device_id, e.kind::text, count(*) FROM events e JOIN devices d USING (device_key) GROUP BY 1, 2"
        " UNION ALL SELECT d.device_id, 'state', count(*) FROM device_state s JOIN devices d USING (device_key)"
        " GROUP BY 1").fetchall()
    return Counter({(device, kind): n for device, kind, n in rows})


def test_simulated_fleet_is_stored_exactly_per_device_and_kind(db, settings, start_gateway):
    gw = start_gateway()
    start = (datetime.now(UTC) - timedelta(days=4)).replace(hour=0, minute=0, second=0, microsecond=0)
    fleet, report = simulate_fleet(settings=settings, devices=40, days=3, seed=11, mode="backfill", start=start,
                                   duration_s=0, speed=1, error_prone=None, progress=False)
    assert report.all_acked and report.events > 1000
    expected = Counter({key: n for key, n in report.counts.items() if n})
    assert {kind for _, kind in expected} >= {"usage", "state", "lifecycle", "feedback"}
    assert wait_for(lambda: sum(_stored_counts(db).values()) >= report.events, timeout=120)
    # Publishing the same history again (a device replaying its buffer) adds nothing.
    _, again = simulate_fleet(settings=settings, devices=40, days=3, seed=11, mode="backfill", start=start,
                              duration_s=0, speed=1, error_prone=None, progress=False)
    assert again.events == report.events
    # The replay reached the gateway (its periodic stats line says so) before we stop it.
    assert wait_for(lambda: f'"received": {2 * report.messages},' in gw.log(), timeout=60)
    assert gw.stop() == 0
    stats = gw.final_stats()
    assert stats["received"] == 2 * report.messages
    assert stats["duplicates"] == report.events
    assert _stored_counts(db) == expected
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0
    truth = db.execute("SELECT count(*), count(*) FILTER (WHERE churns) FROM sim_ground_truth").fetchone()
    assert truth[0] == 40
    refresh_all_pending(db)
    assert_rows_equal(list_daily(db), list_daily_from_scratch(db))


def test_history_loaded_in_bulk_then_the_rest_live_meet_exactly(db, settings, start_gateway):
    """The demo's split: days before a cut loaded straight to the database, the rest over MQTT — nothing lost at the
    seam, nothing stored twice."""
    import json

    from cxp.device_sim import build_fleet, plan_messages
    from cxp.tools.fleet import load_fleet

    start = (datetime.now(UTC) - timedelta(days=4)).replace(hour=0, minute=0, second=0, microsecond=0)
    cut = start + timedelta(days=2, hours=7)  # mid-day: uploads straddle it
    params = {"seed": 5, "devices": 20, "start": start, "days": 3, "error_prone": None}
    planned = sum(len(json.loads(m.payload)["events"]) for m in plan_messages(fleet=build_fleet(**params)))
    loaded = load_fleet(db, fleet_params=params, workers=0, until=cut)
    history = loaded.events_stored + loaded.states_stored
    assert 0 < history < planned and loaded.dead_lettered == 0
    gw = start_gateway()
    _, report = simulate_fleet(settings=settings, devices=20, days=3, seed=5, mode="backfill", start=start,
                               duration_s=0, speed=1, error_prone=None, progress=False, publish_from=cut)
    assert report.all_acked and history + report.events == planned
    assert wait_for(lambda: sum(_stored_counts(db).values()) >= planned, timeout=120)
    assert gw.stop() == 0 and gw.final_stats()["duplicates"] == 0
    assert sum(_stored_counts(db).values()) == planned
