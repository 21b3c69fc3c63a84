"""Pricing decisions over the recorded fleet: price solving, trade-off curves, experiment plans (keyword-only).

The cube is loaded once (`service.get_usage_cube`) and every candidate plan is billed on it in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import numpy as np
import psycopg

from cxp.pricing.core.backtest import BacktestResult, backtest
from cxp.pricing.core.design import ExperimentPlan, design_experiment
from cxp.pricing.core.plans import BillableMetric, Plan
from cxp.pricing.core.solve import (
    FreeParameter,
    MaximiseRevenue,
    RevenueTarget,
    SolveResult,
    apply_parameters,
    parameter_values,
    solve,
)
from cxp.pricing.core.tradeoff import TradeoffCurve, tradeoff_curve
from cxp.pricing.errors import PricingError, maps_numeric_errors
from cxp.pricing.examples import SolveFamily, example_metrics, example_plans, solve_families
from cxp.pricing.metrics import ALL_ACCOUNTS, BillingPeriod, Cohort
from cxp.pricing.service import get_data_span, get_usage_cube
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


def _family_cube(
    conn: psycopg.Connection,
    baseline: Plan,
    plan: Plan,
    period: BillingPeriod,
    cohort: Cohort,
    metrics: Sequence[BillableMetric],
    until: datetime | None,
):
    """The cohort's recorded usage for the baseline and the plan family (no health, no coverage needed)."""
    with mapped_errors():
        return get_usage_cube(
            conn=conn,
            plans=[baseline, plan],
            period=period,
            cohort=cohort,
            metrics=metrics,
            until=until,
            with_health=False,
            with_coverage=False,
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


# ---------------------------------------------------------------------------------------------
# The decisions page: one family of plans against the example baseline on a product's whole span

DECISION_BASELINE = "hw-connect"
DECISION_GOALS = ("neutral", "max")


@dataclass(frozen=True)
class DecisionView:
    """A family solved for a goal, its trade-off curve and a chosen point side by side (None + reason: no data)."""

    product: str
    family: SolveFamily
    goal: str
    period: BillingPeriod | None
    solved: SolveResult | None
    curve: TradeoffCurve | None
    chosen: dict[str, Decimal] | None
    side: BacktestResult | None
    held: dict[str, Decimal] = field(default_factory=dict)  # parameters held fixed while solving a neutral price
    constraints: MaximiseRevenue | None = None
    reason: str | None = None


def _check_chosen(family: SolveFamily, chosen: Sequence[Decimal]) -> None:
    if len(chosen) != len(family.parameters):
        raise PricingError(
            f"family {family.key} takes {len(family.parameters)} value(s) for "
            f"{', '.join(p.name for p in family.parameters)}; got {len(chosen)}"
        )
    for p, v in zip(family.parameters, chosen, strict=True):
        if not p.lower <= v <= p.upper or (p.step is not None and v % p.step != 0):
            raise PricingError(
                f"{p.name} = {v} is outside the family's lattice: {p.lower}–{p.upper} in steps of {p.step}"
            )


@maps_numeric_errors
def get_decision_view(
    *,
    conn: psycopg.Connection,
    product: str,
    family: str = "ppu-kwh",
    goal: str = "neutral",
    theta: Decimal = Decimal("0.2"),
    chosen: Sequence[Decimal] | None = None,
    max_losers: float | None = None,
    max_shock: float | None = None,
) -> DecisionView:
    """Solve `family` for `goal` (a revenue-neutral price, or the most revenue within the limits) and draw its curve.

    A neutral goal solves the family's last parameter (the price per kWh) with the others held at `chosen`
    (default: the template's values); `chosen` (one value per parameter) picks the point shown side by side.
    """
    families = solve_families()
    if family not in families:
        raise PricingError(f"unknown family {family!r}; one of {', '.join(families)}")
    if goal not in DECISION_GOALS:
        raise PricingError(f"unknown goal {goal!r}; one of {', '.join(DECISION_GOALS)}")
    fam = families[family]
    if chosen is not None:
        _check_chosen(fam, chosen)
    constraints = MaximiseRevenue(max_losers_share=max_losers, max_shock_share=max_shock) if goal == "max" else None
    span = get_data_span(conn=conn, product=product)
    if span.first_day is None or span.last_day is None:
        return DecisionView(
            product, fam, goal, None, None, None, None, None, reason=f"no recorded usage for {product} yet"
        )
    until = datetime.combine(span.last_day + timedelta(days=1), time(0), UTC)
    period = BillingPeriod.covering(start=datetime.combine(span.first_day, time(0), UTC), end=until)
    baseline = next(p for p in example_plans() if p.plan_id == DECISION_BASELINE)
    with mapped_errors():
        cube = get_usage_cube(
            conn=conn,
            plans=[baseline, fam.plan],
            period=period,
            cohort=Cohort(product=product),
            metrics=example_metrics(),
            until=until,
            with_health=False,
            with_coverage=False,
        )
    if not cube.active_mask().any():
        return DecisionView(
            product, fam, goal, period, None, None, None, None, reason=f"no active {product} accounts in the span"
        )
    params = list(fam.parameters)
    held: dict[str, Decimal] = {}
    if constraints is not None:
        solved = solve(cube=cube, baseline=baseline, plan=fam.plan, parameters=params, goal=constraints, theta=theta)
    else:
        fixed = params[:-1]
        values = list(chosen[:-1]) if chosen is not None else parameter_values(plan=fam.plan, parameters=fixed)
        held = {p.name: v for p, v in zip(fixed, values, strict=True)}
        template = apply_parameters(plan=fam.plan, parameters=fixed, values=values) if fixed else fam.plan
        solved = solve(
            cube=cube, baseline=baseline, plan=template, parameters=params[-1:], goal=RevenueTarget(), theta=theta
        )
    curve = tradeoff_curve(cube=cube, baseline=baseline, plan=fam.plan, parameters=params, theta=theta)
    picked = (
        dict(zip((p.name for p in params), chosen, strict=True))
        if chosen is not None
        else {**held, **solved.parameters}
    )
    at = apply_parameters(plan=fam.plan, parameters=params, values=[picked[p.name] for p in params])
    side = backtest(cube=cube, plans=[baseline, at], baseline=baseline.key, theta=theta)
    return DecisionView(product, fam, goal, period, solved, curve, picked, side, held, constraints)
