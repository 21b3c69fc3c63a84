"""The CX measures page over HTTP on a referral fleet (April against March): earned growth per product beside NPS
with its scatter, the engagement rate and the capability ladder; role `product`; a plan that does not exist."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from tests.api.test_dashboard import _chart_data
from tests.fixtures.fleet import REFERRAL_SEEDS, TruthFleet

pytestmark = pytest.mark.integration


@pytest.fixture
def referral_web(make_api, referral_fleets: dict[int, TruthFleet]):
    api = make_api(referral_fleets[REFERRAL_SEEDS[0]].settings)
    client = TestClient(api.client.app, follow_redirects=False)
    try:
        yield api, client
    finally:
        client.close()


def test_measures_page_shows_the_api_figures(referral_web) -> None:
    api, web = referral_web
    r = web.get("/dashboard/measures?plan=hw-connect", headers=api.headers("product"))
    assert r.status_code == 200, r.text
    body = api.get("/v1/experience/earned-growth?plan=hw-connect", role="product").json()
    assert "April 2025 against March 2025" in r.text and "hw-connect@v1" in r.text
    for g in body["groups"]:
        row = re.search(rf"<tr><td>{g['key']['product']}</td>(.*?)</tr>", r.text, re.S)
        assert row, g["key"]
        assert f"{float(g['earned_growth_pct']):+,.1f} %" in row.group(1)
    spec = _chart_data(r.text)["earned-growth-nps"]
    assert sorted(spec["data"][0]["text"]) == sorted(
        g["key"]["product"] for g in body["groups"] if g["reason"] is None and g["nps"] is not None
    )
    assert "Engagement rate, latest period" in r.text and "Share of devices that reached each level" in r.text


def test_unknown_plan_is_said_on_the_page_and_roles_hold(referral_web) -> None:
    api, web = referral_web
    r = web.get("/dashboard/measures?plan=no-such-plan", headers=api.headers("product"))
    assert r.status_code == 200 and "no plan &#x27;no-such-plan&#x27;" in r.text
    assert web.get("/dashboard/measures", headers=api.headers("pricing")).status_code == 403
    bad = web.get("/dashboard/measures?month=April", headers=api.headers("product"))
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("text/html")
