"""Trade-off curves: the Pareto front of revenue against the share of customers who pay more, and against volatility.

A family of plans is one template with one or two free parameters (`solve.FreeParameter`) on a grid
of their lattice; each member is billed exactly against the baseline (`solve.Evaluator`). The
baseline itself is a point of the family (it is the status quo a pricing team compares with).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from cxp.pricing.core.backtest import UsageCube, bill_cube
from cxp.pricing.core.plans import Plan
from cxp.pricing.core.solve import Evaluator, FreeParameter, Metrics, bill_metrics
from cxp.pricing.errors import PricingError


@dataclass(frozen=True, slots=True)
class TradeoffPoint:
    """One plan of the family (or the baseline) and its figures against the baseline."""

    parameters: dict[str, Decimal]  # empty for the baseline
    baseline: bool
    metrics: Metrics


@dataclass(frozen=True)
class TradeoffCurve:
    """Every evaluated point, and the indices of the two Pareto fronts, each sorted along its x axis."""

    points: tuple[TradeoffPoint, ...]  # the baseline first
    losers_front: tuple[int, ...]  # revenue up, share of customers paying more up
    volatility_front: tuple[int, ...]  # revenue up, mean per-customer CV of monthly bills up
    evaluations: int
    bounds: dict[str, tuple[Decimal, Decimal, Decimal]]

    @property
    def baseline_on_losers_front(self) -> bool:
        """Whether the baseline is on the revenue × losers front (it always is: 0 losers, nothing earns more)."""
        return 0 in self.losers_front


def pareto_front(*, gain: Sequence[Decimal | float], cost: Sequence[float | None]) -> tuple[int, ...]:
    """Indices of points no other point beats (gain ≥ and cost ≤, one strictly), sorted by cost; None costs skipped.

    Among exact ties the earliest index stays. Along the front both gain and cost rise strictly.
    """
    idx = [i for i, c in enumerate(cost) if c is not None and np.isfinite(c)]
    idx.sort(key=lambda i: (cost[i], -gain[i], i))
    out: list[int] = []
    best: Decimal | float | None = None
    for i in idx:
        if best is None or gain[i] > best:
            out.append(i)
            best = gain[i]
    return tuple(out)


def tradeoff_curve(
    *,
    cube: UsageCube,
    baseline: Plan,
    plan: Plan,
    parameters: Sequence[FreeParameter],
    points: int | None = None,
    theta: Decimal = Decimal("0.2"),
) -> TradeoffCurve:
    """Bill a grid of `plan`'s parameters (`points` per axis: 25 for one parameter, 9 for two) and both fronts."""
    if not 1 <= len(parameters) <= 2:
        raise PricingError("a trade-off curve spans one or two free parameters")
    n = points if points is not None else (25 if len(parameters) == 1 else 9)
    if not 2 <= n <= 201:
        raise PricingError("points per axis must be between 2 and 201")
    ev = Evaluator(cube=cube, baseline=baseline, template=plan, parameters=parameters, theta=theta)
    base_bills = bill_cube(plan=baseline, cube=cube)
    _, base_metrics = bill_metrics(bills=base_bills, base=base_bills, act=ev.act, theta=theta, rule=ev.rule)
    out = [TradeoffPoint({}, True, base_metrics)]
    axes = []
    for lo, hi in zip(ev.lattice.lo, ev.lattice.hi, strict=True):
        axes.append(sorted({int(round(v)) for v in np.linspace(lo, hi, min(n, hi - lo + 1))}))
    for ks in itertools.product(*axes):
        r = ev(ks)
        if r is not None:
            out.append(TradeoffPoint(ev.named(ks), False, r[1]))
    gain = [p.metrics.revenue for p in out]  # exact Decimals: ties are real ties
    return TradeoffCurve(
        points=tuple(out),
        losers_front=pareto_front(gain=gain, cost=[p.metrics.losers_share for p in out]),
        volatility_front=pareto_front(gain=gain, cost=[p.metrics.volatility_cv for p in out]),
        evaluations=ev.evaluations,
        bounds={
            p.name: (Decimal(lo) * s, Decimal(hi) * s, s)
            for p, lo, hi, s in zip(parameters, ev.lattice.lo, ev.lattice.hi, ev.lattice.steps, strict=True)
        },
    )
