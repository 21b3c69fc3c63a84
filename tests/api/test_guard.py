"""The request guard over real HTTP (uvicorn in a thread, the real database): authentication before the body,
size limits, slow clients, throttled failed authentications. Assertions are on bytes and statuses, never time."""

from __future__ import annotations

import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from cxp.api.app import create_app
from cxp.api.guard import UPLOAD_ROUTES, FailedAuthThrottle, RequestGuard
from cxp.api.metrics import ApiMetrics
from cxp.api.server import MAX_HEAD_BYTES, GuardedHttpProtocol, uvicorn_options
from cxp.core.config import Settings
from cxp.store.apikeys import ROLES, create_key
from cxp.store.db import connect

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
BAD_KEY = "cxp_000000000000_" + "x" * 43


class FastHeadTimeout(GuardedHttpProtocol):
    """The guarded protocol with a head deadline short enough for a test."""

    header_timeout_s = 1.0


@dataclass(frozen=True)
class Served:
    """A running server: its address, a token per role, and a reader of its body-bytes counter."""

    host: str
    port: int
    tokens: dict[str, str]
    metrics: ApiMetrics

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def body_bytes(self) -> float:
        """Request body bytes the /v1 routes have read so far (the guard counts them)."""
        return self.metrics.body_bytes._value.get()


@contextmanager
def serve(settings: Settings, **api: object) -> Iterator[Served]:
    """The app on `settings` (with `api` overrides), served by uvicorn with the guarded protocol in a thread."""
    settings = settings.model_copy(update={"api": settings.api.model_copy(update=api)})
    app = create_app(settings)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = {**uvicorn_options(settings.api), "http": FastHeadTimeout}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    thread = threading.Thread(target=server.run, name="guard-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API server did not start"
        time.sleep(0.05)
    with connect(settings.db) as conn:
        tokens = {role: create_key(conn, name=f"guard {role}", role=role).token for role in ROLES}
    try:
        yield Served("127.0.0.1", port, tokens, app.state.metrics)
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture(scope="module")
def api(stack: Settings) -> Iterator[Served]:
    """One server for the module: a 1 s body deadline; throttling out of the way (its own test below)."""
    with serve(stack, body_timeout_s=1.0, auth_fail_limit=1_000_000) as served:
        yield served


def _status(head: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3})", head)
    assert match, head[:200]
    return int(match.group(1))


def _push_body(api: Served, head: bytes, total: int) -> tuple[int, bytes]:
    """Send `head`, then up to `total` body bytes while the server has not answered; (bytes sent, answer)."""
    sent = 0
    chunk = b"x" * 65536
    with socket.create_connection((api.host, api.port), timeout=30) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        answer = b""
        while sent < total:
            readable, writable, _ = select.select([sock], [sock], [], 10)
            if readable:
                break
            if writable:
                try:
                    sent += sock.send(chunk[: total - sent])
                except (BlockingIOError, InterruptedError):
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
            elif not readable:
                break  # neither: the server stopped reading and has not answered
        sock.setblocking(True)
        try:
            while b"\r\n\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            pass
    return sent, answer


def test_unauthenticated_50_mb_post_is_refused_without_reading_the_body(api: Served) -> None:
    before = api.body_bytes()
    total = 50 * MIB
    head = (f"POST /v1/pricing/plans HTTP/1.1\r\nHost: {api.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {total}\r\n\r\n").encode()
    sent, answer = _push_body(api, head, total)
    assert _status(answer) == 401, answer[:300]
    assert b"connection: close" in answer.lower()
    assert api.body_bytes() == before, "the app read body bytes of an unauthenticated request"
    assert sent < total // 5, f"the client could push {sent} of {total} bytes before the refusal"


def test_malformed_or_multipart_body_without_key_is_401_and_wrong_role_403(api: Served) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        malformed = client.post("/v1/pricing/plans", content=b"{not json", headers={"Content-Type": "application/json"})
        assert malformed.status_code == 401, malformed.text
        assert malformed.json()["error"]["code"] == "not_authenticated"
        assert malformed.headers["WWW-Authenticate"] == "Bearer"
        upload = client.post("/v1/registry/accounts/import", files={"file": ("a.csv", b"account_id\n" + b"a\n" * 1000)})
        assert upload.status_code == 401, upload.text
        bad = client.post("/v1/pricing/plans", content=b"{not json", headers={"Authorization": f"Bearer {BAD_KEY}"})
        assert bad.status_code == 401
        wrong_role = client.post("/v1/pricing/plans", content=b"{not json",
                                 headers={**api.auth("product"), "Content-Type": "application/json"})
        assert wrong_role.status_code == 403, wrong_role.text
        assert "pricing" in wrong_role.json()["error"]["message"]
        right_role = client.post("/v1/pricing/plans", content=b"{not json",
                                 headers={**api.auth("pricing"), "Content-Type": "application/json"})
        assert right_role.status_code in (400, 422), right_role.text  # past the guard, the body is judged


def test_oversize_body_with_a_key_is_413_from_content_length(api: Served) -> None:
    before = api.body_bytes()
    with httpx.Client(base_url=api.url, timeout=30) as client:
        r = client.post("/v1/pricing/plans", content=b" " * (2 * MIB),
                        headers={**api.auth("pricing"), "Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert error["code"] == "too_large" and "1 MiB" in error["message"] and "max_body_bytes" in error["message"]
    assert api.body_bytes() == before


def test_chunked_oversize_body_is_413_while_streaming(api: Served) -> None:
    before = api.body_bytes()

    def chunks() -> Iterator[bytes]:
        for _ in range(64):  # 4 MiB in 64 KiB chunks, no Content-Length: Transfer-Encoding: chunked
            yield b" " * 65536

    with httpx.Client(base_url=api.url, timeout=30) as client:
        try:
            r = client.post("/v1/pricing/plans", content=chunks(),
                            headers={**api.auth("pricing"), "Content-Type": "application/json"})
        except httpx.TransportError:
            pytest.fail("the server cut the connection instead of answering 413")
    assert r.status_code == 413, r.text
    assert "1 MiB" in r.json()["error"]["message"]
    read = api.body_bytes() - before
    # uvicorn hands the body over in what one socket read brings (up to 256 KiB): the limit plus at most that
    assert MIB < read <= MIB + 256 * 1024, f"the app read {read} bytes of the chunked body"


def test_upload_routes_have_their_larger_limit(api: Served) -> None:
    csv = b"not_a_column\n" + b"x" * 80 + b"\n"
    body = csv * (3 * MIB // len(csv))  # 3 MiB: over the default limit, under the import limit
    with httpx.Client(base_url=api.url, timeout=60) as client:
        r = client.post("/v1/registry/accounts/import", files={"file": ("a.csv", body)}, headers=api.auth("admin"))
        assert r.status_code == 422, r.text  # read and judged by the import (unknown column), not refused by size
        too_big = client.post("/v1/registry/accounts/import", files={"file": ("a.csv", b"x" * (22 * MIB))},
                              headers=api.auth("admin"))
    assert too_big.status_code == 413 and "max_import_bytes" in too_big.json()["error"]["message"]


def test_slow_body_is_408(api: Served) -> None:
    head = (f"POST /v1/pricing/plans HTTP/1.1\r\nHost: {api.host}\r\nContent-Type: application/json\r\n"
            f"{'Authorization: Bearer ' + api.tokens['pricing']}\r\nContent-Length: 1000\r\n\r\n").encode()
    with socket.create_connection((api.host, api.port), timeout=30) as sock:
        sock.sendall(head + b'{"name": ')  # then nothing more: the body never completes
        answer = b""
        while data := sock.recv(65536):
            answer += data
    assert _status(answer) == 408, answer[:300]
    assert b'"request_timeout"' in answer


def test_slow_or_endless_request_head_is_refused(api: Served) -> None:
    with socket.create_connection((api.host, api.port), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the blank line never comes
        answer = sock.recv(65536)
        assert _status(answer) == 408
        assert sock.recv(65536) == b"", "the connection stays open"
    with socket.create_connection((api.host, api.port), timeout=30) as sock:
        filler = b"X-Filler: " + b"a" * (MAX_HEAD_BYTES + 1) + b"\r\n"
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + filler + b"\r\n")
        assert _status(sock.recv(65536)) == 431


def test_repeated_bad_keys_are_throttled_with_retry_after(stack: Settings) -> None:
    with serve(stack, auth_fail_limit=5, auth_fail_window_s=120.0) as api, \
            httpx.Client(base_url=api.url, timeout=30) as client:
        assert client.get("/v1/experience/voice", headers=api.auth("product")).status_code == 200  # now cached
        for _ in range(5):
            assert client.get("/v1/experience/voice", headers={"X-API-Key": BAD_KEY}).status_code == 401
        throttled = client.get("/v1/experience/voice", headers={"X-API-Key": BAD_KEY})
        assert throttled.status_code == 429, throttled.text
        assert 0 < int(throttled.headers["Retry-After"]) <= 120
        assert throttled.json()["error"]["code"] == "too_many_requests"
        fresh = client.get("/v1/pricing/plans", headers=api.auth("pricing"))
        assert fresh.status_code == 429, "an unverified key from a throttled address costs no lookup"
        cached = client.get("/v1/experience/voice", headers=api.auth("product"))
        assert cached.status_code == 200, "a key verified moments ago still works"
        assert client.get("/healthz").status_code == 200


def test_a_burst_of_distinct_bad_keys_is_throttled_before_it_reaches_the_database(stack: Settings) -> None:
    limit = 5
    with serve(stack, auth_fail_limit=limit, auth_fail_window_s=120.0) as api, \
            httpx.Client(base_url=api.url, timeout=60, limits=httpx.Limits(max_connections=40)) as client:
        keys = [f"cxp_{i:012d}_" + "y" * 43 for i in range(40)]
        statuses: list[int] = []

        def attempt(key: str) -> None:
            statuses.append(client.get("/v1/experience/voice", headers={"X-API-Key": key}).status_code)

        threads = [threading.Thread(target=attempt, args=(k,)) for k in keys]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(set(statuses)) == [401, 429], statuses
    # Every 401 was a database lookup: at most `limit` in flight, and none once `limit` failures are counted.
    assert statuses.count(401) <= 2 * limit, statuses


def test_throttle_memory_is_bounded() -> None:
    throttle = FailedAuthThrottle(limit=3, window_s=60, max_clients=100)
    for i in range(10_000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle) == 100
    for _ in range(3):
        throttle.failed("192.0.2.1")
    assert throttle.retry_after("192.0.2.1") is not None and throttle.retry_after("10.0.0.0") is None


def test_guard_knows_every_v1_operation_and_upload_route(stack: Settings) -> None:
    app = create_app(stack)
    guard = RequestGuard(app, settings=stack.api, metrics=ApiMetrics())
    known = {(m, entry.path): plan for entry, plan in guard.plans(app) for m in entry.methods}
    for path, operations in app.openapi()["paths"].items():
        if path.startswith("/v1/"):
            for method in operations:
                plan = known[(method.upper(), path)]
                assert plan.provisioning or (plan.roles and "admin" in plan.roles), (method, path)
    for route in UPLOAD_ROUTES:
        method, path = route.split(" ")
        assert known[(method, path)].max_body > stack.api.max_body_bytes
