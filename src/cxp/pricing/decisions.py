"""Pricing decisions over the recorded fleet: price solving and trade-off curves (keyword-only, the API calls these).

The cube is loaded once (`service.get_usage_cube`) and every candidate plan is billed on it in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

import psycopg

from cxp.pricing.core.plans import BillableMetric, Plan
from cxp.pricing.core.solve import FreeParameter, MaximiseRevenue, RevenueTarget, SolveResult, solve
from cxp.pricing.core.tradeoff import TradeoffCurve, tradeoff_curve
from cxp.pricing.errors import maps_numeric_errors
from cxp.pricing.metrics import ALL_ACCOUNTS, BillingPeriod, Cohort
from cxp.pricing.service import get_usage_cube
from cxp.store.errors import mapped_errors

# Distinct plans a search bills at most, for sizing a request before it runs (accounts × months × this).
TARGET_EVALUATIONS = 40


def expected_evaluations(*, goal: RevenueTarget | MaximiseRevenue | None, parameters: int, grid: int | None) -> int:
    """An upper estimate of the plans a solve (or, with `goal=None`, a trade-off curve) bills."""
    if isinstance(goal, RevenueTarget):
        return TARGET_EVALUATIONS
    points = grid if grid is not None else (33 if parameters == 1 else 9) if goal is not None else (
        25 if parameters == 1 else 9)
    return points**parameters + (60 if goal is not None else 0)


@maps_numeric_errors
def solve_prices(
    *,
    conn: psycopg.Connection,
    baseline: Plan,
    plan: Plan,
    parameters: Sequence[FreeParameter],
    goal: RevenueTarget | MaximiseRevenue,
    period: BillingPeriod,
    cohort: Cohort = ALL_ACCOUNTS,
    metrics: Sequence[BillableMetric] = (),
    theta: Decimal = Decimal("0.2"),
    grid: int | None = None,
    max_evaluations: int = 2000,
    until: datetime | None = None,
) -> SolveResult:
    """Solve `plan`'s free parameters for `goal` against `baseline` on the cohort's recorded usage."""
    with mapped_errors():
        cube = get_usage_cube(
            conn=conn, plans=[baseline, plan], period=period, cohort=cohort, metrics=metrics, until=until,
            with_health=False, with_coverage=False,
        )
    return solve(
        cube=cube, baseline=baseline, plan=plan, parameters=parameters, goal=goal, theta=theta, grid=grid,
        max_evaluations=max_evaluations,
    )


@maps_numeric_errors
def get_tradeoff_curve(
    *,
    conn: psycopg.Connection,
    baseline: Plan,
    plan: Plan,
    parameters: Sequence[FreeParameter],
    period: BillingPeriod,
    cohort: Cohort = ALL_ACCOUNTS,
    metrics: Sequence[BillableMetric] = (),
    theta: Decimal = Decimal("0.2"),
    points: int | None = None,
    until: datetime | None = None,
) -> TradeoffCurve:
    """The revenue × share-paying-more and revenue × volatility fronts of `plan`'s family on the cohort."""
    with mapped_errors():
        cube = get_usage_cube(
            conn=conn, plans=[baseline, plan], period=period, cohort=cohort, metrics=metrics, until=until,
            with_health=False, with_coverage=False,
        )
    return tradeoff_curve(cube=cube, baseline=baseline, plan=plan, parameters=parameters, points=points, theta=theta)
