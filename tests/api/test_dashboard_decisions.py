"""The pricing-decisions dashboard page: neutral price, SVG curve with linked points, a point side by side."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from cxp.api.dashboard.decisions import pricing_decisions

pytestmark = pytest.mark.integration

PAGE = "/dashboard/pricing/decisions"


def test_page_shows_the_neutral_price_the_curve_and_a_point_side_by_side(pricing_fleet, test_db_api) -> None:
    headers = test_db_api.headers("pricing")
    r = test_db_api.client.get(PAGE, params={"product": "thermo-x1"}, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    data = pricing_decisions(conn=pricing_fleet.conn, product="thermo-x1", theta=Decimal("0.2"), price=None)
    price = next(iter(data.neutral.parameters.values()))
    assert f"Revenue-neutral price: {price} EUR/kWh" in html
    assert "<svg" in html and "<script" not in html  # drawn on the server, no script needed
    assert html.count("<svg") == 2  # revenue against customers paying more, and against bill volatility
    with_cv = sum(p.metrics.volatility_cv is not None for p in data.curve.points)
    assert html.count("<circle") == len(data.curve.points) + with_cv and len(data.curve.points) == 26
    links = re.findall(r'<a href="(/dashboard/pricing/decisions\?[^"]+)"><circle', html)
    assert len(links) == 2 * (len(data.curve.points) - 1)  # every plan but the baseline opens its side-by-side
    assert html.count('class="dot base"') == 2 and f"Side by side at {price} EUR/kWh" in html
    # Following a point's link shows that price next to the baseline.
    target = links[len(links) // 2].replace("&amp;", "&")
    chosen = re.search(r"price=([0-9.]+)", target).group(1)
    side = test_db_api.client.get(target, headers=headers)
    assert side.status_code == 200 and f"Side by side at {chosen} EUR/kWh" in side.text
    assert f"hw-ppu-kwh@v1 at {chosen}/kWh" in side.text and "hw-connect@v1 (baseline)" in side.text


def test_page_access_and_bad_filters(pricing_fleet, test_db_api) -> None:
    get = test_db_api.client.get
    assert get(PAGE, headers=test_db_api.headers("product")).status_code == 403
    for query in ("price=abc", "price=2", "price=0.00001", "theta=-1"):
        r = get(f"{PAGE}?{query}", headers=test_db_api.headers("pricing"))
        assert r.status_code == 422 and r.headers["content-type"].startswith("text/html"), query
    home = get("/dashboard", headers=test_db_api.headers("pricing"))
    assert f'href="{PAGE}"' in home.text
    empty = get(PAGE, params={"product": "no-such-product"}, headers=test_db_api.headers("pricing"))
    assert empty.status_code == 200 and "Not enough data" in empty.text
