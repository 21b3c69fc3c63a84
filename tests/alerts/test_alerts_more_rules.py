"""Voice, silence-as-a-share and pipeline (ingest lag, silent gateway) rules on the real database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

from cxp.alerts import repository
from cxp.alerts.core.rules import parse_ruleset
from cxp.alerts.evaluator import evaluate
from cxp.analytics import service
from cxp.analytics.query import AnalyticsQuery
from cxp.store.ops import record_gateway_stats
from cxp.store.registry import DeviceRow, ProductRow, upsert_devices, upsert_products
from cxp.store.rollups import refresh_all_pending
from tests.fixtures.stack import ACTIVATED

pytestmark = pytest.mark.integration


@pytest.fixture
def alert_db(db: psycopg.Connection, registered: list[str]) -> psycopg.Connection:
    """The emptied test database: test-p1 (five devices, hourly heartbeats) and test-p2 (five devices)."""
    upsert_products(db, products=[ProductRow("test-p2", "Test product 2", 3600, 5.0, [])])
    upsert_devices(
        db, devices=[DeviceRow(f"p2-{i:03d}", "test-p2", "acc-1", ACTIVATED, "basic", "A") for i in range(5)]
    )
    return db


def _rules(db: psycopg.Connection, *rules: dict) -> None:
    repository.import_rules(db, rules=list(parse_ruleset(json.dumps({"rules": list(rules)})).rules), by="test")


def _live(db: psycopg.Connection) -> dict[tuple[str, str], dict]:
    return {(a["rule_name"], a["entity"]): a for a in repository.list_alerts(db, live_only=True)}


# ---------------------------------------------------------------- voice


def _answers(
    db: psycopg.Connection,
    *,
    product: str,
    start: datetime,
    days: int,
    n: int,
    shares: tuple[float, float],
    rng: np.random.Generator,
) -> None:
    """`n` NPS answers over `days` days from the product's devices: `shares` = (promoters, detractors)."""
    promoters, detractors = shares
    kind = rng.choice(3, size=n, p=[promoters, 1 - promoters - detractors, detractors])
    scores = np.where(
        kind == 0, rng.integers(9, 11, n), np.where(kind == 1, rng.integers(7, 9, n), rng.integers(0, 7, n))
    )
    keys = [r[0] for r in db.execute("SELECT device_key FROM devices WHERE product_id = %s ORDER BY 1", (product,))]
    offsets = np.sort(rng.uniform(0, days * 86400, n))
    with db.cursor().copy("COPY events (device_key, ts, seq, kind, nps) FROM STDIN") as copy:
        for i in range(n):
            copy.write_row(
                (
                    keys[i % len(keys)],
                    start + timedelta(seconds=float(offsets[i])),
                    10_000 + i,
                    "feedback",
                    int(scores[i]),
                )
            )
    # Written around the gateway, so marked dirty and rolled up here as its write path and refresh loop do.
    db.execute("INSERT INTO rollup_dirty (device_key, day) SELECT DISTINCT device_key, (ts AT TIME ZONE 'UTC')::date"
               " FROM events WHERE kind = 'feedback'")
    refresh_all_pending(db)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_nps_falling_by_more_than_its_margin_raises_a_voice_alert(alert_db, seed):
    db, rng = alert_db, np.random.default_rng(seed)
    now = datetime.now(UTC).replace(hour=6, minute=0, second=0, microsecond=0)
    current = now.replace(hour=0) - timedelta(days=28)  # the last 28 whole days
    previous = current - timedelta(days=28)
    # Planted: test-p1 from NPS ≈ +30 to ≈ −20 (150 answers each); test-p2 the same ≈ +30 in both periods.
    _answers(db, product="test-p1", start=previous, days=28, n=150, shares=(0.5, 0.2), rng=rng)
    _answers(db, product="test-p1", start=current, days=28, n=150, shares=(0.25, 0.45), rng=rng)
    _answers(db, product="test-p2", start=previous, days=28, n=150, shares=(0.5, 0.2), rng=rng)
    _answers(db, product="test-p2", start=current, days=28, n=150, shares=(0.5, 0.2), rng=rng)
    _rules(
        db,
        {"name": "nps-drop", "params": {"kind": "voice"}},
        {"name": "nps-drop-n200", "params": {"kind": "voice", "min_n": 200}},
    )
    result = evaluate(db, now=now)
    assert (result.rules, result.failed) == (2, [])
    assert set(_live(db)) == {("nps-drop", "test-p1")}
    values = _live(db)[("nps-drop", "test-p1")]["trigger_values"]
    # The numbers are the voice service's own for the two periods.
    end = now.date() - timedelta(days=1)
    report = service.get_voice(
        conn=db, query=AnalyticsQuery(product="test-p1", start=end - timedelta(days=27), end=end), by=("product",)
    )
    assert values["value"] == pytest.approx(report.groups[0].nps.value) and values["n"] == 150
    assert values["drop"] > values["difference_margin"] > max(values["margin"], values["previous_margin"])
    assert _live(db)[("nps-drop", "test-p1")]["product_id"] == "test-p1"


# ---------------------------------------------------------------- silence as a share of a product's devices


def test_silence_as_a_share_of_a_products_devices(alert_db):
    db = alert_db
    now = datetime.now(UTC)
    # test-p1: 2 of 5 devices silent for 5 h (heartbeat hourly); test-p2: all five heard from.
    db.execute(
        "INSERT INTO device_state (device_key, ts, seq) SELECT device_key, CASE WHEN device_id IN"
        " ('dev-003', 'dev-004') THEN %s ELSE %s END, 1 FROM devices",
        (now - timedelta(hours=5), now - timedelta(minutes=10)),
    )
    _rules(
        db,
        {"name": "share-30", "hold_down_s": 0, "params": {"kind": "silence", "k": 3, "min_share": 0.3}},
        {"name": "share-50", "params": {"kind": "silence", "k": 3, "min_share": 0.5}},
        {"name": "share-30-min3", "params": {"kind": "silence", "k": 3, "min_share": 0.3, "min_devices": 3}},
        {"name": "share-30-k6", "params": {"kind": "silence", "k": 6, "min_share": 0.3}},
        {"name": "per-device", "params": {"kind": "silence", "k": 3}},
    )
    evaluate(db, now=now)
    live = _live(db)
    assert set(live) == {("share-30", "test-p1"), ("per-device", "dev-003"), ("per-device", "dev-004")}
    share = live[("share-30", "test-p1")]
    assert (share["trigger_values"]["silent_devices"], share["trigger_values"]["devices"]) == (2, 5)
    assert share["trigger_values"]["share"] == 0.4 and share["product_id"] == "test-p1"
    assert live[("per-device", "dev-003")]["product_id"] is None  # one device: not a product's chart marker
    db.execute(
        "INSERT INTO device_state (device_key, ts, seq) SELECT device_key, %s, 2 FROM devices"
        " WHERE device_id = 'dev-004'",
        (now + timedelta(seconds=1),),
    )
    assert evaluate(db, now=now + timedelta(seconds=2)).cleared == 1  # 1 of 5 left: below 30 %


# ---------------------------------------------------------------- pipeline: ingest lag and a silent gateway


def _snapshot(p99_ms: float) -> dict:
    """A gateway's stats report as the gateway writes it (its counters, and the p99 receive → commit latency)."""
    counters = ("received", "messages_stored", "events_stored", "states_stored", "duplicates", "dead_lettered")
    return {**dict.fromkeys(counters, 0), "receive_to_commit_ms_p99": p99_ms, "stats_interval_s": 10.0}


@pytest.fixture
def gateway_stats(alert_db: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """No gateway reports but this test's (earlier tests' gateways are gone), and none of its own left afterwards:
    `gateway_stats` is operations data that truncate_data keeps, and /v1/ingest/status reads it."""
    alert_db.execute("DELETE FROM gateway_stats")
    try:
        yield alert_db
    finally:
        alert_db.execute("DELETE FROM gateway_stats WHERE gateway_id LIKE 'alerts-test-%%'")


def test_ingest_lag_and_silent_gateway_per_instance(gateway_stats):
    db = gateway_stats
    record_gateway_stats(db, gateway_id="alerts-test-slow", snapshot=_snapshot(5000.0))
    record_gateway_stats(db, gateway_id="alerts-test-fast", snapshot=_snapshot(80.0))
    db.execute(
        "INSERT INTO gateway_stats (gateway_id, at, snapshot)"
        " VALUES ('alerts-test-gone', now() - interval '10 minutes', %s)",
        (Jsonb(_snapshot(9000.0)),),
    )
    _rules(
        db,
        {
            "name": "lag",
            "hold_down_s": 0,
            "params": {"kind": "pipeline", "metric": "ingest_lag_ms", "window_s": 120, "max_value": 2000},
        },
        {
            "name": "gateway-silent",
            "hold_down_s": 0,
            "params": {"kind": "pipeline", "metric": "gateway_silent_s", "max_value": 120},
        },
    )
    now = db.execute("SELECT now()").fetchone()[0]
    assert evaluate(db, now=now + timedelta(seconds=1)).opened == 2
    live = _live(db)
    # The silent gateway's old lag is not the current lag of a running gateway: only its silence alerts.
    assert set(live) == {("lag", "alerts-test-slow"), ("gateway-silent", "alerts-test-gone")}
    assert live[("lag", "alerts-test-slow")]["trigger_values"]["value"] == 5000.0
    assert live[("gateway-silent", "alerts-test-gone")]["trigger_values"]["value"] >= 600
    record_gateway_stats(db, gateway_id="alerts-test-gone", snapshot=_snapshot(50.0))
    record_gateway_stats(db, gateway_id="alerts-test-slow", snapshot=_snapshot(300.0))
    later = db.execute("SELECT now()").fetchone()[0] + timedelta(seconds=1)
    assert evaluate(db, now=later).cleared == 2


# ---------------------------------------------------------------- churn risk: a device enters the top-N list


def test_devices_entering_the_churn_risk_top_list_raise_alerts(fleet_settings, loaded_fleet):
    """On the analytics proofs' fleet (planted churners), inside a transaction that is rolled back: the fleet
    database stays as the other tests expect it."""
    from cxp.store.db import connect

    top = 15

    def ranked(day: datetime) -> set[str]:
        end = day.date() - timedelta(days=1)
        entries = service.list_churn_risk(conn=conn, query=AnalyticsQuery(end=end), level="device", limit=top).entries
        return {e.entity_id for e in entries}

    churners = set(loaded_fleet.truth.index[loaded_fleet.truth["churns"].astype(bool)])
    with connect(fleet_settings.db) as conn, conn.transaction(force_rollback=True):
        conn.execute("DELETE FROM alerts; DELETE FROM alert_rules; DELETE FROM alert_eval_state")
        _rules(conn, {"name": "churn-top", "hold_down_s": 0, "params": {"kind": "churn", "top_n": top}})
        week6 = datetime(2025, 4, 14, 6, tzinfo=UTC)  # Monday of the seventh week (the fleet starts 2025-03-03)
        first = evaluate(conn, now=week6)
        assert (first.rules, first.opened, first.failed) == (1, top, [])
        before = {a["entity"] for a in repository.list_alerts(conn, live_only=True)}
        assert before == ranked(week6)
        week7 = week6 + timedelta(days=7)
        second = evaluate(conn, now=week7)
        after = {a["entity"] for a in repository.list_alerts(conn, live_only=True)}
        assert after == ranked(week7) and after != before
        assert (second.opened, second.cleared) == (len(after - before), len(before - after))
        # The list is the churn model's, and the model finds the planted churners: most alerts are about them
        # (47 of the 500 devices churn).
        assert len(after & churners) >= top // 2 and len(before & churners) >= top // 2
        values = next(a for a in repository.list_alerts(conn, live_only=True))["trigger_values"]
        assert 1 <= values["rank"] <= top and values["risk_score"] > 0


# ---------------------------------------------------------------- the cadence rules' own pass and leader


def test_cadence_rules_have_their_own_pass_and_leader(alert_db, settings):
    from cxp.store.db import connect

    db = alert_db
    _rules(db, {"name": "offline", "params": {"kind": "silence"}}, {"name": "nps", "params": {"kind": "voice"}})
    now = datetime.now(UTC)
    fast = evaluate(db, now=now, kinds="fast")
    assert (fast.rules, fast.deferred) == (1, 0)  # silence only: the gateway's pass after a refresh
    cadence = evaluate(db, now=now, kinds="cadence")
    assert (cadence.rules, cadence.deferred, cadence.failed) == (1, 0, [])  # voice, due the first time
    assert evaluate(db, now=now + timedelta(minutes=1), kinds="cadence").deferred == 1  # not due again yet
    with connect(settings.db) as other, other.transaction():
        other.execute("SELECT pg_advisory_xact_lock(%s)", (0x6378_7018,))  # another process evaluates cadence rules
        assert evaluate(db, now=now, kinds="cadence") is None
        assert evaluate(db, now=now, kinds="all") is None
        assert evaluate(db, now=now, kinds="fast") is not None  # the fast pass is not held up
