"""Rollups maintained incrementally equal a from-scratch aggregation, late and out-of-order data included."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, time, timedelta

import pytest

from cxp.store.db import connect
from cxp.store.ingest import IngestMessage, TimeBounds, write_batch
from cxp.store.registry import DeviceRow, ProductRow, TouchpointRow, upsert_devices, upsert_products
from cxp.store.rollup_listings import (
    list_answer_context,
    list_answer_context_from_scratch,
    list_core_uses,
    list_core_uses_from_scratch,
    list_daily,
    list_daily_from_scratch,
    list_feedback_daily,
    list_feedback_daily_from_scratch,
    list_first_success,
    list_first_success_from_scratch,
    list_hourly,
    list_hourly_from_scratch,
    list_monthly,
    list_monthly_from_scratch,
    list_product_error_hourly,
    list_product_error_hourly_from_scratch,
    list_product_hourly,
    list_product_hourly_from_scratch,
    list_touchpoint_daily,
    list_touchpoint_daily_from_scratch,
    list_uptime,
    list_uptime_from_scratch,
    list_weekly,
    list_weekly_from_scratch,
)
from cxp.store.rollups import (
    refresh_all_pending,
    refresh_paced,
    refresh_rollups,
)
from tests.fixtures.compare import assert_rows_equal
from tests.fixtures.gateway import wait_for
from tests.fixtures.mqtt import batch_payload, usage
from tests.fixtures.stack import ACTIVATED

pytestmark = pytest.mark.integration
# Noon yesterday, not the clock: the random events' UTC days (and so which days hold an exit) must not depend on the
# time of day the suite runs (with the clock, the exit-stage check failed when run at 23:56-00:00 UTC).
NOW = datetime.combine(datetime.now(UTC).date() - timedelta(days=1), time(12), tzinfo=UTC)
NO_AGE_LIMIT = TimeBounds(max_future_skew_s=300, max_age_s=None)


def _message(device: str, key: int, events: list[dict]) -> IngestMessage:
    return IngestMessage(f"d/{device}/telemetry", device, key, batch_payload(events), NOW.timestamp(),
                         datetime(2026, 1, 1, tzinfo=UTC).timestamp())


def _random_events(rng: random.Random, seq0: int, start: datetime, n: int) -> list[dict]:
    events = []
    for i in range(n):
        ts = start + timedelta(minutes=rng.randrange(0, 3 * 24 * 60))
        kind = rng.choice(["usage", "usage", "usage", "error", "state", "feedback", "lifecycle", "recovery"])
        if kind == "usage":
            events.append(usage(seq0 + i, ts, rng.choice(["brew", "app_pairing"]), success=rng.random() > 0.1,
                                duration_s=rng.uniform(1, 60), quantity=float(rng.randint(1, 3)), unit="cup",
                                latency_ms=rng.uniform(50, 900)))
        elif kind == "error":
            events.append({"seq": seq0 + i, "ts": ts.isoformat(), "kind": "error", "code": "E1",
                           "touchpoint": rng.choice(["brew", None])})
        elif kind == "state":
            events.append({"seq": seq0 + i, "ts": ts.isoformat(), "kind": "state",
                           "battery_pct": rng.uniform(5, 100), "energy_wh": rng.uniform(0, 1e4)})
        elif kind == "feedback":
            answer = {"touchpoint": rng.choice(["brew", "app_pairing"]), "csat": rng.randint(1, 5)}
            events.append({"seq": seq0 + i, "ts": ts.isoformat(), "kind": "feedback", "nps": rng.randint(0, 10),
                           **(answer if rng.random() < 0.7 else {})})
        elif kind == "lifecycle":
            events.append({"seq": seq0 + i, "ts": ts.isoformat(), "kind": "lifecycle",
                           "stage": rng.choice(["setup", "setup", "cancelled", "returned"])})
        else:
            events.append({"seq": seq0 + i, "ts": ts.isoformat(), "kind": "recovery", "code": "E1"})
    return events


def _earlier_exit(daily: list[tuple], keys: dict, devices: list[str]) -> tuple[str, int, list[dict]]:
    """A late lifecycle exit before a rolled-up day's first one (the day's stored exit must change)."""
    by_key = {key: device for device, key in keys.items() if device in devices}
    key, day, exit_at, stage = next((row[0], row[1], row[-2], row[-1]) for row in daily if row[0] in by_key
                                    and row[-2] is not None and row[-2].time() > datetime.min.time())
    day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    earlier = day_start + (exit_at - day_start) / 2
    other = "returned" if stage == "cancelled" else "cancelled"
    return by_key[key], key, [{"seq": 20_000, "ts": earlier.isoformat(), "kind": "lifecycle", "stage": other}]


def _write_random(db, rng: random.Random, keys: dict, devices: list[str], *, start: datetime, count: int) -> None:
    """`count` random events from `start` on for each device, one message each."""
    for device in devices:
        write_batch(db, messages=[_message(device, keys[device], _random_events(rng, 0, start, count))],
                    bounds=NO_AGE_LIMIT)


def test_incremental_rollups_equal_from_scratch_after_late_data(db, registered):
    rng = random.Random(7)
    keys = dict(db.execute("SELECT device_id, device_key FROM devices").fetchall())
    start = NOW - timedelta(days=6)
    # Day-ordered data first, rolled up.
    _write_random(db, rng, keys, registered, start=start, count=200)
    first = refresh_all_pending(db)
    assert first.device_days > 0 and first.hourly_rows > 0
    assert_rows_equal(list_hourly(db), list_hourly_from_scratch(db))
    assert_rows_equal(list_answer_context(db), list_answer_context_from_scratch(db))
    assert list_uptime(db) == list_uptime_from_scratch(db)
    per_touchpoint_before = list_touchpoint_daily(db)
    weekly_before = list_weekly(db)
    assert weekly_before[0] == list_weekly_from_scratch(db)[0] and weekly_before[0] and weekly_before[1]
    assert_rows_equal(weekly_before[1], list_weekly_from_scratch(db)[1])
    monthly_before = list_monthly(db)
    for stored, afresh in zip(monthly_before, list_monthly_from_scratch(db), strict=True):
        assert stored and afresh
        assert_rows_equal(stored, afresh)
    assert_rows_equal(per_touchpoint_before, list_touchpoint_daily_from_scratch(db))
    first_successes_before = list_first_success(db)
    assert first_successes_before == list_first_success_from_scratch(db) != []
    core_before = list_core_uses(db)
    assert core_before == list_core_uses_from_scratch(db) != []
    before = list_daily(db)
    assert any(row[-2] is not None for row in before), "days with a cancellation or return"
    assert {row[-1] for row in before} == {None, "cancelled", "returned"}, "and the stage of the first"
    covers_before = list_uptime(db)
    answers_before = list_answer_context(db)
    feedback_before = list_feedback_daily(db)
    assert feedback_before == list_feedback_daily_from_scratch(db)
    product_hours_before = list_product_hourly(db)
    assert product_hours_before == list_product_hourly_from_scratch(db)
    assert max(row[3] for row in product_hours_before) > 1, "hours several devices used"
    product_errors_before = list_product_error_hourly(db)
    assert product_errors_before == list_product_error_hourly_from_scratch(db) != []
    assert {row[2] for row in feedback_before} >= {"", "brew"}
    assert {row[3] for row in feedback_before} == {"nps", "csat"}
    # Late, out-of-order data into already rolled-up days (and a redelivery that must change nothing).
    late = [_message(d, keys[d], _random_events(rng, 10_000, start, 60)) for d in registered[:3]]
    late.append(_message(*_earlier_exit(before, keys, registered[3:])))
    write_batch(db, messages=late, bounds=NO_AGE_LIMIT)
    write_batch(db, messages=late[:1], bounds=NO_AGE_LIMIT)
    second = refresh_rollups(db, max_device_days=4)  # partial refresh: the rest stays pending
    assert second.pending > 0
    refresh_all_pending(db)
    assert_rows_equal(list_hourly(db), list_hourly_from_scratch(db))
    after = list_daily(db)
    assert_rows_equal(after, list_daily_from_scratch(db))
    assert after != before, "late data changed the rollups"
    exits = {row[:2]: row[-2:] for row in after if row[-2] is not None}
    assert exits != {row[:2]: row[-2:] for row in before if row[-2] is not None}, "late exits changed the first"
    per_touchpoint = list_touchpoint_daily(db)
    assert_rows_equal(per_touchpoint, list_touchpoint_daily_from_scratch(db))
    assert per_touchpoint != per_touchpoint_before, "late data changed the touchpoint-daily rollup"
    assert any(row[12] == [] for row in per_touchpoint) and any(len(row[12]) > 1 for row in per_touchpoint)
    assert any(row[10] > 0 for row in per_touchpoint)
    assert list_first_success(db) == list_first_success_from_scratch(db)
    core = list_core_uses(db)
    assert core == list_core_uses_from_scratch(db) != core_before
    weekly = list_weekly(db)
    assert weekly[0] == list_weekly_from_scratch(db)[0]
    assert_rows_equal(weekly[1], list_weekly_from_scratch(db)[1])
    assert weekly != weekly_before, "late data changed the weekly rollups"
    monthly = list_monthly(db)
    for stored, afresh in zip(monthly, list_monthly_from_scratch(db), strict=True):
        assert_rows_equal(stored, afresh)
    assert monthly[0] != monthly_before[0] and monthly[1] != monthly_before[1], "late data changed the months"
    assert any(row[7] > 0 for row in monthly[0]), "heartbeat covers summed into the months"
    product_hours = list_product_hourly(db)
    assert product_hours == list_product_hourly_from_scratch(db)
    assert product_hours != product_hours_before, "late data changed the product-hourly exposure"
    product_errors = list_product_error_hourly(db)
    assert product_errors == list_product_error_hourly_from_scratch(db)
    assert product_errors != product_errors_before, "late data changed the product-hourly errors"
    feedback = list_feedback_daily(db)
    assert feedback == list_feedback_daily_from_scratch(db)
    assert feedback != feedback_before, "late data changed the feedback-daily rollup"
    answers = list_answer_context(db)
    assert_rows_equal(answers, list_answer_context_from_scratch(db))
    assert answers != answers_before, "late data changed the answer contexts"
    covers = list_uptime(db)
    assert covers == list_uptime_from_scratch(db)  # exact microseconds
    assert covers != covers_before, "late heartbeats changed the covers"
    assert any(row[5] is None for row in answers) and any(row[5] is not None for row in answers)
    assert db.execute("SELECT count(*) FROM rollup_dirty").fetchone()[0] == 0


def test_daily_rollup_counts_match_raw_events(db, registered):
    keys = dict(db.execute("SELECT device_id, device_key FROM devices").fetchall())
    day = (NOW - timedelta(days=2)).replace(hour=10, minute=0, second=0, microsecond=0)
    events = [usage(1, day, success=True, latency_ms=100.0, quantity=2.0, unit="cup"),
              usage(2, day + timedelta(hours=1), success=False, latency_ms=300.0),
              usage(3, day + timedelta(hours=2), touchpoint="app_pairing"),
              {"seq": 4, "ts": day.isoformat(), "kind": "error", "code": "E9", "touchpoint": "brew"},
              {"seq": 5, "ts": day.isoformat(), "kind": "state", "battery_pct": 40.0},
              {"seq": 6, "ts": day.isoformat(), "kind": "state", "battery_pct": 35.0}]
    write_batch(db, messages=[_message("dev-000", keys["dev-000"], events)], bounds=NO_AGE_LIMIT)
    refresh_all_pending(db)
    row = db.execute("SELECT usage_count, success_count, error_count, quantity_sum, latency_count, latency_sum,"
                     " latency_max, touchpoints_used, heartbeat_count, battery_min, active, core_usage_count"
                     " FROM rollup_daily").fetchall()
    assert row == [(3, 2, 1, 2.0, 2, 400.0, 300.0, 2, 2, 35.0, True, 2)]  # brew is core, app_pairing is not


def _rolled_up(db, registered: list[str], seed: int) -> dict[str, int]:
    """200 random events for each registered device over the last 6 days, rolled up; the devices' keys."""
    keys = dict(db.execute("SELECT device_id, device_key FROM devices").fetchall())
    _write_random(db, random.Random(seed), keys, registered, start=NOW - timedelta(days=6), count=200)
    refresh_all_pending(db)
    return keys


BREW_ONLY = [TouchpointRow("brew", "post_purchase", "brand", True, 500.0, 30.0, "cup")]


def test_a_new_heartbeat_interval_or_product_recomputes_the_covers(db, registered):
    keys = _rolled_up(db, registered, 11)
    before = list_uptime(db)
    touchpoints = BREW_ONLY

    def dirty() -> int:
        return db.execute("SELECT count(*) FROM rollup_dirty").fetchone()[0]

    upsert_products(db, products=[ProductRow("test-p1", "Test product", 3600, 5.0, touchpoints)])
    assert dirty() == 0, "the same interval keeps the covers"
    upsert_products(db, products=[ProductRow("test-p1", "Test product", 5400, 5.0, touchpoints)])
    assert dirty() > 0
    refresh_all_pending(db)
    longer = list_uptime(db)
    assert longer == list_uptime_from_scratch(db) and longer != before
    assert sum(row[2] for row in longer) > sum(row[2] for row in before)
    upsert_products(db, products=[ProductRow("test-p2", "Other product", 600, 5.0, touchpoints)])
    moved = registered[0]
    upsert_devices(db, devices=[DeviceRow(moved, "test-p2", "acc-1", ACTIVATED, "basic", "A")])
    assert {row[0] for row in db.execute("SELECT device_key FROM rollup_dirty")} == {keys[moved]}
    refresh_all_pending(db)
    assert list_uptime(db) == list_uptime_from_scratch(db) != longer


def test_core_uses_follow_the_catalogue_and_a_moved_device(db, registered):
    keys = _rolled_up(db, registered, 13)
    brew_only = list_core_uses(db)
    assert brew_only == list_core_uses_from_scratch(db) != []
    both_core = [TouchpointRow("brew", "post_purchase", "brand", True, 500.0, 30.0, "cup"),
                 TouchpointRow("app_pairing", "purchase", "brand", True, 2000.0, None, None)]
    upsert_products(db, products=[ProductRow("test-p1", "Test product", 3600, 5.0, both_core)])
    more = list_core_uses(db)  # recounted at once, without a refresh
    assert more == list_core_uses_from_scratch(db)
    assert sum(r[2] for r in more) > sum(r[2] for r in brew_only)
    # Another product whose only core touchpoint is app_pairing: a device moved there counts only those uses.
    pairing_core = [TouchpointRow("brew", "post_purchase", "brand", False, 500.0, 30.0, "cup"),
                    TouchpointRow("app_pairing", "purchase", "brand", True, 2000.0, None, None)]
    upsert_products(db, products=[ProductRow("test-p2", "Other product", 3600, 5.0, pairing_core)])
    moved = registered[0]
    upsert_devices(db, devices=[DeviceRow(moved, "test-p2", "acc-1", ACTIVATED, "basic", "A")])
    after_move = list_core_uses(db)
    assert after_move == list_core_uses_from_scratch(db)
    assert {r for r in after_move if r[0] != keys[moved]} == {r for r in more if r[0] != keys[moved]}
    assert [r for r in after_move if r[0] == keys[moved]] != [r for r in more if r[0] == keys[moved]]
    upsert_products(db, products=[ProductRow("test-p1", "Test product", 3600, 5.0, BREW_ONLY)])
    assert list_core_uses(db) == list_core_uses_from_scratch(db)
    refresh_all_pending(db)
    assert list_core_uses(db) == list_core_uses_from_scratch(db)


def test_a_catalogue_change_waits_for_a_refresh_under_way_and_recounts_what_it_wrote(db, registered, settings):
    keys = _rolled_up(db, registered, 14)
    # Days not rolled up yet: the refresh below writes new rows for them, counted with the catalogue it sees.
    rng = random.Random(15)
    write_batch(db, messages=[_message(d, keys[d], _random_events(rng, 50_000, NOW - timedelta(days=20), 80))
                              for d in registered], bounds=NO_AGE_LIMIT)
    both_core = [TouchpointRow("brew", "post_purchase", "brand", True, 500.0, 30.0, "cup"),
                 TouchpointRow("app_pairing", "purchase", "brand", True, 2000.0, None, None)]
    done = threading.Event()
    with connect(settings.db) as refresher, connect(settings.db) as admin:
        with refresher.transaction():
            assert refresh_rollups(refresher).device_days > 0  # under way: brew is its only core touchpoint
            worker = threading.Thread(target=lambda: (upsert_products(admin, products=[
                ProductRow("test-p1", "Test product", 3600, 5.0, both_core)]), done.set()))
            worker.start()
            assert wait_for(lambda: db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchone()[0] > 0, timeout=10), "the catalogue change waits for the refresh"
            assert not done.is_set()
        worker.join(timeout=30)
    assert done.is_set()
    assert list_core_uses(db) == list_core_uses_from_scratch(db)  # the refresh's new rows recounted too


def test_a_device_moved_to_another_product_moves_its_hours_of_exposure(db, registered):
    keys = _rolled_up(db, registered, 12)
    before = list_product_hourly(db)
    assert {row[0] for row in before} == {"test-p1"}
    upsert_products(db, products=[ProductRow("test-p2", "Other product", 3600, 5.0, BREW_ONLY)])
    moved = registered[0]
    upsert_devices(db, devices=[DeviceRow(moved, "test-p1", "acc-1", ACTIVATED, "basic", "A")])
    assert db.execute("SELECT count(*) FROM rollup_product_dirty").fetchone()[0] == 0, "not moved"
    upsert_devices(db, devices=[DeviceRow(moved, "test-p2", "acc-1", ACTIVATED, "basic", "A")])
    days = {row[0] for row in db.execute("SELECT day FROM rollup_product_dirty")}
    assert days == {row[0] for row in db.execute(
        "SELECT DISTINCT (bucket AT TIME ZONE 'UTC')::date FROM rollup_hourly WHERE device_key = %s", (keys[moved],))}
    assert list_product_hourly(db) == before, "kept until the refresh"
    errors_before = list_product_error_hourly(db)
    assert {row[0] for row in errors_before} == {"test-p1"}
    refresh_all_pending(db)
    after = list_product_hourly(db)
    assert after == list_product_hourly_from_scratch(db)
    errors_after = list_product_error_hourly(db)
    assert errors_after == list_product_error_hourly_from_scratch(db)
    assert {row[0] for row in errors_after} == {"test-p1", "test-p2"}, "the moved device's errors moved with it"
    moved_hours = db.execute(
        "SELECT count(DISTINCT (touchpoint, bucket)) FROM rollup_hourly WHERE device_key = %s AND touchpoint <> ''"
        " AND usage_count > 0", (keys[moved],)).fetchone()[0]
    assert sum(row[3] for row in after if row[0] == "test-p2") == moved_hours > 0
    assert sum(row[3] for row in after) == sum(row[3] for row in before)
    assert db.execute("SELECT count(*) FROM rollup_product_dirty").fetchone()[0] == 0


def test_a_late_heartbeat_before_midnight_extends_the_next_days_cover(db, registered):
    key = db.execute("SELECT device_key FROM devices WHERE device_id = %s", (registered[0],)).fetchone()[0]
    midnight = (NOW - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)

    def state(seq: int, ts: datetime) -> dict:
        return {"seq": seq, "ts": ts.isoformat(), "kind": "state", "battery_pct": 50.0}

    write_batch(db, messages=[_message(registered[0], key, [state(1, midnight + timedelta(hours=5))])],
                bounds=NO_AGE_LIMIT)
    refresh_all_pending(db)
    hold_us = 90 * 60 * 1_000_000  # 1.5 × the product's 3,600 s interval
    assert list_uptime(db) == [(key, midnight.date(), hold_us)]
    # Late: 10 minutes before that midnight. Only its own day is dirty; the cover runs into the next day.
    write_batch(db, messages=[_message(registered[0], key, [state(2, midnight - timedelta(minutes=10))])],
                bounds=NO_AGE_LIMIT)
    refresh_all_pending(db)
    assert list_uptime(db) == [(key, (midnight - timedelta(days=1)).date(), 10 * 60 * 1_000_000),
                               (key, midnight.date(), hold_us + 80 * 60 * 1_000_000)]
    assert list_uptime(db) == list_uptime_from_scratch(db)


def test_a_late_failure_in_the_week_before_an_answer_marks_the_answer(db, registered):
    key = db.execute("SELECT device_key FROM devices WHERE device_id = %s", (registered[0],)).fetchone()[0]
    noon = (NOW - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)

    def answer(seq: int, touchpoint: str) -> dict:
        return {"seq": seq, "ts": noon.isoformat(), "kind": "feedback", "touchpoint": touchpoint, "csat": 4}

    def error(seq: int, days_before: int) -> dict:
        ts = noon - timedelta(days=days_before, hours=11, minutes=30)  # 00:30 UTC, `days_before` days earlier
        return {"seq": seq, "ts": ts.isoformat(), "kind": "error", "code": "E1", "touchpoint": "brew"}

    def failed_before() -> dict[str, bool]:
        rows = list_answer_context(db)
        assert rows == list_answer_context_from_scratch(db)
        return {row[3]: row[7] for row in rows}

    write_batch(db, messages=[_message(registered[0], key, [answer(1, "brew"), answer(2, "app_pairing")])],
                bounds=NO_AGE_LIMIT)
    refresh_all_pending(db)
    assert failed_before() == {"brew": False, "app_pairing": False}
    # Late errors on earlier days: only those days are dirty, the answer's day is not.
    write_batch(db, messages=[_message(registered[0], key, [error(3, 8)])], bounds=NO_AGE_LIMIT)
    refresh_all_pending(db)
    assert failed_before() == {"brew": False, "app_pairing": False}, "8 days before: not in the week before"
    write_batch(db, messages=[_message(registered[0], key, [error(4, 7)])], bounds=NO_AGE_LIMIT)
    refresh_all_pending(db)
    assert failed_before() == {"brew": True, "app_pairing": False}, "7 days before, on the answered touchpoint"


def test_a_late_success_becomes_the_next_success_of_earlier_errors_and_the_first_success(db, registered):
    key = db.execute("SELECT device_key FROM devices WHERE device_id = %s", (registered[0],)).fetchone()[0]
    day0 = (NOW - timedelta(days=5)).replace(hour=10, minute=0, second=0, microsecond=0)

    def at(days: int, seq: int, kind: str) -> dict:
        ts = (day0 + timedelta(days=days)).isoformat()
        if kind == "error":
            return {"seq": seq, "ts": ts, "kind": "error", "code": "E1", "touchpoint": "brew"}
        return usage(seq, datetime.fromisoformat(ts), "brew", success=kind == "ok")

    def next_successes() -> dict:
        rows = list_touchpoint_daily(db)
        assert_rows_equal(rows, list_touchpoint_daily_from_scratch(db))
        return {row[1]: row[13] for row in rows if row[0] == key and row[2] == "brew" and row[5] > 0}

    def write(*events: dict) -> None:
        write_batch(db, messages=[_message(registered[0], key, list(events))], bounds=NO_AGE_LIMIT)
        refresh_all_pending(db)

    def first_success() -> datetime | None:
        rows = list_first_success(db)
        assert rows == list_first_success_from_scratch(db)
        return next((row[2] for row in rows if row[0] == key and row[1] == "brew"), None)

    write(at(0, 1, "error"), at(0, 2, "failed"))
    assert next_successes() == {day0.date(): None}, "nothing worked again yet"
    assert first_success() is None
    write(at(4, 3, "ok"))
    assert next_successes() == {day0.date(): day0 + timedelta(days=4)}
    assert first_success() == day0 + timedelta(days=4)
    write(at(2, 4, "error"), at(2, 5, "ok"))  # late: the same-day success ends that day's error
    assert next_successes() == {day0.date(): day0 + timedelta(days=2), (day0 + timedelta(days=2)).date():
                                day0 + timedelta(days=4)}
    write(at(1, 6, "ok"), at(3, 7, "ok"))  # late successes on the days after each error
    assert next_successes() == {day0.date(): day0 + timedelta(days=1), (day0 + timedelta(days=2)).date():
                                day0 + timedelta(days=3)}
    assert first_success() == day0 + timedelta(days=1), "a late first use lowers the kept one"


def test_a_paced_refresh_works_in_batches_and_stops_when_asked(db, registered):
    rng = random.Random(5)
    keys = dict(db.execute("SELECT device_id, device_key FROM devices").fetchall())
    _write_random(db, rng, keys, registered, start=NOW - timedelta(days=6), count=80)
    dirty = db.execute("SELECT count(*) FROM (SELECT DISTINCT device_key, day FROM rollup_dirty) d").fetchone()[0]
    assert dirty > 4
    stopped = threading.Event()
    stopped.set()
    first = refresh_paced(db, batch_device_days=2, max_busy_share=0.5, stopping=stopped)
    assert first.device_days == 2 and first.pending > 0
    rest = refresh_paced(db, batch_device_days=3, max_busy_share=0.9)
    assert rest.device_days == dirty - 2 and rest.pending == 0
    assert_rows_equal(list_daily(db), list_daily_from_scratch(db))
    assert list_uptime(db) == list_uptime_from_scratch(db)
