"""End to end with a real Mosquitto over real TLS, its identity files written by the credential service: a revoked
token or certificate drops its live connection and cannot come back; a rotation keeps the device connected."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from cxp.core.config import Settings
from cxp.identity.broker import BrokerPaths, ensure_service_accounts
from cxp.identity.files import PkiPaths, init_ca, save_server, write_private_key
from cxp.identity.pki import device_key_and_csr, issue_server_certificate
from cxp.identity.service import create_credential, revoke_credential, rotate_credential, sweep
from tests.identity.broker import HOST, MOSQUITTO, Broker, free_port, try_connect
from tests.identity.test_credentials_service import private_settings

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto is not installed (cxp stack up)")]
WAIT_S = 15.0  # an upper bound for an event to happen, never a measured time


@dataclass
class World:
    """A broker on the credential service's files: service listener (settings.mqtt.port), token and mTLS ports."""

    settings: Settings
    broker: Broker
    token_port: int
    mtls_port: int
    pki: PkiPaths


class Device:
    """A connected device that stays connected, and tells when the broker drops it."""

    def __init__(self, world: World, username: str, *, secret: str | None = None,
                 cert: tuple[Path, Path] | None = None) -> None:
        self.connected, self.dropped = threading.Event(), threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=username,
                                  protocol=MQTTProtocolVersion.MQTTv5, reconnect_on_failure=False)
        context = ssl.create_default_context(cafile=str(world.pki.ca_cert))
        if cert:
            context.load_cert_chain(certfile=str(cert[0]), keyfile=str(cert[1]))
        self.client.tls_set_context(context)
        if secret is not None:
            self.client.username_pw_set(username, secret)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: (not rc.is_failure) and self.connected.set()
        self.client.on_disconnect = lambda *_a: self.dropped.set()
        self.client.connect(HOST, world.mtls_port if cert else world.token_port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(WAIT_S), f"{username} did not connect: {world.broker.log_text()[-2000:]}"

    def publish_ok(self, device_id: str) -> bool:
        """Whether a QoS 1 publish on its own telemetry topic is acknowledged (the connection is alive)."""
        info = self.client.publish(f"devices/{device_id}/telemetry", b"{}", qos=1)
        info.wait_for_publish(WAIT_S)
        return info.is_published() and not self.dropped.is_set()

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


TLS = "tls_version tlsv1.2\ncafile {p.ca_cert}\ncertfile {p.server_cert}\nkeyfile {p.server_key}\n"


@pytest.fixture
def world(settings: Settings, db: psycopg.Connection, registered: list[str], tmp_path: Path) -> Iterator[World]:
    """The CA, the service accounts, a first sync, then Mosquitto reading exactly the files the service writes."""
    db.execute("TRUNCATE device_credentials, provisioning_keys, provisioning_audit")
    base = tmp_path / "stack"
    pki = PkiPaths(base / "pki")
    ca, _ = init_ca(paths=pki)
    save_server(issue_server_certificate(ca=ca), pki)
    token_port, mtls_port = free_port(), free_port()
    creds = private_settings(settings, base)
    ensure_service_accounts(creds)
    paths = BrokerPaths.of(creds)
    # A certificate exists before the broker starts, so the first sync writes the CRL its listener needs.
    _key, csr = device_key_and_csr(device_id=registered[4])
    create_credential(conn=db, settings=creds, device_id=registered[4], kind="certificate", csr_pem=csr)
    create_credential(conn=db, settings=creds, device_id=registered[4], kind="token")
    config = (f"allow_anonymous false\npassword_file {paths.service_passwords}\nacl_file {paths.service_acl}\n"
              f"listener {token_port} {HOST}\n{TLS.format(p=pki)}allow_anonymous false\n"
              f"password_file {paths.device_passwords}\nacl_file {paths.device_acl}\nuse_username_as_clientid true\n"
              f"listener {mtls_port} {HOST}\n{TLS.format(p=pki)}allow_anonymous false\nrequire_certificate true\n"
              f"use_identity_as_username true\nuse_username_as_clientid true\ncrlfile {paths.crl}\n"
              f"acl_file {paths.device_acl}\n")
    base.joinpath("mosquitto").mkdir(parents=True, exist_ok=True)
    broker = Broker(base / "mosquitto", config, global_lines=f"per_listener_settings true\npid_file {paths.pid}\n")
    creds = creds.model_copy(update={"mqtt": creds.mqtt.model_copy(update={"host": HOST, "port": broker.port})})
    try:
        yield World(creds, broker, token_port, mtls_port, pki)
    finally:
        broker.close()


def _cert_files(world: World, device_id: str, db: psycopg.Connection) -> tuple[Path, Path]:
    key, csr = device_key_and_csr(device_id=device_id)
    issued = create_credential(conn=db, settings=world.settings, device_id=device_id, kind="certificate", csr_pem=csr)
    cert, key_path = world.pki.dir / f"{device_id}.crt", world.pki.dir / f"{device_id}.key"
    cert.write_text(issued.certificate_pem)
    write_private_key(key_path, key)
    return cert, key_path


def _eventually_refused(attempt):
    """The first refused outcome of repeated attempts (the broker applies a SIGHUP between two loop passes, so a
    connect right after the signal may still meet the old CRL); the last outcome if none is refused in WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    outcome = attempt()
    while outcome.connected and time.monotonic() < deadline:
        time.sleep(0.1)
        outcome = attempt()
    return outcome


def test_a_revoked_token_is_dropped_and_refused(world: World, db, registered) -> None:
    device = registered[0]
    issued = create_credential(conn=db, settings=world.settings, device_id=device, kind="token")
    live = Device(world, device, secret=issued.secret)
    try:
        assert live.publish_ok(device)
        done = revoke_credential(conn=db, settings=world.settings, device_id=device, reason="stolen")
        assert done.sync.reloaded and done.sessions_dropped == 1
        assert live.dropped.wait(WAIT_S), world.broker.log_text()[-2000:]
    finally:
        live.close()
    again = _eventually_refused(lambda: try_connect(port=world.token_port, ca_file=world.pki.ca_cert,
                                                    client_id=device, username=device, password=issued.secret))
    assert not again.connected, again.detail


def test_a_revoked_certificate_is_dropped_and_refused(world: World, db, registered) -> None:
    device = registered[1]
    cert = _cert_files(world, device, db)
    live = Device(world, device, cert=cert)
    try:
        assert live.publish_ok(device)
        done = revoke_credential(conn=db, settings=world.settings, device_id=device, reason="lost")
        assert done.sync.crl_serials == 1 and done.sessions_dropped == 1
        assert live.dropped.wait(WAIT_S), world.broker.log_text()[-2000:]
    finally:
        live.close()
    again = _eventually_refused(lambda: try_connect(port=world.mtls_port, ca_file=world.pki.ca_cert,
                                                    client_id=device, cert=cert, tls_max=ssl.TLSVersion.TLSv1_2))
    assert not again.connected and "revoked" in again.detail, again.detail


def test_a_rotation_keeps_the_device_connected_then_only_the_new_token_works(world: World, db, registered) -> None:
    device = registered[2]
    first = create_credential(conn=db, settings=world.settings, device_id=device, kind="token")
    old = Device(world, device, secret=first.secret)
    try:
        rotation = rotate_credential(conn=db, settings=world.settings, device_id=device, kind="token")
        assert rotation.sync.reloaded
        assert old.publish_ok(device), "the rotation dropped the connected device"
        new_user = rotation.issued.credential.username
        new = Device(world, new_user, secret=rotation.issued.secret)
        try:
            assert new.publish_ok(device) and old.publish_ok(device)  # both valid during the grace window
            db.execute("UPDATE device_credentials SET grace_until = now() - interval '1 second'"
                       " WHERE grace_until IS NOT NULL")
            assert [c.username for c in sweep(conn=db, settings=world.settings).superseded] == [device]
            assert old.dropped.wait(WAIT_S), world.broker.log_text()[-2000:]
            assert new.publish_ok(device)
        finally:
            new.close()
    finally:
        old.close()
    refused = _eventually_refused(lambda: try_connect(port=world.token_port, ca_file=world.pki.ca_cert,
                                                      client_id=device, username=device, password=first.secret))
    assert not refused.connected, refused.detail
    accepted = try_connect(port=world.token_port, ca_file=world.pki.ca_cert, client_id=new_user, username=new_user,
                           password=rotation.issued.secret)
    assert accepted.connected, accepted.detail


def test_a_certificate_rotation_keeps_the_device_connected_then_the_old_one_is_refused(world: World, db,
                                                                                       registered) -> None:
    device = registered[3]
    old_cert = _cert_files(world, device, db)
    live = Device(world, device, cert=old_cert)
    try:
        key, csr = device_key_and_csr(device_id=device)
        rotation = rotate_credential(conn=db, settings=world.settings, device_id=device, kind="certificate",
                                     csr_pem=csr)
        assert live.publish_ok(device), "the rotation dropped the connected device"
        new_cert = world.pki.dir / f"{device}-2.crt", world.pki.dir / f"{device}-2.key"
        new_cert[0].write_text(rotation.issued.certificate_pem)
        write_private_key(new_cert[1], key)
        # Both certificates are valid during the grace window (checked one at a time: one client id per CN).
        assert try_connect(port=world.mtls_port, ca_file=world.pki.ca_cert, client_id=device, cert=old_cert,
                           tls_max=ssl.TLSVersion.TLSv1_2).connected
        db.execute("UPDATE device_credentials SET grace_until = now() - interval '1 second'"
                   " WHERE grace_until IS NOT NULL")
        done = sweep(conn=db, settings=world.settings)
        assert [c.serial_hex for c in done.superseded] == [rotation.old[0].serial_hex] and done.sync.crl_serials == 1
    finally:
        live.close()
    refused = _eventually_refused(lambda: try_connect(port=world.mtls_port, ca_file=world.pki.ca_cert,
                                                      client_id=device, cert=old_cert, tls_max=ssl.TLSVersion.TLSv1_2))
    assert not refused.connected and "revoked" in refused.detail, refused.detail
    accepted = try_connect(port=world.mtls_port, ca_file=world.pki.ca_cert, client_id=device, cert=new_cert,
                           tls_max=ssl.TLSVersion.TLSv1_2)
    assert accepted.connected, accepted.detail
