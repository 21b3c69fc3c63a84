"""Locust load on the broker + gateway: each user is a device publishing contract batches over MQTT (QoS 1).

    locust -f loadtests/locustfile_mqtt.py --headless -u 200 -r 50 -t 60s
Register the devices first (`cxp simulate --devices 200 --days 1`: device ids come from that fleet);
the broker is taken from CXP_MQTT__HOST / CXP_MQTT__PORT. Each publish is reported to Locust as a
request of type MQTT, timed from publish to the broker's PUBACK.
"""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from locust import User, between, events, task
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from cxp.contract import telemetry_topic
from cxp.core.config import get_settings
from cxp.device_sim import build_fleet, encode_batch
from cxp.device_sim.catalogue import catalogue_by_model
from cxp.identity.broker import LOADER_ACCOUNT, service_secret

_SETTINGS = get_settings()
_FLEET_LOCK = threading.Lock()
_FLEET = None
_NEXT_DEVICE = itertools.count()


def _fleet():
    global _FLEET
    with _FLEET_LOCK:
        if _FLEET is None:
            today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            _FLEET = build_fleet(seed=42, devices=200, start=today, days=1)
        return _FLEET


class DeviceUser(User):
    """One simulated device: every few seconds a batch of usage events and a heartbeat."""

    wait_time = between(1, 3)

    def on_start(self) -> None:
        fleet = _fleet()
        self.device = fleet.devices[next(_NEXT_DEVICE) % len(fleet.devices)]
        self.touchpoints = catalogue_by_model(tuple(fleet.products.values()))[self.device.product].touchpoint_names
        # A seq base from the clock keeps restarts of the load test from colliding with earlier runs.
        self.seq = time.time_ns() // 1000
        self.pending: dict[int, tuple[float, int]] = {}
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"locust-{self.device.device_id}-{id(self)}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        # Locust devices share the loader service account on the loopback listener (per-device TLS: cxp.device_sim).
        self.client.username_pw_set(LOADER_ACCOUNT, service_secret(_SETTINGS, LOADER_ACCOUNT))
        self.client.on_publish = self._on_publish
        self.client.connect(_SETTINGS.mqtt.host, _SETTINGS.mqtt.port)
        self.client.loop_start()

    def on_stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        started, size = self.pending.pop(mid, (None, 0))
        if started is not None:
            events.request.fire(request_type="MQTT", name="telemetry", response_time=(time.perf_counter() - started)
                                * 1000, response_length=size, exception=None, context={})

    @task
    def publish_batch(self) -> None:
        now = datetime.now(UTC)
        batch = []
        for i, tp in enumerate(self.touchpoints[:3]):
            batch.append({"seq": self.seq + i, "ts": now, "kind": "usage", "touchpoint": tp, "latency_ms": 120.0})
        batch.append({"seq": self.seq + 3, "ts": now, "kind": "state", "battery_pct": 80.0})
        self.seq += 4
        payload = encode_batch(device_id=self.device.device_id, sent_at=now, events=batch)
        info = self.client.publish(telemetry_topic(self.device.device_id, _SETTINGS.mqtt.topic_prefix), payload, qos=1)
        self.pending[info.mid] = (time.perf_counter(), len(payload))
