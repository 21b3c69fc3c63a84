"""The highly available TimescaleDB (etcd + three Patroni members) under a real failover: the primary is SIGKILLed
mid-stream; Patroni promotes a standby, the gateway reconnects and retries, every event is stored exactly once,
and the API keeps answering reads from a standby meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from cxp.api.app import create_app
from cxp.core.config import Settings
from cxp.stack import StackError
from cxp.stack.ha import ha_running, kill_member, member_status, primary_port, start_ha, start_member, stop_ha
from cxp.store.admin import truncate_data
from cxp.store.apikeys import create_key
from cxp.store.db import ReadPool, connect, create_pool, create_read_pool, get_replica_lag_s
from cxp.store.migrate import apply_migrations
from cxp.store.registry import (
    AccountRow,
    DeviceRow,
    ProductRow,
    TouchpointRow,
    upsert_accounts,
    upsert_devices,
    upsert_products,
)
from tests.fixtures.gateway import wait_for
from tests.fixtures.mqtt import batch_payload, usage
from tests.fixtures.stack import ACTIVATED, recent

pytestmark = [pytest.mark.integration, pytest.mark.ha]

DEVICES = [f"dev-{i:03d}" for i in range(5)]


@pytest.fixture(scope="module")
def ha(stack: Settings) -> Iterator[Settings]:
    """The HA cluster of this stack dir, started (and provisioned) by the project's code; the test database on it."""
    was_running = ha_running(stack)
    try:
        start_ha(stack)
    except StackError as exc:
        if "installing patroni" in str(exc):
            pytest.skip(f"patroni/etcd cannot be installed here: {exc}")
        raise
    settings = stack.model_copy(
        update={"db": stack.db.model_copy(update={"members": stack.stack.ha.members, "read_max_lag_s": 30.0})}
    )
    with connect(settings.db) as conn:
        apply_migrations(conn)
    yield settings
    _all_members_back(settings)
    if not was_running:  # started for the tests: stopped after them
        stop_ha(stack)


def _all_members_back(settings: Settings) -> None:
    for m in member_status(settings):
        if m.role is None:
            start_member(settings, m.name)
    assert wait_for(lambda: all(m.state in ("running", "streaming") for m in member_status(settings)), timeout=120), (
        member_status(settings)
    )


def _register(conn) -> None:
    truncate_data(conn)
    upsert_products(
        conn,
        products=[
            ProductRow(
                "test-p1",
                "Test product",
                3600,
                5.0,
                [TouchpointRow("brew", "post_purchase", "brand", True, 500.0, 30.0, "cup")],
            )
        ],
    )
    upsert_accounts(conn, accounts=[AccountRow("acc-1", "Account one", "consumer")])
    upsert_devices(conn, devices=[DeviceRow(d, "test-p1", "acc-1", ACTIVATED, "basic", "A") for d in DEVICES])


def _stream(prefix: str, messages: int, events_per_message: int = 5) -> list[tuple[str, bytes]]:
    base = recent(60)
    items = []
    for m in range(messages):
        device = DEVICES[m % len(DEVICES)]
        seq0 = (m // len(DEVICES)) * events_per_message
        events = [usage(seq0 + k, base + timedelta(milliseconds=10 * (seq0 + k))) for k in range(events_per_message)]
        items.append((f"{prefix}/{device}/telemetry", batch_payload(events, device_id=device)))
    return items


def _events(settings: Settings) -> tuple[int, int] | None:
    try:
        with connect(settings.db) as conn:
            return conn.execute("SELECT count(*), count(DISTINCT (device_key, seq)) FROM events").fetchone()
    except Exception:  # noqa: BLE001 - no primary during the failover
        return None


def test_reads_go_to_a_fresh_standby_and_writers_to_the_primary(ha):
    with connect(ha.db) as writer:
        assert writer.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        assert writer.info.port == primary_port(ha)
    primary = create_pool(ha.db, name="t-primary")
    reads = create_read_pool(ha.db, primary=primary, name="t-read")
    assert isinstance(reads, ReadPool)
    try:
        assert wait_for(lambda: _on_standby(reads), timeout=15)
        # A bound no standby can meet (it is never exactly 0 while the primary is silent) sends reads to the primary.
        strict = ReadPool(reads.standby, primary, max_lag_s=-1.0)
        with strict.connection() as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        assert strict.fallbacks == 1
    finally:
        reads.close()
        primary.close()


def _on_standby(reads: ReadPool) -> bool:
    with reads.connection() as conn:
        return conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] and get_replica_lag_s(conn) is not None


def test_primary_killed_mid_stream_fails_over_and_every_event_is_stored_once(ha, publisher, start_gateway):
    gw_settings = ha.model_copy(
        update={
            "mqtt": publisher_settings(ha, publisher),
            "gateway": ha.gateway.model_copy(
                update={
                    "client_id": f"gw-ha-{time.monotonic_ns()}",
                    "retry_max_backoff_s": 1.0,
                    "batch_max_wait_ms": 50,
                }
            ),
            "api": ha.api.model_copy(update={"cache_ttl_s": 0.0, "key_cache_s": 0.0, "auth_fail_limit": 1_000_000}),
        }
    )
    with connect(ha.db) as conn:
        _register(conn)
        token = create_key(conn, name="ha reader", role="admin").token
    headers = {"Authorization": f"Bearer {token}"}
    items = _stream(publisher.prefix, 6000)
    expected = 6000 * 5
    gw = start_gateway("gw-ha", gw_settings)
    with TestClient(create_app(gw_settings)) as api:
        # Analytics and key checks use the read pool (a standby), so they answer without a primary.
        path = "/v1/experience/touchpoints?days=7"
        sender = threading.Thread(target=_paced, args=(publisher, items))
        sender.start()
        assert wait_for(lambda: (_events(ha) or (0,))[0] > expected // 5, timeout=60), "ingest did not start"
        assert api.get(path, headers=headers).status_code == 200
        old = next(m for m in member_status(ha) if m.role in ("primary", "master"))
        answers: list[tuple[float, int]] = []  # (when the answer came, status)
        stop = threading.Event()

        def read_loop() -> None:
            while not stop.is_set():
                code = api.get(path, headers=headers).status_code
                answers.append((time.monotonic(), code))
                time.sleep(0.2)

        reader = threading.Thread(target=read_loop)
        reader.start()
        kill_member(ha, old.name)  # mid-stream: batches in flight, the primary gone without a word
        killed_at = time.monotonic()
        assert sender.is_alive(), "the stream should still be running when the primary dies"
        assert wait_for(lambda: primary_port(ha) not in (None, old.pg_port), timeout=60), member_status(ha)
        promoted_at = time.monotonic()
        sender.join(120)
        assert wait_for(lambda: (_events(ha) or (0,))[0] >= expected, timeout=120), _events(ha)
        stop.set()
        reader.join(30)
    time.sleep(1.5)  # let any redelivery settle
    assert gw.stop(timeout=60) == 0
    assert _events(ha) == (expected, expected)
    stats = gw.final_stats()
    assert stats["db_retries"] > 0, "the gateway noticed the failover"
    # The API answered every read, including while there was no primary (served by a standby).
    assert all(code == 200 for _, code in answers), answers
    during = [code for at, code in answers if killed_at < at < promoted_at]
    assert len(during) >= 3, (len(during), promoted_at - killed_at)
    start_member(ha, old.name)  # rejoins as a standby
    _all_members_back(ha)


def _paced(publisher, items: list[tuple[str, bytes]], per_second: int = 400) -> None:
    """Publish in steps of a tenth of a second, so the stream outlasts the failover."""
    step = per_second // 10
    for i in range(0, len(items), step):
        started = time.monotonic()
        publisher.publish(items[i : i + step])
        time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))


def publisher_settings(ha: Settings, publisher):
    """The publisher's topic prefix on the HA settings' broker section."""
    return ha.mqtt.model_copy(update={"topic_prefix": publisher.prefix})
