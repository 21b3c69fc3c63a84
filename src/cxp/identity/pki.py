"""The platform CA: create it, issue the broker's server certificate, sign device certificates from CSRs, build CRLs."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cxp.identity.errors import (
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

# The contract's device id alphabet (cxp.contract.topics); identity may import core only, so it is repeated here.
DEVICE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULT_SERVER_HOSTS = ("127.0.0.1", "::1", "localhost")
# Certificates start a little in the past so a device whose clock lags by a few minutes accepts them.
BACKDATE = timedelta(minutes=5)
MIN_RSA_BITS = 2048
ACCEPTED_CURVES = (ec.SECP256R1, ec.SECP384R1)
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate the platform CA signed, with the facts callers store and show."""

    certificate: x509.Certificate
    serial: int
    fingerprint_sha256: str
    common_name: str
    not_before: datetime
    not_after: datetime

    @classmethod
    def of(cls, certificate: x509.Certificate) -> IssuedCertificate:
        """Describe a certificate."""
        return cls(certificate=certificate, serial=certificate.serial_number,
                   fingerprint_sha256=fingerprint(certificate),
                   common_name=common_name(certificate.subject, error=CertificateRefused),
                   not_before=certificate.not_valid_before_utc, not_after=certificate.not_valid_after_utc)

    def pem(self) -> bytes:
        """The certificate in PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CertificateAuthority:
    """The platform CA: its self-signed certificate and private key (never in repr)."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    @property
    def info(self) -> IssuedCertificate:
        """Serial, fingerprint and validity of the CA certificate."""
        return IssuedCertificate.of(self.certificate)


@dataclass(frozen=True)
class ServerCredential:
    """The broker's TLS certificate and its private key (never in repr)."""

    issued: IssuedCertificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 fingerprint of the DER certificate, lowercase hex."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def common_name(name: x509.Name, *, error: type[IdentityError] = BadCsr) -> str:
    """The one CN of a name; refuses none or several (an ambiguous identity) with `error`."""
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(values) != 1:
        raise error(f"the subject must have exactly one common name, it has {len(values)}")
    value = values[0].value
    return value if isinstance(value, str) else value.decode()


def check_device_id(device_id: str) -> str:
    """The device id unchanged, or InvalidDeviceId when it is not in the contract's alphabet."""
    if not isinstance(device_id, str) or not DEVICE_ID.match(device_id):
        raise InvalidDeviceId(f"device id {device_id!r} must be 1-64 characters of A-Z a-z 0-9 _ . : -")
    return device_id


def _now(now: datetime | None) -> datetime:
    moment = now or datetime.now(UTC)
    if moment.tzinfo is None:
        raise BadParameter("timestamps must be timezone-aware (UTC)")
    return moment.astimezone(UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _ski_aki(builder: x509.CertificateBuilder, *, public_key,
             issuer: x509.Certificate | None) -> x509.CertificateBuilder:
    builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    if issuer is not None:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                                        critical=False)
    return builder


def _leaf_window(ca: CertificateAuthority, *, days: int, now: datetime) -> tuple[datetime, datetime]:
    if days < 1:
        raise BadParameter("validity must be at least one day")
    # A leaf never outlives the CA that vouches for it.
    return now - BACKDATE, min(now + timedelta(days=days), ca.certificate.not_valid_after_utc)


def create_ca(*, name: str = "cxp platform CA", days: int = 3650, now: datetime | None = None) -> CertificateAuthority:
    """A new self-signed EC P-256 CA that may sign certificates and CRLs only."""
    moment = _now(now)
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cxp"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(moment - BACKDATE).not_valid_after(moment + timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True))
    builder = _ski_aki(builder, public_key=key.public_key(), issuer=None)
    return CertificateAuthority(certificate=builder.sign(key, hashes.SHA256()), key=key)


def _leaf_usage() -> x509.KeyUsage:
    # ECDHE suites need only signatures from the leaf key.
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                         encipher_only=False, decipher_only=False)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue_server_certificate(*, ca: CertificateAuthority, hosts: Sequence[str] = DEFAULT_SERVER_HOSTS,
                             days: int = 825, now: datetime | None = None) -> ServerCredential:
    """A new key and a serverAuth certificate for the broker, valid for these IP addresses and host names."""
    if not hosts:
        raise BadParameter("a server certificate needs at least one host")
    moment = _now(now)
    key = _new_key()
    start, end = _leaf_window(ca, days=days, now=moment)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
               .issuer_name(ca.certificate.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_leaf_usage(), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
               .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False))
    builder = _ski_aki(builder, public_key=key.public_key(), issuer=ca.certificate)
    return ServerCredential(issued=IssuedCertificate.of(builder.sign(ca.key, hashes.SHA256())), key=key)


def load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM CSR and verify its self-signature (proof that the requester holds the key)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
        valid = csr.is_signature_valid
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
        raise BadCsr(f"not a readable PEM certificate signing request: {exc}") from exc
    if not valid:
        raise BadCsr("the CSR's signature does not verify: it was altered or not signed by its key")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ACCEPTED_CURVES):
            raise BadCsr(f"EC curve {key.curve.name} is not accepted (P-256 or P-384)")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise BadCsr(f"RSA key of {key.key_size} bits is too short (at least {MIN_RSA_BITS})")
    else:
        raise BadCsr(f"key type {type(key).__name__} is not accepted (EC P-256/P-384 or RSA ≥ {MIN_RSA_BITS})")
    return csr


def sign_device_csr(*, ca: CertificateAuthority, csr_pem: bytes, device_id: str, days: int = 365,
                    now: datetime | None = None) -> IssuedCertificate:
    """A clientAuth certificate with CN = device id for the key in a CSR whose CN is that device id."""
    check_device_id(device_id)
    csr = load_csr(csr_pem)
    cn = common_name(csr.subject)
    if cn != device_id:
        raise CnMismatch(f"the CSR is for {cn!r}, not for device {device_id!r}")
    start, end = _leaf_window(ca, days=days, now=_now(now))
    # Only the CN is taken from the request: requested extensions (CA flag, SANs, usages) are ignored.
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
               .issuer_name(ca.certificate.subject).public_key(csr.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_leaf_usage(), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    builder = _ski_aki(builder, public_key=csr.public_key(), issuer=ca.certificate)
    return IssuedCertificate.of(builder.sign(ca.key, hashes.SHA256()))


def device_key_and_csr(*, device_id: str) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """Device side: a new P-256 key (which stays on the device) and the PEM CSR to send for signing."""
    check_device_id(device_id)
    key = _new_key()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.PEM)


def build_crl(*, ca: CertificateAuthority, revoked: Iterable[int], days: int = 7,
              now: datetime | None = None) -> x509.CertificateRevocationList:
    """A CRL signed by the CA listing these serials, valid until now + days (brokers refuse all after that)."""
    if days < 1:
        raise BadParameter("a CRL must be valid for at least one day")
    moment = _now(now)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.certificate.subject)
               .last_update(moment - BACKDATE).next_update(moment + timedelta(days=days))
               # Milliseconds since the epoch: increases with every CRL the CA builds, as RFC 5280 asks.
               .add_extension(x509.CRLNumber(int(moment.timestamp() * 1000)), critical=False))
    ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                                    critical=False)
    for serial in sorted(set(revoked)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(moment).build())
    return builder.sign(ca.key, hashes.SHA256())


def verify_device_certificate(*, ca: CertificateAuthority | x509.Certificate, certificate: x509.Certificate,
                              crl: x509.CertificateRevocationList | None = None,
                              now: datetime | None = None) -> str:
    """The device id (CN) of a client certificate the platform CA issued, valid now and not revoked; else refused."""
    ca_cert = ca.certificate if isinstance(ca, CertificateAuthority) else ca
    try:
        certificate.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
        raise ForeignIssuer("the certificate was not issued by the platform CA") from exc
    moment = _now(now)
    if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
        raise CertificateExpired(f"the certificate is valid from {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} "
                                 f"to {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not now")
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise CertificateRefused("the certificate has no extended key usage") from exc
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise CertificateRefused("the certificate is not for client authentication")
    if crl is not None:
        if not crl.is_signature_valid(ca_cert.public_key()):
            raise CertificateRefused("the CRL was not signed by the platform CA")
        if crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None:
            raise CertificateRevoked(f"certificate {certificate.serial_number:x} is revoked")
    return check_device_id(common_name(certificate.subject, error=CertificateRefused))
