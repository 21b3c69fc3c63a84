"""The API's exceptions and the one error body every failure uses: {"error": {status, code, message, details}}."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cxp.alerts.errors import AlertError, AlertNotFound, RuleInvalid
from cxp.analytics.errors import AnalyticsError
from cxp.api.metrics import count_failure
from cxp.identity.broker import BrokerUnreachable
from cxp.identity.errors import IdentityError, PkiMissing
from cxp.identity.provisioning import ProvisioningRefused, UnknownProduct, UnknownProvisioningKey
from cxp.identity.service import CredentialConflict, UnknownCredential, UnknownDevice
from cxp.importer.errors import HistoryImportError, ImportBusy
from cxp.pricing.errors import PricingError
from cxp.store.errors import InvalidValue, ReferenceConflict, StoreError, StoreUnavailable

log = logging.getLogger("cxp.api")


class ErrorDetail(BaseModel):
    """One problem with a request: where (`loc`) and what."""

    loc: list[str | int] = []
    message: str


class ErrorInfo(BaseModel):
    """What went wrong, for people and for programs."""

    status: int
    code: str
    message: str
    details: list[ErrorDetail] = []


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx response."""

    error: ErrorInfo


class ApiError(Exception):
    """Root of the API's own errors; each carries its HTTP status and a stable code."""

    status = 400
    code = "bad_request"

    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, details: list[ErrorDetail] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class NotAuthenticated(ApiError):
    """No valid API key."""

    status, code = 401, "not_authenticated"


class Forbidden(ApiError):
    """The key's role may not use this endpoint."""

    status, code = 403, "forbidden"


class NotFound(ApiError):
    """The named resource does not exist."""

    status, code = 404, "not_found"


class Conflict(ApiError):
    """The resource exists already or is in a state that forbids the change."""

    status, code = 409, "conflict"


class Unprocessable(ApiError):
    """Well-formed but semantically invalid input."""

    status, code = 422, "invalid"


class TooManyRequests(ApiError):
    """The key has its limit of heavy requests running; retry after the seconds in Retry-After."""

    status, code = 429, "too_many_requests"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}


class ComputeBusy(ApiError):
    """Every computation slot stayed taken for as long as a request may wait; retry after Retry-After seconds."""

    status, code = 503, "compute_busy"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}


@dataclass(frozen=True)
class Failure:
    """How the API answers one exception: status, stable code, message, details and extra headers."""

    status: int
    code: str
    message: str
    details: list[ErrorDetail] = field(default_factory=list)
    headers: dict[str, str] | None = None


def _validation_details(errors: list[dict[str, Any]]) -> list[ErrorDetail]:
    return [ErrorDetail(loc=[p if isinstance(p, int) else str(p) for p in e.get("loc", ())], message=e.get("msg", ""))
            for e in errors]


_STATUS_CODES = {400: "bad_request", 401: "not_authenticated", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "too_large",
                 415: "unsupported_media_type", 422: "invalid", 429: "too_many_requests"}


def _api_error(exc: ApiError) -> Failure:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else exc.headers
    return Failure(exc.status, exc.code, exc.message, exc.details, headers)


def _request_invalid(exc: RequestValidationError) -> Failure:
    details = _validation_details(list(exc.errors()))
    first = details[0] if details else None
    where = ".".join(str(p) for p in first.loc) if first else ""
    return Failure(422, "invalid", f"invalid request: {where}: {first.message}" if first else "invalid request",
                   details)


def _model_invalid(exc: ValidationError) -> Failure:
    details = _validation_details(list(exc.errors()))
    return Failure(422, "invalid", f"invalid input: {details[0].message}" if details else "invalid input", details)


def _busy(exc: PoolTimeout) -> Failure:
    log.warning("no database connection free: %s", exc)
    return Failure(503, "busy", "every database connection is busy; retry shortly", headers={"Retry-After": "5"})


def _store_down(exc: StoreUnavailable) -> Failure:
    log.warning("database unavailable: %s", exc)
    return Failure(503, "unavailable", "the database is unavailable; retry shortly", headers={"Retry-After": "5"})


def _store(exc: StoreError) -> Failure:
    log.error("store error: %s", exc)
    return Failure(500, "store_error", "the database rejected the operation")


def _http(exc: StarletteHTTPException) -> Failure:
    return Failure(exc.status_code, _STATUS_CODES.get(exc.status_code, "error"), str(exc.detail),
                   headers=getattr(exc, "headers", None))


def _unexpected(exc: Exception) -> Failure:
    log.error("unhandled error", exc_info=exc)
    return Failure(500, "internal", "internal error; it has been logged")


# Every exception a view can raise → its answer; the most specific class wins (as with Starlette's handlers).
# The JSON handlers and the dashboard's error pages both render this table.
ERROR_TABLE: dict[type[Exception], Callable[[Any], Failure]] = {
    ApiError: _api_error,
    RequestValidationError: _request_invalid,
    ValidationError: _model_invalid,
    AnalyticsError: lambda exc: Failure(422, "invalid", str(exc)),
    AlertNotFound: lambda exc: Failure(404, "not_found", str(exc)),
    RuleInvalid: lambda exc: Failure(422, "invalid", str(exc)),
    AlertError: lambda exc: Failure(422, "invalid", str(exc)),
    PricingError: lambda exc: Failure(422, "invalid", str(exc)),
    ImportBusy: lambda exc: Failure(409, "conflict", str(exc)),
    HistoryImportError: lambda exc: Failure(422, "invalid", str(exc)),
    IdentityError: lambda exc: Failure(422, "invalid", str(exc)),
    UnknownDevice: lambda exc: Failure(404, "not_found", str(exc)),
    UnknownCredential: lambda exc: Failure(404, "not_found", str(exc)),
    UnknownProduct: lambda exc: Failure(404, "not_found", str(exc)),
    UnknownProvisioningKey: lambda exc: Failure(404, "not_found", str(exc)),
    CredentialConflict: lambda exc: Failure(409, "conflict", str(exc)),
    PkiMissing: lambda exc: Failure(409, "conflict", f"the platform CA is not set up: {exc}"),
    BrokerUnreachable: lambda exc: Failure(503, "unavailable", f"the broker did not answer: {exc}",
                                           headers={"Retry-After": "5"}),
    ProvisioningRefused: lambda exc: Failure(exc.status, "not_authenticated" if exc.status == 401 else "forbidden",
                                             str(exc)),
    PoolTimeout: _busy,
    StoreUnavailable: _store_down,
    InvalidValue: lambda exc: Failure(422, "invalid", f"a value in the request cannot be stored or searched: {exc}"),
    ReferenceConflict: lambda exc: Failure(409, "conflict", "a concurrent change conflicts with this one (a row it"
                                           f" refers to was removed, or one it adds exists); retry: {exc}"),
    StoreError: _store,
    StarletteHTTPException: _http,
    Exception: _unexpected,
}


def describe_error(exc: Exception) -> Failure:
    """The table's answer to `exc`: the entry of its nearest class."""
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls](exc)
    return _unexpected(exc)


def _json(failure: Failure) -> JSONResponse:
    info = ErrorInfo(status=failure.status, code=failure.code, message=failure.message, details=failure.details)
    return JSONResponse(ErrorBody(error=info).model_dump(mode="json"), status_code=failure.status,
                        headers=failure.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every exception of the table with the one error body."""

    async def render(request: Request, exc: Exception) -> JSONResponse:
        failure = describe_error(exc)
        count_failure(request, failure.code)
        return _json(failure)

    for cls in ERROR_TABLE:
        app.add_exception_handler(cls, render)
