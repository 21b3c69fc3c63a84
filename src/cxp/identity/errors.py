"""The one exception root of `cxp.identity` and its specific refusals."""

from __future__ import annotations


class IdentityError(Exception):
    """Root of every identity, PKI and device-secret failure."""


class InvalidDeviceId(IdentityError):
    """A device id that cannot name a certificate subject or a broker user."""


class BadCsr(IdentityError):
    """A certificate signing request that cannot be parsed or whose signature does not verify."""


class CnMismatch(IdentityError):
    """The CSR's common name is not the device id the certificate was asked for."""


class PkiMissing(IdentityError):
    """The platform CA (or another PKI file) does not exist yet."""


class PkiExists(IdentityError):
    """A file the PKI would write already exists and replacing it was not asked for."""


class BadPem(IdentityError):
    """A PEM file that does not hold what it should (certificate, key, CSR, CRL)."""


class CertificateRefused(IdentityError):
    """A certificate that does not verify against the platform CA."""


class ForeignIssuer(CertificateRefused):
    """The certificate was not issued (signed) by the platform CA."""


class CertificateExpired(CertificateRefused):
    """The certificate is outside its validity period."""


class CertificateRevoked(CertificateRefused):
    """The certificate's serial is on the CRL."""


class BadSecretHash(IdentityError):
    """A password-file hash that is not Mosquitto's `$7$` PBKDF2-SHA512 format."""


class BadParameter(IdentityError, ValueError):
    """A caller's argument out of range: validity days, iteration count, salt size, a naive timestamp."""
