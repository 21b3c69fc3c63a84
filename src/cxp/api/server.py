"""Serving the API with uvicorn, hardened against slow and oversized request heads (the body is the guard's), and
over TLS with a certificate from the platform CA when it listens beyond loopback."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cxp.core.config import ApiSettings, Settings, get_settings
from cxp.core.net import is_loopback
from cxp.identity.files import PkiPaths, load_ca, load_certificate, write_private_key, write_public
from cxp.identity.pki import issue_server_certificate

# Request line plus headers: far above any real client's, far below what would cost memory.
MAX_HEAD_BYTES = 64 * 1024


class HeadTooLarge(Exception):
    """The request line and headers outgrew MAX_HEAD_BYTES."""


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size cap for each request's head.

    uvicorn has neither: a client trickling a header byte every few seconds held its connection for ever (the
    keep-alive timeout only runs between requests), and headers were collected without a bound.
    """

    header_timeout_s: float | None = None  # None: the process settings' api.header_timeout_s

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._head_too_large = False
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte is a head that never arrives

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        if self._head_timer is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:  # the parser reports our callback's refusal as a malformed request
            self._close_with(431, b"Request Header Fields Too Large")
            return
        super().send_400_response(msg)

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            self._head_too_large = True
            raise HeadTooLarge

    def _arm(self) -> None:
        timeout = self.header_timeout_s if self.header_timeout_s is not None else get_settings().api.header_timeout_s
        self._head_timer = self.loop.call_later(timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self._close_with(408, b"Request Timeout")

    def _close_with(self, status: int, reason: bytes) -> None:
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-length: 0\r\nconnection: close\r\n\r\n" % (status, reason))
        self.transport.close()


def uvicorn_options(api: ApiSettings) -> dict[str, Any]:
    """The uvicorn settings of every API process: the guarded protocol, keep-alive and h11 head limits."""
    return {"http": GuardedHttpProtocol, "timeout_keep_alive": api.keep_alive_s,
            "h11_max_incomplete_event_size": MAX_HEAD_BYTES}



def tls_options(settings: Settings, host: str) -> dict[str, Any]:
    """uvicorn's TLS settings when `host` is beyond loopback: a server certificate from the platform CA for that
    host (issued once into the PKI directory, re-issued when it names another host); {} on loopback."""
    if is_loopback(host):
        return {}
    paths = PkiPaths(Path(settings.pki.dir))
    cert, key = paths.dir / "api.crt", paths.dir / "api.key"
    # A wildcard bind is reached by this machine's name; a specific address or name by itself.
    hosts = [socket.gethostname(), "localhost"] if host in ("0.0.0.0", "::") else [host]
    current = None
    if cert.exists() and key.exists():
        current = load_certificate(cert)
    if current is None or _san_names(current) != set(hosts) or not _valid_for_a_month(current):
        issued = issue_server_certificate(ca=load_ca(paths), hosts=hosts, days=settings.pki.server_days)
        write_private_key(key, issued.key)
        write_public(cert, issued.issued.pem())
    # Python's server context refuses TLS < 1.2 by default (the issue's floor).
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}


def _san_names(certificate: x509.Certificate) -> set[str]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))


def _valid_for_a_month(certificate: x509.Certificate) -> bool:
    return certificate.not_valid_after_utc - datetime.now(UTC) > timedelta(days=30)
