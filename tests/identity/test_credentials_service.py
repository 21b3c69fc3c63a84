"""The credential registry over the real TimescaleDB: secrets hashed, rotation grace, revocation, sync, lock."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from cryptography import x509

from cxp.core.config import Settings, StackSettings
from cxp.identity import CnMismatch, InvalidDeviceId
from cxp.identity.broker import GATEWAY_ACCOUNT, BrokerPaths, DeviceLogin, render_device_acl, render_device_passwords
from cxp.identity.files import PkiPaths, init_ca
from cxp.identity.pki import device_key_and_csr
from cxp.identity.service import (
    CredentialConflict,
    UnknownDevice,
    create_credential,
    crl_needs_refresh,
    list_device_credentials,
    revoke_credential,
    rotate_credential,
    sweep,
    sync_broker,
)
from cxp.identity.tokens import read_password_file, verify_secret
from cxp.store.credentials import broker_sync_lock, credential_summaries
from cxp.store.db import connect

pytestmark = pytest.mark.integration


def private_settings(settings: Settings, base: Path) -> Settings:
    """Settings whose broker files, PKI and secrets live in `base` (never the running stack's broker)."""
    return settings.model_copy(update={
        "stack": StackSettings(dir=base),
        "pki": settings.pki.model_copy(update={"dir": base / "pki"}),
        "mqtt": settings.mqtt.model_copy(update={"secrets_dir": base / "secrets"}),
        "credentials": settings.credentials.model_copy(update={"rotation_grace_s": 3600.0}),
    })


@pytest.fixture
def creds(settings: Settings, db: psycopg.Connection, registered: list[str], tmp_path: Path) -> Settings:
    """Private settings with a fresh platform CA, and empty credential tables."""
    db.execute("TRUNCATE device_credentials, provisioning_keys, provisioning_audit")
    init_ca(paths=PkiPaths(tmp_path / "pki"))
    return private_settings(settings, tmp_path)


def _table_text(db: psycopg.Connection) -> str:
    return " ".join(r[0] for r in db.execute("SELECT row_to_json(c)::text FROM device_credentials c"))


def _ended_grace(db: psycopg.Connection) -> None:
    # The grace window is a stored timestamp: move it into the past instead of waiting for it.
    db.execute("UPDATE device_credentials SET grace_until = now() - interval '1 second' WHERE grace_until IS NOT NULL")


def test_a_token_secret_is_shown_once_and_stored_only_as_its_hash(creds, db, registered) -> None:
    issued = create_credential(conn=db, settings=creds, device_id=registered[0], kind="token", actor="test")
    assert issued.secret and issued.credential.username == registered[0]
    stored = db.execute("SELECT secret_hash FROM device_credentials").fetchone()[0]
    assert stored.startswith("$7$") and verify_secret(issued.secret, stored)
    assert issued.secret not in _table_text(db)
    lines = read_password_file(BrokerPaths.of(creds).device_passwords)
    assert verify_secret(issued.secret, lines[registered[0]])
    assert issued.secret not in BrokerPaths.of(creds).device_passwords.read_text()


def test_rotation_keeps_two_logins_until_the_grace_ends_then_one(creds, db, registered) -> None:
    device = registered[1]
    first = create_credential(conn=db, settings=creds, device_id=device, kind="token")
    rotation = rotate_credential(conn=db, settings=creds, device_id=device, kind="token")
    assert rotation.issued.credential.username == f"{device}~2"
    lines = read_password_file(BrokerPaths.of(creds).device_passwords)
    assert verify_secret(first.secret, lines[device]) and verify_secret(rotation.issued.secret, lines[f"{device}~2"])
    summary = credential_summaries(db, device_ids=[device])[device]
    assert (summary.active, summary.in_grace) == (1, 1)
    assert sweep(conn=db, settings=creds).superseded == []  # the window is still open
    _ended_grace(db)
    done = sweep(conn=db, settings=creds)
    assert [c.credential_id for c in done.superseded] == [first.credential.credential_id]
    assert set(read_password_file(BrokerPaths.of(creds).device_passwords)) == {f"{device}~2"}
    rows, _ = list_device_credentials(conn=db, device_id=device)
    assert {r.username: r.state for r in rows} == {device: "superseded", f"{device}~2": "active"}
    # The next rotation takes generation 3: a superseded username never comes back.
    assert rotate_credential(conn=db, settings=creds, device_id=device, kind="token").issued.credential.username \
        == f"{device}~3"


def test_revoking_removes_a_token_and_lists_a_certificate_serial(creds, db, registered) -> None:
    device = registered[2]
    token = create_credential(conn=db, settings=creds, device_id=device, kind="token")
    _key, csr = device_key_and_csr(device_id=device)
    cert = create_credential(conn=db, settings=creds, device_id=device, kind="certificate", csr_pem=csr)
    serial = int(cert.credential.serial_hex, 16)
    assert x509.load_pem_x509_certificate(cert.certificate_pem.encode()).serial_number == serial
    done = revoke_credential(conn=db, settings=creds, device_id=device, credential_id=token.credential.credential_id,
                             actor="test", reason="lost")
    assert [c.state for c in done.revoked] == ["revoked"] and done.sessions_dropped is None  # no broker running
    assert device not in read_password_file(BrokerPaths.of(creds).device_passwords)
    crl = x509.load_pem_x509_crl(BrokerPaths.of(creds).crl.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is None
    revoke_credential(conn=db, settings=creds, device_id=device, reason="stolen")
    crl = x509.load_pem_x509_crl(BrokerPaths.of(creds).crl.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert PkiPaths(creds.pki.dir).crl.read_bytes() == BrokerPaths.of(creds).crl.read_bytes()
    with pytest.raises(CredentialConflict):
        revoke_credential(conn=db, settings=creds, device_id=device, credential_id=token.credential.credential_id)
    summary = credential_summaries(db, device_ids=[device])[device]
    assert (summary.active, summary.revoked) == (0, 2)


def test_sync_writes_exactly_what_the_renderers_give(creds, db, registered) -> None:
    issued = [create_credential(conn=db, settings=creds, device_id=d, kind="token") for d in registered[:3]]
    rotate_credential(conn=db, settings=creds, device_id=registered[0], kind="token")
    revoke_credential(conn=db, settings=creds, device_id=registered[1])
    hashes = dict(db.execute("SELECT username, secret_hash FROM device_credentials WHERE state = 'active'"))
    expected = [DeviceLogin(u, u.split("~")[0], h) for u, h in sorted(hashes.items())]
    paths = BrokerPaths.of(creds)
    paths.device_passwords.write_text("tampered\n")
    result = sync_broker(conn=db, settings=creds)
    assert result.logins == len(expected) == 3 and not result.reloaded
    assert paths.device_passwords.read_text() == render_device_passwords(expected)
    assert paths.device_acl.read_text() == render_device_acl(expected)
    assert issued[1].credential.username not in paths.device_passwords.read_text()


def test_refusals(creds, db, registered) -> None:
    _key, csr = device_key_and_csr(device_id="someone-else")
    with pytest.raises(CnMismatch):
        create_credential(conn=db, settings=creds, device_id=registered[0], kind="certificate", csr_pem=csr)
    with pytest.raises(UnknownDevice):
        create_credential(conn=db, settings=creds, device_id="not-registered", kind="token")
    with pytest.raises(InvalidDeviceId):
        create_credential(conn=db, settings=creds, device_id=GATEWAY_ACCOUNT, kind="token")
    with pytest.raises(CredentialConflict):
        rotate_credential(conn=db, settings=creds, device_id=registered[3], kind="token")
    assert db.execute("SELECT count(*) FROM device_credentials").fetchone()[0] == 0


def test_two_writers_of_the_broker_files_take_turns(creds, db, registered) -> None:
    create_credential(conn=db, settings=creds, device_id=registered[0], kind="token")
    done = threading.Event()
    with connect(creds.db, autocommit=True) as holder, broker_sync_lock(holder):
        # Another process holds the lock: a sweep skips its turn, a sync waits for it.
        assert sweep(conn=db, settings=creds).sync is None
        def other_writer() -> None:
            with connect(creds.db, autocommit=True) as conn:
                sync_broker(conn=conn, settings=creds)
            done.set()

        worker = threading.Thread(target=other_writer)
        worker.start()
        waiting = False
        for _ in range(200):
            waiting = holder.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)").fetchone()[0]
            if waiting:
                break
            threading.Event().wait(0.05)
        assert waiting and not done.is_set()
    worker.join(30)
    assert done.is_set()


def test_the_sweep_reissues_a_crl_past_half_its_validity(creds, db, registered) -> None:
    _key, csr = device_key_and_csr(device_id=registered[0])
    create_credential(conn=db, settings=creds, device_id=registered[0], kind="certificate", csr_pem=csr)
    assert sweep(conn=db, settings=creds).sync is not None  # no CRL written yet (a certificate needs none)
    assert sweep(conn=db, settings=creds).sync is None  # fresh: nothing to do
    short = creds.model_copy(update={"pki": creds.pki.model_copy(update={"crl_days": 1})})
    sync_broker(conn=db, settings=short)  # a CRL valid for one day, where seven are configured
    assert crl_needs_refresh(settings=creds)
    done = sweep(conn=db, settings=creds)
    assert done.sync is not None and not crl_needs_refresh(settings=creds)
    crl = x509.load_pem_x509_crl(BrokerPaths.of(creds).crl.read_bytes())
    assert crl.next_update_utc - crl.last_update_utc > timedelta(days=6)
