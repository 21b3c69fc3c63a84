"""Willingness to pay on hand-made survey data with known answers."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import numpy as np
import pytest

from cxp.pricing.core.wtp import (
    VanWestendorpResponse,
    fit_elasticity,
    gabor_granger,
    gabor_granger_from_records,
    van_westendorp,
    van_westendorp_from_records,
)
from cxp.pricing.errors import PricingError


def _vw(offsets: tuple[int, int, int, int], extra: list[VanWestendorpResponse] = ()) -> list[VanWestendorpResponse]:
    d = [Decimal(x) for x in offsets]
    return [VanWestendorpResponse(str(i), i + d[0], i + d[1], i + d[2], i + d[3]) for i in range(1, 11)] + list(extra)


def test_van_westendorp_price_points():
    # tc(p) = (11 − p)/10, cheap = (13 − p)/10, expensive = (p − 5)/10, too expensive = (p − 7)/10 on the grid:
    # OPP: 11 − p = p − 7 → 9; IPP: 13 − p = p − 5 → 9; PMC: 11 − p = p − 5 → 8; PME: p − 7 = 13 − p → 10.
    bad = VanWestendorpResponse("x", Decimal(9), Decimal(3), Decimal(4), Decimal(5))
    res = van_westendorp(responses=_vw((0, 2, 5, 7), [bad]))
    assert res.n == 10 and res.dropped_inconsistent == 1
    assert res.optimal_price == pytest.approx(9)
    assert res.indifference_price == pytest.approx(9)
    assert res.acceptable_range == (pytest.approx(8), pytest.approx(10))
    assert (np.diff(res.too_cheap) <= 0).all() and (np.diff(res.too_expensive) >= 0).all()


def test_van_westendorp_interpolates_between_grid_prices():
    # too expensive = (p − 8)/10: 11 − p = p − 8 → 9.5, between the grid prices 9 and 10.
    res = van_westendorp(responses=_vw((0, 2, 5, 8)))
    assert res.optimal_price == pytest.approx(9.5)


def _records(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_van_westendorp_csv():
    text = "respondent_id,too_cheap,cheap,expensive,too_expensive\n" + "\n".join(
        f"r{i},{i},{i + 2},{i + 5},{i + 7}" for i in range(1, 11)
    )
    res = van_westendorp(responses=van_westendorp_from_records(records=_records(text)))
    assert res.optimal_price == pytest.approx(9)
    with pytest.raises(PricingError, match="missing"):
        van_westendorp_from_records(records=_records("respondent_id,too_cheap,cheap\nr1,1,2\n"))
    with pytest.raises(PricingError, match="at least two"):
        van_westendorp(responses=[])


def test_gabor_granger_demand_and_revenue_maximising_price():
    shares = {5: 9, 10: 7, 15: 4, 20: 2}  # buyers out of 10 at each price → revenue 45, 70, 60, 40
    rows = "respondent_id,price,would_buy\n" + "\n".join(
        f"r{i},{p},{'yes' if i < k else 'no'}" for p, k in shares.items() for i in range(10)
    )
    res = gabor_granger(answers=gabor_granger_from_records(records=_records(rows)))
    assert res.prices == (Decimal(5), Decimal(10), Decimal(15), Decimal(20))
    assert res.demand == (0.9, 0.7, 0.4, 0.2)
    assert res.revenue_maximising_price == Decimal(10)
    tie = gabor_granger(
        answers=gabor_granger_from_records(
            records=[
                {"price": "10", "would_buy": True},
                {"price": "20", "would_buy": True},
                {"price": "20", "would_buy": False},
            ]
        )
    )
    assert tie.revenue_maximising_price == Decimal(10)  # 10 · 1 = 20 · 0.5: the lower price
    with pytest.raises(PricingError, match="yes/no"):
        gabor_granger_from_records(records=[{"price": "1", "would_buy": "maybe"}])


def test_elasticity_fit():
    p = np.array([1.0, 2.0, 4.0, 8.0])
    fit = fit_elasticity(prices=p, quantities=100.0 * p**-1.5)
    assert fit.elasticity == pytest.approx(-1.5) and fit.r_squared == pytest.approx(1.0)
    assert fit.intercept == pytest.approx(np.log(100.0))
    rng = np.random.default_rng(0)
    p = rng.uniform(1, 10, 400)
    q = 50 * p**-0.8 * np.exp(rng.normal(0, 0.1, 400))
    fit = fit_elasticity(prices=p, quantities=q)
    assert fit.low < -0.8 < fit.high and fit.n == 400
    with pytest.raises(PricingError):
        fit_elasticity(prices=[1.0, 1.0], quantities=[2.0, 3.0])


def test_elasticity_from_experiment_arms():
    from cxp.pricing.core.experiments import ArmStats
    from cxp.pricing.core.wtp import fit_elasticity_from_arms

    arms = []
    for i, price in enumerate((1.0, 1.5, 2.0)):
        usage = 100.0 * price**-1.2
        revenue = Decimal(str(round(price * usage, 2)))
        arms.append(ArmStats(f"a{i}", f"p{i}@v1", 500, usage, revenue, revenue * 500, 70.0, None, None))
    fit = fit_elasticity_from_arms(arms=arms)
    assert fit.elasticity == pytest.approx(-1.2, abs=0.01) and fit.n == 3
