"""FastAPI dependencies, all in one place: pool connections, heavy-request slots, the caller's key, roles, paging."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, TypeVar

import psycopg
from fastapi import Depends, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.concurrency import run_in_threadpool

from cxp.analytics.queries import lending_connections
from cxp.api.cache import ResultCache
from cxp.api.errors import Forbidden, NotAuthenticated
from cxp.api.jobs import JobRunner
from cxp.core.config import Settings
from cxp.identity.provisioning import authenticate_provisioning
from cxp.store.apikeys import ApiKey, split_token, touch_key, verify_key
from cxp.store.db import idle_connection
from cxp.store.errors import StoreError
from cxp.store.sessions import csrf_matches, csrf_token, get_session

T = TypeVar("T")
log = logging.getLogger("cxp.api.deps")
# The dashboard's session cookie: an opaque token of a server-side session (store/sessions.py), never a key, and
# not accepted by /v1 (which takes only the Authorization and X-API-Key headers: a browser never adds those itself).
SESSION_COOKIE = "cxp_session"
LEGACY_KEY_COOKIE = "cxp_key"  # what older releases kept the key itself in: dropped when seen
CSRF_FIELD = "csrf"
NO_KEY = "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
BAD_KEY = "the API key is not valid (unknown, malformed or revoked)"
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key in a header")


def get_settings_dep(request: Request) -> Settings:
    """The app's settings object."""
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_conn(request: Request) -> Iterator[psycopg.Connection]:
    """A pooled autocommit connection for the duration of the request."""
    with request.app.state.pool.connection() as conn:
        yield conn


ConnDep = Annotated[psycopg.Connection, Depends(get_conn)]


def get_light_conn(request: Request) -> Iterator[psycopg.Connection]:
    """A connection of the small pool for cheap requests (registry, ingest status), which analytics never holds."""
    with request.app.state.light_pool.connection() as conn:
        yield conn


LightConnDep = Annotated[psycopg.Connection, Depends(get_light_conn)]


@dataclass(frozen=True)
class Cached:
    """Runs a computation through the app's result cache, borrowing pool connections only while needed."""

    cache: ResultCache
    pool: ConnectionPool

    def __call__(self, name: str, compute: Callable[[psycopg.Connection], T], **params: Any) -> T:
        """`compute(conn)` cached under `name` and `params` (which must determine the result); a part of it with
        long reads of its own may borrow a second connection of the pool when one is free."""
        key = (name, tuple(sorted((k, _hashable(v)) for k, v in params.items())))

        def lending(conn: psycopg.Connection) -> T:
            with lending_connections(lambda: idle_connection(self.pool)):
                return compute(conn)

        return self.cache.get_or_compute(key, connection=self.pool.connection, compute=lending)

    def service(self, fn: Callable[..., T], /, **params: Any) -> T:
        """`fn(conn=…, **params)` cached under its name and its full bound arguments, defaults included,
        so the API and the dashboard asking the same question share one answer."""
        bound = inspect.signature(fn).bind_partial(**params)
        bound.apply_defaults()
        args = {k: v for k, v in bound.arguments.items() if k != "conn"}
        return self(f"{fn.__module__}.{fn.__qualname__}", lambda c: fn(conn=c, **params), **args)


def _hashable(value: Any) -> Any:
    if isinstance(value, list | tuple | range):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def get_jobs(request: Request) -> JobRunner:
    """The app's background job runner."""
    return request.app.state.jobs


JobsDep = Annotated[JobRunner, Depends(get_jobs)]


@dataclass
class KeyCache:
    """Verified tokens for a few seconds: a request costs no key lookup, a revocation lands within `ttl_s`."""

    ttl_s: float
    entries: dict[str, tuple[ApiKey, float]]

    def get(self, token: str) -> ApiKey | None:
        hit = self.entries.get(token)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def put(self, token: str, key: ApiKey) -> None:
        if len(self.entries) > 10_000:
            self.entries.clear()
        self.entries[token] = (key, time.monotonic() + self.ttl_s)


# Where the request guard (api/guard.py) leaves the key it verified from the headers, for the dependency below.
SCOPE_KEY = "cxp.api_key"


def token_from_headers(headers: Mapping[str, str]) -> str | None:
    """The presented token, by the same precedence as the dependency: Bearer, then X-API-Key (never a cookie)."""
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    bearer = credentials.strip() if scheme.lower() == "bearer" else ""
    return bearer or headers.get("x-api-key") or None


def verify_token(state: Any, token: str) -> ApiKey | None:
    """The active key of `token` via the app's key cache, else the database (blocking); None when not valid."""
    cache: KeyCache = state.key_cache
    key = cache.get(token)
    if key is None:
        if split_token(token) is None:
            return None  # malformed: no database round trip
        # A key check must not queue behind analytics: the read pool (a standby of a replicated database, so keys
        # are checked during a failover) when there is one, else the small pool.
        reads = state.light_pool if state.read_pool is state.pool else state.read_pool
        with reads.connection() as conn:
            key = verify_key(conn, token=token)
        if key is None:
            return None
        try:
            with state.light_pool.connection() as conn:
                touch_key(conn, key_id=key.key_id)
        except (StoreError, PoolTimeout) as exc:  # last use is a hint: the read must not fail for it
            log.warning("could not record the use of key %s: %s", key.key_id, exc)
        cache.put(token, key)
    return key


def get_current_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> ApiKey:
    """The caller's active API key (Bearer header or X-API-Key header; a cookie is not a credential here), else 401."""
    verified = request.scope.get(SCOPE_KEY)
    if verified is not None:
        return verified
    token = (bearer.credentials if bearer else None) or header
    if not token:
        raise NotAuthenticated(NO_KEY)
    key = verify_token(request.app.state, token)
    if key is None:
        raise NotAuthenticated(BAD_KEY)
    return key


CurrentKey = Annotated[ApiKey, Depends(get_current_key)]


def _cached(request: Request, key_id: str) -> Iterator[Cached]:
    """The app's result cache and main pool, holding one of the key's heavy-request slots (429 when none is free)."""
    with request.app.state.heavy_slots.hold(key_id):
        yield Cached(request.app.state.results, request.app.state.read_pool)


def get_cached(request: Request, key: CurrentKey) -> Iterator[Cached]:
    """`_cached` for a /v1 caller."""
    yield from _cached(request, key.key_id)


CachedDep = Annotated[Cached, Depends(get_cached)]


def get_heavy_conn(request: Request, key: CurrentKey) -> Iterator[psycopg.Connection]:
    """A main-pool connection for an uncached heavy computation, holding one of the key's heavy-request slots and a
    computation slot."""
    state = request.app.state
    with state.heavy_slots.hold(key.key_id), state.compute_gate.hold(), state.pool.connection() as conn:
        yield conn


HeavyConnDep = Annotated[psycopg.Connection, Depends(get_heavy_conn)]


def require_role(*roles: str) -> Callable[[ApiKey], ApiKey]:
    """A dependency admitting keys with one of `roles` (admin is always admitted)."""
    allowed = {*roles, "admin"}

    def check(key: CurrentKey) -> ApiKey:
        if key.role not in allowed:
            raise Forbidden(forbidden_message(allowed, key.role))
        return key

    check.roles = frozenset(allowed)  # type: ignore[attr-defined] - read by the request guard before the body
    return check


# ---------------------------------------------------------------- self-provisioning

# A device provisioning itself presents its product's provisioning key here (never an API key).
PROVISIONING_HEADER = "X-Provisioning-Key"
SCOPE_PROVISIONING = "cxp.provisioning_key"


def verify_provisioning(state: Any, token: str | None, client: str | None) -> str:
    """The token when it is a live provisioning key (blocking); else audited and ProvisioningRefused (401/403)."""
    with state.light_pool.connection() as conn:
        authenticate_provisioning(conn=conn, token=token, client=client)
    return token or ""


def get_provisioning_token(request: Request) -> str:
    """The caller's provisioning key, checked by the request guard before the body was read (else checked here)."""
    verified = request.scope.get(SCOPE_PROVISIONING)
    if verified is not None:
        return verified
    client = request.client.host if request.client else None
    return verify_provisioning(request.app.state, request.headers.get(PROVISIONING_HEADER), client)


get_provisioning_token.provisioning = True  # type: ignore[attr-defined] - read by the request guard
ProvisioningToken = Annotated[str, Depends(get_provisioning_token)]


# ---------------------------------------------------------------- dashboard


@dataclass(frozen=True)
class DashboardUser(ApiKey):
    """The key behind a dashboard request, with its session's CSRF token for the page's forms (None: by header)."""

    csrf: str | None = None
    session_token: str | None = field(default=None, repr=False)  # the cookie's value, to end it on logout


_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _dashboard_user(state: Any, session_token: str) -> DashboardUser | None:
    with state.pool.connection() as conn:
        session = get_session(conn, token=session_token)
    if session is None:
        return None
    key = {f.name: getattr(session.key, f.name) for f in fields(ApiKey)}
    return DashboardUser(**{**key, "role": session.role}, csrf=csrf_token(session_token), session_token=session_token)


async def get_dashboard_user(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> DashboardUser:
    """A dashboard page's caller: a key in the headers (scripts), else the session cookie; 401 otherwise.

    A state-changing request authenticated by the cookie must carry the session's CSRF token (form field `csrf`
    or header X-CSRF-Token), else 403: a cookie is sent by whatever page made the browser post.
    """
    token = (bearer.credentials if bearer else None) or header
    if token:
        key = await run_in_threadpool(verify_token, request.app.state, token)
        if key is None:
            raise NotAuthenticated(BAD_KEY)
        return DashboardUser(**{f.name: getattr(key, f.name) for f in fields(ApiKey)})
    session_token = request.cookies.get(SESSION_COOKIE)
    if not session_token:
        raise NotAuthenticated(NO_KEY)
    user = await run_in_threadpool(_dashboard_user, request.app.state, session_token)
    if user is None:
        raise NotAuthenticated("the dashboard session has ended (signed out, expired or its key revoked)")
    if request.method in _UNSAFE_METHODS:
        presented = request.headers.get("x-csrf-token")
        if presented is None and request.headers.get("content-type", "").startswith(
                ("application/x-www-form-urlencoded", "multipart/form-data")):
            value = (await request.form()).get(CSRF_FIELD)
            presented = value if isinstance(value, str) else None
        if not csrf_matches(session_token, presented):
            raise Forbidden("this form is missing its CSRF token or carries a wrong one: reload the page and retry")
    return user


DashboardKey = Annotated[DashboardUser, Depends(get_dashboard_user)]


def get_dashboard_cached(request: Request, user: DashboardKey) -> Iterator[Cached]:
    """`_cached` for dashboard pages, whose caller is a session (or a key in the headers), not /v1's key."""
    yield from _cached(request, user.key_id)


DashboardCachedDep = Annotated[Cached, Depends(get_dashboard_cached)]


def require_dashboard_role(*roles: str) -> Callable[[DashboardUser], DashboardUser]:
    """Like `require_role`, for dashboard pages (session cookie or headers)."""
    allowed = {*roles, "admin"}

    def check(user: DashboardKey) -> DashboardUser:
        if user.role not in allowed:
            raise Forbidden(forbidden_message(allowed, user.role))
        return user

    return check


DashboardProductKey = Annotated[DashboardUser, Depends(require_dashboard_role("product"))]
DashboardPricingKey = Annotated[DashboardUser, Depends(require_dashboard_role("pricing"))]


def forbidden_message(allowed: Iterable[str], role: str) -> str:
    """The 403 message: which roles the endpoint needs, which one the key has."""
    return f"this endpoint needs the {' or '.join(sorted(allowed))} role; the key has '{role}'"


ProductKey = Annotated[ApiKey, Depends(require_role("product"))]
PricingKey = Annotated[ApiKey, Depends(require_role("pricing"))]
AdminKey = Annotated[ApiKey, Depends(require_role("admin"))]


@dataclass(frozen=True)
class PageParams:
    """Which slice of a list the caller wants."""

    limit: int
    offset: int


def get_page(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Items per page")] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="Items to skip")] = 0,
) -> PageParams:
    """Paging parameters, capped at the configured maximum page size."""
    return PageParams(min(limit, request.app.state.settings.api.max_page_size), offset)


PageDep = Annotated[PageParams, Depends(get_page)]


@dataclass(frozen=True)
class KeysetPageParams(PageParams):
    """A slice of a list that also pages by keyset: `cursor` (a page's `next_cursor`) starts after its item."""

    cursor: str | None = None


def get_keyset_page(
    page: PageDep,
    cursor: Annotated[str | None, Query(min_length=1, max_length=500, description=(
        "Start after the last item of a page: pass its `next_cursor` (as cheap at page 1,000 as at page 1;"
        " `offset` then counts from there)"))] = None,
) -> KeysetPageParams:
    """Paging parameters of a list with keyset cursors."""
    return KeysetPageParams(page.limit, page.offset, cursor)


KeysetPageDep = Annotated[KeysetPageParams, Depends(get_keyset_page)]
