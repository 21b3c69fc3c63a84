"""A device's own broker credential: an access token or a client certificate, with the CA and listener to use."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import SecretStr

from cxp.device_sim.errors import ConfigError

# The broker forces client id = username; a rotation's second token is `<device id>~<n>` (one line per username).
ROTATION_SEPARATOR = "~"


class CredentialKind(StrEnum):
    """How a device proves who it is to the broker."""

    TOKEN = "token"
    CERTIFICATE = "certificate"


@dataclass(frozen=True)
class DeviceCredential:
    """What one device connects with (a value: no I/O; the files are read when the device connects).

    `token`: username (= device id, or `<device id>~<n>` during a rotation) and secret on the token listener.
    `certificate`: certificate and key PEM files on the mutual-TLS listener; the broker takes the identity
    from the certificate's CN, so no username is sent. Both verify the broker against `ca_file`.
    """

    kind: CredentialKind
    device_id: str
    ca_file: Path
    host: str
    port: int
    username: str | None = None
    secret: SecretStr | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if not self.device_id:
            raise ConfigError("a credential needs a device id")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} is out of range")
        if self.kind is CredentialKind.TOKEN:
            if self.username is None or self.secret is None or self.cert_file is not None:
                raise ConfigError("a token credential has a username and a secret, and no certificate")
            base, sep, _ = self.username.partition(ROTATION_SEPARATOR)
            if base != self.device_id:
                raise ConfigError(f"username {self.username!r} is not device {self.device_id!r} (or its rotation)")
        elif self.kind is CredentialKind.CERTIFICATE:
            if self.cert_file is None or self.key_file is None or self.secret is not None:
                raise ConfigError("a certificate credential has a certificate and a key file, and no secret")
        else:
            raise ConfigError(f"unknown credential kind {self.kind!r}")

    @classmethod
    def token(cls, *, device_id: str, secret: str | SecretStr, ca_file: Path, host: str, port: int,
              username: str | None = None) -> DeviceCredential:
        """An access-token credential (username defaults to the device id)."""
        value = secret if isinstance(secret, SecretStr) else SecretStr(secret)
        return cls(kind=CredentialKind.TOKEN, device_id=device_id, ca_file=Path(ca_file), host=host, port=port,
                   username=username or device_id, secret=value)

    @classmethod
    def certificate(cls, *, device_id: str, cert_file: Path, key_file: Path, ca_file: Path, host: str,
                    port: int) -> DeviceCredential:
        """A client-certificate credential (CN = device id)."""
        return cls(kind=CredentialKind.CERTIFICATE, device_id=device_id, ca_file=Path(ca_file), host=host,
                   port=port, cert_file=Path(cert_file), key_file=Path(key_file))

    @property
    def client_id(self) -> str:
        """The MQTT client id: what the broker forces anyway (the username, or the certificate's CN)."""
        return self.username if self.kind is CredentialKind.TOKEN and self.username else self.device_id
