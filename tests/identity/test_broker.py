"""Against a real Mosquitto over real TLS: platform-CA certificates and `$7$` secrets get in, nothing else does."""

from __future__ import annotations

import signal
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from cxp.identity.files import PkiPaths, init_ca, pem, save_server, write_private_key, write_public
from cxp.identity.pki import (
    CertificateAuthority,
    build_crl,
    create_ca,
    device_key_and_csr,
    issue_server_certificate,
    sign_device_csr,
)
from cxp.identity.tokens import hash_secret, issue_token, new_secret, write_password_file
from tests.identity.broker import MOSQUITTO, Broker, free_port, try_connect

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto is not installed (cxp stack up)")]

TLS_LISTENER = "tls_version tlsv1.2\ncafile {pki.ca_cert}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"


@dataclass
class DeviceFiles:
    """A device's certificate and key on disk, and the certificate's serial."""

    cert: Path
    key: Path
    serial: int


def _device(base: Path, ca: CertificateAuthority, device_id: str, *, now: datetime | None = None,
            days: int = 30) -> DeviceFiles:
    key, csr = device_key_and_csr(device_id=device_id)
    issued = sign_device_csr(ca=ca, csr_pem=csr, device_id=device_id, days=days, now=now)
    files = DeviceFiles(cert=base / f"{device_id}.crt", key=base / f"{device_id}.key", serial=issued.serial)
    write_public(files.cert, issued.pem())
    write_private_key(files.key, key)
    return files


@dataclass
class CertWorld:
    """A broker that authenticates by client certificate, and the devices the tests try."""

    broker: Broker
    pki: PkiPaths
    good: DeviceFiles
    foreign: DeviceFiles
    expired: DeviceFiles
    revoked: DeviceFiles


@pytest.fixture(scope="module")
def cert_world(tmp_path_factory) -> Iterator[CertWorld]:
    """Platform CA + server cert, a CRL revoking one device, and a broker requiring client certificates."""
    base = tmp_path_factory.mktemp("mtls")
    pki = PkiPaths(base / "pki")
    ca, _ = init_ca(paths=pki)
    save_server(issue_server_certificate(ca=ca), pki)
    devices = base / "devices"
    good = _device(devices, ca, "dev-good")
    foreign = _device(devices, create_ca(name="someone else's CA"), "dev-foreign")
    expired = _device(devices, ca, "dev-expired", now=datetime.now(UTC) - timedelta(days=40), days=30)
    revoked = _device(devices, ca, "dev-revoked")
    write_public(pki.crl, pem(build_crl(ca=ca, revoked=[revoked.serial])))
    broker = Broker(base, TLS_LISTENER.format(pki=pki) + f"require_certificate true\nuse_identity_as_username true\n"
                    f"crlfile {pki.crl}\nallow_anonymous false\n")
    yield CertWorld(broker=broker, pki=pki, good=good, foreign=foreign, expired=expired, revoked=revoked)
    broker.close()


def _try_cert(world: CertWorld, device: DeviceFiles | None, client_id: str, tls_max=ssl.TLSVersion.TLSv1_2):
    cert = (device.cert, device.key) if device is not None else None
    return try_connect(port=world.broker.port, ca_file=world.pki.ca_cert, client_id=client_id, cert=cert,
                       tls_max=tls_max)


@pytest.mark.parametrize("tls_max", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def test_a_device_certificate_from_the_platform_ca_connects_as_its_device_id(cert_world: CertWorld, tls_max) -> None:
    outcome = _try_cert(cert_world, cert_world.good, f"client-{tls_max.name}", tls_max)
    assert outcome.connected, (outcome.detail, cert_world.broker.log_text())
    # use_identity_as_username: the broker knows the client by its certificate's CN, whatever its client id.
    assert f"as client-{tls_max.name} (p5, c1, k10, u'dev-good')" in cert_world.broker.log_text()


def test_a_certificate_from_a_foreign_ca_is_refused(cert_world: CertWorld) -> None:
    outcome = _try_cert(cert_world, cert_world.foreign, "dev-foreign")
    assert not outcome.connected
    assert "UNKNOWN_CA" in outcome.detail


def test_an_expired_certificate_is_refused(cert_world: CertWorld) -> None:
    # Same CA and otherwise valid: it passed verification while it was in its validity window.
    cert = x509.load_pem_x509_certificate(cert_world.expired.cert.read_bytes())
    assert cert.not_valid_after_utc < datetime.now(UTC)
    outcome = _try_cert(cert_world, cert_world.expired, "dev-expired")
    assert not outcome.connected
    assert "CERTIFICATE_EXPIRED" in outcome.detail


@pytest.mark.parametrize("tls_max", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def test_a_revoked_certificate_is_refused(cert_world: CertWorld, tls_max) -> None:
    outcome = _try_cert(cert_world, cert_world.revoked, "dev-revoked", tls_max)
    assert not outcome.connected, outcome.detail
    if tls_max is ssl.TLSVersion.TLSv1_2:
        assert "CERTIFICATE_REVOKED" in outcome.detail


def test_a_client_without_a_certificate_is_refused(cert_world: CertWorld) -> None:
    outcome = _try_cert(cert_world, None, "anonymous")
    assert not outcome.connected
    assert "HANDSHAKE_FAILURE" in outcome.detail


@dataclass
class PasswordWorld:
    """A TLS broker that authenticates by a password file of `$7$` hashes."""

    broker: Broker
    pki: PkiPaths
    secrets: dict[str, str]


@pytest.fixture(scope="module")
def password_world(tmp_path_factory) -> Iterator[PasswordWorld]:
    """Three devices: two with the default iteration count, one hashed with a non-default count."""
    base = tmp_path_factory.mktemp("pwfile")
    pki = PkiPaths(base / "pki")
    ca, _ = init_ca(paths=pki)
    save_server(issue_server_certificate(ca=ca), pki)
    tokens = [issue_token(device_id="dev-a"), issue_token(device_id="dev-b")]
    slow_secret = new_secret()
    entries = [(t.username, t.password_hash) for t in tokens]
    entries.append(("dev-c", hash_secret(slow_secret, iterations=1000)))
    write_password_file(base / "passwd", entries)
    broker = Broker(base, TLS_LISTENER.format(pki=pki) + f"password_file {base / 'passwd'}\nallow_anonymous false\n")
    yield PasswordWorld(broker=broker, pki=pki,
                        secrets={**{t.username: t.secret for t in tokens}, "dev-c": slow_secret})
    broker.close()


def _try_password(world: PasswordWorld, username: str | None, password: str | None):
    return try_connect(port=world.broker.port, ca_file=world.pki.ca_cert, client_id=f"c-{username}",
                       username=username, password=password)


@pytest.mark.parametrize("device", ["dev-a", "dev-b", "dev-c"])
def test_the_right_secret_connects(password_world: PasswordWorld, device: str) -> None:
    outcome = _try_password(password_world, device, password_world.secrets[device])
    assert outcome.connected, (outcome.detail, password_world.broker.log_text())


def test_a_wrong_secret_is_refused(password_world: PasswordWorld) -> None:
    outcome = _try_password(password_world, "dev-a", new_secret())
    assert not outcome.connected
    assert "CONNACK" in outcome.detail  # refused by the broker's auth, not by a TLS failure


def test_another_devices_secret_is_refused(password_world: PasswordWorld) -> None:
    outcome = _try_password(password_world, "dev-a", password_world.secrets["dev-b"])
    assert not outcome.connected, outcome.detail


def test_anonymous_is_refused(password_world: PasswordWorld) -> None:
    outcome = _try_password(password_world, None, None)
    assert not outcome.connected
    assert "CONNACK" in outcome.detail


def test_an_unknown_user_is_refused(password_world: PasswordWorld) -> None:
    outcome = _try_password(password_world, "dev-unknown", password_world.secrets["dev-a"])
    assert not outcome.connected, outcome.detail



def _crl_broker(base: Path, ca: CertificateAuthority, revoked: list[int], *, now: datetime | None = None):
    pki = PkiPaths(base / "pki")
    save_server(issue_server_certificate(ca=ca), pki)
    write_public(pki.crl, pem(build_crl(ca=ca, revoked=revoked, days=1, now=now)))
    lines = TLS_LISTENER.format(pki=pki) + (f"require_certificate true\nuse_identity_as_username true\n"
                                            f"crlfile {pki.crl}\nallow_anonymous false\n")
    return pki, Broker(base, lines)


def test_a_rewritten_crl_takes_effect_on_sighup_for_new_connections(tmp_path: Path) -> None:
    ca, _ = init_ca(paths=PkiPaths(tmp_path / "pki"))
    device = _device(tmp_path, ca, "dev-late")
    pki, broker = _crl_broker(tmp_path, ca, [])
    try:
        assert try_connect(port=broker.port, ca_file=pki.ca_cert, client_id="a", cert=(device.cert, device.key),
                           tls_max=ssl.TLSVersion.TLSv1_2).connected
        write_public(pki.crl, pem(build_crl(ca=ca, revoked=[device.serial])))
        # Mosquitto 2.0 reads the CRL when it (re)loads its config: a rewritten file alone changes nothing.
        assert try_connect(port=broker.port, ca_file=pki.ca_cert, client_id="b", cert=(device.cert, device.key),
                           tls_max=ssl.TLSVersion.TLSv1_2).connected
        broker.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "Reloading config" not in broker.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        outcome = try_connect(port=broker.port, ca_file=pki.ca_cert, client_id="c", cert=(device.cert, device.key),
                              tls_max=ssl.TLSVersion.TLSv1_2)
        assert not outcome.connected and "CERTIFICATE_REVOKED" in outcome.detail, outcome.detail
    finally:
        broker.close()


def test_a_crl_past_its_next_update_locks_every_device_out(tmp_path: Path) -> None:
    ca, _ = init_ca(paths=PkiPaths(tmp_path / "pki"))
    device = _device(tmp_path, ca, "dev-ok")
    pki, broker = _crl_broker(tmp_path, ca, [], now=datetime.now(UTC) - timedelta(days=3))
    try:
        outcome = try_connect(port=broker.port, ca_file=pki.ca_cert, client_id="a", cert=(device.cert, device.key),
                              tls_max=ssl.TLSVersion.TLSv1_2)
        # OpenSSL reports the stale CRL to the client as an expired certificate.
        assert not outcome.connected and "CERTIFICATE_EXPIRED" in outcome.detail, outcome.detail
    finally:
        broker.close()


def test_one_broker_serves_certificates_and_secrets_on_two_tls_listeners(tmp_path: Path) -> None:
    """The layout the stack will use: mutual TLS on one port, `$7$` secrets on another, one global config."""
    pki = PkiPaths(tmp_path / "pki")
    ca, _ = init_ca(paths=pki)
    save_server(issue_server_certificate(ca=ca), pki)
    write_public(pki.crl, pem(build_crl(ca=ca, revoked=[])))
    device = _device(tmp_path, ca, "dev-cert")
    token = issue_token(device_id="dev-token")
    write_password_file(tmp_path / "passwd", [(token.username, token.password_hash)])
    password_port = free_port()
    tls = TLS_LISTENER.format(pki=pki)
    broker = Broker(tmp_path, f"{tls}require_certificate true\nuse_identity_as_username true\ncrlfile {pki.crl}\n"
                              f"listener {password_port} 127.0.0.1\n{tls}"
                              f"allow_anonymous false\npassword_file {tmp_path / 'passwd'}\n")
    try:
        assert try_connect(port=broker.port, ca_file=pki.ca_cert, client_id="c1",
                           cert=(device.cert, device.key)).connected
        assert try_connect(port=password_port, ca_file=pki.ca_cert, client_id="c2", username="dev-token",
                           password=token.secret).connected
        assert not try_connect(port=password_port, ca_file=pki.ca_cert, client_id="c3").connected
        assert not try_connect(port=broker.port, ca_file=pki.ca_cert, client_id="c4", username="dev-token",
                               password=token.secret).connected  # a secret is no way onto the certificate port
        # A certificate holder cannot pick another identity: the CN replaces whatever username it sends.
        assert try_connect(port=broker.port, ca_file=pki.ca_cert, client_id="c5", cert=(device.cert, device.key),
                           username="dev-token", password="whatever").connected
        assert "as c5 (p5, c1, k10, u'dev-cert')" in broker.log_text()
    finally:
        broker.close()
