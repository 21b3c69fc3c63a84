"""The request guard in front of `/v1`: the key is checked from the headers before any byte of the body is read,
the body is bounded in size and in time, and failed authentications are throttled per client address.

A pure ASGI middleware (BaseHTTPMiddleware would wrap the body stream): a refused request is answered without
calling `receive`, and with `Connection: close` when a body may follow, so the server never reads that body.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from cxp.api.deps import (
    BAD_KEY,
    NO_KEY,
    PROVISIONING_HEADER,
    SCOPE_KEY,
    SCOPE_PROVISIONING,
    forbidden_message,
    token_from_headers,
    verify_provisioning,
    verify_token,
)
from cxp.api.errors import ErrorBody, ErrorInfo, Failure, NotAuthenticated, describe_error
from cxp.api.metrics import ApiMetrics
from cxp.core.config import ApiSettings
from cxp.store.apikeys import ApiKey

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
MIB = 1024 * 1024

# The routes that take uploads, by "METHOD template" → the ApiSettings field with their body limit; every other
# /v1 route gets `max_body_bytes`. (A test checks each template still names a route.)
UPLOAD_ROUTES = {
    "POST /v1/registry/{kind}/import": "max_import_bytes",
    "POST /v1/pricing/wtp/van-westendorp": "max_survey_bytes",
    "POST /v1/pricing/wtp/gabor-granger": "max_survey_bytes",
    "POST /v1/provisioning/import": "max_import_bytes",
    "POST /v1/imports": "max_history_import_bytes",
}


class BodyRefused(StarletteHTTPException):
    """Raised from `receive` when a body outgrows its limit (413) or its time (408); the guard answers it."""


class FailedAuthThrottle:
    """Failed authentications per client address in a sliding window, in bounded memory (least recent forgotten)."""

    def __init__(self, *, limit: int, window_s: float, max_clients: int) -> None:
        self.limit = max(1, limit)
        self.window_s = window_s
        self.max_clients = max_clients
        self._fails: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._fails)

    def retry_after(self, client: str) -> int | None:
        """Whole seconds until `client` may try again, or None when it is not throttled."""
        fails = self._fails.get(client)
        if fails is None or len(fails) < self.limit:
            return None
        wait = fails[0] + self.window_s - time.monotonic()
        return math.ceil(wait) if wait > 0 else None

    def failed(self, client: str) -> None:
        """Record one failure of `client` (only the last `limit` are kept: enough to decide)."""
        fails = self._fails.pop(client, None) or deque(maxlen=self.limit)
        fails.append(time.monotonic())
        self._fails[client] = fails
        while len(self._fails) > self.max_clients:
            self._fails.popitem(last=False)


@dataclass(frozen=True)
class RoutePlan:
    """What the guard enforces for one route: the roles admitted (None: any valid key) and the body limit."""

    roles: frozenset[str] | None
    max_body: int
    limit_name: str
    provisioning: bool = False  # authenticated by a device's provisioning key instead of an API key


@dataclass(frozen=True)
class RouteEntry:
    """One API route as the client addresses it: its full path template and methods, compiled once."""

    path: str
    methods: frozenset[str]
    regex: re.Pattern[str]
    route: APIRoute

    def matches(self, path: str, method: str) -> bool:
        """Whether a request for `method path` reaches this route."""
        return method in self.methods and self.regex.match(path) is not None


def api_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[RouteEntry]:
    """The FastAPI routes among `routes` with their full paths, looking inside included routers."""
    for route in routes:
        if isinstance(route, APIRoute):
            path = prefix + route.path
            yield RouteEntry(path, frozenset(route.methods or ()), compile_path(path)[0], route)
        elif (router := getattr(route, "original_router", None)) is not None:
            # FastAPI ≥ 0.165 keeps included routers as such: the inclusion's prefix applies to what is inside.
            inner = getattr(getattr(route, "include_context", None), "prefix", "") or ""
            yield from api_routes(router.routes, prefix + inner)


def _route_mark(route: Any, name: str) -> Any:
    """The `name` attribute deps.py sets on a dependency (roles, provisioning), found in the route's dependency tree."""
    stack = [getattr(route, "dependant", None)]
    while stack:
        dependant = stack.pop()
        if dependant is None:
            continue
        mark = getattr(dependant.call, name, None)
        if mark is not None:
            return mark
        stack.extend(dependant.dependencies)
    return None


def _route_roles(route: Any) -> frozenset[str] | None:
    """The roles of the route's `require_role` dependency (deps.py marks it), found in its dependency tree."""
    roles = _route_mark(route, "roles")
    return roles if isinstance(roles, frozenset) else None


def _failure_response(failure: Failure, *, close: bool) -> tuple[Message, Message]:
    """The two ASGI messages of the one error body."""
    info = ErrorInfo(status=failure.status, code=failure.code, message=failure.message, details=failure.details)
    body = ErrorBody(error=info).model_dump_json().encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (failure.headers or {}).items()]
    if close:
        headers.append((b"connection", b"close"))
    return ({"type": "http.response.start", "status": failure.status, "headers": headers},
            {"type": "http.response.body", "body": body, "more_body": False})


class RequestGuard:
    """ASGI middleware guarding `/v1/*`; the other paths (dashboard, docs, health) pass untouched."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], *, settings: ApiSettings,
                 metrics: ApiMetrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.throttle = FailedAuthThrottle(limit=settings.auth_fail_limit, window_s=settings.auth_fail_window_s,
                                           max_clients=settings.auth_fail_clients)
        self._plans: list[tuple[RouteEntry, RoutePlan]] | None = None
        self._lookups: dict[str, asyncio.Future[ApiKey | None]] = {}  # token → its database lookup in flight
        self._in_flight: dict[str, int] = {}  # client address → lookups in flight

    def plans(self, app: Any) -> list[tuple[RouteEntry, RoutePlan]]:
        """Every API route of `app` with its plan, built once."""
        if self._plans is None:
            self._plans = []
            for entry in api_routes(app.router.routes):
                name = next((UPLOAD_ROUTES[f"{m} {entry.path}"] for m in entry.methods
                             if f"{m} {entry.path}" in UPLOAD_ROUTES), "max_body_bytes")
                self._plans.append((entry, RoutePlan(_route_roles(entry.route), getattr(self.settings, name), name,
                                                     _route_mark(entry.route, "provisioning") is True)))
        return self._plans

    def plan(self, app: Any, scope: Scope) -> RoutePlan:
        """The plan of the route `scope` would reach (the default plan when none matches: 404/405 follow)."""
        path, method = scope["path"], scope["method"]
        for entry, plan in self.plans(app):
            if entry.matches(path, method):
                return plan
        return RoutePlan(None, self.settings.max_body_bytes, "max_body_bytes")

    async def _refuse(self, send: Send, failure: Failure, *, close: bool) -> None:
        self.metrics.refused.labels(str(failure.status)).inc()
        if failure.code == "busy":  # the key lookup found no free connection: overload, like a route's 503
            self.metrics.overload.labels("pool_timeout", "(key check)").inc()
        start, body = _failure_response(failure, close=close)
        await send(start)
        await send(body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        # A body may follow these headers: refusing without reading it means closing the connection after.
        may_have_body = headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers
        failure = await self._authorize(scope, headers)
        if failure is None:
            failure = self._check_length(scope, headers)
        if failure is not None:
            await self._refuse(send, failure, close=may_have_body)
            return
        await self._serve(scope, receive, send)

    async def _authorize(self, scope: Scope, headers: Headers) -> Failure | None:
        """None when the presented key is valid for the route (and left in the scope), else the refusal."""
        app = scope["app"]
        state = app.state
        if (plan := self.plan(app, scope)).provisioning:
            return await self._authorize_provisioning(scope, headers, plan)
        token = token_from_headers(headers)  # headers only: a cookie would let any page the browser opens post here
        if not token:
            return describe_error(NotAuthenticated(NO_KEY))
        client = (scope.get("client") or ("unknown",))[0]
        key = state.key_cache.get(token)
        if key is None:
            wait = self.throttle.retry_after(client)
            if wait is not None:
                return Failure(429, "too_many_requests", f"too many failed authentications from {client}; "
                               f"retry in {wait} s", headers={"Retry-After": str(wait)})
            if token not in self._lookups and self._in_flight.get(client, 0) >= self.throttle.limit:
                # Failures count when lookups end: without this cap a burst of distinct bad keys would all
                # reach the database before the first one is counted.
                return Failure(429, "too_many_requests", f"too many key lookups in flight from {client}; retry in 1 s",
                               headers={"Retry-After": "1"})
            try:
                key = await self._lookup(state, token, client)
            except Exception as exc:  # noqa: BLE001 - the exception table answers it (pool busy, database down: 503)
                return describe_error(exc)
            if key is None:  # counted as a failure when its lookup ended (see _lookup)
                return describe_error(NotAuthenticated(BAD_KEY))
        if plan.roles is not None and key.role not in plan.roles:
            return Failure(403, "forbidden", forbidden_message(plan.roles, key.role))
        scope[SCOPE_KEY] = key
        scope["cxp.plan"] = plan
        return None

    async def _authorize_provisioning(self, scope: Scope, headers: Headers, plan: RoutePlan) -> Failure | None:
        """A device's provisioning key (audited either way), checked like an API key: before the body, throttled."""
        client = (scope.get("client") or ("unknown",))[0]
        wait = self.throttle.retry_after(client)
        if wait is not None:
            return Failure(429, "too_many_requests", f"too many failed authentications from {client}; "
                           f"retry in {wait} s", headers={"Retry-After": str(wait)})
        if self._in_flight.get(client, 0) >= self.throttle.limit:  # as for API keys: failures count when they end
            return Failure(429, "too_many_requests", f"too many key lookups in flight from {client}; retry in 1 s",
                           headers={"Retry-After": "1"})
        self._in_flight[client] = self._in_flight.get(client, 0) + 1
        try:
            token = await anyio.to_thread.run_sync(verify_provisioning, scope["app"].state,
                                                   headers.get(PROVISIONING_HEADER), client)
        except Exception as exc:  # noqa: BLE001 - the exception table answers it (401/403 refusals, 503)
            failure = describe_error(exc)
            if failure.status == 401:
                self.throttle.failed(client)
            return failure
        finally:
            self._in_flight[client] -= 1
            if self._in_flight[client] <= 0:
                del self._in_flight[client]
        scope[SCOPE_PROVISIONING] = token
        scope["cxp.plan"] = plan
        return None

    async def _lookup(self, state: Any, token: str, client: str) -> ApiKey | None:
        """The key of `token` from the database: one lookup per token at a time, shared by concurrent callers."""
        pending = self._lookups.get(token)
        if pending is None:
            pending = asyncio.ensure_future(anyio.to_thread.run_sync(verify_token, state, token))
            self._lookups[token] = pending
            self._in_flight[client] = self._in_flight.get(client, 0) + 1

            def done(future: asyncio.Future[ApiKey | None]) -> None:
                # The failure is counted before the lookup leaves the in-flight count, so no new lookup can slip
                # in between a lookup ending and its failure being seen.
                if not future.cancelled() and future.exception() is None and future.result() is None:
                    self.throttle.failed(client)
                self._lookups.pop(token, None)
                self._in_flight[client] -= 1
                if self._in_flight[client] <= 0:
                    del self._in_flight[client]

            pending.add_done_callback(done)
        return await asyncio.shield(pending)  # a caller that goes away does not cancel the others' lookup

    def _check_length(self, scope: Scope, headers: Headers) -> Failure | None:
        """413 up front when the declared Content-Length is over the route's limit."""
        declared = headers.get("content-length")
        if declared is None:
            return None
        if not declared.isdigit():
            return Failure(400, "bad_request", "the Content-Length header is not a number")
        plan: RoutePlan = scope["cxp.plan"]
        if int(declared) > plan.max_body:
            return _too_large(plan)
        return None

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with a `receive` that counts the body against its limit and its deadline."""
        plan: RoutePlan = scope["cxp.plan"]
        deadline = time.monotonic() + self.settings.body_timeout_s
        received = 0
        body_done = False
        refusal: list[Failure] = []
        started = replaced = False

        async def bounded_receive() -> Message:
            nonlocal received, body_done
            if body_done or refusal:
                return await receive()  # e.g. a streaming response listening for the client's disconnect
            try:
                with anyio.fail_after(max(deadline - time.monotonic(), 0.0)):
                    message = await receive()
            except TimeoutError:
                refusal.append(Failure(408, "request_timeout", "the request body did not arrive within "
                                       f"{self.settings.body_timeout_s:g} s"))
                raise BodyRefused(408, refusal[0].message) from None
            if message["type"] == "http.request":
                chunk = len(message.get("body", b""))
                received += chunk
                self.metrics.body_bytes.inc(chunk)
                body_done = not message.get("more_body", False)
                if received > plan.max_body:
                    refusal.append(_too_large(plan))
                    raise BodyRefused(413, refusal[0].message)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, replaced
            if message["type"] == "http.response.start" and refusal:
                # Whatever an inner layer made of the refusal (a 400 "error parsing the body", a 500), the
                # caller gets the 408/413 that happened.
                replaced = True
            if replaced:
                if message["type"] == "http.response.start":
                    started = True
                    await self._refuse(send, refusal[0], close=True)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, guarded_send)
        except Exception:
            if not refusal or started:
                raise
            await self._refuse(send, refusal[0], close=True)


def _too_large(plan: RoutePlan) -> Failure:
    limit = f"{plan.max_body / MIB:g} MiB" if plan.max_body >= MIB else f"{plan.max_body} bytes"
    return Failure(413, "too_large", f"the request body is larger than this endpoint's limit of {limit} "
                   f"(setting api.{plan.limit_name})")
