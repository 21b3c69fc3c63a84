"""Device identity: CA and certificates, device tokens, the broker's files, the credential registry and provisioning."""

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
