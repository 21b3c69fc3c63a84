"""`cxp pki …` and the PKI directory: idempotent init, 0600 keys that are never printed, sign and CRL from files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from cxp.cli.main import app
from cxp.core.config import Settings, get_settings
from cxp.identity import BadPem, PkiExists, PkiMissing
from cxp.identity.files import PkiPaths, init_ca, load_ca, write_public
from cxp.identity.pki import device_key_and_csr, verify_device_certificate

runner = CliRunner()


@pytest.fixture
def pki_dir(tmp_path: Path, monkeypatch) -> PkiPaths:
    monkeypatch.setenv("CXP_PKI__DIR", str(tmp_path / "pki"))
    get_settings.cache_clear()
    yield PkiPaths(tmp_path / "pki")
    get_settings.cache_clear()


def _run(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_the_pki_dir_defaults_to_the_stack_dir(tmp_path: Path) -> None:
    settings = Settings(stack={"dir": tmp_path / "stack"})
    assert settings.pki.dir == tmp_path / "stack" / "pki"
    assert Settings(stack={"dir": tmp_path}, pki={"dir": tmp_path / "elsewhere"}).pki.dir == tmp_path / "elsewhere"


def test_init_is_idempotent_and_force_replaces(pki_dir: PkiPaths) -> None:
    code, out = _run("pki", "init")
    assert code == 0 and "created CA" in out
    assert stat.S_IMODE(pki_dir.ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pki_dir.dir.stat().st_mode) == 0o700
    key_pem = pki_dir.ca_key.read_text()
    assert "PRIVATE KEY" in key_pem
    body = "".join(key_pem.splitlines()[1:-1])
    assert body[:40] not in out
    first = pki_dir.ca_cert.read_bytes()
    code, out = _run("pki", "init")
    assert code == 0 and "kept existing CA" in out and pki_dir.ca_cert.read_bytes() == first
    code, out = _run("pki", "init", "--force")
    assert code == 0 and "created CA" in out and pki_dir.ca_cert.read_bytes() != first
    assert stat.S_IMODE(pki_dir.ca_key.stat().st_mode) == 0o600


def test_a_half_ca_or_a_foreign_key_is_refused(pki_dir: PkiPaths) -> None:
    init_ca(paths=pki_dir)
    pki_dir.ca_key.unlink()
    with pytest.raises(PkiExists):
        init_ca(paths=pki_dir)
    with pytest.raises(PkiMissing):
        load_ca(pki_dir)
    other = PkiPaths(pki_dir.dir.parent / "other")
    init_ca(paths=other)
    pki_dir.ca_key.write_bytes(other.ca_key.read_bytes())
    with pytest.raises(BadPem, match="not the key"):
        load_ca(pki_dir)


def test_commands_before_init_say_so(pki_dir: PkiPaths) -> None:
    code, out = _run("pki", "server-cert")
    assert code == 1 and "cxp pki init" in out


def test_server_cert_sign_and_crl(pki_dir: PkiPaths, tmp_path: Path) -> None:
    assert _run("pki", "init")[0] == 0
    code, out = _run("pki", "server-cert", "--host", "127.0.0.1", "--host", "broker.local")
    assert code == 0 and stat.S_IMODE(pki_dir.server_key.stat().st_mode) == 0o600
    server = x509.load_pem_x509_certificate(pki_dir.server_cert.read_bytes())
    assert server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["broker.local"]

    key, csr = device_key_and_csr(device_id="brew-000001")
    write_public(tmp_path / "dev.csr", csr)
    code, out = _run("pki", "sign", "--device", "brew-000001", "--csr", str(tmp_path / "dev.csr"),
                     "--out", str(tmp_path / "dev.crt"), "--days", "30")
    assert code == 0, out
    cert = x509.load_pem_x509_certificate((tmp_path / "dev.crt").read_bytes())
    assert f"serial {cert.serial_number:x}" in out
    ca = load_ca(pki_dir)
    assert verify_device_certificate(ca=ca, certificate=cert) == "brew-000001"
    assert key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()) not in out.encode()

    code, out = _run("pki", "sign", "--device", "brew-000002", "--csr", str(tmp_path / "dev.csr"),
                     "--out", str(tmp_path / "other.crt"))
    assert code == 1 and "brew-000001" in out and not (tmp_path / "other.crt").exists()

    code, out = _run("pki", "crl", "--revoked", f"{cert.serial_number:x}", "--revoked", "0x1f,2a")
    assert code == 0, out
    crl = x509.load_pem_x509_crl(pki_dir.crl.read_bytes())
    assert {r.serial_number for r in crl} == {cert.serial_number, 0x1F, 0x2A}
    assert crl.is_signature_valid(ca.certificate.public_key())
    code, out = _run("pki", "crl", "--revoked", "not-hex")
    assert code != 0
