"""The API beyond loopback is served over TLS with a certificate from the platform CA (real uvicorn, real TLS)."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509

from cxp.api.server import is_loopback, tls_options, uvicorn_options
from cxp.core.config import Settings, StackSettings
from cxp.identity import PkiMissing
from cxp.identity.files import PkiPaths, init_ca, load_certificate


def _settings(tmp_path: Path) -> Settings:
    return Settings(stack=StackSettings(dir=tmp_path))


def test_loopback_stays_plain_and_other_hosts_get_a_ca_certificate(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert tls_options(settings, "127.0.0.1") == {}
    with pytest.raises(PkiMissing):
        tls_options(settings, "192.0.2.10")  # no CA yet: refuse to serve plain HTTP beyond loopback
    ca, _ = init_ca(paths=PkiPaths(tmp_path / "pki"))
    options = tls_options(settings, "192.0.2.10")
    cert = load_certificate(Path(options["ssl_certfile"]))
    cert.verify_directly_issued_by(ca.certificate)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.10"]
    assert stat.S_IMODE(Path(options["ssl_keyfile"]).stat().st_mode) == 0o600
    assert tls_options(settings, "192.0.2.10") == options and load_certificate(Path(options["ssl_certfile"])) == cert
    renamed = load_certificate(Path(tls_options(settings, "api.example.test")["ssl_certfile"]))
    assert renamed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["api.example.test"]


def test_the_served_api_speaks_tls_1_2_or_later_with_the_platform_ca(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    init_ca(paths=PkiPaths(tmp_path / "pki"))
    options = tls_options(settings, "api.example.test")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def app(scope, receive, send) -> None:  # the transport is under test, not the app
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                                           **uvicorn_options(settings.api), **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.05)
        context = ssl.create_default_context(cafile=str(tmp_path / "pki" / "ca.crt"))
        transport = httpx.HTTPTransport(verify=context)
        with httpx.Client(transport=transport) as client, pytest.raises(httpx.ConnectError):
            client.get(f"https://127.0.0.1:{port}/")  # the certificate names api.example.test, not 127.0.0.1
        context.check_hostname = False
        with httpx.Client(verify=context) as client:
            assert client.get(f"https://127.0.0.1:{port}/").text == "ok"
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                context.wrap_socket(raw, server_hostname="api.example.test") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/")  # no plain HTTP on the TLS port
    finally:
        server.should_exit = True
        thread.join(15)


def test_the_stack_probes_a_non_loopback_api_over_https(tmp_path) -> None:
    from cxp.core.config import ApiSettings, Settings, StackSettings
    from cxp.stack.api_process import api_url

    loopback = Settings(stack=StackSettings(dir=tmp_path))
    assert api_url(loopback).startswith("http://127.0.0.1:")
    beyond = Settings(stack=StackSettings(dir=tmp_path), api=ApiSettings(host="192.0.2.10"))
    assert api_url(beyond) == f"https://192.0.2.10:{beyond.api.port}"
