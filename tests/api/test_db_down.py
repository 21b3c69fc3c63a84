"""The database unavailable: API and dashboard say 503 `unavailable` with Retry-After, never 500 (issue 11).

Nothing shared is stopped: a second app is pointed at a loopback port where no database listens, and another
at a loopback proxy to the real database that is cut while the app runs."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cxp.api.app import create_app
from cxp.core.config import Settings

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _CuttableProxy:
    """A loopback TCP proxy to the database; `cut()` closes the listener and every connection through it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target)
                self.sockets += [client, upstream]
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def _app_on(stack: Settings, port: int) -> TestClient:
    settings = stack.model_copy(update={"db": stack.db.model_copy(update={"port": port, "pool_min": 1})})
    return TestClient(create_app(settings), raise_server_exceptions=False, follow_redirects=False)


def _assert_unavailable(client: TestClient) -> None:
    # Well-formed (a malformed key is refused without a database round trip): its lookup meets the dead database.
    token = {"Authorization": "Bearer cxp_000000000000_" + "n" * 43}
    api = client.get("/v1/experience/health", headers=token)
    assert api.status_code == 503, api.text
    assert api.json()["error"]["code"] == "unavailable" and api.headers["Retry-After"]
    for path in ("/dashboard", "/dashboard/health", "/dashboard/pricing"):
        page = client.get(path, headers={"Cookie": "cxp_session=not_checked_while_down"})
        assert page.status_code == 503, (path, page.status_code, page.text[:300])
        assert page.headers["content-type"].startswith("text/html") and 'class="error"' in page.text
        assert "unavailable" in page.text and page.headers["Retry-After"]
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "not_ready"
    assert client.get("/healthz").status_code == 200


@pytest.fixture
def proxied(stack: Settings) -> Iterator[tuple[_CuttableProxy, TestClient]]:
    proxy = _CuttableProxy(stack.db.host, stack.db.port)
    try:
        with _app_on(stack, proxy.port) as client:
            yield proxy, client
    finally:
        proxy.cut()


def test_an_api_started_without_its_database_says_503_on_api_and_dashboard(stack: Settings) -> None:
    with _app_on(stack, _closed_port()) as client:
        _assert_unavailable(client)


def test_a_database_that_goes_away_while_the_api_runs_is_503_not_500(proxied, test_db_api) -> None:
    proxy, client = proxied
    assert client.get("/readyz").status_code == 200
    admin = test_db_api.headers("admin")
    assert client.get("/v1/registry/products", headers=admin).status_code == 200
    client.app.state.pool.timeout = 3  # the first caller after the cut waits this long for the pool (default 30 s)
    proxy.cut()
    r = client.get("/v1/registry/products", headers={"Authorization": "Bearer cxp_00000000cafe_" + "c" * 43})
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable", r.text
    _assert_unavailable(client)
