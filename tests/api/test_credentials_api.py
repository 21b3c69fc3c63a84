"""Credential and provisioning endpoints over real HTTP (uvicorn in a thread) and the real database: admin only,
provisioning keys refused and audited, the device count limit under concurrency, bulk CSV all or nothing."""

from __future__ import annotations

import csv
import io
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
import uvicorn

from cxp.api.app import create_app
from cxp.api.server import uvicorn_options
from cxp.core.config import Settings
from cxp.identity.files import PkiPaths, init_ca
from cxp.identity.pki import device_key_and_csr
from cxp.identity.tokens import verify_secret
from cxp.store.apikeys import ROLES, create_key
from cxp.store.broker_clients import BrokerClientUpdate, record_broker_clients
from cxp.store.db import connect
from tests.identity.test_credentials_service import private_settings

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Served:
    """The app on a free loopback port, a key per role."""

    url: str
    tokens: dict[str, str]

    def call(self, method: str, path: str, role: str | None = "admin", **kw) -> httpx.Response:
        """A request as `role` (None: no API key)."""
        headers = {**kw.pop("headers", {}), **({"X-API-Key": self.tokens[role]} if role else {})}
        return httpx.request(method, self.url + path, headers=headers, timeout=60, **kw)

    def provision(self, token: str, device_id: str, **body) -> httpx.Response:
        """A device provisioning itself (no API key)."""
        return self.call("POST", "/v1/provision", role=None, headers={"X-Provisioning-Key": token},
                         json={"device_id": device_id, **body})


@pytest.fixture(scope="module")
def served(stack: Settings, tmp_path_factory) -> Iterator[Served]:
    """uvicorn over the test database, its broker files and CA in a private directory (no sweep thread)."""
    base = tmp_path_factory.mktemp("creds-api")
    settings = private_settings(stack, base)
    settings = settings.model_copy(update={
        "credentials": settings.credentials.model_copy(update={"sweep_interval_s": 0}),
        "api": settings.api.model_copy(update={"auth_fail_limit": 1_000_000})})
    init_ca(paths=PkiPaths(base / "pki"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                           **uvicorn_options(settings.api)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.05)
    with connect(settings.db) as conn:
        tokens = {role: create_key(conn, name=f"creds {role}", role=role).token for role in ROLES}
    try:
        yield Served(f"http://127.0.0.1:{port}", tokens)
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def clean(db: psycopg.Connection, registered: list[str]) -> list[str]:
    """The registered test devices, no credentials, keys or audit."""
    db.execute("TRUNCATE device_credentials, provisioning_keys, provisioning_audit")
    return registered


def _new_key(served: Served, **body) -> dict:
    response = served.call("POST", "/v1/provisioning/keys", json={"product_id": "test-p1", "name": "factory A",
                                                                   "max_devices": 5, **body})
    assert response.status_code == 201, response.text
    return response.json()


ADMIN_ROUTES = [
    ("GET", "/v1/credentials"), ("GET", "/v1/credentials/1"), ("GET", "/v1/credentials/devices/dev-000"),
    ("POST", "/v1/credentials/devices/dev-000"), ("POST", "/v1/credentials/devices/dev-000/rotate"),
    ("POST", "/v1/credentials/devices/dev-000/revoke"), ("POST", "/v1/provisioning/keys"),
    ("GET", "/v1/provisioning/keys"), ("DELETE", "/v1/provisioning/keys/000000000000"),
    ("GET", "/v1/provisioning/audit"), ("POST", "/v1/provisioning/import"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_only_admin_keys_reach_credentials(served, clean, method, path) -> None:
    for role in ("product", "pricing"):
        assert served.call(method, path, role=role, json={}).status_code == 403
    assert served.call(method, path, role=None, json={}).status_code == 401


def test_admin_creates_rotates_and_revokes_with_state_in_the_device_view(served, clean, db) -> None:
    created = served.call("POST", "/v1/credentials/devices/dev-000", json={"kind": "token"})
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    stored = db.execute("SELECT secret_hash FROM device_credentials").fetchone()[0]
    assert verify_secret(secret, stored) and "secret_hash" not in created.text
    rotated = served.call("POST", "/v1/credentials/devices/dev-000/rotate", json={"kind": "token"}).json()
    assert rotated["issued"]["mqtt_username"] == "dev-000~2" and rotated["old"][0]["username"] == "dev-000"
    state = served.call("GET", "/v1/credentials/devices/dev-000").json()["state"]
    assert (state["kinds"], state["active"], state["in_grace"]) == (["token"], 1, 1)
    _key, csr = device_key_and_csr(device_id="dev-000")
    cert = served.call("POST", "/v1/credentials/devices/dev-000", json={"kind": "certificate", "csr": csr.decode()})
    assert cert.status_code == 201 and cert.json()["certificate_pem"].startswith("-----BEGIN CERTIFICATE")
    revoked = served.call("POST", "/v1/credentials/devices/dev-000/revoke", json={"reason": "stolen"}).json()
    assert len(revoked["revoked"]) == 3 and revoked["sessions_dropped"] is None
    state = served.call("GET", "/v1/credentials/devices/dev-000").json()["state"]
    assert (state["active"], state["revoked"]) == (0, 3)
    served.call("POST", "/v1/credentials/devices/dev-001", json={"kind": "token"})
    registry = {d["device_id"]: d["credentials"] for d in served.call("GET", "/v1/registry/devices").json()["items"]}
    assert registry["dev-000"] == {**state, "kinds": []} and registry["dev-001"]["kinds"] == ["token"]
    assert registry["dev-002"] == {"device_id": "dev-002", "kinds": [], "active": 0, "in_grace": 0, "revoked": 0}
    assert served.call("GET", "/v1/registry/devices/dev-001").json()["credentials"]["active"] == 1
    assert served.call("POST", "/v1/credentials/devices/nope", json={"kind": "token"}).status_code == 404
    wrong_cn = served.call("POST", "/v1/credentials/devices/dev-001",
                           json={"kind": "certificate", "csr": csr.decode()})
    assert wrong_cn.status_code == 422 and "dev-001" in wrong_cn.json()["error"]["message"]


def _audit(served: Served, key_id: str | None = None) -> list[dict]:
    return served.call("GET", "/v1/provisioning/audit", params={"key_id": key_id} if key_id else {}).json()["items"]


def test_provisioning_refusals_are_clear_and_audited(served, clean, db) -> None:
    key = _new_key(served, max_devices=1)
    key_id, token = key["key"]["key_id"], key["token"]
    wrong = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    refused = served.provision(wrong, "new-1")
    assert refused.status_code == 401 and "not valid" in refused.json()["error"]["message"]
    assert served.provision("cxpprov_000000000000_" + "x" * 43, "new-1").status_code == 401
    # An API key is not a provisioning key, and the body of a refused request is never read.
    assert served.call("POST", "/v1/provision", content=b"{not json", headers={
        "Content-Type": "application/json"}).status_code == 401
    ok = served.provision(token, "new-1")
    assert ok.status_code == 201 and ok.json()["mqtt_username"] == "new-1"
    assert db.execute("SELECT product_id FROM devices WHERE device_id = 'new-1'").fetchone()[0] == "test-p1"
    exhausted = served.provision(token, "new-2")
    assert exhausted.status_code == 403 and "provisioned its 1 device" in exhausted.json()["error"]["message"]
    taken = _new_key(served)
    assert served.provision(taken["token"], "dev-000").status_code == 409  # an existing device is never handed out
    expired = _new_key(served, expires_at=(datetime.now(UTC) - timedelta(minutes=1)).isoformat())
    response = served.provision(expired["token"], "new-3")
    assert response.status_code == 403 and "expired" in response.json()["error"]["message"]
    revoked = _new_key(served)
    assert served.call("DELETE", f"/v1/provisioning/keys/{revoked['key']['key_id']}").status_code == 200
    response = served.provision(revoked["token"], "new-4")
    assert response.status_code == 403 and "revoked" in response.json()["error"]["message"]
    history = [(a["outcome"], a["device_id"], a["reason"].split(":")[0]) for a in reversed(_audit(served, key_id))]
    # Refused before the body was read: the device id it would have sent is unknown.
    assert [h[:2] for h in history] == [("refused", None), ("provisioned", "new-1"), ("refused", None)]
    assert history[0][2] == "wrong secret" and history[2][2] == "exhausted"
    outcomes = [(a["key_id"], a["outcome"], a["reason"].split(":")[0]) for a in _audit(served)]
    assert (key_id, "refused", "wrong secret") in outcomes and (key_id, "refused", "exhausted") in outcomes
    assert ("000000000000", "refused", "unknown key") in outcomes
    assert (expired["key"]["key_id"], "refused", "expired") in outcomes
    assert (revoked["key"]["key_id"], "refused", "revoked") in outcomes
    assert (taken["key"]["key_id"], "refused", "CredentialConflict") in outcomes
    assert db.execute("SELECT used_count FROM provisioning_keys WHERE key_id = %s",
                      (taken["key"]["key_id"],)).fetchone()[0] == 0  # the refused attempt did not use a slot


def test_concurrent_provisioning_never_exceeds_the_key_limit(served, clean, db) -> None:
    key = _new_key(served, max_devices=4)
    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(lambda i: served.provision(key["token"], f"burst-{i:02d}").status_code, range(24)))
    assert statuses.count(201) == 4 and statuses.count(403) == 20
    assert db.execute("SELECT count(*) FROM devices WHERE device_id LIKE 'burst-%'").fetchone()[0] == 4
    assert db.execute("SELECT used_count FROM provisioning_keys").fetchone()[0] == 4


def _csv(rows: list[str]) -> dict:
    return {"file": ("batch.csv", ("device_id,product,kind,csr\n" + "\n".join(rows) + "\n").encode(), "text/csv")}


def test_bulk_csv_is_all_or_nothing_and_returns_the_secrets_once(served, clean, db) -> None:
    _key, csr = device_key_and_csr(device_id="f-2")
    csr_cell = csr.decode().strip().replace("\n", "\\n")
    bad = served.call("POST", "/v1/provisioning/import",
                      files=_csv(["f-1,test-p1,token,", f'f-2,test-p1,certificate,"{csr_cell}"', "f-3,nope,token,"]))
    assert bad.status_code == 422 and "line 4" in bad.json()["error"]["message"]
    assert db.execute("SELECT count(*) FROM devices WHERE device_id LIKE 'f-%'").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM device_credentials").fetchone()[0] == 0
    batch = ["f-1,test-p1,token,", f'f-2,test-p1,certificate,"{csr_cell}"', "dev-000,test-p1,token,"]
    good = served.call("POST", "/v1/provisioning/import", files=_csv(batch))
    assert good.status_code == 200, good.text
    rows = list(csv.DictReader(io.StringIO(good.text)))
    assert [r["device_id"] for r in rows] == ["f-1", "f-2", "dev-000"]
    hashes = dict(db.execute("SELECT username, secret_hash FROM device_credentials WHERE kind = 'token'"))
    assert verify_secret(rows[0]["secret"], hashes["f-1"]) and verify_secret(rows[2]["secret"], hashes["dev-000"])
    assert rows[1]["certificate_pem"].startswith("-----BEGIN CERTIFICATE") and not rows[1]["secret"]


def test_failed_provisioning_attempts_are_throttled_per_address(stack: Settings, clean, tmp_path) -> None:
    from fastapi.testclient import TestClient

    settings = private_settings(stack, tmp_path)
    settings = settings.model_copy(update={"api": settings.api.model_copy(update={"auth_fail_limit": 2})})
    bad = {"X-Provisioning-Key": "cxpprov_000000000000_" + "x" * 43}
    with TestClient(create_app(settings)) as client:
        statuses = [client.post("/v1/provision", headers=bad, json={"device_id": "t-1"}).status_code
                    for _ in range(3)]
    assert statuses == [401, 401, 429]


def test_the_device_view_shows_the_last_connection_over_all_usernames(served, clean, db) -> None:
    base = datetime.now(UTC).replace(microsecond=0)
    db.execute("DELETE FROM broker_clients WHERE device_id IN ('dev-001', 'dev-002')")  # other tests' rows
    record_broker_clients(db, updates=[
        BrokerClientUpdate("dev-001", "dev-001", connected=False, last_connected_at=base - timedelta(hours=2),
                           last_address="10.0.0.1", denied_publishes=2, last_denied_at=base - timedelta(hours=2),
                           last_denied_topic="devices/dev-002/telemetry"),
        BrokerClientUpdate("dev-001~2", "dev-001", connected=True, last_connected_at=base, last_address="10.0.0.2",
                           denied_publishes=1, last_denied_at=base, last_denied_topic="devices/dev-000/telemetry"),
    ])
    seen = served.call("GET", "/v1/registry/devices/dev-001").json()["connection"]
    assert seen["connected"] is True and seen["last_address"] == "10.0.0.2"
    assert datetime.fromisoformat(seen["last_connected_at"]) == base
    assert seen["denied_publishes"] == 3 and seen["last_denied_topic"] == "devices/dev-000/telemetry"
    listed = {d["device_id"]: d["connection"] for d in served.call("GET", "/v1/registry/devices").json()["items"]}
    assert listed["dev-001"] == seen and listed["dev-002"] is None  # never seen by the broker
    db.execute("DELETE FROM broker_clients WHERE device_id = 'dev-001'")
