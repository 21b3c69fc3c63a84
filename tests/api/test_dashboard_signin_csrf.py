"""The sign-in form cannot be driven from another site (login CSRF: Origin, else Referer, must be the dashboard's
own), and dead sessions are purged by a task of the API process, not only when someone signs in (issue 11)."""

from __future__ import annotations

import hashlib
import time

import pytest
from fastapi.testclient import TestClient

from cxp.api.app import create_app
from cxp.store.apikeys import create_key
from cxp.store.db import connect

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_key(stack):
    with connect(stack.db) as conn:
        return create_key(conn, name="pytest sign-in csrf", role="product")


def _web(test_db_api) -> TestClient:
    """A cookie jar of its own on the shared, started app (not a `with`: that would run its shutdown)."""
    return TestClient(test_db_api.client.app, follow_redirects=False)


def _sessions_of(stack, key) -> int:
    with connect(stack.db) as conn:
        return conn.execute("SELECT count(*) FROM dashboard_sessions WHERE key_id = %s",
                            (key.key.key_id,)).fetchone()[0]


@pytest.mark.parametrize("headers", [
    {"Origin": "http://127.0.0.1:9999"},  # another port of the same host: SameSite does not tell them apart
    {"Origin": "http://testserver.evil.example"},
    {"Origin": "https://testserver"},  # another scheme is another origin
    {"Origin": "null"},  # a sandboxed frame or a file:// page
    {"Referer": "http://127.0.0.1:9999/attack.html"},  # no Origin: the Referer decides
])
def test_a_sign_in_posted_from_another_origin_is_refused(test_db_api, fresh_key, stack, headers):
    r = _web(test_db_api).post("/dashboard/login", data={"key": fresh_key.token, "next": "/dashboard"}, headers=headers)
    assert r.status_code == 403, r.text
    assert "sent from another site" in r.text and "login CSRF" in r.text
    assert not [c for c in r.headers.get_list("set-cookie") if c.startswith("cxp_session=")]
    assert _sessions_of(stack, fresh_key) == 0, "no session was opened"


@pytest.mark.parametrize("headers", [
    {"Origin": "http://testserver"},
    {"Origin": "http://testserver:80"},  # the default port, spelt out
    {"Referer": "http://testserver/dashboard/login?next=/dashboard"},
    {},  # neither: a script, not a browser another page can drive
])
def test_a_sign_in_from_the_dashboards_own_origin_works(test_db_api, fresh_key, stack, headers):
    r = _web(test_db_api).post("/dashboard/login", data={"key": fresh_key.token, "next": "/dashboard"}, headers=headers)
    assert r.status_code == 303 and r.headers["location"] == "/dashboard", r.text
    assert _sessions_of(stack, fresh_key) == 1


def test_pages_let_the_browser_send_their_origin_on_same_site_posts(test_db_api) -> None:
    # under "no-referrer" a browser sends `Origin: null` on every form post, and the sign-in form would refuse
    # its own page; "same-origin" sends the real origin here and nothing (not even the URL) to other sites
    assert _web(test_db_api).get("/dashboard/login").headers["referrer-policy"] == "same-origin"


def test_trusted_origins_admit_a_reverse_proxys_public_origin(stack, fresh_key):
    api = stack.api.model_copy(update={"trusted_origins": ["https://cxp.example.org"], "session_purge_s": 0})
    with TestClient(create_app(stack.model_copy(update={"api": api})), follow_redirects=False) as web:
        ok = web.post("/dashboard/login", data={"key": fresh_key.token}, headers={"Origin": "https://cxp.example.org"})
        refused = web.post("/dashboard/login", data={"key": fresh_key.token},
                           headers={"Origin": "https://other.example.org"})
    assert ok.status_code == 303 and refused.status_code == 403


def test_expired_sessions_are_purged_by_the_api_without_a_sign_in(stack, fresh_key):
    api = stack.api.model_copy(update={"session_purge_s": 0.2})
    with TestClient(create_app(stack.model_copy(update={"api": api})), follow_redirects=False) as web:
        r = web.post("/dashboard/login", data={"key": fresh_key.token})
        token = r.cookies.get("cxp_session") or r.headers["set-cookie"].split(";")[0].split("=", 1)[1]
        digest = hashlib.sha256(token.encode()).digest()
        with connect(stack.db) as conn:
            conn.execute("UPDATE dashboard_sessions SET expires_at = now() - interval '1 second'"
                         " WHERE token_sha256 = %s", (digest,))
        deadline = time.monotonic() + 30  # a bound for a loaded machine, not a speed claim
        while _sessions_of(stack, fresh_key) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _sessions_of(stack, fresh_key) == 0, "the expired session is still stored"
        assert web.app.state.sessions_purged >= 1


def test_no_purge_task_when_the_interval_is_zero(stack, fresh_key):
    api = stack.api.model_copy(update={"session_purge_s": 0})
    with TestClient(create_app(stack.model_copy(update={"api": api})), follow_redirects=False) as web:
        web.post("/dashboard/login", data={"key": fresh_key.token})
        with connect(stack.db) as conn:
            conn.execute("UPDATE dashboard_sessions SET expires_at = now() - interval '1 second' WHERE key_id = %s",
                         (fresh_key.key.key_id,))
        time.sleep(0.5)
        assert _sessions_of(stack, fresh_key) == 1 and not hasattr(web.app.state, "sessions_purged")
