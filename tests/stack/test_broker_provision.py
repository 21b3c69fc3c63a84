"""`cxp stack up`'s broker provisioning: idempotent, keeps the registry's device files, renews the CRL in time."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from cxp.core.config import MqttSettings, Settings, StackSettings
from cxp.identity.broker import BrokerPaths
from cxp.identity.files import PkiPaths, load_ca, load_certificate, load_crl, pem
from cxp.identity.pki import build_crl
from cxp.stack.broker import TlsFiles, broker_conf, provision_broker_identity
from cxp.stack.local import _broker_paths, start_broker
from tests.stack.clients import accepted

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def local(tmp_path) -> Settings:
    return Settings(stack=StackSettings(dir=tmp_path / "stack"), mqtt=MqttSettings(device_host="10.1.2.3"))


def test_first_run_creates_everything_and_a_second_changes_nothing(local) -> None:
    paths, pki = BrokerPaths.of(local), PkiPaths(local.pki.dir)
    assert provision_broker_identity(local, now=NOW)
    for path in (paths.device_passwords, paths.device_acl, paths.service_passwords, paths.crl, TlsFiles(paths).key):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert paths.device_passwords.read_text() == ""
    names = load_certificate(pki.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.1.2.3" in {str(v) for v in names.get_values_for_type(x509.IPAddress)}
    before = {p: p.read_bytes() for p in (pki.ca_cert, pki.server_cert, paths.crl)}
    assert not provision_broker_identity(local, now=NOW + timedelta(days=1))
    assert {p: p.read_bytes() for p in before} == before


def test_device_files_of_the_registry_are_never_overwritten(local) -> None:
    paths = BrokerPaths.of(local)
    provision_broker_identity(local, now=NOW)
    paths.device_passwords.write_text("dev-1:$7$101$x$y\n")
    provision_broker_identity(local, now=NOW)
    assert paths.device_passwords.read_text() == "dev-1:$7$101$x$y\n"


def test_crl_is_renewed_past_half_its_validity_keeping_the_revocations(local) -> None:
    paths = BrokerPaths.of(local)
    provision_broker_identity(local, now=NOW)
    ca = load_ca(PkiPaths(local.pki.dir))
    # The registry revoked serial 1234 (its CRL, as `write_device_files(crl_pem=…)` leaves it).
    paths.crl.write_bytes(pem(build_crl(ca=ca, revoked=[1234], days=7, now=NOW)))
    assert not provision_broker_identity(local, now=NOW + timedelta(days=3))
    assert provision_broker_identity(local, now=NOW + timedelta(days=4))
    crl = load_crl(paths.crl)
    assert crl.next_update_utc == NOW + timedelta(days=4 + local.pki.crl_days)
    assert [r.serial_number for r in crl] == [1234]


def test_config_refuses_anonymous_everywhere_with_listener_settings(local) -> None:
    text = broker_conf(local, user="mosquitto")
    assert text.count("allow_anonymous false") == 3 and "allow_anonymous true" not in text
    assert text.index("per_listener_settings true") < text.index("listener ")
    assert "require_certificate true" in text and "use_identity_as_username true" in text
    assert text.count("use_username_as_clientid true") == 2 and "tls_version tlsv1.2" in text


@pytest.mark.integration
def test_stack_up_restarts_a_broker_running_an_older_config(stack) -> None:
    _, conf, pid_file, _ = _broker_paths(stack)
    pid = pid_file.read_text()
    start_broker(stack)  # unchanged: kept running
    assert pid_file.read_text() == pid
    conf.write_text(conf.read_text().replace("allow_anonymous false", "allow_anonymous true"))
    start_broker(stack)
    assert pid_file.read_text() != pid
    assert not accepted(port=stack.mqtt.port, client_id="anon-after-restart")
