"""The devices' offline buffers against the real Mosquitto: stopped mid-run, and down when the run starts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cxp.core.config import Settings
from cxp.device_sim import MqttPublisher, build_fleet, plan_messages, simulate_backfill, simulate_live
from cxp.device_sim.fleet import from_ms, to_ms
from cxp.identity.broker import GATEWAY_ACCOUNT, LOADER_ACCOUNT, service_secret
from cxp.stack.local import start_broker, stop_broker
from tests.device_sim.conftest import START

pytestmark = pytest.mark.integration


class Subscriber:
    """A persistent QoS 1 session on the test's topics: the broker keeps its messages across a restart."""

    def __init__(self, settings: Settings) -> None:
        self.payloads: list[bytes] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                             client_id=f"sub-{settings.mqtt.topic_prefix}", protocol=mqtt.MQTTv5)
        client.username_pw_set(GATEWAY_ACCOUNT, service_secret(settings, GATEWAY_ACCOUNT))  # may read telemetry
        client.reconnect_delay_set(min_delay=1, max_delay=1)
        client.on_connect = lambda c, u, f, reason, p: c.subscribe(f"{settings.mqtt.topic_prefix}/+/telemetry", qos=1)
        client.on_subscribe = lambda *args: self._subscribed.set()
        client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        # Never a clean start: Mosquitto 2.0 saves no session whose connection began clean, whatever its expiry.
        client.connect(settings.mqtt.host, settings.mqtt.port, clean_start=False, properties=props)
        client.loop_start()
        assert self._subscribed.wait(10), "subscription not acknowledged"
        self.client = client

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.payloads.append(message.payload)

    def wait_for(self, expected: set[bytes], timeout_s: float = 60.0) -> set[bytes]:
        """The distinct payloads received once they include `expected` (or when the time is up)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                got = set(self.payloads)
            if got >= expected:
                time.sleep(0.5)  # anything beyond what was expected would show up now
                with self._lock:
                    return set(self.payloads)
            time.sleep(0.2)
        with self._lock:
            return set(self.payloads)

    def close(self) -> None:
        """End the session for good (expiry 0), so the broker keeps nothing for it."""
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0
        self.client.disconnect(properties=props)
        self.client.loop_stop()


@pytest.fixture
def subscriber(settings: Settings) -> Iterator[Subscriber]:
    """A subscriber on this test's topic prefix; the broker is running again when the test ends."""
    sub = Subscriber(settings)
    try:
        yield sub
    finally:
        start_broker(settings)
        sub.close()


def _publisher(settings: Settings, name: str) -> MqttPublisher:
    return MqttPublisher(host=settings.mqtt.host, port=settings.mqtt.port,
                         client_id=f"{settings.sim.client_id_prefix}-{name}-{settings.mqtt.topic_prefix}",
                         username=LOADER_ACCOUNT, password=service_secret(settings, LOADER_ACCOUNT),
                         max_inflight=50, reconnect_min_delay_s=1, reconnect_max_delay_s=1)


def _wait(condition, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_broker_stopped_mid_run_loses_nothing(settings, subscriber):
    fleet = build_fleet(seed=8, devices=20, start=START, days=3)
    start = START + timedelta(days=1)
    duration_s = 6 * 3600.0
    publisher = _publisher(settings, "live").connect()
    now = [start.timestamp()]
    outage = {"stopped": False, "restarted": False}

    def sleep(seconds: float) -> None:
        # Simulated time runs as fast as the devices upload; the broker is away for its middle third.
        now[0] += seconds
        elapsed = now[0] - start.timestamp()
        if not outage["stopped"] and elapsed > duration_s / 3:
            stop_broker(settings)
            assert _wait(lambda: not publisher.connected), "the publisher did not notice the broker going away"
            outage["stopped"] = True
        elif outage["stopped"] and not outage["restarted"] and elapsed > 2 * duration_s / 3:
            start_broker(settings)
            outage["restarted"] = True

    try:
        report = simulate_live(fleet=fleet, publisher=publisher, duration_s=duration_s, start=start,
                               topic_prefix=settings.mqtt.topic_prefix, upload_interval_s=600,
                               clock=lambda: now[0], sleep=sleep)
    finally:
        publisher.close(timeout_s=10)
    end = from_ms(to_ms(start) + int(duration_s * 1000))
    expected = {m.payload for m in plan_messages(fleet=fleet, start=start, end=end, upload_interval_s=600,
                                                 topic_prefix=settings.mqtt.topic_prefix)}
    assert outage == {"stopped": True, "restarted": True}
    assert report.peak_buffered_messages > 0, "no upload waited in an offline buffer"
    assert report.dropped_messages == 0 and report.undelivered_messages == 0 and report.all_acked
    assert report.messages == len(expected)
    assert publisher.stats()["disconnects"] >= 1
    assert subscriber.wait_for(expected) == expected


def test_broker_down_at_the_start_keeps_the_newest_messages_up_to_the_bound(settings, subscriber):
    fleet = build_fleet(seed=9, devices=12, start=START, days=2)
    planned = list(plan_messages(fleet=fleet, topic_prefix=settings.mqtt.topic_prefix))
    bound = 4
    newest: dict[str, list[bytes]] = {}
    for m in planned:
        newest.setdefault(m.device_id, []).append(m.payload)
    expected = {p for payloads in newest.values() for p in payloads[-bound:]}
    assert all(len(payloads) > bound for payloads in newest.values())

    class BrokerBackAtTheEnd(MqttPublisher):
        """The broker is started again once the devices have uploaded everything and wait for it."""

        def wait_connected(self, timeout_s: float) -> bool:
            start_broker(settings)
            return super().wait_connected(timeout_s)

    stop_broker(settings)
    publisher = BrokerBackAtTheEnd(host=settings.mqtt.host, port=settings.mqtt.port,
                                   client_id=f"cxp-sim-refused-{settings.mqtt.topic_prefix}",
                                   username=LOADER_ACCOUNT, password=service_secret(settings, LOADER_ACCOUNT),
                                   reconnect_min_delay_s=1, reconnect_max_delay_s=1).connect(wait=False)
    try:
        report = simulate_backfill(fleet=fleet, publisher=publisher, topic_prefix=settings.mqtt.topic_prefix,
                                   offline_buffer_messages=bound, progress=False, ack_timeout_s=60)
    finally:
        publisher.close(timeout_s=10)
    assert report.messages == len(expected) == bound * len(newest)
    assert report.dropped_messages == len(planned) - len(expected)
    assert report.dropped_events == sum(m.events for m in planned) - report.events
    assert report.undelivered_messages == 0 and report.all_acked
    assert subscriber.wait_for(expected) == expected
