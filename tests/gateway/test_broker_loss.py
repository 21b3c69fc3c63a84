"""A broker crash loses what it queued since its last save (issue 12): the loss is not silent, it shows up as
sequence gaps of the affected devices in the ingest status and in /metrics."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import pytest

from cxp.core.config import Settings
from cxp.identity.broker import BrokerPaths
from cxp.stack.local import start_broker
from tests.fixtures.gateway import wait_for
from tests.fixtures.mqtt import RawPublisher, batch_payload, usage
from tests.fixtures.stack import recent

pytestmark = pytest.mark.integration


def _with_autosave(settings: Settings, interval: int) -> Settings:
    return settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update={"broker_autosave_interval": interval})})


def _pid(settings: Settings) -> int:
    return int(BrokerPaths.of(settings).pid.read_text().strip())


def _saved_at(settings: Settings) -> float:
    return (BrokerPaths.of(settings).base / "data" / "mosquitto.db").stat().st_mtime


def _stored(db) -> int:
    return db.execute("SELECT count(*) FROM events").fetchone()[0]


def test_a_broker_killed_with_queued_messages_shows_as_sequence_gaps(
    db, registered, settings, start_gateway, test_db_api
):
    # No autosave during the test (a save between the publishes and the kill would keep what it saved): the loss
    # window is then exactly what was queued since the save forced below.
    quiet = _with_autosave(settings, 3600)
    start_broker(quiet)  # a changed config restarts the broker
    try:
        pub = RawPublisher(quiet, client_id=f"pub-loss-{time.monotonic_ns()}")
        ts = recent(30)

        def send(devices: list[str], seqs: range) -> None:
            items = [
                (pub.topic(d), batch_payload([usage(s, ts + timedelta(seconds=s))], device_id=d))
                for d in devices
                for s in seqs
            ]
            assert pub.publish(items) == len(items)

        gw = start_gateway("before", quiet)
        send(registered, range(0, 3))
        assert wait_for(lambda: _stored(db) == 15, timeout=30)
        assert gw.stop() == 0  # the gateway is away; its persistent session queues for it
        # As after any autosave: the session (subscription included) is on disk.
        before = _saved_at(quiet)
        os.kill(_pid(quiet), signal.SIGUSR1)
        assert wait_for(lambda: _saved_at(quiet) != before, timeout=15)
        send(["dev-000", "dev-001"], range(3, 7))  # acknowledged to the publisher, queued only in memory
        pub.close()
        pid = _pid(quiet)
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=10)

        start_broker(quiet)
        pub = RawPublisher(quiet, client_id=f"pub-loss-{time.monotonic_ns()}")
        gw = start_gateway("after", quiet)
        # The devices go on: the next seqs of the two whose messages were lost reveal the hole; the others just go on.
        send(["dev-000", "dev-001"], range(7, 9))
        send(["dev-002", "dev-003", "dev-004"], range(3, 5))
        assert wait_for(lambda: _stored(db) == 25, timeout=30), _stored(db)
        pub.close()
        assert gw.stop() == 0
    finally:
        start_broker(settings)

    missing = dict(
        db.execute("SELECT d.device_id, s.missing FROM device_seq_stats s JOIN devices d USING (device_key)").fetchall()
    )
    assert missing == {"dev-000": 4, "dev-001": 4, "dev-002": 0, "dev-003": 0, "dev-004": 0}
    gaps = test_db_api.get("/v1/ingest/status").json()["sequence_gaps"]
    assert (gaps["devices_tracked"], gaps["devices_with_gaps"], gaps["missing_total"]) == (5, 2, 8)
    assert [(d["device_id"], d["missing"], d["min_seq"], d["max_seq"], d["seqs_stored"]) for d in gaps["top"]] == [
        ("dev-000", 4, 0, 8, 5),
        ("dev-001", 4, 0, 8, 5),
    ]
    metrics = test_db_api.client.get("/metrics").text
    assert "cxp_ingest_seq_missing 8.0" in metrics
    assert "cxp_ingest_devices_with_seq_gaps 2.0" in metrics
    assert 'cxp_ingest_device_seq_missing{device_id="dev-000"} 4.0' in metrics
