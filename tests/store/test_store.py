"""Migrations, ingest checks, poison isolation and retention on the real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cxp.store import ingest
from cxp.store.errors import MigrationError, StoreError
from cxp.store.ingest import IngestMessage, TimeBounds, write_batch, write_batch_isolating
from cxp.store.migrate import apply_migrations, list_migrations
from cxp.store.retention import drop_old_chunks
from tests.fixtures.mqtt import batch_payload, usage

pytestmark = pytest.mark.integration


def _msg(key: int, payload: bytes, received: datetime | None = None) -> IngestMessage:
    received = received or datetime.now(UTC)
    return IngestMessage("d/dev-000/telemetry", "dev-000", key, payload, received.timestamp(),
                         datetime(2026, 1, 1, tzinfo=UTC).timestamp())


def test_migrations_are_recorded_and_idempotent(db):
    assert apply_migrations(db) == []
    versions = [v for (v,) in db.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [m.version for m in list_migrations()]
    hypertables = {t for (t,) in db.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")}
    assert {"events", "device_state", "rollup_hourly"} <= hypertables


# What 001_registry.sql read before the simulator's truth tables moved out of it into 006_sim_truth.
OLD_REGISTRY_CHECKSUM = "777ac7a8c55284114e016ac42be56c73054e99e332d55f1697f3c9226438db0a"


def test_a_database_migrated_with_the_old_registry_migration_still_migrates(db):
    current = db.execute("SELECT checksum FROM schema_migrations WHERE version = 1").fetchone()[0]
    truth = [m for m in list_migrations() if m.name == "sim_truth"]
    assert len(truth) == 1 and truth[0].version > 5
    # Such a database has the truth tables (the old 001 made them) and has not applied 006 yet.
    db.execute("UPDATE schema_migrations SET checksum = %s WHERE version = 1", (OLD_REGISTRY_CHECKSUM,))
    db.execute("DELETE FROM schema_migrations WHERE version = %s", (truth[0].version,))
    try:
        assert [m.name for m in apply_migrations(db)] == ["sim_truth"]
        assert apply_migrations(db) == []
    finally:
        db.execute("UPDATE schema_migrations SET checksum = %s WHERE version = 1", (current,))
    tables = {t for (t,) in db.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'sim_%'")}
    # 013_sim_experience_truth adds the touchpoint truth beside them.
    assert tables == {"sim_ground_truth", "sim_incidents", "sim_touchpoint_truth"}


def test_a_migration_changed_after_it_was_applied_is_refused(db):
    current = db.execute("SELECT checksum FROM schema_migrations WHERE version = 2").fetchone()[0]
    db.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 2")
    try:
        with pytest.raises(MigrationError):
            apply_migrations(db)
    finally:
        db.execute("UPDATE schema_migrations SET checksum = %s WHERE version = 2", (current,))


def test_time_bounds_reject_whole_messages_in_sql(db, registered):
    key = db.execute("SELECT device_key FROM devices WHERE device_id = 'dev-000'").fetchone()[0]
    now = datetime.now(UTC)
    good = _msg(key, batch_payload([usage(1, now - timedelta(hours=1))]))
    mixed = _msg(key, batch_payload([usage(2, now - timedelta(hours=1)), usage(3, now + timedelta(hours=1))]))
    old = _msg(key, batch_payload([usage(4, now - timedelta(days=40))]))
    result = write_batch(db, messages=[good, mixed, old], bounds=TimeBounds(300, 30 * 86400))
    assert (result.events_in, result.events_stored) == (1, 1)
    assert sorted(r[1] for r in result.rejected) == ["future_timestamp", "too_old"]
    reasons = sorted(r for (r,) in db.execute("SELECT reason FROM dead_letters"))
    assert reasons == ["future_timestamp", "too_old"]


def test_poison_message_is_isolated_and_the_rest_stored(db, registered):
    key = db.execute("SELECT device_key FROM devices WHERE device_id = 'dev-000'").fetchone()[0]
    now = datetime.now(UTC) - timedelta(hours=1)
    good = _msg(key, batch_payload([usage(1, now)]))
    # Valid for the contract but refused by PostgreSQL: a NUL character cannot be stored in jsonb text.
    poison = _msg(key, batch_payload([{"seq": 2, "ts": now.isoformat(), "kind": "lifecycle", "stage": "setup",
                                       "detail": {"note": "a\u0000b"}}]))
    with pytest.raises(StoreError):
        write_batch(db, messages=[good, poison])
    result = write_batch_isolating(db, messages=[good, poison])
    assert result.events_stored == 1
    assert [r[1] for r in result.rejected] == ["store_rejected"]
    assert db.execute("SELECT reason FROM dead_letters").fetchall() == [("store_rejected",)]


def test_poison_isolation_costs_logarithmic_round_trips(db, registered, monkeypatch):
    key = db.execute("SELECT device_key FROM devices WHERE device_id = 'dev-000'").fetchone()[0]
    now = datetime.now(UTC) - timedelta(hours=1)
    messages = [_msg(key, batch_payload([usage(i, now + timedelta(milliseconds=i))])) for i in range(400)]
    # PostgreSQL refuses these (the contract now refuses them first; the store must still cope).
    messages[137] = _msg(key, b'{"v":1,"events":[{"seq":137,"ts":"%s","kind":"usage","touchpoint":"x",'
                              b'"duration_s":1e-50}]}' % now.isoformat().encode())
    messages[301] = _msg(key, batch_payload([{"seq": 301, "ts": now.isoformat(), "kind": "lifecycle",
                                              "stage": "setup", "detail": {"note": "a\u0000b"}}]))
    calls = []
    real_write = ingest.write_batch
    monkeypatch.setattr(ingest, "write_batch", lambda conn, **kw: calls.append(1) or real_write(conn, **kw))
    result = ingest.write_batch_isolating(db, messages=messages)
    assert result.events_stored == 398
    assert [(i, r) for i, r, _ in result.rejected] == [(137, "store_rejected"), (301, "store_rejected")]
    # One message at a time took 402 transactions; bisection takes about 2 per level per poison message.
    assert len(calls) <= 2 + 2 * 2 * 9, len(calls)
    assert db.execute("SELECT count(*) FROM dead_letters WHERE reason = 'store_rejected'").fetchone()[0] == 2
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 398


def test_retention_drops_only_old_raw_chunks(db, registered):
    key = db.execute("SELECT device_key FROM devices WHERE device_id = 'dev-000'").fetchone()[0]
    now = datetime.now(UTC)
    payload = batch_payload([usage(1, now - timedelta(days=60)), usage(2, now - timedelta(hours=2))])
    write_batch(db, messages=[_msg(key, payload)], bounds=TimeBounds(300, None))
    with pytest.raises(StoreError):
        drop_old_chunks(db, keep_days=0)
    dropped = drop_old_chunks(db, keep_days=30)
    assert dropped["events"] >= 1
    assert [s for (s,) in db.execute("SELECT seq FROM events")] == [2]
    assert [s for (s,) in db.execute("SELECT seq FROM device_seq")] == [2]
