"""The stack's broker, secure by default, with real TLS: who may connect on which listener and publish what."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from cxp.core.config import Settings
from cxp.gateway.broker_log import LogReader, broker_log_path
from cxp.identity.broker import (
    ADMIN_ACCOUNT,
    GATEWAY_ACCOUNT,
    LOADER_ACCOUNT,
    DeviceLogin,
    reload_broker,
    revoke_sessions,
    service_secret,
    write_device_files,
)
from cxp.identity.files import PkiPaths, load_ca, pem
from cxp.identity.pki import build_crl, create_ca, device_key_and_csr, sign_device_csr
from cxp.identity.tokens import hash_secret, new_secret
from cxp.store.broker_clients import list_broker_clients
from tests.fixtures.mqtt import batch_payload, usage
from tests.fixtures.stack import recent
from tests.stack.clients import Client, accepted, wait_until

pytestmark = pytest.mark.integration
NOT_AUTHORIZED = 0x87
NO_SUBSCRIBERS = 0x10


def _pki(settings: Settings) -> PkiPaths:
    assert settings.pki.dir is not None
    return PkiPaths(settings.pki.dir)


def _token(settings: Settings, device_id: str, secret: str, **kw) -> Client:
    return Client(port=settings.mqtt.device_tls_port, client_id=device_id, username=device_id, password=secret,
                  ca_file=_pki(settings).ca_cert, **kw)


def _certificate(settings: Settings, device_id: str, cert: tuple[Path, Path]) -> Client:
    return Client(port=settings.mqtt.device_mtls_port, client_id=device_id, ca_file=_pki(settings).ca_cert, cert=cert)


def _tokens(settings: Settings, secrets: dict[str, str], crl_pem: bytes | None = None) -> None:
    """Make exactly these device tokens valid (and this CRL current), as the registry does after a change."""
    write_device_files(settings, logins=[DeviceLogin(d, d, hash_secret(s)) for d, s in secrets.items()],
                       crl_pem=crl_pem)
    assert reload_broker(settings)


def _issue(settings: Settings, tmp_path: Path, device_id: str, *, ca=None, days: int = 30,
           now: datetime | None = None) -> tuple[tuple[Path, Path], int]:
    key, csr = device_key_and_csr(device_id=device_id)
    issued = sign_device_csr(ca=ca or load_ca(_pki(settings)), csr_pem=csr, device_id=device_id, days=days, now=now)
    tmp_path.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = tmp_path / f"{device_id}.crt", tmp_path / f"{device_id}.key"
    cert_path.write_bytes(issued.pem())
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return (cert_path, key_path), issued.serial


def _message(device_id: str, seq: int) -> bytes:
    return batch_payload([usage(seq, recent(5))], device_id=device_id, sent_at=datetime.now(UTC))


def _events(db, device_id: str) -> int:
    return db.execute("SELECT count(*) FROM events e JOIN devices d USING (device_key) WHERE d.device_id = %s",
                      (device_id,)).fetchone()[0]


def test_anonymous_clients_are_refused_on_every_listener(settings) -> None:
    mqtt, ca = settings.mqtt, _pki(settings).ca_cert
    assert not accepted(port=mqtt.port, client_id="anon-plain")
    assert not accepted(port=mqtt.device_tls_port, client_id="anon-tls", ca_file=ca)
    assert not accepted(port=mqtt.device_mtls_port, client_id="anon-mtls", ca_file=ca)
    # Control: the same listeners do accept the right credentials.
    assert accepted(port=mqtt.port, client_id="svc-ok", username=LOADER_ACCOUNT,
                    password=service_secret(settings, LOADER_ACCOUNT))


def test_token_device_is_stored_and_cannot_speak_for_another(settings, db, registered, start_gateway,
                                                             test_db_api) -> None:
    a, b = registered[0], registered[1]
    secret = new_secret()
    _tokens(settings, {a: secret, b: new_secret()})
    rows = list_broker_clients(db, usernames=[a])  # the rows outlive the test database's truncation
    before = rows[0].denied_publishes if rows else 0
    start_gateway()
    assert wait_until(lambda: accepted(port=settings.mqtt.device_tls_port, client_id=a, username=a, password=secret,
                                       ca_file=_pki(settings).ca_cert), 15)
    assert not accepted(port=settings.mqtt.device_tls_port, client_id=a, username=a, password=new_secret(),
                        ca_file=_pki(settings).ca_cert)
    device = _token(settings, a, secret)
    assert device.connect()
    try:
        prefix = settings.mqtt.topic_prefix
        assert device.publish(f"{prefix}/{a}/telemetry", _message(a, 1)) == 0
        assert wait_until(lambda: _events(db, a) == 1, 30)
        # A's own id in the payload, or B's: the broker refuses the topic either way.
        assert device.publish(f"{prefix}/{b}/telemetry", _message(b, 2)) == NOT_AUTHORIZED
        assert device.publish(f"{prefix}/{b}/telemetry", _message(a, 3)) == NOT_AUTHORIZED
        assert not device.disconnected.is_set()
        assert device.publish(f"{prefix}/{a}/telemetry", _message(a, 4)) == 0  # still connected, still served
        assert wait_until(lambda: _events(db, a) == 2, 30)
        assert _events(db, b) == 0

        def denied_in_status() -> int:
            gateways = test_db_api.get("/v1/ingest/status").json()["gateways"]
            return max((g["counters"].get("broker_denied_publishes", 0) for g in gateways
                        if g["gateway_id"] == settings.gateway.client_id), default=0)

        def seen() -> bool:
            rows = list_broker_clients(db, usernames=[a])
            return bool(rows) and rows[0].denied_publishes >= before + 2 and rows[0].connected

        assert wait_until(lambda: denied_in_status() >= 2, 30)  # this gateway's follower counted both
        assert wait_until(seen, 30)
        row = list_broker_clients(db, usernames=[a])[0]
        assert row.last_address == "127.0.0.1" and row.last_denied_topic == f"{prefix}/{b}/telemetry"
    finally:
        device.close()
    assert wait_until(lambda: not list_broker_clients(db, usernames=[a])[0].connected, 30)


def test_removing_a_token_drops_the_live_connection_and_refuses_it(settings, registered) -> None:
    a = registered[2]
    secret = new_secret()
    _tokens(settings, {a: secret})
    device = _token(settings, a, secret)
    assert wait_until(device.connect, 15)
    try:
        _tokens(settings, {})
        assert device.disconnected.wait(30)
    finally:
        device.close()
    assert not accepted(port=settings.mqtt.device_tls_port, client_id=a, username=a, password=secret,
                        ca_file=_pki(settings).ca_cert)


def test_revoked_certificate_is_disconnected_and_refused(settings, registered, tmp_path) -> None:
    a = registered[3]
    cert, serial = _issue(settings, tmp_path, a)
    device = _certificate(settings, a, cert)
    assert device.connect()
    try:
        crl = build_crl(ca=load_ca(_pki(settings)), revoked=[serial], days=settings.pki.crl_days)
        _tokens(settings, {}, crl_pem=pem(crl))
        assert revoke_sessions(settings, client_ids=[a]) == 1
        assert device.disconnected.wait(30)
    finally:
        device.close()
    assert not accepted(port=settings.mqtt.device_mtls_port, client_id=a, ca_file=_pki(settings).ca_cert, cert=cert)
    # Control: another certificate of the same CA still gets in.
    other, _ = _issue(settings, tmp_path, registered[4])
    assert accepted(port=settings.mqtt.device_mtls_port, client_id=registered[4], ca_file=_pki(settings).ca_cert,
                    cert=other)


def test_expired_and_foreign_ca_certificates_are_refused(settings, registered, tmp_path) -> None:
    a = registered[4]
    expired, _ = _issue(settings, tmp_path / "old", a, days=1, now=datetime.now(UTC) - timedelta(days=3))
    foreign, _ = _issue(settings, tmp_path / "foreign", a, ca=create_ca(name="someone else's CA"))
    valid, _ = _issue(settings, tmp_path / "ok", a)
    ca = _pki(settings).ca_cert
    assert not accepted(port=settings.mqtt.device_mtls_port, client_id=a, ca_file=ca, cert=expired)
    assert not accepted(port=settings.mqtt.device_mtls_port, client_id=a, ca_file=ca, cert=foreign)
    assert accepted(port=settings.mqtt.device_mtls_port, client_id=a, ca_file=ca, cert=valid)


def test_certificate_device_publishes_only_its_own_topic(settings, registered, tmp_path) -> None:
    a, b = registered[0], registered[1]
    cert, _ = _issue(settings, tmp_path, a)
    device = _certificate(settings, a, cert)
    assert device.connect()
    try:
        prefix = settings.mqtt.topic_prefix
        # Accepted (0x10: accepted, nobody subscribed: no gateway runs in this test), and refused for B.
        assert device.publish(f"{prefix}/{a}/telemetry", _message(a, 1)) in (0, NO_SUBSCRIBERS)
        assert device.publish(f"{prefix}/{b}/telemetry", _message(b, 1)) == NOT_AUTHORIZED
    finally:
        device.close()


def test_gateway_cannot_publish_and_loader_cannot_read(settings) -> None:
    port, prefix = settings.mqtt.port, settings.mqtt.topic_prefix
    gateway = Client(port=port, client_id=f"gw-probe-{prefix}", username=GATEWAY_ACCOUNT,
                     password=service_secret(settings, GATEWAY_ACCOUNT))
    loader = Client(port=port, client_id=f"loader-probe-{prefix}", username=LOADER_ACCOUNT,
                    password=service_secret(settings, LOADER_ACCOUNT))
    assert gateway.connect() and loader.connect()
    try:
        assert gateway.subscribe(f"{prefix}/+/telemetry") == 1  # granted QoS 1
        assert gateway.publish(f"{prefix}/dev-000/telemetry", _message("dev-000", 1)) == NOT_AUTHORIZED
        # Mosquitto 2.0.11's acl_file grants every SUBSCRIBE (security_default.c: "FIXME"); what it checks is
        # each delivery against `read`, so the loader's subscription never yields a message.
        loader.subscribe(f"{prefix}/+/telemetry")
        assert loader.publish(f"{prefix}/dev-000/telemetry", _message("dev-000", 2)) == 0
        assert wait_until(lambda: gateway.messages, 10)
        assert not wait_until(lambda: loader.messages, 2)
        assert gateway.messages == [f"{prefix}/dev-000/telemetry"]
    finally:
        gateway.close()
        loader.close()
    assert not accepted(port=port, client_id="admin-wrong", username=ADMIN_ACCOUNT, password=new_secret())


def test_broker_reopens_its_log_after_a_rotation(settings) -> None:
    reader = LogReader(broker_log_path(settings))
    reader.skip_to_tail(0)
    assert reader.rotate(settings)  # rename to .1 + SIGHUP
    # Mosquitto closes and reopens its log on reload: the name holds a new file, and new lines go there.
    assert wait_until(lambda: broker_log_path(settings).exists(), 30)
    assert accepted(port=settings.mqtt.port, client_id=f"after-rotation-{settings.mqtt.topic_prefix}",
                    username=LOADER_ACCOUNT, password=service_secret(settings, LOADER_ACCOUNT))
    assert wait_until(lambda: b"after-rotation" in broker_log_path(settings).read_bytes(), 30)
    # The follower reads the rest of the renamed file, then the new one.
    assert b"after-rotation" in b"".join(reader.chunks())
    reader.close()
