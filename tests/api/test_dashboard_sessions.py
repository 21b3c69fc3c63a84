"""Dashboard sessions are not keys: an opaque cookie of a server-side session (stored hashed, expiring, revocable),
sign-in by POST only, logout by POST with a CSRF token, and /v1 deaf to every cookie."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from cxp.api.app import create_app
from cxp.store.apikeys import create_key, revoke_key
from cxp.store.db import connect
from cxp.store.sessions import create_session, csrf_token, get_session, purge_sessions

pytestmark = pytest.mark.integration


@pytest.fixture
def web(test_db_api) -> Iterator[TestClient]:
    """A client with a cookie jar of its own on the started app."""
    client = TestClient(test_db_api.client.app, follow_redirects=False)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def fresh_key(stack):
    """A product key of this test's own (tests revoke it)."""
    with connect(stack.db) as conn:
        return create_key(conn, name="pytest sessions", role="product")


def _session_cookie(response) -> str:
    """The one Set-Cookie of the session."""
    cookies = [c for c in response.headers.get_list("set-cookie") if c.startswith("cxp_session=")]
    assert len(cookies) == 1, response.headers
    return cookies[0]


def _sign_in(client: TestClient, token: str, next_url: str = "/dashboard") -> str:
    """POST the sign-in form; the session token the cookie carries."""
    r = client.post("/dashboard/login", data={"key": token, "next": next_url})
    assert r.status_code == 303 and r.headers["location"] == next_url, r.text
    return _session_cookie(r).split(";", 1)[0].split("=", 1)[1]


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert match, "no CSRF token in the page's sign-out form"
    return match.group(1)


def _replay(client: TestClient, session: str, path: str = "/dashboard"):
    """GET `path` with only the given session cookie (as a browser that kept an old copy would)."""
    return client.get(path, headers={"Cookie": f"cxp_session={session}"})


def _row(stack, session: str):
    with connect(stack.db) as conn:
        return conn.execute("SELECT key_id, role, revoked_at, expires_at - created_at FROM dashboard_sessions"
                            " WHERE token_sha256 = %s", (hashlib.sha256(session.encode()).digest(),)).fetchone()


def test_the_session_cookie_is_not_the_key(web, fresh_key, stack):
    r = web.post("/dashboard/login", data={"key": fresh_key.token, "next": "/dashboard"})
    assert r.status_code == 303
    cookie = _session_cookie(r)
    session = cookie.split(";", 1)[0].split("=", 1)[1]
    assert fresh_key.token not in cookie and session not in fresh_key.token and len(session) >= 43  # 256 bits
    attrs = cookie.lower()
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/dashboard" in attrs
    assert "secure" not in attrs  # plain http: a Secure cookie would never come back
    assert not [c for c in r.headers.get_list("set-cookie") if fresh_key.token in c]
    page = web.get("/dashboard")
    assert page.status_code == 200 and "pytest sessions" in page.text
    key_id, role, revoked, lifetime = _row(stack, session)
    assert (key_id, role, revoked) == (fresh_key.key.key_id, "product", None)
    assert lifetime == timedelta(seconds=stack.api.session_ttl_s) == timedelta(hours=8)


def test_the_cookie_is_secure_over_https(test_db_api, fresh_key):
    # Not as a context manager: leaving it would shut the shared app down.
    client = TestClient(test_db_api.client.app, base_url="https://testserver", follow_redirects=False)
    try:
        r = client.post("/dashboard/login", data={"key": fresh_key.token})
        assert r.status_code == 303
        assert "; secure" in _session_cookie(r).lower()
    finally:
        client.close()


def test_v1_refuses_every_cookie(test_db_api, web, fresh_key):
    session = _sign_in(web, fresh_key.token)
    anonymous = TestClient(test_db_api.client.app)
    for cookie in (f"cxp_key={fresh_key.token}", f"cxp_session={session}"):
        for method, path in (("GET", "/v1/experience/voice"), ("POST", "/v1/registry/accounts/import")):
            r = anonymous.request(method, path, headers={"Cookie": cookie})
            assert r.status_code == 401, (cookie[:12], path, r.text)
            assert r.json()["error"]["code"] == "not_authenticated"
    # The same key in a header is fine: the refusal is about the cookie, not the key.
    assert anonymous.get("/v1/experience/voice", headers={"X-API-Key": fresh_key.token}).status_code == 200


def test_a_key_in_the_url_does_not_sign_in(web, fresh_key):
    r = web.get("/dashboard/login", params={"key": fresh_key.token, "next": "/dashboard/health"})
    assert r.status_code == 400 and "paste it into this form" in r.text and 'type="password"' in r.text
    assert not r.headers.get_list("set-cookie")
    assert fresh_key.token not in r.text  # not echoed into the form either
    assert web.get("/dashboard").status_code == 303


def test_logout_ends_the_session_on_the_server(web, fresh_key, stack):
    session = _sign_in(web, fresh_key.token)
    page = web.get("/dashboard")
    assert page.status_code == 200
    token = _csrf(page.text)
    assert token == csrf_token(session) and token != session
    r = web.post("/dashboard/logout", data={"csrf": token})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
    assert "max-age=0" in _session_cookie(r).lower()
    assert _row(stack, session)[2] is not None  # revoked in the database, not only forgotten by the browser
    again = _replay(web, session)
    assert again.status_code == 303 and again.headers["location"].startswith("/dashboard/login")
    assert "max-age=0" in _session_cookie(again).lower()


def test_logout_by_get_is_not_allowed(web, fresh_key, stack):
    session = _sign_in(web, fresh_key.token)
    r = web.get("/dashboard/logout")
    assert r.status_code == 405
    assert _row(stack, session)[2] is None and web.get("/dashboard").status_code == 200


@pytest.mark.parametrize("data", [{}, {"csrf": ""}, {"csrf": "0" * 64}, {"csrf": "x"}], ids=str)
def test_logout_without_the_right_csrf_token_is_403(web, fresh_key, stack, data):
    session = _sign_in(web, fresh_key.token)
    r = web.post("/dashboard/logout", data=data)
    assert r.status_code == 403 and r.headers["content-type"].startswith("text/html")
    assert "CSRF" in r.text
    assert _row(stack, session)[2] is None and web.get("/dashboard").status_code == 200


def test_another_sessions_csrf_token_does_not_fit(web, test_db_api, fresh_key, stack):
    other = TestClient(test_db_api.client.app, follow_redirects=False)
    other_session = _sign_in(other, fresh_key.token)
    session = _sign_in(web, fresh_key.token)
    assert web.post("/dashboard/logout", data={"csrf": csrf_token(other_session)}).status_code == 403
    assert web.post("/dashboard/logout", headers={"X-CSRF-Token": csrf_token(session)}).status_code == 303
    assert _row(stack, session)[2] is not None and _row(stack, other_session)[2] is None


def test_an_expired_session_is_refused_and_purged(web, fresh_key, stack):
    session = _sign_in(web, fresh_key.token)
    digest = hashlib.sha256(session.encode()).digest()
    with connect(stack.db) as conn:
        conn.execute("UPDATE dashboard_sessions SET expires_at = now() - interval '1 second' "
                     "WHERE token_sha256 = %s", (digest,))
        assert get_session(conn, token=session) is None
    r = web.get("/dashboard/health")
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/login?next=/dashboard/health"
    with connect(stack.db) as conn:
        assert purge_sessions(conn) >= 1
    assert _row(stack, session) is None


def test_revoking_the_key_ends_its_sessions(web, test_db_api, fresh_key, stack):
    sessions = [_sign_in(TestClient(test_db_api.client.app, follow_redirects=False), fresh_key.token)
                for _ in range(2)]
    session = _sign_in(web, fresh_key.token)
    assert web.get("/dashboard").status_code == 200
    with connect(stack.db) as conn:
        revoke_key(conn, key_id=fresh_key.key.key_id)
    assert all(_row(stack, s)[2] is not None for s in [*sessions, session])
    assert web.get("/dashboard").status_code == 303
    assert _replay(web, sessions[0]).status_code == 303


def test_signing_in_again_ends_the_previous_session(web, fresh_key, stack):
    first = _sign_in(web, fresh_key.token)
    second = _sign_in(web, fresh_key.token)
    assert first != second
    assert _row(stack, first) is None  # ended, then purged as the new one was opened
    assert _row(stack, second)[2] is None
    assert _replay(web, first).status_code == 303 and _replay(web, second).status_code == 200


def test_sessions_are_stored_hashed(web, fresh_key, stack):
    session = _sign_in(web, fresh_key.token)
    with connect(stack.db) as conn:
        dump = conn.execute("SELECT string_agg(t::text, ' ') FROM dashboard_sessions t").fetchone()[0]
        stored = conn.execute("SELECT token_sha256 FROM dashboard_sessions WHERE key_id = %s",
                              (fresh_key.key.key_id,)).fetchall()
    assert session not in dump and fresh_key.token not in dump
    assert [bytes(s) for (s,) in stored] == [hashlib.sha256(session.encode()).digest()]


def test_store_refuses_a_session_for_a_revoked_key(stack, fresh_key):
    from cxp.store.errors import StoreError

    with connect(stack.db) as conn:
        opened = create_session(conn, key=fresh_key.key, ttl=timedelta(minutes=5))
        assert get_session(conn, token=opened.token).key.key_id == fresh_key.key.key_id
        revoke_key(conn, key_id=fresh_key.key.key_id)
        assert get_session(conn, token=opened.token) is None
        with pytest.raises(StoreError, match="revoked"):
            create_session(conn, key=fresh_key.key, ttl=timedelta(minutes=5))


def test_failed_sign_ins_are_throttled(stack, fresh_key):
    settings = stack.model_copy(update={"api": stack.api.model_copy(update={"auth_fail_limit": 3})})
    with TestClient(create_app(settings), follow_redirects=False) as client:
        bad = {"key": "cxp_000000000000_" + "z" * 43}
        assert [client.post("/dashboard/login", data=bad).status_code for _ in range(3)] == [401] * 3
        r = client.post("/dashboard/login", data={"key": fresh_key.token})  # even a good key waits now
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0 and "Too many failed sign-ins" in r.text
        assert not r.headers.get_list("set-cookie")
