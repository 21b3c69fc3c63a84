"""`cxp pki …`: the platform CA, the broker's server certificate, device certificates from CSRs, the CRL."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cxp.core.config import get_settings
from cxp.identity import IdentityError
from cxp.identity.files import PkiPaths, init_ca, load_ca, pem, save_server, write_public
from cxp.identity.pki import (
    DEFAULT_SERVER_HOSTS,
    IssuedCertificate,
    build_crl,
    issue_server_certificate,
    sign_device_csr,
)

pki_app = typer.Typer(help="The platform CA: server and device certificates, revocation list.", no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 150)


def _paths() -> PkiPaths:
    directory = get_settings().pki.dir
    assert directory is not None  # Settings fills it in from the stack dir
    return PkiPaths(directory)


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(1) from exc


def _describe(what: str, issued: IssuedCertificate, path: Path) -> None:
    console.print(f"{what} {issued.common_name!r} → {path}\n  serial {issued.serial:x}\n"
                  f"  sha256 {issued.fingerprint_sha256}\n  valid until {issued.not_after:%Y-%m-%d %H:%M} UTC")


def parse_serials(values: list[str]) -> list[int]:
    """Serials as hex (as `cxp pki sign` prints them, optional 0x, ':' allowed), several per value comma-separated."""
    serials = []
    for value in values:
        for part in filter(None, (p.strip() for p in value.split(","))):
            try:
                serials.append(int(part.removeprefix("0x").replace(":", ""), 16))
            except ValueError as exc:
                raise typer.BadParameter(f"{part!r} is not a hexadecimal serial") from exc
    return serials


@pki_app.command("init")
def pki_init(force: Annotated[bool, typer.Option("--force", help="Replace an existing CA (every issued "
                                                  "certificate stops being trusted).")] = False) -> None:
    """Create the platform CA (EC P-256, ~10 years) unless one exists; the key is written 0600 and never shown."""
    paths, settings = _paths(), get_settings()
    try:
        ca, created = init_ca(paths=paths, days=settings.pki.ca_days, force=force)
    except IdentityError as exc:
        _fail(exc)
    _describe("created CA" if created else "kept existing CA", ca.info, paths.ca_cert)


@pki_app.command("server-cert")
def pki_server_cert(
    host: Annotated[list[str] | None, typer.Option(help="IP address or DNS name the broker is reached at "
                                                        "(repeat; default 127.0.0.1, ::1, localhost).")] = None,
) -> None:
    """Issue the broker's TLS certificate (serverAuth) and key from the platform CA."""
    paths, settings = _paths(), get_settings()
    try:
        credential = issue_server_certificate(ca=load_ca(paths), hosts=tuple(host or DEFAULT_SERVER_HOSTS),
                                              days=settings.pki.server_days)
        save_server(credential, paths)
    except IdentityError as exc:
        _fail(exc)
    _describe("server certificate", credential.issued, paths.server_cert)
    console.print(f"  key {paths.server_key} (0600)")


@pki_app.command("sign")
def pki_sign(
    device: Annotated[str, typer.Option(help="The device id; the CSR's CN must be exactly this.")],
    csr: Annotated[Path, typer.Option(help="The device's PEM certificate signing request.", exists=True,
                                      dir_okay=False)],
    out: Annotated[Path, typer.Option(help="Where to write the device certificate (PEM).")],
    days: Annotated[int | None, typer.Option(min=1, help="Validity (default: pki.device_days).")] = None,
) -> None:
    """Sign a device's CSR: a clientAuth certificate with CN = device id (the device's key never leaves it)."""
    paths, settings = _paths(), get_settings()
    try:
        issued = sign_device_csr(ca=load_ca(paths), csr_pem=csr.read_bytes(), device_id=device,
                                 days=days or settings.pki.device_days)
    except IdentityError as exc:
        _fail(exc)
    write_public(out, issued.pem())
    _describe("device certificate", issued, out)


@pki_app.command("crl")
def pki_crl(
    revoked: Annotated[list[str] | None, typer.Option(help="Serial (hex) of a revoked certificate; repeat or "
                                                           "comma-separate. None: an empty CRL.")] = None,
    out: Annotated[Path | None, typer.Option(help="Where to write the CRL (default: <pki dir>/crl.pem).")] = None,
    days: Annotated[int | None, typer.Option(min=1, help="Days until next-update (default: pki.crl_days).")] = None,
) -> None:
    """Write the certificate revocation list signed by the platform CA (the whole list of revoked serials)."""
    paths, settings = _paths(), get_settings()
    serials = parse_serials(revoked or [])
    target = out or paths.crl
    try:
        crl = build_crl(ca=load_ca(paths), revoked=serials, days=days or settings.pki.crl_days)
    except IdentityError as exc:
        _fail(exc)
    write_public(target, pem(crl))
    console.print(f"CRL with {len(set(serials))} revoked serial(s) → {target}\n"
                  f"  next update {crl.next_update_utc:%Y-%m-%d %H:%M} UTC")
