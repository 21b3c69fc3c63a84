"""The API's exceptions and the one error body every failure uses: {"error": {status, code, message, details}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cxp.analytics.errors import AnalyticsError
from cxp.pricing.errors import PricingError
from cxp.store.errors import InvalidValue, StoreError, StoreUnavailable

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


def _body(status: int, code: str, message: str, details: list[ErrorDetail] | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    info = ErrorInfo(status=status, code=code, message=message, details=details or [])
    return JSONResponse(ErrorBody(error=info).model_dump(mode="json"), status_code=status, headers=headers)


def _validation_details(errors: list[dict[str, Any]]) -> list[ErrorDetail]:
    return [ErrorDetail(loc=[p if isinstance(p, int) else str(p) for p in e.get("loc", ())], message=e.get("msg", ""))
            for e in errors]


_STATUS_CODES = {400: "bad_request", 401: "not_authenticated", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "too_large",
                 415: "unsupported_media_type", 422: "invalid", 429: "too_many_requests"}


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception the views can see to the one error body."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _body(exc.status, exc.code, exc.message, exc.details, headers)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(list(exc.errors()))
        first = details[0] if details else None
        where = ".".join(str(p) for p in first.loc) if first else ""
        message = f"invalid request: {where}: {first.message}" if first else "invalid request"
        return _body(422, "invalid", message, details)

    @app.exception_handler(ValidationError)
    async def _model_invalid(_: Request, exc: ValidationError) -> JSONResponse:
        details = _validation_details(list(exc.errors()))
        return _body(422, "invalid", f"invalid input: {details[0].message}" if details else "invalid input", details)

    @app.exception_handler(AnalyticsError)
    async def _analytics(_: Request, exc: AnalyticsError) -> JSONResponse:
        return _body(422, "invalid", str(exc))

    @app.exception_handler(PricingError)
    async def _pricing(_: Request, exc: PricingError) -> JSONResponse:
        return _body(422, "invalid", str(exc))

    @app.exception_handler(PoolTimeout)
    async def _busy(_: Request, exc: PoolTimeout) -> JSONResponse:
        log.warning("no database connection free: %s", exc)
        return _body(503, "busy", "every database connection is busy; retry shortly", headers={"Retry-After": "5"})

    @app.exception_handler(StoreUnavailable)
    async def _store_down(_: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return _body(503, "unavailable", "the database is unavailable; retry shortly", headers={"Retry-After": "5"})

    @app.exception_handler(InvalidValue)
    async def _invalid_value(_: Request, exc: InvalidValue) -> JSONResponse:
        return _body(422, "invalid", f"a value in the request cannot be stored or searched: {exc}")

    @app.exception_handler(StoreError)
    async def _store(_: Request, exc: StoreError) -> JSONResponse:
        log.error("store error: %s", exc)
        return _body(500, "store_error", "the database rejected the operation")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        return _body(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _body(500, "internal", "internal error; it has been logged")
