"""Horizon backtests: plans over 12/24 months with recurring and one-time revenue apart, customer response, LTV.

Expected values, not a simulation: each account survives month to month with probability 1 − h,
h = churn_base · r^κ (r = the account's recurring-bill ratio new / baseline at recorded usage, κ = churn
elasticity), and its usage responds as Q · r^ε per month (ε = usage elasticity). Deterministic. A low /
central / high band varies ε and κ together. The assumptions are returned as text with the figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np

from cxp.pricing.core.backtest import UsageCube, _respond
from cxp.pricing.core.plans import OneTimeSale, Plan
from cxp.pricing.core.vectorised import FixedArray, bill_arrays
from cxp.pricing.core.wtp import ElasticityFit
from cxp.pricing.errors import PricingError

RATIO_CAP = 5.0  # a bill ratio above it (or from a zero baseline bill) counts as 5×: the response is capped there


@dataclass(frozen=True, slots=True)
class Response:
    """One response scenario: usage elasticity ε, churn elasticity κ, baseline monthly churn."""

    name: str
    elasticity: float
    churn_elasticity: float
    churn_base: float


def response_band(
    *, fit: ElasticityFit | None = None, elasticity: float | None = None, churn_base: float = 0.01
) -> tuple[Response, ...]:
    """Low / central / high response from the lab's elasticity fit (its 95% CI) or a stated ε (±50%).

    κ = −ε: customers leave as price-sensitively as they cut usage (a stated assumption). Low is the
    bound nearer 0 (customers barely react), high the farther one.
    """
    if not 0 <= churn_base < 1:
        raise PricingError("churn_base must be within [0, 1)")
    if fit is not None:
        central = fit.elasticity
        bounds = (fit.low, fit.high) if fit.low is not None and fit.high is not None else (central * 0.5, central * 1.5)
    elif elasticity is not None:
        central, bounds = elasticity, (elasticity * 0.5, elasticity * 1.5)
    else:
        raise PricingError("give an elasticity fit or an elasticity")
    low, high = sorted(bounds, key=abs)
    # A CI crossing zero would flip the sign of the response: clip it at no response.
    low = 0.0 if (low > 0) != (central > 0) else low
    return tuple(Response(n, e, -e, churn_base) for n, e in (("low", low), ("central", central), ("high", high)))


NO_RESPONSE = Response("static", 0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class HorizonFigures:
    """One plan under one response scenario over the horizon (expected money, rounded half-even to the quantum)."""

    plan_key: str
    scenario: str
    recurring: Decimal
    one_time: Decimal
    total: Decimal
    revenue_delta: Decimal  # total − the baseline's total in the same scenario
    ltv: Decimal  # mean per account: expected discounted revenue from its first horizon month
    retained: float  # expected share of accounts still customers in the last month


@dataclass(frozen=True)
class HorizonResult:
    """Figures per plan × scenario, the horizon's months, and the assumptions behind them."""

    months: tuple[date, ...]
    baseline: str
    currency: str
    figures: tuple[HorizonFigures, ...]
    assumptions: tuple[str, ...]

    def get(self, plan_key: str, scenario: str) -> HorizonFigures:
        """The figures of one plan in one scenario."""
        for f in self.figures:
            if (f.plan_key, f.scenario) == (plan_key, scenario):
                return f
        raise PricingError(f"no figures for {plan_key} / {scenario}")

    def verdict(self, scenario: str = "central") -> str:
        """One line: which plan wins on revenue, recurring revenue, LTV and retention in `scenario`."""
        fs = [f for f in self.figures if f.scenario == scenario] or [f for f in self.figures]
        s = fs[0].scenario

        def top(attr: str) -> HorizonFigures:
            return max(fs, key=lambda f: getattr(f, attr))

        t, r, lv, k = top("total"), top("recurring"), top("ltv"), top("retained")
        return (
            f"Over {len(self.months)} months ({s} response): {t.plan_key} earns most ({t.total} {self.currency}), "
            f"{r.plan_key} the most recurring ({r.recurring}), {lv.plan_key} the highest LTV ({lv.ltv}), "
            f"{k.plan_key} keeps most customers ({k.retained:.1%})."
        )


def extend_cube(*, cube: UsageCube, months: int) -> UsageCube:
    """`cube` over `months` months: later months repeat the recorded ones cyclically (seasonality kept).

    An account not yet active in the repeated month takes its last recorded active month; once active it
    stays a customer (churn is the response model's job). Shorter horizons cut the cube.
    """
    m0 = cube.shape[1]
    if months < 1:
        raise PricingError("months must be ≥ 1")
    if months <= m0:
        sl = slice(0, months)
        return replace(
            cube,
            months=cube.months[:months],
            usage={k: FixedArray(v.values[:, sl], v.decimals) for k, v in cube.usage.items()},
            outcomes={k: FixedArray(v.values[:, sl], v.decimals) for k, v in cube.outcomes.items()},
            uptime_pct=None if cube.uptime_pct is None else FixedArray(cube.uptime_pct.values[:, sl], 3),
            active=cube.active_mask()[:, sl],
            period_index=None if cube.period_index is None else cube.period_index[:, sl],
            health=None if cube.health is None else cube.health[:, sl],
            coverage=None if cube.coverage is None else cube.coverage[:, sl],
        )
    act = cube.active_mask()
    n = cube.shape[0]
    last = np.where(act.any(axis=1), m0 - 1 - np.argmax(act[:, ::-1], axis=1), 0)
    first = np.where(act.any(axis=1), np.argmax(act, axis=1), months)
    t = np.arange(months)
    src = np.where(act[:, t % m0], (t % m0)[None, :], last[:, None])
    src[:, :m0] = np.arange(m0)[None, :]
    rows = np.arange(n)[:, None]

    def take(x: np.ndarray) -> np.ndarray:
        return x[rows, src]

    pidx = cube.period_index if cube.period_index is not None else np.broadcast_to(np.arange(m0), (n, m0))
    y, mo = cube.months[0].year, cube.months[0].month - 1
    return replace(
        cube,
        months=tuple(date(y + (mo + i) // 12, (mo + i) % 12 + 1, 1) for i in range(months)),
        usage={k: FixedArray(take(v.values), v.decimals) for k, v in cube.usage.items()},
        outcomes={k: FixedArray(take(v.values), v.decimals) for k, v in cube.outcomes.items()},
        uptime_pct=None
        if cube.uptime_pct is None
        else FixedArray(take(cube.uptime_pct.values), cube.uptime_pct.decimals),
        active=t[None, :] >= first[:, None],
        period_index=pidx[:, :1] + t[None, :],
        health=None if cube.health is None else take(np.asarray(cube.health, dtype=np.float64)),
        coverage=None if cube.coverage is None else take(np.asarray(cube.coverage, dtype=np.float64)),
    )


def _bills(plan: Plan, cube: UsageCube, usage=None, outcomes=None) -> tuple[np.ndarray, np.ndarray]:
    """(total, one-time) quanta per account × month, 0 where inactive."""
    res = bill_arrays(
        plan=plan,
        usage=cube.usage if usage is None else usage,
        outcomes=(cube.outcomes if outcomes is None else outcomes) or None,
        uptime_pct=cube.uptime_pct,
        period_index=None if cube.period_index is None else np.maximum(cube.period_index, 0),
        account_ids=list(cube.account_ids),
    )
    act = cube.active_mask()
    sale_ids = {c.id for c in plan.components if isinstance(c, OneTimeSale)}
    one = sum((res.lines[f"{i}:sale"] for i in sale_ids), np.zeros(cube.shape, dtype=np.int64))
    return np.where(act, res.total, 0).astype(np.float64), np.where(act, one, 0).astype(np.float64)


def survival(*, active: np.ndarray, hazard: np.ndarray) -> np.ndarray:
    """Expected share still a customer at each active month: 1 in the first, × (1 − h) per active month before."""
    h = np.broadcast_to(np.asarray(hazard, dtype=np.float64).reshape(-1, 1), active.shape)
    step = np.where(active, 1.0 - h, 1.0)
    before = np.concatenate([np.ones((step.shape[0], 1)), np.cumprod(step, axis=1)[:, :-1]], axis=1)
    return np.where(active, before, 0.0)


def horizon_backtest(
    *,
    cube: UsageCube,
    plans: Sequence[Plan],
    months: int = 12,
    baseline: str | None = None,
    responses: Sequence[Response] = (NO_RESPONSE,),
    annual_discount: float = 0.0,
) -> HorizonResult:
    """Plans over `months` months (the cube extended or cut), each under every response scenario, vs `baseline`."""
    if not plans:
        raise PricingError("give at least one plan")
    keys = [p.key for p in plans]
    base_key = baseline or keys[0]
    if base_key not in keys or len(set(keys)) != len(keys):
        raise PricingError("plan keys must be unique and include the baseline")
    if len({(p.currency, p.rounding.quantum) for p in plans}) != 1:
        raise PricingError("plans compared side by side need one currency and quantum")
    if not 0 <= annual_discount < 1:
        raise PricingError("annual_discount must be within [0, 1)")
    cube = extend_cube(cube=cube, months=months)
    act = cube.active_mask()
    rule = plans[0].rounding
    first = np.argmax(act, axis=1)
    t = np.arange(months)[None, :] - first[:, None]
    disc = (1.0 + annual_discount) ** (-np.maximum(t, 0) / 12.0)
    n_acc = int(act.any(axis=1).sum())
    static = {p.key: _bills(p, cube) for p in plans}
    # Customers react to the recurring price: a one-time sale in the window must not read as a dearer plan.
    base_mean = (static[base_key][0] - static[base_key][1]).sum(axis=1) / np.maximum(act.sum(axis=1), 1)
    keys_all = set(cube.usage) | set(cube.outcomes)

    def money(x: float) -> Decimal:
        return _q(x, rule.quantum)

    figures = []
    for resp in responses:
        totals: dict[str, float] = {}
        rows = []
        for p in plans:
            total, one = static[p.key]
            mean = (total - one).sum(axis=1) / np.maximum(act.sum(axis=1), 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(
                    base_mean > 0, mean / np.where(base_mean > 0, base_mean, 1), np.where(mean > 0, RATIO_CAP, 1)
                )
            ratio = np.clip(ratio, 1.0 / RATIO_CAP, RATIO_CAP)
            if resp.elasticity and p.key != base_key:
                factor = np.broadcast_to((ratio**resp.elasticity)[:, None], cube.shape)
                usage, outcomes = _respond(cube, factor, keys_all)
                total, one = _bills(p, cube, usage, outcomes)
            hazard = np.minimum(resp.churn_base * ratio**resp.churn_elasticity, 1.0)
            s = survival(active=act, hazard=hazard)
            exp_total, exp_one = (s * total).sum(), (s * one).sum()
            ltv = (s * total * disc).sum() / n_acc if n_acc else 0.0
            last = act[:, -1]
            retained = float(s[last, -1].sum() / n_acc) if n_acc else 0.0
            totals[p.key] = exp_total
            rows.append((p.key, exp_total, exp_one, ltv, retained))
        for key, exp_total, exp_one, ltv, retained in rows:
            figures.append(
                HorizonFigures(
                    plan_key=key,
                    scenario=resp.name,
                    recurring=money(exp_total) - money(exp_one),  # so recurring + one-time = total exactly
                    one_time=money(exp_one),
                    total=money(exp_total),
                    revenue_delta=money(exp_total) - money(totals[base_key]),
                    ltv=money(ltv),
                    retained=retained,
                )
            )
    assumptions = (
        f"Horizon {months} months from {cube.months[0]:%Y-%m}; recorded months repeat cyclically beyond the data.",
        "Expected values: each account survives a month with probability 1 − h, h = churn_base · r^κ, "
        "r = its mean recurring bill new / baseline at recorded usage (one-time sales left out), "
        f"capped to [1/{RATIO_CAP:g}, {RATIO_CAP:g}].",
        "Usage responds once per month as Q · r^ε (constant elasticity); κ = −ε.",
        *(
            f"{r.name}: ε = {r.elasticity:.3f}, κ = {r.churn_elasticity:.3f}, churn_base = {r.churn_base:.2%}/month"
            for r in responses
        ),
        f"LTV: mean over accounts of expected revenue discounted at {annual_discount:.1%} a year from each "
        "account's first horizon month (revenue, no costs). Money is rounded half-even to the quantum.",
    )
    return HorizonResult(cube.months, base_key, plans[0].currency, tuple(figures), assumptions)


def _q(x: float, quantum: Decimal) -> Decimal:
    """An expected amount (float, in quanta) as Decimal currency rounded half-even."""
    return (Decimal(repr(float(x))) * quantum).quantize(quantum, rounding=ROUND_HALF_EVEN)
