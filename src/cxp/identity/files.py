"""The PKI directory: PEM files written atomically, private keys with mode 0600, loaded back with clear refusals."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cxp.identity.errors import BadPem, PkiExists, PkiMissing
from cxp.identity.pki import CertificateAuthority, ServerCredential, create_ca

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
DIR_MODE = 0o700


@dataclass(frozen=True)
class PkiPaths:
    """Where the platform's PKI files live inside one directory."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        """The CA certificate (public: brokers and devices trust it)."""
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """The CA private key (0600)."""
        return self.dir / "ca.key"

    @property
    def server_cert(self) -> Path:
        """The broker's TLS certificate."""
        return self.dir / "server.crt"

    @property
    def server_key(self) -> Path:
        """The broker's TLS private key (0600)."""
        return self.dir / "server.key"

    @property
    def crl(self) -> Path:
        """The current certificate revocation list."""
        return self.dir / "crl.pem"


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace a file with these bytes in one rename; the file has `mode` from its creation."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    # The temporary file has its final mode before the first byte is written, so a key is never readable by others.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write a private key as unencrypted PKCS#8 PEM readable by its owner only (mode 0600)."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_atomic(path, pem, PRIVATE_MODE)


def write_public(path: Path, pem: bytes) -> None:
    """Write a certificate, CSR or CRL (mode 0644)."""
    write_atomic(path, pem, PUBLIC_MODE)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise PkiMissing(f"{path} does not exist (run `cxp pki init` first)") from exc


def load_certificate(path: Path) -> x509.Certificate:
    """A PEM certificate from a file."""
    try:
        return x509.load_pem_x509_certificate(_read(path))
    except ValueError as exc:
        raise BadPem(f"{path} is not a PEM certificate") from exc


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """An unencrypted PEM EC private key from a file."""
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError) as exc:
        raise BadPem(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise BadPem(f"{path} is not an EC private key")
    return key


def load_crl(path: Path) -> x509.CertificateRevocationList:
    """A PEM CRL from a file."""
    try:
        return x509.load_pem_x509_crl(_read(path))
    except ValueError as exc:
        raise BadPem(f"{path} is not a PEM CRL") from exc


def pem(obj: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    """A certificate or CRL in PEM."""
    return obj.public_bytes(serialization.Encoding.PEM)


def load_ca(paths: PkiPaths) -> CertificateAuthority:
    """The platform CA from its directory; refuses a key that does not belong to the certificate."""
    certificate = load_certificate(paths.ca_cert)
    key = load_private_key(paths.ca_key)
    if key.public_key() != certificate.public_key():
        raise BadPem(f"{paths.ca_key} is not the key of {paths.ca_cert}")
    return CertificateAuthority(certificate=certificate, key=key)


def save_ca(ca: CertificateAuthority, paths: PkiPaths, *, force: bool = False) -> None:
    """Write the CA's key (0600) and certificate; refuses to replace an existing CA unless forced."""
    if not force and (paths.ca_key.exists() or paths.ca_cert.exists()):
        raise PkiExists(f"a CA already exists in {paths.dir} (replacing it invalidates every issued certificate)")
    paths.dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    # Key first: a crash in between leaves no certificate without its key.
    write_private_key(paths.ca_key, ca.key)
    write_public(paths.ca_cert, pem(ca.certificate))


def init_ca(*, paths: PkiPaths, days: int = 3650, force: bool = False,
            now: datetime | None = None) -> tuple[CertificateAuthority, bool]:
    """The existing CA (created False), or a new one written to `paths` (True); `force` replaces an existing one."""
    present = [p for p in (paths.ca_cert, paths.ca_key) if p.exists()]
    if not force and len(present) == 2:
        return load_ca(paths), False
    if not force and present:
        raise PkiExists(f"{present[0]} exists without its pair: restore it, or replace the CA with --force")
    ca = create_ca(days=days, now=now)
    save_ca(ca, paths, force=True)
    return ca, True


def save_server(credential: ServerCredential, paths: PkiPaths) -> None:
    """Write the broker's key (0600) and certificate."""
    write_private_key(paths.server_key, credential.key)
    write_public(paths.server_cert, credential.issued.pem())
