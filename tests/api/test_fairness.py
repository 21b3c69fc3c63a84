"""Fair use of the database pool (issue 11): one key cannot starve the others or an admin; computations across keys
are bounded (issue 15).

A real uvicorn server over the real test database, with a test-only heavy route that holds its pooled
connection (polling `pg_sleep`) until the test opens a gate: while heavy requests are held, what every other
request gets is decided by the limits alone, so the assertions are on status codes and counts, never on time.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from cxp.api.app import create_app
from cxp.api.deps import CachedDep
from cxp.api.server import uvicorn_options
from cxp.core.config import Settings
from cxp.store.apikeys import create_key
from cxp.store.db import connect

pytestmark = pytest.mark.integration
HEAVY = "/v1/experience/_test_heavy"


@dataclass
class Server:
    """The started app, its gate and a counter of heavy computations that hold a connection."""

    url: str
    gate: threading.Event
    entered: threading.Semaphore
    tokens: dict[str, str]

    def get(self, path: str, who: str, **params: object) -> httpx.Response:
        """GET as the key `who`."""
        return httpx.get(self.url + path, params=params, timeout=60,
                         headers={"Authorization": f"Bearer {self.tokens[who]}"})

    def wait_entered(self, n: int) -> None:
        """Block until `n` more heavy computations hold a connection (fails after a generous minute)."""
        for _ in range(n):
            assert self.entered.acquire(timeout=60), "a heavy request never got its connection"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serve(stack: Settings, **api: object) -> Iterator[Server]:
    # Four pooled connections, as in the issue; answers not cached, so every heavy request computes.
    settings = stack.model_copy(update={
        "db": stack.db.model_copy(update={"pool_min": 1, "pool_max": 4}),
        "api": stack.api.model_copy(update={"cache_ttl_s": 0.0, "pool_timeout_s": 0.5, **api})})
    app = create_app(settings)
    gate, entered = threading.Event(), threading.Semaphore(0)

    @app.get(HEAVY, include_in_schema=False)
    def heavy(cached: CachedDep, n: int) -> dict[str, int]:
        def compute(conn) -> int:
            entered.release()
            while not gate.is_set():  # a slow query, for as long as the test wants it
                conn.execute("SELECT pg_sleep(0.02)")
            return n
        return {"n": cached("test.heavy", compute, n=n)}

    with connect(settings.db) as conn:
        tokens = {who: create_key(conn, name=f"pytest fairness {who}", role=role).token
                  for who, role in (("a", "product"), ("b", "product"), ("c", "product"), ("admin", "admin"),
                                    ("pricing", "pricing"))}
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           **uvicorn_options(settings.api)))
    thread = threading.Thread(target=server.run, name="fairness-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API server did not start"
        time.sleep(0.05)
    try:
        yield Server(f"http://127.0.0.1:{port}", gate, entered, tokens)
    finally:
        gate.set()
        server.should_exit = True
        thread.join(15)


def _burst(pool: ThreadPoolExecutor, srv: Server, who: str, n: int, first: int = 0) -> list[Future]:
    return [pool.submit(srv.get, HEAVY, who, n=first + i) for i in range(n)]


def _wait_done(futures: list[Future], n: int) -> list[httpx.Response]:
    """The first `n` answers of `futures` (the ones that are not held at the gate)."""
    deadline = time.monotonic() + 60
    while sum(f.done() for f in futures) < n:
        assert time.monotonic() < deadline, "the refused requests were not answered"
        time.sleep(0.02)
    return [f.result() for f in futures if f.done()]


def _overloads(srv: Server) -> dict[str, float]:
    """`cxp_api_overload_total` from /metrics, summed over routes, by reason."""
    text = httpx.get(srv.url + "/metrics", timeout=60).text
    out: dict[str, float] = {}
    for reason, value in re.findall(r'^cxp_api_overload_total\{reason="(\w+)",route="[^"]*"\} (\S+)$', text, re.M):
        out[reason] = out.get(reason, 0) + float(value)
    return out


def _assert_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code and int(resp.headers["Retry-After"]) >= 1


def test_limits_off_one_key_starves_admin_and_other_keys(stack: Settings) -> None:
    """The issue's finding, reproduced with the limits off: one key takes the whole pool."""
    with ThreadPoolExecutor(16) as pool, _serve(stack, heavy_per_key=0, light_pool_size=0, compute_slots=0) as srv:
        burst = _burst(pool, srv, "a", 12)
        srv.wait_entered(4)
        refused = _wait_done(burst, 8)
        assert Counter(r.status_code for r in refused) == {503: 8}
        _assert_error(refused[0], 503, "busy")
        _assert_error(srv.get("/v1/registry/products", "admin"), 503, "busy")
        _assert_error(srv.get(HEAVY, "b", n=99), 503, "busy")
        srv.gate.set()
        assert Counter(f.result().status_code for f in burst) == {200: 4, 503: 8}
        assert _overloads(srv) == {"pool_timeout": 10}, "every 503 busy is counted in /metrics"


def test_one_key_cannot_starve_admin_or_other_keys(stack: Settings) -> None:
    """Per-key slots (2) refuse the rest of a burst with 429; the admin's pool answers; a second key gets in."""
    with ThreadPoolExecutor(24) as pool, _serve(stack, heavy_per_key=2, light_pool_size=2, compute_slots=0) as srv:
        burst_a = _burst(pool, srv, "a", 12)
        srv.wait_entered(2)
        refused = _wait_done(burst_a, 10)
        assert Counter(r.status_code for r in refused) == {429: 10}
        _assert_error(refused[0], 429, "too_many_requests")
        # The real analytics routes share the key's slots.
        _assert_error(srv.get("/v1/experience/health", "a"), 429, "too_many_requests")

        burst_b = _burst(pool, srv, "b", 2, first=100)
        srv.wait_entered(2)  # key b is not starved: both its requests hold connections (the pool of 4 is full)
        admin = srv.get("/v1/registry/products", "admin")
        assert admin.status_code == 200, admin.text
        assert srv.get("/v1/ingest/status", "admin").status_code == 200
        # A third key finds the main pool full: 503 `busy` with Retry-After after the short pool timeout.
        _assert_error(srv.get(HEAVY, "c", n=200), 503, "busy")

        srv.gate.set()
        assert Counter(f.result().status_code for f in burst_a) == {200: 2, 429: 10}
        assert [f.result().json() for f in burst_b] == [{"n": 100}, {"n": 101}]
        # Slots are given back: key a computes again.
        assert srv.get(HEAVY, "a", n=300).status_code == 200
        # /metrics counts each refusal by its reason: 10 + 1 heavy-slot 429s, one pool-timeout 503
        assert _overloads(srv) == {"heavy_slots": 11, "pool_timeout": 1}
        text = httpx.get(srv.url + "/metrics", timeout=60).text
        assert 'cxp_api_overload_total{reason="heavy_slots",route="/v1/experience/health"} 1.0' in text


def test_computations_across_keys_wait_for_a_slot_and_hold_no_connection_meanwhile(stack: Settings) -> None:
    """Two computation slots: a third key's request waits (no connection held), gets its slot when one frees."""
    with ThreadPoolExecutor(8) as pool, _serve(stack, heavy_per_key=2, compute_slots=2, compute_wait_s=60,
                                               light_pool_size=0) as srv:
        running = _burst(pool, srv, "a", 2)
        srv.wait_entered(2)
        waiting = _burst(pool, srv, "b", 2, first=100)
        assert not srv.entered.acquire(timeout=0.5), "a third computation started beside the two slots"
        # Waiting requests hold no pooled connection: cheap reads share the pool of 4 here, and still get one
        # (two waiting requests holding connections would fill it: 503 busy after the 0.5 s pool timeout).
        assert srv.get("/v1/registry/products", "admin").status_code == 200
        srv.gate.set()
        assert [f.result().json() for f in running + waiting] == [{"n": 0}, {"n": 1}, {"n": 100}, {"n": 101}]
        assert _overloads(srv) == {}


def test_a_request_that_waits_too_long_for_a_slot_gets_503_compute_busy(stack: Settings) -> None:
    with ThreadPoolExecutor(8) as pool, _serve(stack, heavy_per_key=2, compute_slots=1, compute_wait_s=0.3) as srv:
        running = _burst(pool, srv, "a", 1)
        srv.wait_entered(1)
        _assert_error(srv.get(HEAVY, "b", n=7), 503, "compute_busy")
        _assert_error(srv.get("/v1/experience/health", "c"), 503, "compute_busy")  # real views share the slots
        # and so do uncached computations on a connection of their own (survey analyses, solves, backtests)
        _assert_error(srv.get("/v1/pricing/wtp/van-westendorp", "pricing"), 503, "compute_busy")
        assert srv.get("/v1/registry/products", "admin").status_code == 200  # cheap reads are not gated
        srv.gate.set()
        assert running[0].result().json() == {"n": 0}
        assert srv.get(HEAVY, "b", n=8).json() == {"n": 8}  # the slot was given back
        assert _overloads(srv) == {"compute_slots": 3}, "every 503 compute_busy is counted in /metrics"


def test_the_gate_runs_its_after_hook_once_per_computation_and_not_for_a_refusal() -> None:
    from cxp.api.errors import ComputeBusy
    from cxp.api.fairness import ComputeGate

    ran: list[int] = []
    gate = ComputeGate(slots=1, wait_s=0.05, retry_after_s=1, after=lambda: ran.append(1))
    with gate.hold():
        with pytest.raises(ComputeBusy), gate.hold():
            pass
        assert ran == [], "a refused request computed nothing"
    assert ran == [1]
    with pytest.raises(RuntimeError), gate.hold():
        raise RuntimeError("a failed computation frees memory too")
    assert ran == [1, 1]
