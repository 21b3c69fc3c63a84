"""`cxp dead-letters replay`: dead letters that pass after a fix are stored, each exactly once."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cxp.core.config import PROJECT_ROOT
from cxp.deadletters import replay_dead_letters
from cxp.store.registry import DeviceRow, upsert_devices
from tests.fixtures.gateway import gateway_env, wait_for
from tests.fixtures.mqtt import batch_payload, usage
from tests.fixtures.stack import ACTIVATED, recent

pytestmark = pytest.mark.integration


def _count(db, sql: str) -> int:
    return db.execute(sql).fetchone()[0]


def test_dead_letters_replay_after_a_fix_exactly_once(db, registered, publisher, settings, start_gateway):
    gw = start_gateway()
    ts = recent(10)
    # 1,000 events from a device not registered yet, and one message that stays invalid.
    big = batch_payload([usage(i, ts) for i in range(1, 1001)], device_id="dev-009")
    bad = batch_payload([{**usage(1, ts), "duration_s": -5}])
    assert publisher.publish([(publisher.topic("dev-009"), big), (publisher.topic("dev-001"), bad)]) == 2
    assert wait_for(lambda: _count(db, "SELECT count(*) FROM dead_letters") == 2, timeout=20)
    assert gw.stop() == 0
    assert _count(db, "SELECT count(*) FROM events") == 0

    assert replay_dead_letters(db, settings=settings).stored == [], "nothing passes before the fix"

    # The fix: the device is registered. The whole payload was kept, so all 1,000 events come back.
    upsert_devices(db, devices=[DeviceRow("dev-009", "test-p1", "acc-1", ACTIVATED, "basic", "A")])
    dry = replay_dead_letters(db, settings=settings, dry_run=True)
    assert (len(dry.stored), dry.events_stored) == (1, 1000)
    assert _count(db, "SELECT count(*) FROM events") == 0, "a dry run stores nothing"
    assert _count(db, "SELECT count(*) FROM dead_letters WHERE replayed_at IS NOT NULL") == 0
    first = replay_dead_letters(db, settings=settings)
    assert (first.examined, len(first.stored), first.events_stored) == (2, 1, 1000)
    assert list(first.still_invalid.values())[0].startswith("schema:")
    assert _count(db, "SELECT count(*) FROM events") == 1000
    assert db.execute("SELECT reason, replay_outcome FROM dead_letters WHERE replayed_at IS NOT NULL").fetchall() \
        == [("unknown_device", "stored")]

    # Again, through the CLI: the replayed letter is not taken twice; the invalid one is still pending.
    out = subprocess.run([sys.executable, "-m", "cxp.cli.main", "dead-letters", "replay"], cwd=PROJECT_ROOT,
                         env=gateway_env(settings), capture_output=True, text=True, timeout=60, check=True)
    second = json.loads(out.stdout.strip().splitlines()[-1])
    assert (second["examined"], second["stored"], second["events_stored"]) == (1, [], 0)
    assert _count(db, "SELECT count(*) FROM events") == 1000
    assert _count(db, "SELECT count(*) FROM dead_letters") == 2
