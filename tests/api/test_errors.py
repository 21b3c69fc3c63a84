"""One exception table, two renderers: the API's JSON error body and the dashboard's HTML error page agree."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from psycopg_pool import PoolTimeout
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cxp.alerts.errors import AlertError, AlertNotFound, RuleInvalid
from cxp.analytics.errors import AnalyticsError
from cxp.api.errors import (
    ERROR_TABLE,
    ApiError,
    Conflict,
    Forbidden,
    NotAuthenticated,
    NotFound,
    Unprocessable,
    describe_error,
    install_error_handlers,
)
from cxp.api.routers.dashboard import DashboardRoute
from cxp.api.uploads import UnsupportedMediaType
from cxp.identity import BadCsr, CnMismatch, IdentityError, PkiMissing
from cxp.identity.broker import BrokerUnreachable
from cxp.identity.provisioning import (
    ProvisioningRefused,
    ProvisioningUnauthenticated,
    UnknownProduct,
    UnknownProvisioningKey,
)
from cxp.identity.service import CredentialConflict, UnknownCredential, UnknownDevice
from cxp.importer.errors import HistoryImportError, ImportBusy, ImportFileError
from cxp.pricing.errors import PricingError
from cxp.store.errors import InvalidValue, ReferenceConflict, StoreError, StoreUnavailable


def _validation_error() -> ValidationError:
    try:
        TypeAdapter(int).validate_python("seven")
    except ValidationError as exc:
        return exc
    raise AssertionError("'seven' validated as an int")


# Per table entry, exceptions it answers (subclasses included, as views raise them).
EXAMPLES: dict[type[Exception], list[Exception]] = {
    ApiError: [ApiError("bad"), Forbidden("this endpoint needs the admin role"), NotFound("no plan 'x'"),
               Conflict("exists"), Unprocessable("invalid"), UnsupportedMediaType("send text/csv")],
    RequestValidationError: [RequestValidationError([{"loc": ("query", "weeks"), "msg": "too small",
                                                      "type": "greater_than_equal"}])],
    ValidationError: [_validation_error()],
    AnalyticsError: [AnalyticsError("too few answers")],
    AlertNotFound: [AlertNotFound("no alert 7")],
    RuleInvalid: [RuleInvalid("params.kind: input tag 'x' does not match")],
    AlertError: [AlertError("bad alert input")],
    PricingError: [PricingError("tiers are not contiguous")],
    HistoryImportError: [ImportFileError("history.csv line 1: missing seq")],
    ImportBusy: [ImportBusy("history.csv is being imported by another process")],
    IdentityError: [BadCsr("the CSR's signature does not verify"), CnMismatch("the CSR is for 'a', not 'b'")],
    UnknownDevice: [UnknownDevice("device 'x' is not registered")],
    UnknownCredential: [UnknownCredential("no credential 7")],
    UnknownProduct: [UnknownProduct("product 'p' is not registered")],
    UnknownProvisioningKey: [UnknownProvisioningKey("no provisioning key 'k'")],
    CredentialConflict: [CredentialConflict("credential 7 is already revoked")],
    PkiMissing: [PkiMissing("ca.crt does not exist")],
    BrokerUnreachable: [BrokerUnreachable("connection refused")],
    ProvisioningRefused: [ProvisioningRefused("key k is revoked", reason="revoked"),
                          ProvisioningUnauthenticated("not valid", reason="wrong secret")],
    PoolTimeout: [PoolTimeout("no connection within 30 s")],
    StoreUnavailable: [StoreUnavailable("connection refused")],
    InvalidValue: [InvalidValue("NUL character")],
    ReferenceConflict: [ReferenceConflict("violates foreign key constraint \"devices_product_id_fkey\"")],
    StoreError: [StoreError("rejected")],
    StarletteHTTPException: [StarletteHTTPException(405, "Method Not Allowed")],
    Exception: [RuntimeError("boom"), ValueError("a bare value error")],
}
CASES = [exc for cls in ERROR_TABLE for exc in EXAMPLES.get(cls, [])]


@pytest.fixture(scope="module")
def client() -> TestClient:
    """An app with the API's handlers, one JSON route and one dashboard page that raise the case's exception."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/api/{case}")
    def api_route(case: int) -> None:
        raise CASES[case]

    pages = APIRouter(prefix="/dashboard", route_class=DashboardRoute)

    @pages.get("/{case}")
    def dashboard_page(case: int) -> None:
        raise CASES[case]

    app.include_router(pages)
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as test_client:
        yield test_client


def test_every_table_entry_has_examples() -> None:
    assert set(ERROR_TABLE) <= set(EXAMPLES), set(ERROR_TABLE) - set(EXAMPLES)
    assert {AnalyticsError, PoolTimeout} <= set(ERROR_TABLE)


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{type(e).__name__}-{i}" for i, e in enumerate(CASES)])
def test_json_and_page_give_the_same_status(client: TestClient, case: int) -> None:
    failure = describe_error(CASES[case])
    api = client.get(f"/api/{case}")
    assert api.status_code == failure.status
    assert api.headers["content-type"].startswith("application/json")
    error = api.json()["error"]
    assert (error["status"], error["code"], error["message"]) == (failure.status, failure.code, failure.message)
    page = client.get(f"/dashboard/{case}")
    assert page.status_code == api.status_code, page.text
    assert page.headers["content-type"].startswith("text/html") and 'class="error"' in page.text
    for header in ("Retry-After",):
        assert page.headers.get(header) == api.headers.get(header)


def test_without_a_key_the_api_says_401_and_the_dashboard_goes_to_sign_in(client: TestClient) -> None:
    CASES.append(NotAuthenticated("an API key is required"))
    try:
        case = len(CASES) - 1
        api = client.get(f"/api/{case}")
        assert api.status_code == 401 and api.headers["WWW-Authenticate"] == "Bearer"
        page = client.get(f"/dashboard/{case}")
        assert page.status_code == 303 and page.headers["location"].startswith("/dashboard/login")
    finally:
        CASES.pop()
