"""Crashes and outages: a SIGKILLed gateway and a restarted database lose nothing and duplicate nothing."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from datetime import timedelta

import pytest

from cxp.stack.local import start_db, stop_db
from tests.fixtures.gateway import wait_for
from tests.fixtures.mqtt import batch_payload, usage
from tests.fixtures.stack import recent

pytestmark = pytest.mark.integration

DEVICES = [f"dev-{i:03d}" for i in range(5)]


def _stream(prefix: str, messages: int, events_per_message: int = 5) -> list[tuple[str, bytes]]:
    """`messages` distinct messages spread over the five devices, each event with its own seq."""
    base = recent(60)
    items = []
    for m in range(messages):
        device = DEVICES[m % len(DEVICES)]
        seq0 = (m // len(DEVICES)) * events_per_message
        events = [usage(seq0 + k, base + timedelta(milliseconds=10 * (seq0 + k))) for k in range(events_per_message)]
        items.append((f"{prefix}/{device}/telemetry", batch_payload(events, device_id=device)))
    return items


def _events(db) -> tuple[int, int]:
    total, distinct = db.execute("SELECT count(*), count(DISTINCT (device_key, seq)) FROM events").fetchone()
    return total, distinct


def test_sigkilled_gateway_restarted_stores_every_event_once(db, registered, publisher, start_gateway, settings):
    items = _stream(publisher.prefix, 3000)
    expected = 3000 * 5
    gw = start_gateway("gw1")
    sender = threading.Thread(target=publisher.publish, args=(items,))
    sender.start()
    assert wait_for(lambda: _events(db)[0] > expected // 5, timeout=60), "ingest did not start"
    gw.kill()  # mid-stream: some batches committed but not acked, others received but not committed
    stored_at_kill = _events(db)[0]
    assert stored_at_kill < expected, "the kill should land mid-stream"
    sender.join(120)
    gw2 = start_gateway("gw2")  # same client id: resumes the persistent session
    assert wait_for(lambda: _events(db)[0] >= expected, timeout=120), _events(db)
    time.sleep(1.5)  # let any redelivery settle
    assert gw2.stop() == 0
    assert _events(db) == (expected, expected)
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0


def test_a_killed_writer_is_restarted_in_place_and_nothing_is_lost(db, registered, publisher, start_gateway):
    items = _stream(publisher.prefix, 3000)
    expected = 3000 * 5
    gw = start_gateway()
    sender = threading.Thread(target=publisher.publish, args=(items,))
    sender.start()
    assert wait_for(lambda: _events(db)[0] > expected // 5, timeout=60), "ingest did not start"
    writer_pid = int(re.findall(r"writer process pid (\d+)", gw.log())[-1])
    os.kill(writer_pid, signal.SIGKILL)  # batches in flight: committed-not-answered and not yet committed
    sender.join(120)
    assert wait_for(lambda: _events(db)[0] >= expected, timeout=120), _events(db)
    assert gw.proc.poll() is None, "the receiver survived its writer"
    assert "writer process restarted" in gw.log()
    time.sleep(1.5)  # let any redelivery settle
    assert gw.stop(timeout=120) == 0
    assert _events(db) == (expected, expected)
    assert gw.final_stats()["writer_restarts"] == 1
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0


def test_database_restart_mid_stream_loses_nothing(db, registered, publisher, start_gateway, settings):
    items = _stream(publisher.prefix, 2000)
    expected = 2000 * 5
    gw = start_gateway()
    publisher.publish(items[:1000])
    assert wait_for(lambda: _events(db)[0] > 0, timeout=60)
    db.close()
    stop_db(settings, mode="fast")
    # The second half arrives while the database is down: received, not stored, not acked, retried.
    sender = threading.Thread(target=publisher.publish, args=(items[1000:],))
    sender.start()
    time.sleep(3)
    start_db(settings)
    sender.join(120)
    from cxp.store.db import connect

    with connect(settings.db) as conn:
        assert wait_for(lambda: _events(conn)[0] >= expected, timeout=120), _events(conn)
        assert gw.stop() == 0
        assert _events(conn) == (expected, expected)
    assert gw.final_stats()["db_retries"] > 0, "the outage was noticed"


def test_broker_restart_keeps_messages_queued_for_the_offline_gateway(db, registered, publisher, start_gateway,
                                                                       settings):
    from cxp.stack.local import start_broker, stop_broker

    start_gateway("prime").stop()  # the gateway's persistent session exists; now it is away
    items = _stream(publisher.prefix, 500)
    assert publisher.publish(items) == 500
    publisher.close()
    stop_broker(settings)  # Mosquitto saves its persistence file on SIGTERM
    start_broker(settings)
    gw = start_gateway("after-restart")
    assert wait_for(lambda: _events(db)[0] >= 500 * 5, timeout=60), _events(db)
    assert gw.stop() == 0
    assert _events(db) == (2500, 2500)
