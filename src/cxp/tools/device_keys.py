"""The simulated devices' own key store: each device keeps its token or key + certificate, as a real one would.

A real device is given its credential once (factory or self-provisioning) and keeps it in its own storage; the
platform keeps only the hash (token) or the serial (certificate). The simulator stands in for the devices, so it
keeps their secrets in one private directory (`<stack dir>/sim-devices`, 0700, files 0600) and reuses them across
runs while the registry still has them active; a device whose stored credential is gone or no longer active is
issued a new one. Certificates are made the real way: the key is generated here and only a CSR is signed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from cxp.core.config import Settings
from cxp.device_sim import ConfigError, DeviceCredential
from cxp.identity.files import DIR_MODE, PRIVATE_MODE, load_certificate, write_atomic, write_private_key
from cxp.identity.pki import device_key_and_csr, fingerprint
from cxp.identity.service import issue_credential, sync_broker
from cxp.identity.tokens import verify_secret
from cxp.store.credentials import list_credentials, live_token_logins


@dataclass(frozen=True)
class KeyStoreReport:
    """What equipping a fleet did: credentials reused from the store, and newly issued ones by kind."""

    reused: int
    new_tokens: int
    new_certificates: int


def key_store_dir(settings: Settings) -> Path:
    """Where the simulated devices keep their credentials."""
    return settings.stack.dir / "sim-devices"


def credential_kind(index: int, *, certificate_every: int) -> str:
    """Every `certificate_every`-th device (0: none) uses a client certificate, the others an access token."""
    return "certificate" if certificate_every and index % certificate_every == 0 else "token"


def device_credential(settings: Settings, *, device_id: str, secret: str | None = None, username: str | None = None,
                      cert_file: Path | None = None, key_file: Path | None = None) -> DeviceCredential:
    """A device's credential against the configured broker: a secret → the token listener, a certificate → mTLS."""
    ca_file = settings.mqtt.ca_file or settings.pki.dir / "ca.crt"  # type: ignore[operator]
    if secret is not None:
        return DeviceCredential.token(device_id=device_id, secret=secret, username=username, ca_file=ca_file,
                                      host=settings.mqtt.device_host, port=settings.mqtt.device_tls_port)
    if cert_file is None or key_file is None:
        raise ConfigError(f"device {device_id}: give a secret, or a certificate and its key")
    return DeviceCredential.certificate(device_id=device_id, cert_file=cert_file, key_file=key_file,
                                        ca_file=ca_file, host=settings.mqtt.device_host,
                                        port=settings.mqtt.device_mtls_port)


def _stored_token(store: Path, device_id: str, live: dict[str, str]) -> tuple[str, str] | None:
    """The device's stored (username, secret) when the registry still accepts it."""
    path = store / f"{device_id}.token"
    if not path.exists():
        return None
    username, _, secret = path.read_text(encoding="utf-8").strip().partition(" ")
    secret_hash = live.get(username)
    return (username, secret) if secret_hash and verify_secret(secret, secret_hash) else None


def _stored_certificate(store: Path, device_id: str, active: set[str]) -> bool:
    """Whether the device holds a key and a certificate the registry still has active."""
    cert, key = store / f"{device_id}.crt", store / f"{device_id}.key"
    return cert.exists() and key.exists() and fingerprint(load_certificate(cert)) in active


def equip_fleet(*, conn: psycopg.Connection, settings: Settings, device_ids: Sequence[str],
                certificate_every: int = 5, store: Path | None = None) -> tuple[dict[str, DeviceCredential],
                                                                               KeyStoreReport]:
    """Give every device a credential of its own (reusing what it already holds) and re-sync the broker once."""
    store = store or key_store_dir(settings)
    store.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    store.chmod(DIR_MODE)
    live = {t.username: t.secret_hash for t in live_token_logins(conn)}
    rows, _ = list_credentials(conn, state="active", kind="certificate", limit=2**31 - 1)
    active_certificates = {r.fingerprint_sha256 for r in rows if r.fingerprint_sha256}
    credentials: dict[str, DeviceCredential] = {}
    reused = new_tokens = new_certificates = 0
    with conn.transaction():
        for index, device_id in enumerate(device_ids):
            if credential_kind(index, certificate_every=certificate_every) == "certificate":
                if _stored_certificate(store, device_id, active_certificates):
                    reused += 1
                else:
                    key, csr = device_key_and_csr(device_id=device_id)
                    issued = issue_credential(conn=conn, settings=settings, device_id=device_id, kind="certificate",
                                              csr_pem=csr, actor="simulator")
                    write_private_key(store / f"{device_id}.key", key)
                    write_atomic(store / f"{device_id}.crt", (issued.certificate_pem or "").encode(), PRIVATE_MODE)
                    new_certificates += 1
                credentials[device_id] = device_credential(settings, device_id=device_id,
                                                           cert_file=store / f"{device_id}.crt",
                                                           key_file=store / f"{device_id}.key")
                continue
            stored = _stored_token(store, device_id, live)
            if stored is None:
                issued = issue_credential(conn=conn, settings=settings, device_id=device_id, kind="token",
                                          actor="simulator")
                stored = (issued.credential.username or device_id, issued.secret or "")
                write_atomic(store / f"{device_id}.token", f"{stored[0]} {stored[1]}\n".encode(), PRIVATE_MODE)
                new_tokens += 1
            else:
                reused += 1
            credentials[device_id] = device_credential(settings, device_id=device_id, username=stored[0],
                                                       secret=stored[1])
    if new_tokens:
        # A certificate needs nothing from the broker (the CA vouches for it); a new token needs its line.
        sync_broker(conn=conn, settings=settings)
    return credentials, KeyStoreReport(reused, new_tokens, new_certificates)
