"""The auth matrix: every /v1 endpoint × no key, each role; key revocation; error bodies."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from cxp.api.app import create_app
from cxp.store.apikeys import create_key, revoke_key, verify_key
from cxp.store.db import connect

pytestmark = pytest.mark.integration

GROUP_ROLE = {"experience": "product", "pricing": "pricing", "registry": "admin", "ingest": "admin",
              "credentials": "admin", "provisioning": "admin", "alerts": "product", "alert-rules": "admin",
              "dead-letters": "admin", "imports": "admin"}
# Authenticated by a device's provisioning key, not an API key (tests/api/test_credentials_api.py).
DEVICE_ROUTES = {"/v1/provision"}


def _v1_routes():
    """Every /v1 operation of the app's own OpenAPI document, with the role its group needs."""
    for path, operations in create_app().openapi()["paths"].items():
        if path.startswith("/v1/") and path not in DEVICE_ROUTES:
            for method in operations:
                yield method.upper(), path, GROUP_ROLE[path.split("/")[2]]


def _concrete(path: str) -> str:
    """A path with each {param} filled by a harmless value (typed params get a valid literal)."""
    fillers = {"level": "device", "kind": "accounts", "version": "1", "job_id": "00000000-0000-0000-0000-000000000000"}
    return re.sub(r"\{(\w+)\}", lambda m: fillers.get(m.group(1), "x1"), path)


ROUTES = sorted(set(_v1_routes()))


def test_every_v1_route_belongs_to_a_role_group() -> None:
    assert len(ROUTES) >= 20
    assert {r for _, _, r in ROUTES} == {"product", "pricing", "admin"}


@pytest.mark.parametrize(("method", "path", "role"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_auth_matrix(test_db_api, method: str, path: str, role: str) -> None:
    url = _concrete(path)
    anonymous = test_db_api.client.request(method, url)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json()["error"]["code"] == "not_authenticated"
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"
    bad = test_db_api.client.request(method, url, headers={"Authorization": "Bearer cxp_000000000000_" + "x" * 43})
    assert bad.status_code == 401
    for caller in ("product", "pricing", "admin"):
        r = test_db_api.client.request(method, url, headers=test_db_api.headers(caller))
        if caller in (role, "admin"):
            assert r.status_code not in (401, 403), (caller, r.text)
            assert r.status_code < 500, (caller, r.text)
        else:
            assert r.status_code == 403, (caller, r.text)
            assert role in r.json()["error"]["message"]


def test_x_api_key_header_works_like_bearer(test_db_api) -> None:
    r = test_db_api.client.get("/v1/experience/voice", headers={"X-API-Key": test_db_api.tokens["product"]})
    assert r.status_code == 200


def test_revoked_key_is_refused(stack) -> None:
    settings = stack.model_copy(update={"api": stack.api.model_copy(update={"key_cache_s": 0.0})})
    with connect(settings.db) as conn:
        new = create_key(conn, name="to revoke", role="product")
        assert verify_key(conn, token=new.token) is not None
        assert verify_key(conn, token=new.token[:-1] + ("A" if new.token[-1] != "A" else "B")) is None
    with TestClient(create_app(settings)) as client:
        headers = {"Authorization": f"Bearer {new.token}"}
        assert client.get("/v1/experience/voice", headers=headers).status_code == 200
        with connect(settings.db) as conn:
            assert revoke_key(conn, key_id=new.key.key_id).revoked_at is not None
        r = client.get("/v1/experience/voice", headers=headers)
        assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


def test_keys_are_stored_hashed(stack) -> None:
    with connect(stack.db) as conn:
        new = create_key(conn, name="hash check", role="pricing")
        stored = conn.execute("SELECT secret_sha256 FROM api_keys WHERE key_id = %s", (new.key.key_id,)).fetchone()[0]
    secret = new.token.split("_", 2)[2]
    assert secret.encode() not in bytes(stored) and len(bytes(stored)) == 32


def test_errors_share_one_body(test_db_api) -> None:
    for r in (test_db_api.get("/v1/experience/health?level=planet", role="product"),
              test_db_api.get("/v1/registry/devices/nope", role="admin"),
              test_db_api.get("/v1/nothing-here", role="admin")):
        body = r.json()
        assert set(body) == {"error"} and set(body["error"]) == {"status", "code", "message", "details"}
        assert body["error"]["status"] == r.status_code and body["error"]["message"]
    invalid = test_db_api.get("/v1/experience/health?level=planet", role="product").json()["error"]
    assert invalid["code"] == "invalid" and invalid["details"][0]["loc"] == ["query", "level"]


def test_operations_endpoints_need_no_key(test_db_api) -> None:
    assert test_db_api.client.get("/healthz").json() == {"status": "ok"}
    ready = test_db_api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    test_db_api.get("/v1/experience/voice", role="product")
    metrics = test_db_api.client.get("/metrics").text
    assert 'cxp_api_requests_total{method="GET",route="/v1/experience/voice",status="200"}' in metrics
