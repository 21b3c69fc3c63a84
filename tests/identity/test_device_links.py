"""Devices connect with their own credential over real TLS to a real Mosquitto; nothing else gets in or through."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cxp.device_sim import build_fleet, simulate_backfill, simulate_live
from cxp.device_sim.credentials import DeviceCredential
from cxp.device_sim.errors import ConnectRefused
from cxp.device_sim.links import ConnectionLoop, LinkState, RefusalKind
from cxp.device_sim.uplink import Uplink
from cxp.identity.files import PkiPaths, init_ca, save_server
from cxp.identity.pki import create_ca, issue_server_certificate
from cxp.identity.tokens import issue_token
from tests.identity.broker import HOST, MOSQUITTO, Broker, try_connect
from tests.identity.device_broker import Collector, DeviceWorld, issue_cert_files, make_world, raise_open_files_limit

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto is not installed (cxp stack up)")]

REFUSED_AT_TLS = {RefusalKind.TLS, RefusalKind.CLOSED}  # TLS 1.2: alert in the handshake; 1.3: closed after it


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[DeviceWorld]:
    """Two token devices, two certificate devices, plus an expired and a foreign-CA certificate on disk."""
    base = tmp_path_factory.mktemp("devices")
    w = make_world(base, token_devices=["tok-a", "tok-b"], cert_devices=["crt-a", "crt-b"])
    bad = base / "bad"
    bad.mkdir()
    w.certs["crt-expired"] = issue_cert_files(bad, w.ca, "crt-expired", days=30,
                                              now=datetime.now(UTC) - timedelta(days=40))
    w.certs["crt-foreign"] = issue_cert_files(bad, create_ca(name="someone else's CA"), "crt-foreign")
    yield w
    w.broker.close()


@pytest.fixture
def loop() -> Iterator[ConnectionLoop]:
    """A connection loop with quick retries, closed after the test."""
    with ConnectionLoop(backoff_initial_s=0.2, backoff_max_s=1.0) as connections:
        yield connections


@pytest.fixture
def collector(world: DeviceWorld) -> Iterator[Collector]:
    """A subscriber to every device's telemetry."""
    c = Collector(world.broker.plain_port)
    yield c
    c.close()


def test_anonymous_clients_are_refused_on_both_device_listeners(world: DeviceWorld) -> None:
    on_tokens = try_connect(port=world.broker.token_port, ca_file=world.pki.ca_cert, client_id="anon-1")
    on_certs = try_connect(port=world.broker.cert_port, ca_file=world.pki.ca_cert, client_id="anon-2")
    assert not on_tokens.connected and "CONNACK" in on_tokens.detail, on_tokens.detail
    assert not on_certs.connected, on_certs.detail


@pytest.mark.parametrize("device", ["tok-a", "crt-a"])
def test_a_device_connects_with_its_own_credential_and_publishes(world, loop, collector, device) -> None:
    link = loop.open(world.credential(device)).require_connected(10)
    assert link.try_publish(f"devices/{device}/telemetry", b"hello")
    assert link.wait_all_acked(10) and link.rejected == 0
    assert collector.wait_for(1, 10) == 1
    assert collector.payloads == [(f"devices/{device}/telemetry", b"hello")]
    # The broker knows it by its identity: the client id is forced to the username / certificate CN.
    assert f"as {device} (p5, c1" in world.broker.log_text()


def test_a_wrong_secret_is_refused_with_a_typed_reason_retried_and_counted(world, loop) -> None:
    link = loop.open(world.token("tok-a", secret="not-the-secret"))
    refusal = link.wait_outcome(10)
    assert refusal is not None and refusal.kind is RefusalKind.AUTH
    assert refusal.code in (0x86, 0x87)  # bad user name or password / not authorized
    with pytest.raises(ConnectRefused, match="auth refusal") as raised:
        link.require_connected(1.0)
    assert raised.value.kind == RefusalKind.AUTH and raised.value.code == refusal.code
    assert not link.wait_connected(2.0)
    # Retried with backoff (0.2 s, 0.4 s, …): several refused attempts, never a connection.
    assert link.attempts >= 2 and link.refusals[RefusalKind.AUTH] >= 2 and link.connects == 0
    assert loop.stats()["refusals"][RefusalKind.AUTH] >= 2


def test_another_devices_secret_is_refused(world, loop) -> None:
    link = loop.open(world.token("tok-a", secret=world.secrets["tok-b"]))
    refusal = link.wait_outcome(10)
    assert refusal is not None and refusal.kind is RefusalKind.AUTH


@pytest.mark.parametrize("device", ["crt-expired", "crt-foreign"])
def test_expired_and_foreign_ca_certificates_are_refused(world, loop, device) -> None:
    link = loop.open(world.cert(device))
    refusal = link.wait_outcome(10)
    assert refusal is not None and refusal.kind in REFUSED_AT_TLS, refusal
    assert not link.wait_connected(1.0) and link.connects == 0


def test_a_broker_not_signed_by_the_platform_ca_is_not_trusted(world, loop, tmp_path) -> None:
    other = PkiPaths(tmp_path / "other")
    init_ca(paths=other)
    credential = DeviceCredential.token(device_id="tok-a", secret=world.secrets["tok-a"], ca_file=other.ca_cert,
                                        host=HOST, port=world.broker.token_port)
    refusal = loop.open(credential).wait_outcome(10)
    assert refusal is not None and refusal.kind is RefusalKind.TLS and "CERTIFICATE_VERIFY_FAILED" in refusal.detail


def test_the_broker_certificate_must_name_the_address_connected_to(world, loop, tmp_path) -> None:
    # The platform's server certificate names 127.0.0.1; one naming another address is refused by the device.
    pki = PkiPaths(tmp_path / "pki")
    ca, _ = init_ca(paths=pki)
    save_server(issue_server_certificate(ca=ca, hosts=["127.0.0.2"]), pki)
    broker = Broker(tmp_path, f"tls_version tlsv1.2\ncafile {pki.ca_cert}\ncertfile {pki.server_cert}\n"
                              f"keyfile {pki.server_key}\nallow_anonymous true\n")
    try:
        credential = DeviceCredential.token(device_id="tok-a", secret="x", ca_file=pki.ca_cert, host=HOST,
                                            port=broker.port)
        refusal = loop.open(credential).wait_outcome(10)
        assert refusal is not None and refusal.kind is RefusalKind.TLS and "mismatch" in refusal.detail.lower()
    finally:
        broker.close()


@pytest.mark.parametrize(("device", "victim"), [("tok-a", "tok-b"), ("crt-a", "crt-b")])
def test_a_device_cannot_publish_as_another(world, loop, collector, device, victim) -> None:
    link = loop.open(world.credential(device))
    assert link.wait_outcome(10) is None
    assert link.try_publish(f"devices/{victim}/telemetry", b"forged")
    assert link.try_publish(f"devices/{device}/telemetry", b"marker")
    assert link.wait_all_acked(10)
    # PUBACK 0x87 for the forged one; the device stays connected and its own message gets through.
    assert link.rejected == 1 and link.connected
    assert collector.wait_for(1, 10) == 1
    collector.wait_for(2, 1.0)
    assert collector.payloads == [(f"devices/{device}/telemetry", b"marker")]


def test_a_rotation_username_connects_and_writes_the_devices_own_topic(tmp_path, loop) -> None:
    second = issue_token(device_id="rot-1")
    w = make_world(tmp_path, token_devices=["rot-1"], cert_devices=[],
                   extra_users={"rot-1~2": second.password_hash},
                   extra_acl="user rot-1~2\ntopic write devices/rot-1/telemetry\n")
    collector = Collector(w.broker.plain_port)
    try:
        link = loop.open(w.token("rot-1", secret=second.secret, username="rot-1~2"))
        assert link.wait_outcome(10) is None, link.stats()
        assert link.try_publish("devices/rot-1/telemetry", b"rotated")
        assert link.wait_all_acked(10) and link.rejected == 0
        assert collector.wait_for(1, 10) == 1
    finally:
        collector.close()
        w.broker.close()


def _encode(*, device_id, sent_at, events) -> bytes:
    return json.dumps({"device": device_id, "seqs": [e["seq"] for e in events]}).encode()


def _upload(uplink: Uplink, device_id: str, seqs: range) -> None:
    uplink.upload(device_id=device_id, topic=f"devices/{device_id}/telemetry",
                  events=[{"seq": s, "kind": "usage"} for s in seqs], sent_at=datetime.now(UTC))


def _wait_for_seqs(collector: Collector, expected: dict[str, set[int]], timeout_s: float) -> dict[str, set[int]]:
    """What arrived, once it is everything expected or the timeout passed (QoS 1 may deliver duplicates)."""
    deadline = time.monotonic() + timeout_s
    while (seen := _seqs(collector)) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return seen


def _seqs(collector: Collector) -> dict[str, set[int]]:
    seen: dict[str, set[int]] = {}
    for topic, payload in collector.payloads:
        body = json.loads(payload)
        assert topic == f"devices/{body['device']}/telemetry"
        seen.setdefault(body["device"], set()).update(body["seqs"])
    return seen


def test_the_offline_buffer_survives_a_refused_credential(world, loop, collector) -> None:
    links = {"tok-a": loop.open(world.token("tok-a", secret="wrong")), "crt-a": loop.open(world.cert("crt-a"))}
    assert links["tok-a"].wait_outcome(10) is not None
    assert links["crt-a"].wait_connected(10)
    uplink = Uplink(publishers=links, max_events_per_message=5, encode=_encode)
    for device in links:
        _upload(uplink, device, range(0, 50))
    # The refused device keeps all of its 10 messages; the other device was not held up by it.
    assert uplink.batcher("tok-a").buffered_messages == 10
    assert collector.wait_for(10, 10) == 10
    links["tok-a"].set_credential(world.token("tok-a"))
    assert uplink.finish(timeout_s=20) == 0
    assert uplink.wait_all_acked(10)
    expected = {"tok-a": set(range(50)), "crt-a": set(range(50))}
    assert _wait_for_seqs(collector, expected, 10) == expected
    assert uplink.dropped_messages == 0 and links["tok-a"].connects == 1


def test_the_offline_buffer_survives_a_broker_restart(tmp_path, loop) -> None:
    w = make_world(tmp_path, token_devices=["tok-r"], cert_devices=["crt-r"], persistence=True)
    collector = Collector(w.broker.plain_port)
    try:
        links = {d: loop.open(w.credential(d)) for d in ("tok-r", "crt-r")}
        assert all(link.wait_connected(10) for link in links.values())
        uplink = Uplink(publishers=links, max_events_per_message=5, encode=_encode)
        for device in links:
            _upload(uplink, device, range(0, 25))
        assert uplink.wait_all_acked(10)
        w.broker.restart(down_s=1.0)
        for device in links:
            _upload(uplink, device, range(25, 50))  # while the devices reconnect: buffered or re-sent by paho
        assert uplink.finish(timeout_s=30) == 0
        assert uplink.wait_all_acked(30)
        assert all(link.disconnects >= 1 and link.connects >= 2 for link in links.values())
        expected = {"tok-r": set(range(50)), "crt-r": set(range(50))}
        seen = _wait_for_seqs(collector, expected, 20)
        assert seen == expected, ({d: expected[d] - seen.get(d, set()) for d in expected}, w.broker.log_text()[-3000:])
    finally:
        collector.close()
        w.broker.close()


def test_the_backfill_runner_publishes_each_device_through_its_own_connection(tmp_path, loop) -> None:
    start = datetime(2025, 3, 3, tzinfo=UTC)
    fleet = build_fleet(seed=3, devices=4, start=start, days=1)
    ids = [d.device_id for d in fleet.devices]
    w = make_world(tmp_path, token_devices=ids[:2], cert_devices=ids[2:])
    collector = Collector(w.broker.plain_port)
    try:
        links = loop.open_all(w.credential(d) for d in ids)
        report = simulate_backfill(fleet=fleet, publishers=links, progress=False, ack_timeout_s=30)
        assert report.all_acked and report.messages > 0 and report.dropped_messages == 0
        assert collector.wait_for(report.messages, 20) == report.messages
        # Every message arrived on its own device's topic and says it is from that device.
        for topic, payload in collector.payloads:
            assert topic == f"devices/{json.loads(payload)['device_id']}/telemetry"
        assert {t.split("/")[1] for t in collector.received} == set(ids)
        assert sum(link.published for link in links.values()) == report.messages
    finally:
        collector.close()
        w.broker.close()


def test_the_live_runner_publishes_each_device_through_its_own_connection(tmp_path, loop) -> None:
    start = datetime.now(UTC) - timedelta(days=1)
    fleet = build_fleet(seed=5, devices=3, start=start, days=2)
    ids = [d.device_id for d in fleet.devices]
    w = make_world(tmp_path, token_devices=ids[:2], cert_devices=ids[2:])
    collector = Collector(w.broker.plain_port)
    try:
        links = loop.open_all(w.credential(d) for d in ids)
        # Two wall-clock seconds replaying two simulated hours, uploads every 10 simulated minutes.
        report = simulate_live(fleet=fleet, publishers=links, duration_s=2.0, speed=3600.0, upload_interval_s=600,
                               ack_timeout_s=30)
        assert report.all_acked and report.messages >= len(ids)
        assert collector.wait_for(report.messages, 20) == report.messages
        assert {topic.split("/")[1] for topic in collector.received} == set(ids)
        assert all(topic == f"devices/{json.loads(p)['device_id']}/telemetry" for topic, p in collector.payloads)
    finally:
        collector.close()
        w.broker.close()


def test_a_thousand_devices_connect_concurrently_with_their_own_credentials(tmp_path) -> None:
    # 1,000 client sockets here and 1,000 in the broker: past a default soft limit of 1,024 open files.
    raise_open_files_limit(4096)
    tokens = [f"tok-{i:04d}" for i in range(500)]
    certs = [f"crt-{i:04d}" for i in range(500)]
    w = make_world(tmp_path, token_devices=tokens, cert_devices=certs, debug_log=False)
    collector = Collector(w.broker.plain_port)
    try:
        with ConnectionLoop(connect_workers=8, backoff_initial_s=0.5, backoff_max_s=5.0) as loop:
            links = loop.open_all(w.credential(d) for d in tokens + certs)
            assert loop.wait_all_connected(180) == 1000, loop.stats()
            assert all(link.state is LinkState.CONNECTED and link.connects >= 1 for link in links.values())
            for device, link in links.items():
                assert link.try_publish(f"devices/{device}/telemetry", device.encode())
            assert all(link.wait_all_acked(30) for link in links.values())
            assert loop.stats()["rejected"] == 0
            assert collector.wait_for(1000, 60) == 1000
        assert collector.received == {f"devices/{d}/telemetry": 1 for d in tokens + certs}
        assert all(topic == f"devices/{payload.decode()}/telemetry" for topic, payload in collector.payloads)
    finally:
        collector.close()
        w.broker.close()

