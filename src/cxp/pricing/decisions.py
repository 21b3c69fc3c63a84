"""Pricing decisions over the recorded fleet: price solving, trade-off curves, experiment plans (keyword-only).

The cube is loaded once (`service.get_usage_cube`) and every candidate plan is billed on it in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

import numpy as np
import psycopg

from cxp.pricing.core.design import ExperimentPlan, design_experiment
from cxp.pricing.core.plans import BillableMetric, Plan
from cxp.pricing.core.solve import FreeParameter, MaximiseRevenue, RevenueTarget, SolveResult, solve
from cxp.pricing.core.tradeoff import TradeoffCurve, tradeoff_curve
from cxp.pricing.errors import PricingError, maps_numeric_errors
from cxp.pricing.metrics import ALL_ACCOUNTS, BillingPeriod, Cohort
from cxp.pricing.service import get_usage_cube
from cxp.store.errors import mapped_errors

# Distinct plans a search bills at most, for sizing a request before it runs (accounts × months × this).
TARGET_EVALUATIONS = 40


def expected_evaluations(*, goal: RevenueTarget | MaximiseRevenue | None, parameters: int, grid: int | None) -> int:
    """An upper estimate of the plans a solve (or, with `goal=None`, a trade-off curve) bills."""
    if isinstance(goal, RevenueTarget):
        return TARGET_EVALUATIONS
    points = (
        grid
        if grid is not None
        else (33 if parameters == 1 else 9)
        if goal is not None
        else (25 if parameters == 1 else 9)
    )
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
    cube = _family_cube(conn, baseline, plan, period, cohort, metrics, until)
    return solve(
        cube=cube,
        baseline=baseline,
        plan=plan,
        parameters=parameters,
        goal=goal,
        theta=theta,
        grid=grid,
        max_evaluations=max_evaluations,
    )


def _family_cube(conn: psycopg.Connection, baseline: Plan, plan: Plan, period: BillingPeriod, cohort: Cohort,
                 metrics: Sequence[BillableMetric], until: datetime | None):
    """The cohort's recorded usage for the baseline and the plan family (no health, no coverage needed)."""
    with mapped_errors():
        return get_usage_cube(conn=conn, plans=[baseline, plan], period=period, cohort=cohort, metrics=metrics,
                              until=until, with_health=False, with_coverage=False)


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
    cube = _family_cube(conn, baseline, plan, period, cohort, metrics, until)
    return tradeoff_curve(cube=cube, baseline=baseline, plan=plan, parameters=parameters, points=points, theta=theta)


@maps_numeric_errors
def get_experiment_plan(
    *,
    conn: psycopg.Connection,
    metric: BillableMetric,
    period: BillingPeriod,
    cohort: Cohort = ALL_ACCOUNTS,
    mde_relative: float | None = None,
    mde: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    arms: int = 2,
    ratio: float = 1.0,
    until: datetime | None = None,
) -> ExperimentPlan:
    """Sample size / MDE / duration of an account-level experiment on `metric`, from its recorded values in `period`.

    The guardrail's detectable health drop uses the health proxy over the same accounts and months.
    """
    cube = get_usage_cube(
        conn=conn, plans=(), period=period, cohort=cohort, metrics=(metric,), extra_usage=(metric.name,), until=until
    )
    if not cube.account_ids:
        raise PricingError("the cohort has no accounts in the period")
    v = cube.usage[metric.name]
    return design_experiment(
        metric=metric.name,
        values=v.values.astype(np.float64) / 10.0**v.decimals,
        active=cube.active_mask(),
        mde_relative=mde_relative,
        mde=mde,
        alpha=alpha,
        power=power,
        arms=arms,
        ratio=ratio,
        health=cube.health,
    )
