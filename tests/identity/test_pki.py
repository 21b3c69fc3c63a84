"""The platform CA issues what it should and refuses everything else, each with its own exception."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cxp.identity import (
    BadCsr,
    BadParameter,
    CertificateExpired,
    CertificateRefused,
    CertificateRevoked,
    CnMismatch,
    ForeignIssuer,
    IdentityError,
    InvalidDeviceId,
)
from cxp.identity.pki import (
    build_crl,
    create_ca,
    device_key_and_csr,
    issue_server_certificate,
    sign_device_csr,
    verify_device_certificate,
)


@pytest.fixture(scope="module")
def ca():
    return create_ca()


def _csr(cn_values: list[str], key=None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, v) for v in cn_values])
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM)


def test_the_ca_is_a_p256_signing_only_ca_for_about_ten_years(ca) -> None:
    cert = ca.certificate
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().curve.name == "secp256r1"
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=3640) < life < timedelta(days=3660)
    cert.verify_directly_issued_by(cert)  # self-signed
    assert "key" not in repr(ca).replace("CertificateAuthority", "")  # the private key never shows in a repr


def test_the_server_certificate_names_loopback_and_is_for_servers(ca) -> None:
    credential = issue_server_certificate(ca=ca)
    cert = credential.issued.certificate
    cert.verify_directly_issued_by(ca.certificate)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("127.0.0.1"),
                                                            ipaddress.ip_address("::1")}
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert credential.key.public_key() == cert.public_key()


def test_a_device_certificate_from_a_csr_carries_the_device_id_and_client_auth(ca) -> None:
    key, csr = device_key_and_csr(device_id="thermo-000042")
    now = datetime.now(UTC)
    issued = sign_device_csr(ca=ca, csr_pem=csr, device_id="thermo-000042", days=90, now=now)
    cert = issued.certificate
    assert issued.common_name == "thermo-000042"
    assert cert.public_key() == key.public_key()  # the device's own key: it never left the device
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    assert issued.not_after == cert.not_valid_after_utc
    assert abs(issued.not_after - (now + timedelta(days=90))) < timedelta(seconds=2)
    assert issued.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex() and len(issued.fingerprint_sha256) == 64
    assert verify_device_certificate(ca=ca, certificate=cert) == "thermo-000042"


def test_serials_are_random_and_distinct(ca) -> None:
    _, csr = device_key_and_csr(device_id="d1")
    serials = {sign_device_csr(ca=ca, csr_pem=csr, device_id="d1").serial for _ in range(20)}
    assert len(serials) == 20
    assert all(s.bit_length() > 64 for s in serials)


def test_a_csr_for_another_device_is_refused(ca) -> None:
    _, csr = device_key_and_csr(device_id="device-b")
    with pytest.raises(CnMismatch, match="device-b"):
        sign_device_csr(ca=ca, csr_pem=csr, device_id="device-a")


def test_a_tampered_csr_is_refused(ca) -> None:
    # Swap the CN inside the signed request body: the self-signature no longer matches.
    _, csr_pem = device_key_and_csr(device_id="device-a")
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    tampered_der = der.replace(b"device-a", b"device-b")
    assert tampered_der != der
    tampered = x509.load_der_x509_csr(tampered_der).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(BadCsr, match="signature"):
        sign_device_csr(ca=ca, csr_pem=tampered, device_id="device-b")


@pytest.mark.parametrize("junk", [b"", b"not a csr", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                                                       b"-----END CERTIFICATE REQUEST-----\n"])
def test_unreadable_csrs_are_refused(ca, junk: bytes) -> None:
    with pytest.raises(BadCsr):
        sign_device_csr(ca=ca, csr_pem=junk, device_id="d1")


def test_a_csr_with_two_common_names_is_refused(ca) -> None:
    with pytest.raises(BadCsr, match="exactly one"):
        sign_device_csr(ca=ca, csr_pem=_csr(["d1", "d2"]), device_id="d1")


def test_weak_keys_are_refused(ca) -> None:
    weak_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(BadCsr, match="too short"):
        sign_device_csr(ca=ca, csr_pem=_csr(["d1"], weak_rsa), device_id="d1")
    with pytest.raises(BadCsr, match="curve"):
        sign_device_csr(ca=ca, csr_pem=_csr(["d1"], ec.generate_private_key(ec.SECP256K1())), device_id="d1")


@pytest.mark.parametrize("device_id", ["", "a/b", "dev+1", "dev#", "x" * 65, "dév"])
def test_device_ids_outside_the_contract_are_refused(ca, device_id: str) -> None:
    with pytest.raises(InvalidDeviceId):
        sign_device_csr(ca=ca, csr_pem=_csr(["d1"]), device_id=device_id)


def test_requested_extensions_are_not_copied(ca) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "d1")]))
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    cert = sign_device_csr(ca=ca, csr_pem=csr, device_id="d1").certificate
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_a_certificate_from_a_foreign_ca_is_refused(ca) -> None:
    _, csr = device_key_and_csr(device_id="d1")
    foreign = sign_device_csr(ca=create_ca(name="cxp platform CA"), csr_pem=csr, device_id="d1")  # same name
    with pytest.raises(ForeignIssuer):
        verify_device_certificate(ca=ca, certificate=foreign.certificate)


def test_an_expired_certificate_is_refused(ca) -> None:
    _, csr = device_key_and_csr(device_id="d1")
    old = sign_device_csr(ca=ca, csr_pem=csr, device_id="d1", days=1, now=datetime.now(UTC) - timedelta(days=3))
    with pytest.raises(CertificateExpired):
        verify_device_certificate(ca=ca, certificate=old.certificate)
    assert verify_device_certificate(ca=ca, certificate=old.certificate,
                                     now=datetime.now(UTC) - timedelta(days=2, hours=12)) == "d1"


def test_a_revoked_certificate_is_refused_and_others_pass(ca) -> None:
    _, csr = device_key_and_csr(device_id="d1")
    revoked, kept = (sign_device_csr(ca=ca, csr_pem=csr, device_id="d1") for _ in range(2))
    crl = build_crl(ca=ca, revoked=[revoked.serial, revoked.serial, 12345], days=3)
    assert len(crl) == 2
    assert crl.next_update_utc - crl.last_update_utc > timedelta(days=3)
    assert crl.is_signature_valid(ca.certificate.public_key())
    with pytest.raises(CertificateRevoked):
        verify_device_certificate(ca=ca, certificate=revoked.certificate, crl=crl)
    assert verify_device_certificate(ca=ca, certificate=kept.certificate, crl=crl) == "d1"


def test_a_crl_from_another_ca_is_not_trusted(ca) -> None:
    _, csr = device_key_and_csr(device_id="d1")
    issued = sign_device_csr(ca=ca, csr_pem=csr, device_id="d1")
    with pytest.raises(CertificateRefused, match="CRL"):
        verify_device_certificate(ca=ca, certificate=issued.certificate, crl=build_crl(ca=create_ca(), revoked=[]))


def test_a_server_certificate_is_not_a_device_credential(ca) -> None:
    server = issue_server_certificate(ca=ca).issued.certificate
    with pytest.raises(CertificateRefused, match="client"):
        verify_device_certificate(ca=ca, certificate=server)


def test_leaves_never_outlive_the_ca_and_every_refusal_is_an_identity_error() -> None:
    short_ca = create_ca(days=10)
    _, csr = device_key_and_csr(device_id="d1")
    issued = sign_device_csr(ca=short_ca, csr_pem=csr, device_id="d1", days=365)
    assert issued.not_after == short_ca.certificate.not_valid_after_utc
    for exc in (BadCsr, CnMismatch, ForeignIssuer, CertificateExpired, CertificateRevoked, InvalidDeviceId):
        assert issubclass(exc, IdentityError)
    with pytest.raises(BadParameter, match="aware"):
        create_ca(now=datetime(2026, 1, 1))  # naive on purpose
