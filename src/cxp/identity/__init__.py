"""Device identity: the platform CA and certificates (`pki`, `files`), device access tokens (`tokens`); files only."""

from cxp.identity.errors import (
    BadCsr,
    BadParameter,
    BadPem,
    BadSecretHash,
    CertificateExpired,
    CertificateRefused,
    CertificateRevoked,
    CnMismatch,
    ForeignIssuer,
    IdentityError,
    InvalidDeviceId,
    PkiExists,
    PkiMissing,
)

__all__ = [
    "BadCsr",
    "BadParameter",
    "BadPem",
    "BadSecretHash",
    "CertificateExpired",
    "CertificateRefused",
    "CertificateRevoked",
    "CnMismatch",
    "ForeignIssuer",
    "IdentityError",
    "InvalidDeviceId",
    "PkiExists",
    "PkiMissing",
]
