"""Request and response bodies of the credential and provisioning endpoints (never a stored hash)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, Field

from cxp.identity.service import IssuedCredential
from cxp.store.credentials import AuditRow, CredentialRow, CredentialSummary, ProvisioningKey

DeviceId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Csr = Annotated[str, Field(min_length=1, max_length=16_384,
                           description="PEM certificate signing request, CN = device id")]
Kind = Literal["token", "certificate"]


class Credential(BaseModel):
    """A credential's public record and state."""

    credential_id: int
    device_id: str
    kind: Kind
    state: Literal["active", "superseded", "revoked"]
    in_grace: bool = Field(description="active, but only until grace_until (the old credential of a rotation)")
    username: str | None = Field(description="tokens: the broker username")
    generation: int | None
    serial_hex: str | None = Field(description="certificates: serial, hex")
    fingerprint_sha256: str | None
    not_before: datetime | None
    not_after: datetime | None
    grace_until: datetime | None
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None

    @classmethod
    def of(cls, row: CredentialRow) -> Credential:
        """From the stored row."""
        fields = {k: getattr(row, k) for k in cls.model_fields if k != "in_grace"}
        return cls(**fields, in_grace=row.state == "active" and row.grace_until is not None)


class IssuedOut(BaseModel):
    """A credential just issued: `secret` (token) or `certificate_pem` is shown this once and never again."""

    credential: Credential
    secret: str | None = None
    certificate_pem: str | None = None
    mqtt_username: str | None = Field(None, description="tokens: connect with this username and the secret")

    @classmethod
    def of(cls, issued: IssuedCredential) -> IssuedOut:
        """From the service's result."""
        return cls(credential=Credential.of(issued.credential), secret=issued.secret,
                   certificate_pem=issued.certificate_pem, mqtt_username=issued.credential.username)


class CredentialIn(BaseModel):
    """A new credential: a token, or a certificate signed from the device's CSR."""

    kind: Kind = "token"
    csr: Csr | None = None


class RevokeIn(BaseModel):
    """Revoke one credential (`credential_id`) or, without it, every credential of the device."""

    credential_id: int | None = None
    reason: Annotated[str, Field(max_length=500)] | None = None


class RotationOut(BaseModel):
    """A rotation: the new credential; the old ones stay valid until `grace_until`."""

    issued: IssuedOut
    old: list[Credential]
    grace_until: datetime


class RevocationOut(BaseModel):
    """What a revocation did."""

    revoked: list[Credential]
    broker_reloaded: bool
    sessions_dropped: int | None = Field(description="live sessions taken over (None: the broker was not reached)")


class CredentialState(BaseModel):
    """A device's credential state."""

    device_id: str
    kinds: list[Kind]
    active: int
    in_grace: int
    revoked: int

    @classmethod
    def of(cls, device_id: str, summary: CredentialSummary) -> CredentialState:
        """From the store's summary."""
        return cls(device_id=device_id, kinds=list(summary.kinds), active=summary.active, in_grace=summary.in_grace,
                   revoked=summary.revoked)


class DeviceCredentials(BaseModel):
    """A device's credential state and its credentials, newest first."""

    state: CredentialState
    credentials: list[Credential]


class ProvisioningKeyIn(BaseModel):
    """A product's provisioning key."""

    product_id: Annotated[str, Field(min_length=1, max_length=128)]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    max_devices: Annotated[int, Field(ge=1, le=10_000_000)]
    expires_at: AwareDatetime | None = None


class ProvisioningKeyOut(BaseModel):
    """A provisioning key's public record."""

    key_id: str
    product_id: str
    name: str
    max_devices: int
    used_count: int
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    created_by: str | None

    @classmethod
    def of(cls, key: ProvisioningKey) -> ProvisioningKeyOut:
        """From the stored row."""
        return cls(**{k: getattr(key, k) for k in cls.model_fields})


class NewProvisioningKeyOut(BaseModel):
    """A new provisioning key: `token` is shown this once; devices send it in the X-Provisioning-Key header."""

    key: ProvisioningKeyOut
    token: str


class AuditOut(BaseModel):
    """One provisioning attempt."""

    audit_id: int
    at: datetime
    key_id: str | None
    device_id: str | None
    client_address: str | None
    outcome: Literal["provisioned", "refused"]
    reason: str

    @classmethod
    def of(cls, row: AuditRow) -> AuditOut:
        """From the stored row."""
        return cls(**{k: getattr(row, k) for k in cls.model_fields})


class ProvisionIn(BaseModel):
    """A device registering itself: its id, and its CSR when it wants a certificate instead of a token."""

    device_id: DeviceId
    csr: Csr | None = None
