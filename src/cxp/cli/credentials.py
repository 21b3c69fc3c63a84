"""`cxp credentials …` and `cxp provisioning …`: device credentials, provisioning keys, audit, factory CSV import."""

from __future__ import annotations

import csv
import io
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cxp.core.config import Settings, get_settings
from cxp.identity.errors import IdentityError
from cxp.store.errors import StoreError

credentials_app = typer.Typer(help="Device credentials: tokens and certificates; rotation, revocation.",
                              no_args_is_help=True)
provisioning_app = typer.Typer(help="Self-provisioning keys per product, their audit, factory CSV import.",
                               no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 150)
KindOption = Annotated[str, typer.Option(help="token or certificate.")]
CsrOption = Annotated[Path | None, typer.Option(help="The device's PEM CSR (certificate only; CN = device id).")]


def _settings() -> Settings:
    return get_settings()


def _fail(exc: Exception | str) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(1)


def _conn(settings: Settings):
    from cxp.store.db import connect

    return connect(settings.db, autocommit=True)


def _csr(path: Path | None) -> bytes | None:
    return path.read_bytes() if path else None


def _show_issued(issued) -> None:
    row = issued.credential
    console.print(f"credential {row.credential_id}: {row.kind} of {row.device_id}")
    if issued.secret:
        console.print(f"  mqtt username {row.username}\n  secret (shown once) {issued.secret}")
    if issued.certificate_pem:
        console.print(f"  serial {row.serial_hex}\n  sha256 {row.fingerprint_sha256}")
        sys.stdout.write(issued.certificate_pem)


@credentials_app.command("create")
def credentials_create(device: Annotated[str, typer.Option(help="The device id.")], kind: KindOption = "token",
                       csr: CsrOption = None) -> None:
    """Issue a token (its secret printed once) or a certificate from the device's CSR (PEM on stdout)."""
    from cxp.identity.service import create_credential

    settings = _settings()
    try:
        with _conn(settings) as conn:
            _show_issued(create_credential(conn=conn, settings=settings, device_id=device, kind=kind,
                                           csr_pem=_csr(csr), actor=f"cli:{os.environ.get('USER', '?')}"))
    except (IdentityError, StoreError) as exc:
        _fail(exc)


@credentials_app.command("list")
def credentials_list(device: Annotated[str | None, typer.Option(help="Only this device.")] = None,
                     state: Annotated[str | None, typer.Option(help="active, superseded or revoked.")] = None,
                     limit: Annotated[int, typer.Option(min=1)] = 100) -> None:
    """Credentials with their state, newest first (never a secret)."""
    from cxp.identity.service import list_device_credentials

    with _conn(_settings()) as conn:
        rows, total = list_device_credentials(conn=conn, device_id=device, state=state, limit=limit)
    for r in rows:
        grace = f" until {r.grace_until:%Y-%m-%d %H:%M}" if r.state == "active" and r.grace_until else ""
        what = r.username if r.kind == "token" else f"serial {r.serial_hex}"
        console.print(f"{r.credential_id:>6}  {r.device_id:<24} {r.kind:<11} {r.state}{grace:<18} {what}")
    console.print(f"{len(rows)} of {total}")


@credentials_app.command("rotate")
def credentials_rotate(device: Annotated[str, typer.Option(help="The device id.")], kind: KindOption = "token",
                       csr: CsrOption = None) -> None:
    """A new credential; the current ones stay valid for `credentials.rotation_grace_s`."""
    from cxp.identity.service import rotate_credential

    settings = _settings()
    try:
        with _conn(settings) as conn:
            done = rotate_credential(conn=conn, settings=settings, device_id=device, kind=kind, csr_pem=_csr(csr),
                                     actor=f"cli:{os.environ.get('USER', '?')}")
    except (IdentityError, StoreError) as exc:
        _fail(exc)
    _show_issued(done.issued)
    console.print(f"old credential(s) {', '.join(str(c.credential_id) for c in done.old)} valid until "
                  f"{done.grace_until:%Y-%m-%d %H:%M} UTC")


@credentials_app.command("revoke")
def credentials_revoke(device: Annotated[str, typer.Option(help="The device id.")],
                       credential: Annotated[int | None, typer.Option(help="Only this credential id.")] = None,
                       reason: Annotated[str | None, typer.Option(help="Why (kept with the credential).")] = None,
                       ) -> None:
    """Revoke one credential or all of a device: out of the broker's files, live session dropped."""
    from cxp.identity.service import revoke_credential

    settings = _settings()
    try:
        with _conn(settings) as conn:
            done = revoke_credential(conn=conn, settings=settings, device_id=device, credential_id=credential,
                                     actor=f"cli:{os.environ.get('USER', '?')}", reason=reason)
    except (IdentityError, StoreError) as exc:
        _fail(exc)
    dropped = "broker not reached" if done.sessions_dropped is None else f"{done.sessions_dropped} session(s) dropped"
    console.print(f"revoked {len(done.revoked)} credential(s) of {device}; broker reloaded={done.sync.reloaded}; "
                  f"{dropped}")


@credentials_app.command("sync")
def credentials_sync() -> None:
    """Rebuild the broker's password file, ACL and CRL from the database and reload the broker (e.g. after a
    restore or `cxp stack up`)."""
    from cxp.identity.service import sync_broker

    settings = _settings()
    try:
        with _conn(settings) as conn:
            done = sync_broker(conn=conn, settings=settings)
    except (IdentityError, StoreError) as exc:
        _fail(exc)
    console.print(f"{done.logins} token login(s), {done.crl_serials} serial(s) on the CRL; "
                  f"broker reloaded={done.reloaded}")


@credentials_app.command("sweep")
def credentials_sweep() -> None:
    """End the rotation grace windows that are over and re-issue a CRL past half its validity (the API does this
    every `credentials.sweep_interval_s`; cron this when no API runs)."""
    from cxp.identity.service import sweep

    settings = _settings()
    try:
        with _conn(settings) as conn:
            done = sweep(conn=conn, settings=settings)
    except (IdentityError, StoreError) as exc:
        _fail(exc)
    console.print(f"{len(done.superseded)} grace window(s) ended; broker files rewritten={done.sync is not None}")


@provisioning_app.command("key-create")
def key_create(product: Annotated[str, typer.Option(help="The product the devices are.")],
               name: Annotated[str, typer.Option(help="Which factory or batch uses it.")],
               max_devices: Annotated[int, typer.Option(min=1, help="How many devices it may provision.")],
               days: Annotated[float | None, typer.Option(help="Valid for this many days (default: no expiry).")]
               = None) -> None:
    """A provisioning key; its token is printed once (devices send it in the X-Provisioning-Key header)."""
    from cxp.identity.provisioning import create_provisioning_key

    expires = datetime.now(UTC) + timedelta(days=days) if days else None
    try:
        with _conn(_settings()) as conn:
            new = create_provisioning_key(conn=conn, product_id=product, name=name, max_devices=max_devices,
                                          expires_at=expires, actor=f"cli:{os.environ.get('USER', '?')}")
    except (IdentityError, StoreError) as exc:
        _fail(exc)
    console.print(f"provisioning key {new.key.key_id} for {product}: up to {max_devices} device(s)"
                  + (f", until {expires:%Y-%m-%d %H:%M} UTC" if expires else ""))
    console.print(f"token (shown once): {new.token}")


@provisioning_app.command("key-list")
def key_list(all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False) -> None:
    """Provisioning keys with their use (never secrets)."""
    from cxp.identity.provisioning import list_keys

    with _conn(_settings()) as conn:
        for k in list_keys(conn=conn, include_revoked=all_keys):
            state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
            until = f"{k.expires_at:%Y-%m-%d %H:%M}" if k.expires_at else "no expiry"
            console.print(f"{k.key_id}  {k.product_id:<16} {k.used_count}/{k.max_devices:<6} {until:<17} {state:<24}"
                          f" {k.name}")


@provisioning_app.command("key-revoke")
def key_revoke(key_id: Annotated[str, typer.Argument(help="The key id (after 'cxpprov_').")]) -> None:
    """Revoke a provisioning key (devices it provisioned keep their credentials)."""
    from cxp.identity.provisioning import revoke_key

    try:
        with _conn(_settings()) as conn:
            key = revoke_key(conn=conn, key_id=key_id)
    except IdentityError as exc:
        _fail(exc)
    console.print(f"revoked provisioning key {key.key_id} ({key.used_count}/{key.max_devices} used)")


@provisioning_app.command("audit")
def audit(key_id: Annotated[str | None, typer.Option("--key", help="Only this key.")] = None,
          limit: Annotated[int, typer.Option(min=1)] = 50) -> None:
    """The latest provisioning attempts, successes and refusals."""
    from cxp.identity.provisioning import list_attempts

    with _conn(_settings()) as conn:
        rows, total = list_attempts(conn=conn, key_id=key_id, limit=limit)
    for a in rows:
        console.print(f"{a.at:%Y-%m-%d %H:%M:%S}  {a.outcome:<11} key {a.key_id or '-':<12} device "
                      f"{a.device_id or '-':<20} from {a.client_address or '-':<15} {a.reason}")
    console.print(f"{len(rows)} of {total}")


def read_bulk_csv(text: str):
    """Rows of a factory CSV (device_id, product, kind[, csr]); IdentityError naming the line of a bad one."""
    from cxp.identity.provisioning import BulkRow, csr_from_cell

    reader = csv.DictReader(io.StringIO(text))
    missing = {"device_id", "product", "kind"} - set(reader.fieldnames or ())
    if missing:
        raise IdentityError(f"line 1: the header lacks {', '.join(sorted(missing))}")
    rows = []
    for record in reader:
        line = reader.line_num
        cells = {k: (v or "").strip() for k, v in record.items() if k}
        csr = csr_from_cell(cells["csr"]) if cells.get("csr") else None
        rows.append(BulkRow(line, cells["device_id"], cells["product"], cells["kind"], csr))
    return rows


@provisioning_app.command("import")
def import_csv(path: Annotated[Path, typer.Argument(help="CSV: device_id,product,kind[,csr].")],
               out: Annotated[Path, typer.Option(help="Where the credentials CSV goes (mode 0600).")]) -> None:
    """Bulk provisioning for a factory, all or nothing; the output holds the only copy of the secrets."""
    from cxp.identity.files import PRIVATE_MODE, write_atomic
    from cxp.identity.provisioning import BulkRefused, bulk_provision

    settings = _settings()
    try:
        rows = read_bulk_csv(path.read_text(encoding="utf-8-sig"))
        with _conn(settings) as conn:
            issued = bulk_provision(conn=conn, settings=settings, rows=rows,
                                    actor=f"cli:{os.environ.get('USER', '?')}")
    except BulkRefused as exc:
        for line, message in exc.problems[:50]:
            console.print(f"line {line}: {message}")
        _fail(exc)
    except (IdentityError, StoreError, OSError) as exc:
        _fail(exc)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(("device_id", "kind", "credential_id", "mqtt_username", "secret", "certificate_pem"))
    for row, done in zip(rows, issued, strict=True):
        writer.writerow((row.device_id, row.kind, done.credential.credential_id, done.credential.username or "",
                         done.secret or "", done.certificate_pem or ""))
    write_atomic(out, buf.getvalue().encode(), PRIVATE_MODE)
    console.print(f"provisioned {len(issued)} device(s); credentials in {out} (0600): hand it over, then delete it")
