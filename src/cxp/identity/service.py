"""The credential registry: issue, list, rotate and revoke device credentials, and keep the broker's files in sync.

The database is the source of truth; the broker's password file, ACL and CRL are rendered from it
(`sync_broker`) under one PostgreSQL advisory lock, so two processes never interleave their writes. Secrets
are returned once and stored only as Mosquitto `$7$` hashes; certificates are stored as serial + fingerprint.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from cryptography import x509

from cxp.core.config import Settings
from cxp.identity.broker import (
    SERVICE_ACCOUNTS,
    BrokerPaths,
    BrokerUnreachable,
    DeviceLogin,
    reload_broker,
    revoke_sessions,
    rotation_username,
    write_device_files,
)
from cxp.identity.errors import BadParameter, IdentityError, InvalidDeviceId
from cxp.identity.files import PkiPaths, load_ca, pem, write_public
from cxp.identity.pki import build_crl, check_device_id, sign_device_csr
from cxp.identity.tokens import check_username, hash_secret, new_secret
from cxp.store.credentials import (
    CredentialRow,
    active_credentials,
    broker_sync_lock,
    end_grace,
    get_credential,
    has_certificates,
    insert_certificate,
    insert_token,
    list_credentials,
    live_token_logins,
    lock_device,
    next_generation,
    refused_serials,
    revoke_credentials,
    start_grace,
    try_broker_sync_lock,
)
from cxp.store.registry import get_device

log = logging.getLogger("cxp.identity")


class UnknownDevice(IdentityError):
    """The device is not in the registry."""


class UnknownCredential(IdentityError):
    """No credential has this id (for this device)."""


class CredentialConflict(IdentityError):
    """The credential is in a state that forbids the change (already revoked, nothing to rotate)."""


@dataclass(frozen=True)
class IssuedCredential:
    """A credential just issued: its stored row, and the one copy of the token secret or the certificate PEM."""

    credential: CredentialRow
    secret: str | None = None
    certificate_pem: str | None = None


@dataclass(frozen=True)
class BrokerSync:
    """What one sync wrote: token logins, CRL serials; whether the broker was running to reload."""

    logins: int
    crl_serials: int
    reloaded: bool


@dataclass(frozen=True)
class Revocation:
    """What a revocation did: the credentials revoked now, the sync, the live sessions dropped (None: not tried)."""

    revoked: list[CredentialRow]
    sync: BrokerSync
    sessions_dropped: int | None


@dataclass(frozen=True)
class Rotation:
    """A rotation: the new credential and the old ones, valid until `grace_until`."""

    issued: IssuedCredential
    old: list[CredentialRow]
    grace_until: datetime
    sync: BrokerSync


@dataclass(frozen=True)
class Sweep:
    """One pass of the periodic sweep: grace windows ended, whether the broker files were rewritten."""

    superseded: list[CredentialRow]
    sync: BrokerSync | None


def check_device_name(device_id: str) -> None:
    """A device id in the contract's alphabet that is not a platform service account's name."""
    check_device_id(device_id)
    if device_id in SERVICE_ACCOUNTS:
        raise InvalidDeviceId(f"{device_id!r} is reserved for a platform service account")


def _require_device(conn: psycopg.Connection, device_id: str) -> None:
    check_device_name(device_id)
    if get_device(conn, device_id=device_id) is None:
        raise UnknownDevice(f"device {device_id!r} is not registered")


def _issue_token(conn: psycopg.Connection, *, device_id: str, actor: str | None) -> IssuedCredential:
    check_username(device_id)
    generation = next_generation(conn, device_id=device_id)
    secret = new_secret()
    row = insert_token(conn, device_id=device_id, generation=generation,
                       username=rotation_username(device_id, generation), secret_hash=hash_secret(secret),
                       created_by=actor)
    return IssuedCredential(row, secret=secret)


def _issue_certificate(conn: psycopg.Connection, *, settings: Settings, device_id: str, csr_pem: bytes,
                       actor: str | None) -> IssuedCredential:
    ca = load_ca(PkiPaths(Path(settings.pki.dir)))
    issued = sign_device_csr(ca=ca, csr_pem=csr_pem, device_id=device_id, days=settings.pki.device_days)
    row = insert_certificate(conn, device_id=device_id, serial_hex=f"{issued.serial:x}",
                             fingerprint_sha256=issued.fingerprint_sha256, not_before=issued.not_before,
                             not_after=issued.not_after, created_by=actor)
    return IssuedCredential(row, certificate_pem=issued.pem().decode())


def issue_credential(*, conn: psycopg.Connection, settings: Settings, device_id: str, kind: str,
                     csr_pem: bytes | None = None, actor: str | None = None) -> IssuedCredential:
    """Inside the caller's transaction: a new token or certificate for a registered device (no broker sync)."""
    _require_device(conn, device_id)
    lock_device(conn, device_id=device_id)
    if kind == "token":
        if csr_pem is not None:
            raise BadParameter("a token takes no CSR")
        return _issue_token(conn, device_id=device_id, actor=actor)
    if kind == "certificate":
        if csr_pem is None:
            raise BadParameter("a certificate is signed from the device's CSR (its private key stays on the device)")
        return _issue_certificate(conn, settings=settings, device_id=device_id, csr_pem=csr_pem, actor=actor)
    raise BadParameter(f"unknown credential kind {kind!r}; expected token or certificate")


def create_credential(*, conn: psycopg.Connection, settings: Settings, device_id: str, kind: str,
                      csr_pem: bytes | None = None, actor: str | None = None) -> IssuedCredential:
    """A new token (secret returned once) or a certificate from a CSR, then the broker's files re-synced."""
    with conn.transaction():
        issued = issue_credential(conn=conn, settings=settings, device_id=device_id, kind=kind, csr_pem=csr_pem,
                                  actor=actor)
    if kind == "token":  # a certificate needs nothing from the broker: the CA vouches for it
        sync_broker(conn=conn, settings=settings)
    return issued


def get_device_credential(*, conn: psycopg.Connection, credential_id: int) -> CredentialRow:
    """One credential, or UnknownCredential."""
    row = get_credential(conn, credential_id=credential_id)
    if row is None:
        raise UnknownCredential(f"no credential {credential_id}")
    return row


def list_device_credentials(*, conn: psycopg.Connection, device_id: str | None = None, state: str | None = None,
                            kind: str | None = None, limit: int = 100,
                            offset: int = 0) -> tuple[list[CredentialRow], int]:
    """Credentials with their state (newest first) and how many match."""
    return list_credentials(conn, device_id=device_id, state=state, kind=kind, limit=limit, offset=offset)


def rotate_credential(*, conn: psycopg.Connection, settings: Settings, device_id: str, kind: str,
                      csr_pem: bytes | None = None, actor: str | None = None,
                      now: datetime | None = None) -> Rotation:
    """A new credential of `kind`; the device's current ones of that kind stay valid for the grace window."""
    moment = now or datetime.now(UTC)
    grace_until = moment + timedelta(seconds=settings.credentials.rotation_grace_s)
    with conn.transaction():
        _require_device(conn, device_id)
        lock_device(conn, device_id=device_id)
        old = active_credentials(conn, device_id=device_id, kind=kind)
        if not old:
            raise CredentialConflict(f"device {device_id!r} has no active {kind} to rotate; create one instead")
        issued = issue_credential(conn=conn, settings=settings, device_id=device_id, kind=kind, csr_pem=csr_pem,
                                  actor=actor)
        start_grace(conn, credential_ids=[c.credential_id for c in old], grace_until=grace_until)
    sync = sync_broker(conn=conn, settings=settings)
    return Rotation(issued, old, grace_until, sync)


def _client_ids(rows: list[CredentialRow]) -> list[str]:
    # The broker forces client id = username: a token's username, a certificate's CN (= device id).
    return sorted({r.username if r.kind == "token" else r.device_id for r in rows})


def revoke_credential(*, conn: psycopg.Connection, settings: Settings, device_id: str,
                      credential_id: int | None = None, actor: str | None = None,
                      reason: str | None = None) -> Revocation:
    """Revoke one credential of a device (or all of them): files re-synced, broker reloaded, live sessions dropped."""
    with conn.transaction():
        if credential_id is not None:
            row = get_credential(conn, credential_id=credential_id)
            if row is None or row.device_id != device_id:
                raise UnknownCredential(f"device {device_id!r} has no credential {credential_id}")
            if row.state == "revoked":
                raise CredentialConflict(f"credential {credential_id} is already revoked")
            revoked = revoke_credentials(conn, credential_id=credential_id, by=actor, reason=reason)
        else:
            _require_device(conn, device_id)
            revoked = revoke_credentials(conn, device_id=device_id, by=actor, reason=reason)
    sync = sync_broker(conn=conn, settings=settings)
    dropped = None
    if revoked and sync.reloaded:
        try:
            dropped = revoke_sessions(settings, client_ids=_client_ids(revoked))
        except BrokerUnreachable as exc:  # the reload already refuses reconnects; a live certificate session remains
            log.warning("revoked %s but could not drop its live sessions: %s", device_id, exc)
    return Revocation(revoked, sync, dropped)


def build_broker_crl(*, conn: psycopg.Connection, settings: Settings) -> tuple[bytes | None, int]:
    """The CRL the broker needs now (None when no certificate was ever issued) and how many serials it lists."""
    if not has_certificates(conn):
        return None, 0
    serials = refused_serials(conn)
    ca = load_ca(PkiPaths(Path(settings.pki.dir)))
    crl = build_crl(ca=ca, revoked=[int(s, 16) for s in serials], days=settings.pki.crl_days)
    return pem(crl), len(serials)


def sync_broker(*, conn: psycopg.Connection, settings: Settings, paths: BrokerPaths | None = None) -> BrokerSync:
    """Rewrite the broker's password file, ACL and CRL from the database and reload it, under the advisory lock."""
    with broker_sync_lock(conn):
        logins = [DeviceLogin(t.username, t.device_id, t.secret_hash) for t in live_token_logins(conn)]
        crl_pem, serials = build_broker_crl(conn=conn, settings=settings)
        write_device_files(settings, logins=logins, crl_pem=crl_pem, paths=paths)
        if crl_pem is not None:
            write_public(PkiPaths(Path(settings.pki.dir)).crl, crl_pem)
        reloaded = reload_broker(settings, paths)
    return BrokerSync(len(logins), serials, reloaded)


def crl_needs_refresh(*, settings: Settings, paths: BrokerPaths | None = None, now: datetime | None = None) -> bool:
    """Whether the broker's CRL is missing, unreadable or past half its validity (re-issued well before it lapses)."""
    path = (paths or BrokerPaths.of(settings)).crl
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return True
    next_update = crl.next_update_utc
    if next_update is None:
        return True
    half = timedelta(days=settings.pki.crl_days) / 2
    return next_update - (now or datetime.now(UTC)) < half


def sweep(*, conn: psycopg.Connection, settings: Settings, paths: BrokerPaths | None = None) -> Sweep:
    """End the grace windows that are over and re-issue the CRL before it lapses; skipped while another process
    holds the broker-files lock (it is writing the same state)."""
    with conn.transaction():
        if not try_broker_sync_lock(conn):
            return Sweep([], None)
        superseded = end_grace(conn)
    stale_crl = has_certificates(conn) and crl_needs_refresh(settings=settings, paths=paths)
    if not superseded and not stale_crl:
        return Sweep([], None)
    return Sweep(superseded, sync_broker(conn=conn, settings=settings, paths=paths))


class Sweeper:
    """A daemon thread running `sweep` every `credentials.sweep_interval_s` with a connection from `connection()`."""

    def __init__(self, *, connection: Callable[[], AbstractContextManager[psycopg.Connection]],
                 settings: Settings) -> None:
        self.connection, self.settings = connection, settings
        self.interval_s = settings.credentials.sweep_interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Sweeper:
        """Start sweeping (nothing when the interval is 0)."""
        if self.interval_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cxp-credential-sweep", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with self.connection() as conn:
                    done = sweep(conn=conn, settings=self.settings)
                if done.superseded:
                    log.info("credential sweep: %d grace window(s) ended", len(done.superseded))
            except Exception as exc:  # noqa: BLE001 - a database or broker hiccup must not end the sweeping
                log.warning("credential sweep failed: %s", exc)

    def stop(self) -> None:
        """Stop and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
