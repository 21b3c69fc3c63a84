"""Oversize messages: the broker, the gateway and the device-side client agree on the contract's maximum."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from cxp.contract import MAX_PAYLOAD_BYTES
from cxp.core.config import MAX_PACKET_BYTES
from cxp.device_sim.client import MqttPublisher, OversizeMessage
from cxp.identity.broker import LOADER_ACCOUNT, service_secret
from tests.fixtures.gateway import wait_for
from tests.fixtures.mqtt import batch_payload, usage
from tests.fixtures.stack import recent

pytestmark = pytest.mark.integration


def _padded(size: int) -> bytes:
    body = batch_payload([usage(1, recent(5))])
    return body[:-1] + b', "pad": "' + b"p" * (size - len(body) - 11) + b'"}'


def test_the_broker_drops_an_oversize_message_before_the_gateway(db, registered, settings, start_gateway):
    gw = start_gateway()
    announced = []
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"big-{time.monotonic_ns()}",
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(LOADER_ACCOUNT, service_secret(settings, LOADER_ACCOUNT))
    client.on_connect = lambda c, u, f, rc, props: announced.append(props.MaximumPacketSize)
    client.connect(settings.mqtt.host, settings.mqtt.port)
    client.loop_start()
    try:
        topic = f"{settings.mqtt.topic_prefix}/dev-000/telemetry"
        client.publish(topic, _padded(MAX_PAYLOAD_BYTES + 1), qos=1)
        client.publish(topic, batch_payload([usage(2, recent(5))]), qos=1)
        # The good message after it is stored; the oversize one never reaches the gateway.
        assert wait_for(lambda: db.execute("SELECT count(*) FROM events").fetchone()[0] == 1, timeout=20)
    finally:
        # Mosquitto answers with PUBACK 0x95, which paho 2 reads as a malformed packet: it reconnects and
        # re-sends forever. Hence the device-side refusal below.
        client.disconnect()
        client.loop_stop()
    assert announced and announced[0] == MAX_PACKET_BYTES
    log = (settings.stack.dir / "mosquitto" / "mosquitto.log").read_text(errors="replace")
    assert f"{settings.mqtt.topic_prefix}/dev-000/telemetry', ... ({MAX_PAYLOAD_BYTES + 1} bytes))" in log
    assert gw.stop() == 0
    stats = gw.final_stats()
    assert (stats["received"], stats["dead_lettered"]) == (1, 0)


def test_the_device_client_refuses_and_reports_what_the_broker_would_drop(settings):
    pub = MqttPublisher(host=settings.mqtt.host, port=settings.mqtt.port, client_id=f"dev-big-{time.monotonic_ns()}",
                        username=LOADER_ACCOUNT, password=service_secret(settings, LOADER_ACCOUNT)).connect()
    try:
        topic = f"{settings.mqtt.topic_prefix}/dev-000/telemetry"
        with pytest.raises(OversizeMessage, match="limit"):
            pub.publish(topic, _padded(MAX_PAYLOAD_BYTES + 1))
        with pytest.raises(OversizeMessage):
            pub.try_publish(topic, _padded(MAX_PAYLOAD_BYTES + 1))
        pub.publish(topic, _padded(MAX_PAYLOAD_BYTES))  # exactly the maximum is taken
        assert pub.wait_all_acked(20)
        stats = pub.stats()
        assert (stats["oversize"], stats["published"], stats["rejected"], stats["disconnects"]) == (2, 1, 0, 0)
    finally:
        pub.close()
