"""Price solving: free plan parameters on a lattice within bounds, solved for a revenue target or a constrained maximum.

Every candidate is billed exactly by the vectorised path (`backtest.bill_cube`, integer quanta), so
the objective and the constraints are step functions of the parameters; search methods are chosen for
that (brentq over the lattice-interpolated revenue; a coarse grid then a compass search on the lattice
for constrained maxima) and are deterministic: no random starts, ties keep the earlier point. Choices
are in docs/pricing.md ("Price solving").
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from cxp.pricing.core.backtest import BacktestResult, PlanSummary, UsageCube, backtest, bill_cube
from cxp.pricing.core.charges import bill_period
from cxp.pricing.core.integers import LIMIT
from cxp.pricing.core.plans import Plan
from cxp.pricing.errors import PlanValidationError, PricingError


@dataclass(frozen=True, slots=True)
class FreeParameter:
    """One free number of a plan: `field` (dotted path) of component `component`, searched in [lower, upper].

    Values are multiples of `step` (None = the plan's rounding quantum, i.e. the currency's minor unit).
    Paths: "fee", "price", "base_fee", "included", "charge.unit_price", "overage.package_size",
    "charge.tiers.1.unit_price"; "charge.tiers.<i>.upper" moves a tier boundary (tier i+1's lower follows).
    """

    component: str
    field: str
    lower: Decimal
    upper: Decimal
    step: Decimal | None = None

    @property
    def name(self) -> str:
        """`component.field`, the key of this parameter in results."""
        return f"{self.component}.{self.field}"


@dataclass(frozen=True, slots=True)
class RevenueTarget:
    """Hit a revenue: `target` (None = the baseline plan's revenue, i.e. neutral) within ± `tolerance` (a share)."""

    target: Decimal | None = None
    tolerance: Decimal = Decimal("0.005")


@dataclass(frozen=True, slots=True)
class MaximiseRevenue:
    """Maximise revenue subject to upper limits on shares of the fleet (None = no limit).

    `max_shock_share`: customer-periods with bill_new / bill_old > 1 + θ; `max_losers_share`: accounts
    paying more over the period; `max_p90_increase`: the 90th percentile of accounts' relative change of
    their period total (accounts with a positive baseline total).
    """

    max_shock_share: float | None = None
    max_losers_share: float | None = None
    max_p90_increase: float | None = None

    def violations(self, m: Metrics) -> list[str]:
        """Which constraints `m` breaks (empty = feasible)."""
        out = []
        if self.max_shock_share is not None and m.shock_share > self.max_shock_share:
            out.append(f"shock share {m.shock_share:.4f} > {self.max_shock_share}")
        if self.max_losers_share is not None and m.losers_share > self.max_losers_share:
            out.append(f"losers share {m.losers_share:.4f} > {self.max_losers_share}")
        if self.max_p90_increase is not None and m.p90_increase is not None and m.p90_increase > self.max_p90_increase:
            out.append(f"p90 increase {m.p90_increase:.4f} > {self.max_p90_increase}")
        return out


@dataclass(frozen=True, slots=True)
class Metrics:
    """One candidate's figures against the baseline (money exact, shares as floats)."""

    revenue: Decimal
    revenue_delta: Decimal
    revenue_change: float | None  # revenue / baseline revenue − 1
    shock_share: float
    losers_share: float
    p90_increase: float | None
    volatility_cv: float | None


@dataclass(frozen=True)
class SolveResult:
    """The solved parameters, the solved plan re-billed exactly, and how the search went."""

    parameters: dict[str, Decimal]
    plan: Plan
    metrics: Metrics
    baseline_revenue: Decimal
    target_revenue: Decimal | None
    feasible: bool  # within tolerance (target) or every constraint met (maximum)
    violations: tuple[str, ...]
    evaluations: int
    method: str
    stop_reason: str
    bounds: dict[str, tuple[Decimal, Decimal, Decimal]]  # name → (lower, upper, step) as searched
    summary: PlanSummary  # the full backtest figures of the solved plan vs the baseline
    decimal_check: tuple[int, bool]  # accounts re-billed with the Decimal path, all equal
    timings: dict[str, float] = field(default_factory=dict)  # seconds: search, rebill, decimal_check
    trace: tuple[tuple[dict[str, Decimal], Metrics], ...] = field(default=(), repr=False)


# ---------------------------------------------------------------------------------------------
# Plans from parameter values


def _walk(node: Any, parts: list[str]) -> tuple[Any, str | int]:
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node[p]
    last = parts[-1]
    return node, (int(last) if isinstance(node, list) else last)


def _listify(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _listify(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_listify(v) for v in x]
    return x


def apply_parameters(*, plan: Plan, parameters: Sequence[FreeParameter], values: Sequence[Decimal]) -> Plan:
    """`plan` with each parameter set to its value (a tier's upper bound moves the next tier's lower)."""
    data = _listify(plan.model_dump())
    comps = {c["id"]: c for c in data["components"]}
    for p, v in zip(parameters, values, strict=True):
        if p.component not in comps:
            raise PricingError(f"plan {plan.key} has no component {p.component!r}")
        parts = p.field.split(".")
        try:
            node, key = _walk(comps[p.component], parts)
            if isinstance(key, int) and key >= len(node) or isinstance(key, str) and key not in node:
                raise KeyError(key)
            node[key] = v
            if len(parts) >= 3 and parts[-1] == "upper" and parts[-3] == "tiers":
                tiers = _walk(comps[p.component], parts[:-1])[0]
                i = int(parts[-2])
                if i + 1 < len(tiers):
                    tiers[i + 1]["lower"] = v
        except (KeyError, IndexError, ValueError, TypeError):
            raise PricingError(f"component {p.component!r} has no field {p.field!r}") from None
    return Plan.model_validate(data)


def parameter_values(*, plan: Plan, parameters: Sequence[FreeParameter]) -> list[Decimal]:
    """The values `plan` has today at each parameter's path (the inverse of `apply_parameters`)."""
    comps = {c["id"]: c for c in _listify(plan.model_dump())["components"]}
    out = []
    for p in parameters:
        node, key = _walk(comps[p.component], p.field.split("."))
        out.append(Decimal(str(node[key])))
    return out


# ---------------------------------------------------------------------------------------------
# Evaluating candidates


class _Lattice:
    """Each parameter's values k · step for integers k in [k_lo, k_hi]."""

    def __init__(self, parameters: Sequence[FreeParameter], quantum: Decimal) -> None:
        self.steps, self.lo, self.hi = [], [], []
        for p in parameters:
            step = p.step if p.step is not None else quantum
            if step <= 0 or p.lower > p.upper or p.lower < 0:
                raise PricingError(f"parameter {p.name}: need 0 ≤ lower ≤ upper and step > 0")
            k_lo = int((p.lower / step).to_integral_value(rounding="ROUND_CEILING"))
            k_hi = int((p.upper / step).to_integral_value(rounding="ROUND_FLOOR"))
            if k_lo > k_hi:
                raise PricingError(f"parameter {p.name}: no multiple of {step} lies in [{p.lower}, {p.upper}]")
            self.steps.append(step)
            self.lo.append(k_lo)
            self.hi.append(k_hi)

    def values(self, ks: Sequence[int]) -> list[Decimal]:
        """The parameter values of lattice point `ks`."""
        return [Decimal(k) * s for k, s in zip(ks, self.steps, strict=True)]

    def inside(self, ks: Sequence[int]) -> bool:
        """Whether `ks` is within the bounds."""
        return all(lo <= k <= hi for k, lo, hi in zip(ks, self.lo, self.hi, strict=True))


def bill_metrics(
    *, bills: np.ndarray, base: np.ndarray, act: np.ndarray, theta: Decimal, rule: Any
) -> tuple[int, Metrics]:
    """Revenue (quanta) and the figures of `bills` against `base` bills (both int64 quanta, accounts × months)."""
    total = int(bills[act].sum())
    base_total = int(base[act].sum())
    acct = act.any(axis=1)
    n_acc, n_cells = int(acct.sum()), int(act.sum())
    num, den = theta.as_integer_ratio()
    old_c, new_c = base[act], bills[act]
    if max(int(old_c.max(initial=0)), int(new_c.max(initial=0))) * (den + num) >= LIMIT:
        old_c, new_c = old_c.astype(object), new_c.astype(object)
    shock = np.where(old_c > 0, new_c * den > old_c * (den + num), new_c > 0)
    new_tot, old_tot = bills.sum(axis=1), base.sum(axis=1)
    losers = int(((new_tot > old_tot) & acct).sum())
    pos = acct & (old_tot > 0)
    p90 = None
    if pos.any():
        rel = np.sort(new_tot[pos] / old_tot[pos] - 1.0)
        p90 = float(rel[max(int(np.ceil(0.9 * rel.size)) - 1, 0)])
    months = act.sum(axis=1)
    mb = np.where(act, bills, 0).astype(np.float64)
    mean = mb.sum(axis=1) / np.maximum(months, 1)
    var = np.where(act, (mb - mean[:, None]) ** 2, 0.0).sum(axis=1) / np.maximum(months - 1, 1)
    ok = (months >= 2) & (mean > 0)
    cv = float(np.mean(np.sqrt(var[ok]) / mean[ok])) if ok.any() else None
    revenue, base_rev = rule.from_quanta(total), rule.from_quanta(base_total)
    return total, Metrics(
        revenue=revenue,
        revenue_delta=revenue - base_rev,
        revenue_change=(total / base_total - 1.0) if base_total else None,
        shock_share=int(np.count_nonzero(shock)) / n_cells if n_cells else 0.0,
        losers_share=losers / n_acc if n_acc else 0.0,
        p90_increase=p90,
        volatility_cv=cv,
    )


class Evaluator:
    """Bills lattice points of a template plan against a baseline, caching each point; counts evaluations."""

    def __init__(
        self, *, cube: UsageCube, baseline: Plan, template: Plan, parameters: Sequence[FreeParameter], theta: Decimal
    ) -> None:
        if not parameters:
            raise PricingError("give at least one free parameter")
        if template.key == baseline.key:
            raise PricingError("the plan to solve needs a key (plan_id@version) other than the baseline's")
        if (template.currency, template.rounding.quantum) != (baseline.currency, baseline.rounding.quantum):
            raise PricingError("the plan to solve and the baseline need one currency and rounding quantum")
        self.cube, self.baseline, self.template, self.parameters, self.theta = (
            cube,
            baseline,
            template,
            parameters,
            theta,
        )
        self.rule = template.rounding
        self.lattice = _Lattice(parameters, template.rounding.quantum)
        self.act = cube.active_mask()
        self.base = bill_cube(plan=baseline, cube=cube)
        self.base_quanta = int(self.base[self.act].sum())
        self.cache: dict[tuple[int, ...], tuple[int, Metrics] | None] = {}
        self.order: list[tuple[int, ...]] = []

    @property
    def evaluations(self) -> int:
        """Distinct lattice points billed so far."""
        return len(self.cache)

    def plan_at(self, ks: Sequence[int]) -> Plan:
        """The template with lattice point `ks` applied."""
        return apply_parameters(plan=self.template, parameters=self.parameters, values=self.lattice.values(ks))

    def __call__(self, ks: Sequence[int]) -> tuple[int, Metrics] | None:
        """(revenue quanta, metrics) at `ks`; None where the parameters make an invalid plan."""
        key = tuple(int(k) for k in ks)
        if key not in self.cache:
            try:
                plan = self.plan_at(key)
            except PlanValidationError:
                self.cache[key] = None
            else:
                bills = bill_cube(plan=plan, cube=self.cube)
                self.cache[key] = bill_metrics(
                    bills=bills, base=self.base, act=self.act, theta=self.theta, rule=self.rule
                )
            self.order.append(key)
        return self.cache[key]

    def named(self, ks: Sequence[int]) -> dict[str, Decimal]:
        """Parameter name → value at `ks`."""
        return {p.name: v for p, v in zip(self.parameters, self.lattice.values(ks), strict=True)}


# ---------------------------------------------------------------------------------------------
# Search


def _solve_target(ev: Evaluator, target_q: int, tol_q: int) -> tuple[tuple[int, ...], str, str]:
    """brentq on revenue − target, linearly interpolated between lattice points, then the closest lattice point."""
    from scipy.optimize import brentq

    k_lo, k_hi = ev.lattice.lo[0], ev.lattice.hi[0]

    def rev(k: int) -> int:
        r = ev((k,))
        if r is None:
            raise PricingError(
                f"parameter {ev.parameters[0].name} = {ev.lattice.values((k,))[0]} makes an invalid plan"
            )
        return r[0]

    def f(x: float) -> float:
        a = int(np.floor(x))
        b = min(a + 1, k_hi)
        fa = rev(a) - target_q
        return float(fa + (x - a) * ((rev(b) - target_q) - fa)) if b != a else float(fa)

    f_lo, f_hi = rev(k_lo) - target_q, rev(k_hi) - target_q
    method = "brentq (scipy) on the lattice-interpolated revenue, then the closest lattice point"
    if f_lo == 0:
        return (k_lo,), method, "the lower bound hits the target exactly"
    if f_hi == 0:
        return (k_hi,), method, "the upper bound hits the target exactly"
    if (f_lo > 0) == (f_hi > 0):
        best = k_lo if abs(f_lo) <= abs(f_hi) else k_hi
        return (best,), method, "the target is outside the revenue the bounds reach; returned the closer bound"
    root = brentq(f, k_lo, k_hi, xtol=0.25, rtol=1e-12, maxiter=200)
    cands = sorted({min(max(int(np.floor(root)) + d, k_lo), k_hi) for d in (-1, 0, 1, 2)})
    best = min(cands, key=lambda k: (abs(rev(k) - target_q), k))
    why = "brentq converged; the closest lattice point to its root"
    if abs(rev(best) - target_q) > tol_q:
        why += " misses the tolerance: revenue jumps by more than it between neighbouring lattice points"
    return (best,), method, why


def _grid_axes(ev: Evaluator, points: int) -> list[list[int]]:
    out = []
    for lo, hi in zip(ev.lattice.lo, ev.lattice.hi, strict=True):
        n = min(points, hi - lo + 1)
        out.append(sorted({int(round(v)) for v in np.linspace(lo, hi, n)}))
    return out


def _solve_max(ev: Evaluator, goal: MaximiseRevenue, grid: int, budget: int) -> tuple[tuple[int, ...], str, str]:
    """Coarse grid, then a compass search on the lattice (all 3^d − 1 directions, halving the stride)."""
    d = len(ev.parameters)
    axes = _grid_axes(ev, grid)

    def better(ks: tuple[int, ...], best: tuple[int, ...] | None) -> bool:
        r = ev(ks)
        if r is None or goal.violations(r[1]):
            return False
        return best is None or r[0] > ev(best)[0]  # type: ignore[index]

    best: tuple[int, ...] | None = None
    for ks in itertools.product(*axes):
        if better(ks, best):
            best = ks
    method = f"coarse grid ({' × '.join(str(len(a)) for a in axes)}), then compass search on the lattice"
    if best is None:
        least = min(
            (k for k in itertools.product(*axes) if ev(k) is not None),
            key=lambda k: (len(goal.violations(ev(k)[1])), -ev(k)[0]),  # type: ignore[index]
        )
        return least, method, "no point of the coarse grid meets the constraints; returned the least violating"
    spacing = [max((a[-1] - a[0]) // max(len(a) - 1, 1), 1) for a in axes]
    stride = max(max(spacing) // 2, 1)
    moves = [m for m in itertools.product((-1, 0, 1), repeat=d) if any(m)]
    while True:
        if ev.evaluations >= budget:
            return best, method, f"evaluation budget ({budget}) used up"
        improved = None
        for m in moves:
            cand = tuple(k + s * stride for k, s in zip(best, m, strict=True))
            if ev.lattice.inside(cand) and better(cand, improved or best):
                improved = cand
        if improved is not None:
            best = improved
        elif stride > 1:
            stride //= 2
        else:
            return best, method, "no lattice neighbour (± one step on every axis) earns more while feasible"


def _decimal_check(cube: UsageCube, plan: Plan, bills: np.ndarray, accounts: int) -> tuple[int, bool]:
    """Re-bill the first `accounts` accounts with the Decimal path; True when every bill equals the vectorised one."""
    act = cube.active_mask()
    n = min(accounts, cube.shape[0])
    for i in range(n):
        for j in range(cube.shape[1]):
            if not act[i, j]:
                continue
            k = int(cube.period_index[i, j]) if cube.period_index is not None else j
            b = bill_period(
                plan=plan,
                usage={key: v.decimal_at((i, j)) for key, v in cube.usage.items()},
                outcomes={key: v.decimal_at((i, j)) for key, v in cube.outcomes.items()},
                uptime_pct=None if cube.uptime_pct is None else cube.uptime_pct.decimal_at((i, j)),
                period_index=max(k, 0),
                account_id=cube.account_ids[i],
            )
            if plan.rounding.to_quanta(b.total) != int(bills[i, j]):
                return n, False
    return n, True


def solve(
    *,
    cube: UsageCube,
    baseline: Plan,
    plan: Plan,
    parameters: Sequence[FreeParameter],
    goal: RevenueTarget | MaximiseRevenue,
    theta: Decimal = Decimal("0.2"),
    grid: int | None = None,
    max_evaluations: int = 2000,
    decimal_check_accounts: int = 200,
    keep_trace: bool = False,
) -> SolveResult:
    """Solve `plan`'s free `parameters` for `goal` on `cube` against `baseline`; deterministic.

    A revenue target takes one parameter (brentq); a constrained maximum takes one or two (grid + compass
    search; `grid` points per axis, default 33 for one parameter and 9 for two). The answer is re-billed
    by `backtest` and the first `decimal_check_accounts` accounts again by the Decimal path.
    """
    t0 = time.perf_counter()
    ev = Evaluator(cube=cube, baseline=baseline, template=plan, parameters=parameters, theta=theta)
    target_rev = None
    if isinstance(goal, RevenueTarget):
        if len(parameters) != 1:
            raise PricingError("a revenue target is solved for exactly one free parameter")
        if goal.tolerance < 0:
            raise PricingError("tolerance must be ≥ 0")
        target_rev = baseline.rounding.from_quanta(ev.base_quanta) if goal.target is None else goal.target
        target_q = int((target_rev / plan.rounding.quantum).to_integral_value())
        tol_q = int(
            (abs(target_rev) * goal.tolerance / plan.rounding.quantum).to_integral_value(rounding="ROUND_FLOOR")
        )
        ks, method, why = _solve_target(ev, target_q, tol_q)
    elif isinstance(goal, MaximiseRevenue):
        if not 1 <= len(parameters) <= 3:
            raise PricingError("a constrained maximum is searched over one to three free parameters")
        points = grid if grid is not None else (33 if len(parameters) == 1 else 9)
        if points < 2:
            raise PricingError("grid needs at least 2 points per axis")
        ks, method, why = _solve_max(ev, goal, points, max_evaluations)
    else:
        raise PricingError(f"unknown goal {goal!r}")
    evaluations = ev.evaluations
    t1 = time.perf_counter()
    solved = ev.plan_at(ks)
    result: BacktestResult = backtest(cube=cube, plans=[baseline, solved], baseline=baseline.key, theta=theta)
    t2 = time.perf_counter()
    check = _decimal_check(cube, solved, result.bills[solved.key], decimal_check_accounts)
    _, metrics = ev(ks)  # type: ignore[misc]
    if isinstance(goal, RevenueTarget):
        assert target_rev is not None
        violations = (
            []
            if abs(metrics.revenue - target_rev) <= abs(target_rev) * goal.tolerance
            else [f"revenue {metrics.revenue} is off the target {target_rev} by more than {goal.tolerance:%}"]
        )
    else:
        violations = goal.violations(metrics)
    trace: tuple = ()
    if keep_trace:
        trace = tuple((ev.named(k), ev.cache[k][1]) for k in ev.order if ev.cache[k] is not None)  # type: ignore[index]
    return SolveResult(
        parameters=ev.named(ks),
        plan=solved,
        metrics=metrics,
        baseline_revenue=baseline.rounding.from_quanta(ev.base_quanta),
        target_revenue=target_rev,
        feasible=not violations,
        violations=tuple(violations),
        evaluations=evaluations,
        method=method,
        stop_reason=why,
        bounds={
            p.name: (Decimal(lo) * s, Decimal(hi) * s, s)
            for p, lo, hi, s in zip(parameters, ev.lattice.lo, ev.lattice.hi, ev.lattice.steps, strict=True)
        },
        summary=result.summaries[solved.key],
        decimal_check=check,
        trace=trace,
        timings={"search": t1 - t0, "rebill": t2 - t1, "decimal_check": time.perf_counter() - t2},
    )


def neighbours(*, evaluator: Evaluator, point: Sequence[int]) -> list[tuple[int, ...]]:
    """The lattice points one step away from `point` on every axis combination, within bounds."""
    d = len(point)
    out = []
    for m in itertools.product((-1, 0, 1), repeat=d):
        cand = tuple(k + s for k, s in zip(point, m, strict=True))
        if any(m) and evaluator.lattice.inside(cand):
            out.append(cand)
    return out


def lattice_point(*, evaluator: Evaluator, values: Mapping[str, Decimal]) -> tuple[int, ...]:
    """The lattice indices of parameter `values` (each an exact multiple of its step)."""
    out = []
    for p, s in zip(evaluator.parameters, evaluator.lattice.steps, strict=True):
        q = values[p.name] / s
        if q != q.to_integral_value():
            raise PricingError(f"{p.name} = {values[p.name]} is not a multiple of {s}")
        out.append(int(q))
    return tuple(out)
