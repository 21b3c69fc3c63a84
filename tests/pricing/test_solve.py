"""Price solving on a fleet: a neutral price re-bills within tolerance; a constrained optimum is a local best."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cxp.pricing.core import Plan, bill_period
from cxp.pricing.core.solve import (
    Evaluator,
    FreeParameter,
    MaximiseRevenue,
    RevenueTarget,
    apply_parameters,
    lattice_point,
    neighbours,
    solve,
)
from cxp.pricing.errors import PricingError
from cxp.tools.bench.backtest import synthetic_cube

BASE = Plan(
    plan_id="flat",
    version=1,
    name="flat",
    currency="EUR",
    components=[{"kind": "flat_fee", "id": "sub", "fee": "4.99"}],
)
UNIT = Plan(
    plan_id="ppu",
    version=1,
    name="ppu",
    currency="EUR",
    components=[
        {"kind": "usage", "id": "energy", "metric": "heating_kwh", "charge": {"model": "unit", "unit_price": "0.01"}}
    ],
)
HYBRID = Plan(
    plan_id="hyb",
    version=1,
    name="hyb",
    currency="EUR",
    components=[
        {
            "kind": "hybrid",
            "id": "energy",
            "metric": "heating_kwh",
            "base_fee": "2.00",
            "included": 100,
            "overage": {"model": "unit", "unit_price": "0.01"},
        }
    ],
)
PRICE = FreeParameter("energy", "charge.unit_price", Decimal("0.0001"), Decimal("0.2"), step=Decimal("0.0001"))


@pytest.fixture(scope="module")
def fleet():
    return synthetic_cube(accounts=300, periods=12, seed=7)


def _decimal_revenue(cube, plan: Plan) -> Decimal:
    act = cube.active_mask()
    total = Decimal(0)
    for i in range(cube.shape[0]):
        for j in range(cube.shape[1]):
            if act[i, j]:
                usage = {k: v.decimal_at((i, j)) for k, v in cube.usage.items()}
                total += bill_period(
                    plan=plan,
                    usage=usage,
                    period_index=max(int(cube.period_index[i, j]), 0),
                    account_id=cube.account_ids[i],
                ).total
    return total


def test_revenue_neutral_unit_price_rebills_within_tolerance(fleet):
    res = solve(
        cube=fleet, baseline=BASE, plan=UNIT, parameters=[PRICE], goal=RevenueTarget(), decimal_check_accounts=300
    )
    price = res.parameters["energy.charge.unit_price"]
    assert price % Decimal("0.0001") == 0 and Decimal("0.0001") <= price <= Decimal("0.2")
    assert res.feasible and not res.violations
    # Re-billed exactly, per account-month, with the Decimal path: within ±0.5% of the baseline's revenue.
    exact = _decimal_revenue(fleet, res.plan)
    assert exact == res.metrics.revenue == res.summary.revenue
    assert abs(exact - res.baseline_revenue) <= res.baseline_revenue * Decimal("0.005")
    assert res.decimal_check == (300, True)
    # It is the closest lattice price: one step either way is no closer to neutral.
    for other in (price - Decimal("0.0001"), price + Decimal("0.0001")):
        rev = _decimal_revenue(fleet, apply_parameters(plan=UNIT, parameters=[PRICE], values=[other]))
        assert abs(rev - res.baseline_revenue) >= abs(exact - res.baseline_revenue)
    assert res.evaluations < 40
    assert "brentq" in res.method and "converged" in res.stop_reason


def test_explicit_target_and_unreachable_target(fleet):
    base_rev = solve(cube=fleet, baseline=BASE, plan=UNIT, parameters=[PRICE], goal=RevenueTarget()).baseline_revenue
    up = solve(cube=fleet, baseline=BASE, plan=UNIT, parameters=[PRICE], goal=RevenueTarget(target=base_rev * 2))
    assert up.feasible and abs(up.metrics.revenue - base_rev * 2) <= base_rev * 2 * Decimal("0.005")
    narrow = FreeParameter("energy", "charge.unit_price", Decimal("0.0001"), Decimal("0.0010"), step=Decimal("0.0001"))
    out = solve(cube=fleet, baseline=BASE, plan=UNIT, parameters=[narrow], goal=RevenueTarget())
    assert not out.feasible and out.parameters["energy.charge.unit_price"] == Decimal("0.0010")
    assert "outside" in out.stop_reason and out.violations


def test_constrained_optimum_meets_constraints_and_no_neighbour_beats_it(fleet):
    params = [
        FreeParameter("energy", "base_fee", Decimal("0"), Decimal("8"), step=Decimal("0.01")),
        FreeParameter("energy", "overage.unit_price", Decimal("0"), Decimal("0.05"), step=Decimal("0.0005")),
    ]
    goal = MaximiseRevenue(max_shock_share=0.15, max_losers_share=0.40, max_p90_increase=0.30)
    res = solve(cube=fleet, baseline=BASE, plan=HYBRID, parameters=params, goal=goal)
    assert res.feasible, res.violations
    m = res.metrics
    assert m.shock_share <= 0.15 and m.losers_share <= 0.40 and m.p90_increase <= 0.30
    # An interior optimum (both parameters strictly inside their bounds) that earns more than the baseline.
    assert Decimal(0) < res.parameters["energy.overage.unit_price"] < Decimal("0.05") and m.revenue_delta > 0
    assert res.summary.revenue == m.revenue and res.decimal_check[1]
    # A fresh evaluator: every lattice neighbour (± one step on each axis and diagonals) is infeasible or earns ≤.
    ev = Evaluator(cube=fleet, baseline=BASE, template=HYBRID, parameters=params, theta=Decimal("0.2"))
    point = lattice_point(evaluator=ev, values=res.parameters)
    rev0, m0 = ev(point)
    assert m0 == m
    near = neighbours(evaluator=ev, point=point)
    assert len(near) >= 3
    for n in near:
        rev, mn = ev(n)
        assert goal.violations(mn) or rev <= rev0, (n, mn)
    # The constraints bind: without them the maximum runs to the bounds and earns more.
    free = solve(cube=fleet, baseline=BASE, plan=HYBRID, parameters=params, goal=MaximiseRevenue())
    assert free.metrics.revenue > m.revenue
    assert free.parameters == {"energy.base_fee": Decimal("8.00"), "energy.overage.unit_price": Decimal("0.0500")}


def test_solving_is_deterministic(fleet):
    params = [FreeParameter("energy", "overage.unit_price", Decimal("0"), Decimal("0.05"), step=Decimal("0.0005"))]
    goal = MaximiseRevenue(max_losers_share=0.2)
    a = solve(cube=fleet, baseline=BASE, plan=HYBRID, parameters=params, goal=goal)
    b = solve(cube=fleet, baseline=BASE, plan=HYBRID, parameters=params, goal=goal)
    assert (a.parameters, a.evaluations, a.stop_reason) == (b.parameters, b.evaluations, b.stop_reason)


def test_tier_boundary_moves_the_next_tier():
    plan = Plan(
        plan_id="grad",
        version=1,
        name="g",
        currency="EUR",
        components=[
            {
                "kind": "usage",
                "id": "e",
                "metric": "kwh",
                "charge": {
                    "model": "graduated",
                    "tiers": [{"lower": 0, "upper": 100, "unit_price": "0.01"}, {"lower": 100, "unit_price": "0.005"}],
                },
            }
        ],
    )
    p = FreeParameter("e", "charge.tiers.0.upper", Decimal("10"), Decimal("500"), step=Decimal("1"))
    moved = apply_parameters(plan=plan, parameters=[p], values=[Decimal("250")])
    tiers = moved.component("e").charge.tiers
    assert (tiers[0].upper, tiers[1].lower) == (Decimal("250"), Decimal("250"))


def test_bad_requests_are_pricing_errors(fleet):
    with pytest.raises(PricingError, match="no field"):
        apply_parameters(
            plan=UNIT, parameters=[FreeParameter("energy", "charge.nope", Decimal(0), Decimal(1))], values=[1]
        )
    with pytest.raises(PricingError, match="no component"):
        apply_parameters(plan=UNIT, parameters=[FreeParameter("x", "fee", Decimal(0), Decimal(1))], values=[1])
    with pytest.raises(PricingError, match="other than the baseline"):
        solve(cube=fleet, baseline=UNIT, plan=UNIT, parameters=[PRICE], goal=RevenueTarget())
    with pytest.raises(PricingError, match="exactly one"):
        solve(cube=fleet, baseline=BASE, plan=UNIT, parameters=[PRICE, PRICE], goal=RevenueTarget())
    with pytest.raises(PricingError, match="no multiple"):
        bad = FreeParameter("energy", "charge.unit_price", Decimal("0.011"), Decimal("0.019"), step=Decimal("0.01"))
        solve(cube=fleet, baseline=BASE, plan=UNIT, parameters=[bad], goal=RevenueTarget())
