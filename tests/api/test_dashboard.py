"""Dashboard over plain HTTP: sign-in and session cookie, roles, redirects, escaping, empty states, the embedded
chart data, and plotly.min.js served from the installed package."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from plotly.offline import get_plotlyjs

from cxp.analytics import service as analytics
from cxp.api.dashboard.render import el, json_script, safe_next
from cxp.store.apikeys import create_key, revoke_key
from cxp.store.db import connect

pytestmark = pytest.mark.integration


@pytest.fixture
def web(fleet_api) -> Iterator[TestClient]:
    """A client with a cookie jar of its own on the started fleet app (the shared client's jar stays clean)."""
    client = TestClient(fleet_api.client.app, follow_redirects=False)
    try:
        yield client
    finally:
        client.close()


def _cookie_header(response) -> str:
    cookies = [c for c in response.headers.get_list("set-cookie") if c.startswith("cxp_session=")]
    assert len(cookies) == 1, response.headers
    return cookies[0]


def _chart_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="dashboard-data">(.*?)</script>', html, re.S)
    assert match, "no embedded chart data"
    return json.loads(match.group(1))["charts"]


# ---------------------------------------------------------------- sign-in


def test_no_key_redirects_to_sign_in(web):
    r = web.get("/dashboard/health?weeks=6")
    assert r.status_code == 303
    assert r.headers["location"] == "/dashboard/login?next=/dashboard/health%3Fweeks%3D6"
    form = web.get(r.headers["location"])
    assert form.status_code == 200 and form.headers["content-type"].startswith("text/html")
    assert 'type="password"' in form.text and 'name="next" value="/dashboard/health?weeks=6"' in form.text


def test_sign_in_sets_an_httponly_strict_cookie(web, fleet_api):
    r = web.post("/dashboard/login", data={"key": fleet_api.tokens["product"], "next": "/dashboard/journey"})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/journey"
    cookie = _cookie_header(r).lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/dashboard" in cookie
    assert fleet_api.tokens["product"].lower() not in cookie  # an opaque session, not the key
    assert "secure" not in cookie  # plain http on the test server: a Secure cookie would never come back
    page = web.get("/dashboard/journey")
    assert page.status_code == 200 and 'data-chart="journey-funnel"' in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_bad_key_shows_the_form_with_an_error(web):
    r = web.post("/dashboard/login", data={"key": "cxp_000000000000_" + "x" * 40, "next": "/dashboard"})
    assert r.status_code == 401 and "not valid" in r.text and 'type="password"' in r.text
    assert not [c for c in r.headers.get_list("set-cookie") if c.startswith("cxp_session=")]


def test_revoked_key_cannot_sign_in(web, fleet_settings):
    with connect(fleet_settings.db) as conn:
        new = create_key(conn, name="pytest dashboard revoked", role="admin")
        revoke_key(conn, key_id=new.key.key_id)
    assert web.post("/dashboard/login", data={"key": new.token}).status_code == 401


def test_sign_in_by_form_post_goes_on(web, fleet_api):
    r = web.post("/dashboard/login", data={"key": fleet_api.tokens["admin"], "next": "/dashboard/disruptions"})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/disruptions"
    _cookie_header(r)
    assert web.get("/dashboard/pricing").status_code == 200


@pytest.mark.parametrize(("target", "expected"), [
    ("/dashboard/touchpoints?days=30", "/dashboard/touchpoints?days=30"),
    ("https://evil.example/dashboard", "/dashboard"),
    ("//evil.example/dashboard", "/dashboard"),
    ("/dashboard\\@evil.example", "/dashboard"),
    ("/v1/experience/health", "/dashboard"),
    (None, "/dashboard"),
])
def test_sign_in_goes_only_to_dashboard_pages(target, expected):
    assert safe_next(target) == expected


def test_stale_cookie_is_dropped(web):
    r = web.get("/dashboard", headers={"Cookie": "cxp_session=" + "y" * 43})
    assert r.status_code == 303 and r.headers["location"].startswith("/dashboard/login")
    assert "max-age=0" in _cookie_header(r).lower()


def test_sign_out_ends_the_session(web, fleet_api):
    web.post("/dashboard/login", data={"key": fleet_api.tokens["product"]})
    page = web.get("/dashboard/journey")
    assert page.status_code == 200
    r = web.post("/dashboard/logout", data={"csrf": re.search(r'name="csrf" value="(\w+)"', page.text)[1]})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
    assert "max-age=0" in _cookie_header(r).lower()
    assert web.get("/dashboard/journey").status_code == 303


def test_headers_work_for_scripts(web, fleet_api):
    r = web.get("/dashboard/journey", headers=fleet_api.headers("product"))
    assert r.status_code == 200


# ---------------------------------------------------------------- roles


def test_product_key_may_not_open_pricing(web, fleet_api):
    r = web.get("/dashboard/pricing", headers=fleet_api.headers("product"))
    assert r.status_code == 403 and r.headers["content-type"].startswith("text/html")
    assert "Not allowed" in r.text and "this page needs the admin or pricing role" in r.text
    assert 'href="/dashboard/login"' in r.text  # sign in with another key


def test_pricing_key_sees_only_pricing(web, fleet_api):
    headers = fleet_api.headers("pricing")
    assert web.get("/dashboard/health", headers=headers).status_code == 403
    home = web.get("/dashboard", headers=headers)
    assert home.status_code == 200
    assert 'href="/dashboard/pricing"' in home.text and 'href="/dashboard/health"' not in home.text
    assert "data-chart" not in home.text  # no fleet report for a pricing key
    assert web.get("/dashboard/pricing", headers=headers).status_code == 200


def test_pages_stay_out_of_the_api_schema(fleet_api):
    paths = fleet_api.client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/dashboard")]


# ---------------------------------------------------------------- content


def test_invalid_filter_is_an_html_page(web, fleet_api):
    r = web.get("/dashboard/health?weeks=0", headers=fleet_api.headers("product"))
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html") and "weeks" in r.text
    r = web.get("/dashboard/pricing?baseline=nope", headers=fleet_api.headers("pricing"))
    assert r.status_code == 422 and "unknown baseline plan" in r.text
    for query in ("theta=NaN", "theta=-1"):
        r = web.get(f"/dashboard/pricing?{query}", headers=fleet_api.headers("pricing"))
        assert r.status_code == 422 and "theta" in r.text
    r = web.get("/dashboard/health", params={"product": "a\x00b"}, headers=fleet_api.headers("product"))
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")


def test_reflected_filters_are_escaped(web, fleet_api):
    r = web.get("/dashboard/health", params={"product": "<script>alert(1)</script>"},
                headers=fleet_api.headers("product"))
    assert r.status_code == 200
    assert "<script>alert(1)" not in r.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text


def test_json_embedding_cannot_close_the_script():
    evil = {"name": "</script><script>alert(1)</script><!--", "amp": "a&b", "nan": float("nan")}
    html = json_script("d", evil)
    inner = html[len('<script type="application/json" id="d">'):-len("</script>")]
    assert "<" not in inner and ">" not in inner and "&" not in inner
    assert json.loads(inner) == {**evil, "nan": None}
    assert el("td", "<b>") == "<td>&lt;b&gt;</td>"


@pytest.mark.parametrize("path", ["/dashboard/health", "/dashboard/touchpoints", "/dashboard/journey",
                                  "/dashboard/disruptions"])
def test_unknown_product_says_not_enough_data(web, fleet_api, path):
    r = web.get(path, params={"product": "no-such-product"}, headers=fleet_api.headers("product"))
    assert r.status_code == 200 and "Not enough data" in r.text
    assert 'class="chart"' not in r.text and "plotly.min.js" not in r.text


def test_pricing_without_usage_says_not_enough_data(web, fleet_api):
    r = web.get("/dashboard/pricing?product=no-such-product", headers=fleet_api.headers("pricing"))
    assert r.status_code == 200 and "Not enough data: no recorded usage for no-such-product" in r.text


def test_health_chart_carries_the_service_scores(web, fleet_api, fleet_conn):
    r = web.get("/dashboard/health?weeks=12", headers=fleet_api.headers("product"))
    charts = _chart_data(r.text)
    fleet = analytics.get_health(conn=fleet_conn, level="fleet", weeks=12)
    trace = next(t for t in charts["health-score"]["data"] if t["name"] == "fleet")
    assert trace["y"] == pytest.approx([s.score for s in fleet.scores])
    assert trace["x"] == [s.period_start.isoformat() for s in fleet.scores]
    products = {t["name"] for t in charts["health-score"]["data"]} - {"fleet"}
    assert products == {"brew-c3", "ebike-s2", "thermo-x1"}
    assert {t["name"] for t in charts["health-components"]["data"]} == {
        "Reliability", "Efficiency", "Engagement", "Trajectory", "Voice"}


def test_planted_failure_is_where_to_concentrate(web, fleet_api, loaded_fleet):
    product, touchpoint = loaded_fleet.error_prone
    charts = _chart_data(web.get("/dashboard/touchpoints", headers=fleet_api.headers("product")).text)
    trace = next(t for t in charts[f"ipa-{product}"]["data"] if t["name"] == "concentrate here")
    assert touchpoint in trace["hovertext"]


def test_pricing_revenue_is_the_sum_of_the_bills(web, fleet_api):
    r = web.get("/dashboard/pricing?product=thermo-x1&theta=0.3", headers=fleet_api.headers("pricing"))
    assert r.status_code == 200 and "more than 30% above" in r.text
    charts = _chart_data(r.text)
    revenue = dict(zip(charts["pricing-revenue"]["data"][0]["x"], charts["pricing-revenue"]["data"][0]["y"],
                       strict=True))
    assert len(revenue) == 5 and next(iter(revenue)) == "hw-connect@v1"
    for box in charts["pricing-bills"]["data"]:  # fewer bills than the sampling cap: every one is there
        assert sum(box["y"]) == pytest.approx(revenue[box["name"]], abs=0.01)
    shock = charts["pricing-shock"]["data"][0]
    assert "hw-connect@v1" not in shock["x"] and all(0 <= y <= 100 for y in shock["y"])


def test_pricing_baseline_can_change(web, fleet_api):
    charts = _chart_data(web.get("/dashboard/pricing?baseline=hybrid",
                                 headers=fleet_api.headers("pricing")).text)
    assert charts["pricing-revenue"]["data"][0]["x"][0] == "hybrid@v1"
    assert "hybrid@v1" not in charts["pricing-winners"]["data"][0]["y"]


# ---------------------------------------------------------------- static files


def test_plotly_is_served_from_the_package(web):
    body = get_plotlyjs().encode()
    r = web.get("/dashboard/static/plotly.min.js?v=1", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert r.content == body and "content-encoding" not in r.headers
    assert "max-age=31536000" in r.headers["cache-control"] and "immutable" in r.headers["cache-control"]
    zipped = web.get("/dashboard/static/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and zipped.content == body  # httpx inflates it
    assert int(zipped.headers["content-length"]) < len(body) / 2
    again = web.get("/dashboard/static/plotly.min.js", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and not again.content


def test_page_assets_and_unknown_files(web):
    assert web.get("/dashboard/static/dashboard.js").headers["content-type"].startswith("text/javascript")
    assert web.get("/dashboard/static/dashboard.css").headers["content-type"].startswith("text/css")
    assert web.get("/dashboard/static/secrets.txt").status_code == 404
