"""`simulate_fleet` with per-device credentials: every device publishes over TLS through its own connection."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cxp.core.config import MqttSettings, Settings
from cxp.device_sim import ConfigError, build_fleet
from cxp.tools.device_keys import device_credential
from cxp.tools.simulate import simulate_fleet
from tests.identity.broker import MOSQUITTO
from tests.identity.device_broker import Collector, make_world

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto is not installed (cxp stack up)")]


def test_a_fleet_publishes_through_each_devices_own_tls_connection(db, settings, tmp_path) -> None:
    start = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    ids = [d.device_id for d in build_fleet(seed=7, devices=6, start=start, days=1).devices]
    world = make_world(tmp_path, token_devices=ids[:3], cert_devices=ids[3:], debug_log=False)
    collector = Collector(world.broker.plain_port)
    # The broker's ACL allows devices/<own id>/telemetry: the default prefix.
    settings = settings.model_copy(update={"mqtt": MqttSettings(**{**settings.mqtt.model_dump(),
                                                                   "topic_prefix": "devices"})})
    try:
        fleet, report = simulate_fleet(settings=settings, devices=6, days=1, seed=7, mode="backfill", start=start,
                                       duration_s=0, speed=1, error_prone=None, progress=False,
                                       credentials={d: world.credential(d) for d in ids})
        assert [d.device_id for d in fleet.devices] == ids
        assert report.all_acked and report.messages > 0 and report.dropped_messages == 0
        assert collector.wait_for(report.messages, 30) == report.messages
        assert {topic.split("/")[1] for topic in collector.received} == set(ids)
        assert all(topic == f"devices/{json.loads(p)['device_id']}/telemetry" for topic, p in collector.payloads)
        # Each device connected once, as itself, on its own listener.
        log = world.broker.log_text()
        assert all(f"as {d} (p5, c1" in log for d in ids)
        with pytest.raises(ConfigError, match="no credential"):
            simulate_fleet(settings=settings, devices=6, days=1, seed=7, mode="backfill", start=start,
                           duration_s=0, speed=1, error_prone=None, progress=False,
                           credentials={d: world.credential(d) for d in ids[1:]})
    finally:
        collector.close()
        world.broker.close()


def test_device_credentials_follow_the_settings(tmp_path) -> None:
    settings = Settings(mqtt=MqttSettings(host="127.0.0.1", device_tls_port=28883, device_mtls_port=28884),
                        stack={"dir": tmp_path})
    token = device_credential(settings, device_id="dev-1", secret="s")
    assert (token.port, token.username, token.ca_file) == (28883, "dev-1", tmp_path / "pki" / "ca.crt")
    cert = device_credential(settings, device_id="dev-1", cert_file=tmp_path / "c.crt", key_file=tmp_path / "c.key")
    assert (cert.port, cert.username, cert.cert_file) == (28884, None, tmp_path / "c.crt")
    with pytest.raises(ConfigError, match="give a secret"):
        device_credential(settings, device_id="dev-1")
