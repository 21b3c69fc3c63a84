"""The chosen mechanism (password_file + acl_file patterns) on a real Mosquitto: no device speaks for another."""

from __future__ import annotations

import time

import pytest

from cxp.tools.bench.broker_auth.broker import Probe, TempBroker, can_connect
from cxp.tools.bench.broker_auth.files import Credential, acl_file_text, device_credentials, password_file_text

pytestmark = pytest.mark.integration

GATEWAY = Credential("cxp-gateway", "gateway-test-secret")


@pytest.fixture
def broker():
    """A throw-away Mosquitto with three devices and the gateway in its password file."""
    b = TempBroker("")
    devices = device_credentials(3, seed="test")
    (b.dir / "passwd").write_text(password_file_text([*devices, GATEWAY]))
    (b.dir / "acl").write_text(acl_file_text(gateway_user=GATEWAY.username))
    b.conf_body = f"allow_anonymous false\npassword_file {b.dir}/passwd\nacl_file {b.dir}/acl\nlog_type all\n"
    with b:
        b.start()
        yield b, devices


def test_a_device_cannot_publish_as_another(broker) -> None:
    """Cross-device QoS 1 publish → PUBACK 0x87, nothing delivered; its own topic → 0 and delivered."""
    b, (a, other, _) = broker
    gateway = Probe(b.port, GATEWAY.username, GATEWAY.secret)
    device = Probe(b.port, a.username, a.secret)
    try:
        assert gateway.connect() == 0
        gateway.subscribe("devices/+/telemetry")
        assert device.connect() == 0
        assert device.publish_qos1(f"devices/{other.username}/telemetry", b"forged") == 0x87
        assert device.publish_qos1(f"devices/{a.username}/telemetry", b"own") == 0
        deadline = time.monotonic() + 5
        while not gateway.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert gateway.messages == [(f"devices/{a.username}/telemetry", b"own")]
        # the gateway reads everything but may not publish
        assert gateway.publish_qos1(f"devices/{a.username}/telemetry", b"from-gateway") == 0x87
        assert "Denied PUBLISH from " + a.username in b.log.read_text()
    finally:
        device.close()
        gateway.close()


def test_anonymous_and_wrong_secret_are_refused(broker) -> None:
    """No credentials or a wrong secret → CONNACK 0x87 (not authorized); the right secret connects."""
    b, (a, other, _) = broker
    assert Probe(b.port, None, None, client_id="anon").connect() == 0x87
    assert Probe(b.port, a.username, other.secret).connect() == 0x87
    assert can_connect(b.port, a.username, a.secret)


def test_reload_without_the_device_drops_its_live_connection(broker) -> None:
    """Removing a connected device's line and sending SIGHUP disconnects it and refuses its reconnect."""
    b, devices = broker
    victim = devices[0]
    probe = Probe(b.port, victim.username, victim.secret)
    try:
        assert probe.connect() == 0
        (b.dir / "passwd").write_text(password_file_text([*devices[1:], GATEWAY]))
        b.reload()
        assert probe.disconnected.wait(10)
        assert not can_connect(b.port, victim.username, victim.secret)
        assert can_connect(b.port, devices[1].username, devices[1].secret)
    finally:
        probe.close()
