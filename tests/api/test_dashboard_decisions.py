"""The pricing-decisions dashboard page: neutral price, SVG curve with linked points, a point side by side."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from cxp.pricing.decisions import get_decision_view

pytestmark = pytest.mark.integration

PAGE = "/dashboard/pricing/decisions"


def test_page_shows_the_neutral_price_the_curve_and_a_point_side_by_side(pricing_fleet, test_db_api) -> None:
    headers = test_db_api.headers("pricing")
    r = test_db_api.client.get(PAGE, params={"product": "thermo-x1"}, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    data = get_decision_view(conn=pricing_fleet.conn, product="thermo-x1")
    price = data.family.label(data.solved.parameters)
    assert f"Revenue-neutral price: {price} (" in html
    assert "<svg" in html and "<script" not in html  # drawn on the server, no script needed
    assert html.count("<svg") == 2  # revenue against customers paying more, and against bill volatility
    with_cv = sum(p.metrics.volatility_cv is not None for p in data.curve.points)
    assert html.count("<circle") == len(data.curve.points) + with_cv and len(data.curve.points) == 26
    links = re.findall(r'<a href="(/dashboard/pricing/decisions\?[^"]+)"><circle', html)
    assert len(links) == 2 * (len(data.curve.points) - 1)  # every plan but the baseline opens its side-by-side
    assert html.count('class="dot base"') == 2 and f"Side by side at {price}" in html
    # Following a point's link shows that price next to the baseline.
    target = links[len(links) // 2].replace("&amp;", "&")
    chosen = re.search(r"price=([0-9.]+)", target).group(1)
    side = test_db_api.client.get(target, headers=headers)
    label = data.family.label({data.family.parameters[0].name: Decimal(chosen)})
    assert side.status_code == 200 and f"Side by side at {label}" in side.text
    assert f"hw-ppu-kwh@v1 at {label}" in side.text and "hw-connect@v1 (baseline)" in side.text


def test_page_access_and_bad_filters(pricing_fleet, test_db_api) -> None:
    get = test_db_api.client.get
    assert get(PAGE, headers=test_db_api.headers("product")).status_code == 403
    for query in (
        "price=abc",
        "price=2",
        "price=0.00001",
        "theta=-1",
        "family=nope",
        "goal=min",
        "max_losers=2",
        "family=hybrid-kwh&price=0.01",
        "price=0.01&price=0.02",
        "family=hybrid-kwh&price=1.10&price=0.01",
    ):
        r = get(f"{PAGE}?{query}", headers=test_db_api.headers("pricing"))
        assert r.status_code == 422 and r.headers["content-type"].startswith("text/html"), query
    home = get("/dashboard", headers=test_db_api.headers("pricing"))
    assert f'href="{PAGE}"' in home.text
    empty = get(PAGE, params={"product": "no-such-product"}, headers=test_db_api.headers("pricing"))
    assert empty.status_code == 200 and "Not enough data" in empty.text


def test_two_parameter_family_solved_within_limits(pricing_fleet, test_db_api) -> None:
    """The most revenue with at most 30 % of customers paying more, over a base fee × price per kWh lattice."""
    params = {"product": "thermo-x1", "family": "hybrid-kwh", "goal": "max", "max_losers": "0.3"}
    r = test_db_api.client.get(PAGE, params=params, headers=test_db_api.headers("pricing"))
    assert r.status_code == 200
    view = get_decision_view(
        conn=pricing_fleet.conn, product="thermo-x1", family="hybrid-kwh", goal="max", max_losers=0.3
    )
    fam, solved = view.family, view.solved
    assert len(fam.parameters) == 2 and len(solved.parameters) == 2
    assert len(view.curve.points) == 1 + 9 * 9  # the baseline and a 9 × 9 grid
    if solved.feasible:
        assert solved.metrics.losers_share <= 0.3
        assert f"Most revenue within ≤ 30% of customers paying more: {fam.label(solved.parameters)}" in r.text
        # no point of the curve that meets the limit earns more
        best = max(p.metrics.revenue for p in view.curve.points if not p.baseline and p.metrics.losers_share <= 0.3)
        assert solved.metrics.revenue >= best
    else:
        assert "No plan of the family earns revenue within" in r.text
    assert f"Side by side at {fam.label(view.chosen)}" in r.text
    # each dot links to its own two values, and following one shows them side by side
    links = re.findall(r'<a href="(/dashboard/pricing/decisions\?[^"]+)"><circle', r.text)
    assert links and all(link.count("price=") == 2 and "family=hybrid-kwh" in link for link in links)
    target = links[-1].replace("&amp;", "&")
    values = [Decimal(v) for v in re.findall(r"price=([0-9.]+)", target)]
    side = test_db_api.client.get(target, headers=test_db_api.headers("pricing"))
    names = [p.name for p in fam.parameters]
    assert (
        side.status_code == 200 and f"Side by side at {fam.label(dict(zip(names, values, strict=True)))}" in side.text
    )


def test_neutral_price_with_an_allowance_held(pricing_fleet) -> None:
    """A neutral goal on a two-parameter family solves the price with the allowance held, and re-bills to neutral."""
    view = get_decision_view(
        conn=pricing_fleet.conn, product="thermo-x1", family="allowance-kwh", chosen=(Decimal("150"), Decimal("0.01"))
    )
    allowance, price = view.family.parameters
    assert view.held == {allowance.name: Decimal("150")} and list(view.solved.parameters) == [price.name]
    solved = view.solved
    if solved.feasible:
        assert abs(solved.metrics.revenue - solved.baseline_revenue) <= abs(solved.baseline_revenue) * Decimal("0.005")
    assert view.chosen == {allowance.name: Decimal("150"), price.name: Decimal("0.01")}
