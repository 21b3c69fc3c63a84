"""Trade-off curves: fronts are monotone, contain the baseline, and no evaluated point dominates a front point."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from cxp.pricing.core.solve import FreeParameter
from cxp.pricing.core.tradeoff import pareto_front, tradeoff_curve
from cxp.pricing.errors import PricingError
from cxp.tools.bench.backtest import synthetic_cube
from tests.pricing.test_solve import BASE, HYBRID, UNIT


@pytest.fixture(scope="module")
def fleet():
    return synthetic_cube(accounts=300, periods=12, seed=11)


def test_pareto_front_by_hand():
    # gain, cost: (10, 0.1) (12, 0.3) (11, 0.2) (9, 0.05) (12, 0.4: dominated by (12, 0.3)) (8, 0.2: dominated)
    gain = [10, 12, 11, 9, 12, 8]
    cost = [0.1, 0.3, 0.2, 0.05, 0.4, 0.2]
    assert pareto_front(gain=gain, cost=cost) == (3, 0, 2, 1)
    assert pareto_front(gain=[5, 5], cost=[0.1, 0.1]) == (0,)  # an exact tie keeps the first
    assert pareto_front(gain=[5, 6], cost=[None, 0.2]) == (1,)


def _dominated(p, q, attr):
    """q dominates p on (revenue up, attr down)."""
    a, b = getattr(p.metrics, attr), getattr(q.metrics, attr)
    return q.metrics.revenue >= p.metrics.revenue and b <= a and (q.metrics.revenue > p.metrics.revenue or b < a)


@pytest.mark.parametrize(
    ("plan", "params"),
    [
        (
            UNIT,
            [FreeParameter("energy", "charge.unit_price", Decimal("0.005"), Decimal("0.05"), step=Decimal("0.0005"))],
        ),
        (
            HYBRID,
            [
                FreeParameter("energy", "base_fee", Decimal("0"), Decimal("8"), step=Decimal("0.01")),
                FreeParameter("energy", "overage.unit_price", Decimal("0"), Decimal("0.05"), step=Decimal("0.0005")),
            ],
        ),
    ],
)
def test_fronts_are_monotone_contain_the_baseline_and_are_undominated(fleet, plan, params):
    curve = tradeoff_curve(cube=fleet, baseline=BASE, plan=plan, parameters=params)
    assert curve.points[0].baseline and curve.points[0].metrics.losers_share == 0
    assert curve.baseline_on_losers_front and curve.losers_front[0] == 0
    assert len(curve.points) == curve.evaluations + 1 and len(curve.losers_front) >= 3
    for front, attr in ((curve.losers_front, "losers_share"), (curve.volatility_front, "volatility_cv")):
        pts = [curve.points[i] for i in front]
        for a, b in itertools.pairwise(pts):
            assert b.metrics.revenue > a.metrics.revenue and getattr(b.metrics, attr) > getattr(a.metrics, attr)
        for p in pts:
            assert not any(_dominated(p, q, attr) for q in curve.points)
        # Every point off the front is dominated by some point (the front is complete).
        for i, p in enumerate(curve.points):
            if i not in front and getattr(p.metrics, attr) is not None:
                assert any(_dominated(p, q, attr) for q in curve.points)


def test_family_limits(fleet):
    p = FreeParameter("energy", "charge.unit_price", Decimal("0.005"), Decimal("0.05"), step=Decimal("0.0005"))
    with pytest.raises(PricingError, match="one or two"):
        tradeoff_curve(cube=fleet, baseline=BASE, plan=UNIT, parameters=[p, p, p])
    with pytest.raises(PricingError, match="points per axis"):
        tradeoff_curve(cube=fleet, baseline=BASE, plan=UNIT, parameters=[p], points=1)
