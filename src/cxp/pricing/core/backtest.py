"""Backtest revenue models on recorded usage: every account's bill per month under N plans, side by side.

Pure on arrays (`UsageCube` in, `BacktestResult` out); the service layer loads the cube from the
database (`pricing.service.simulate_backtest`). Bills come from `pricing.core.vectorised.bill_arrays`,
one vectorised pass per plan over accounts × months, as int64 counts of the currency quantum, so
revenue, margins and every money figure are exact; statistics (shares, CV, Gini, correlations)
are floats. Choices (shock with a zero old bill, ARPU rounding, demand response) are in docs/pricing.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from typing import Any

import numpy as np

from cxp.pricing.core.integers import LIMIT
from cxp.pricing.core.money import EXACT, RoundingRule, decimals_of
from cxp.pricing.core.plans import Plan
from cxp.pricing.core.vectorised import FixedArray, bill_arrays, to_fixed
from cxp.pricing.errors import PricingError


@dataclass(frozen=True)
class UsageCube:
    """Recorded usage of a cohort: every input the plans read, as accounts × months arrays.

    `active[a, m]`: the account had a device activated by the end of month m (inactive cells bill 0
    and are left out of every statistic). `period_index[a, m]`: months since the account's first
    activation month (a one-time sale lands where it is 0). `health`: an experience-health score
    0–100 per account-month (NaN = unknown), `devices`: devices per account. `coverage`: the share 0–1 of
    each account-month its devices reported (heartbeat-covered device-hours / device-hours since
    activation; NaN = unknown), so a device offline for half a month is told apart from a light user.
    """

    account_ids: tuple[str, ...]
    segments: tuple[str, ...]
    months: tuple[date, ...]
    usage: Mapping[str, FixedArray]
    outcomes: Mapping[str, FixedArray] = field(default_factory=dict)
    uptime_pct: FixedArray | None = None
    active: np.ndarray | None = None
    period_index: np.ndarray | None = None
    devices: np.ndarray | None = None
    health: np.ndarray | None = None
    coverage: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(accounts, months)."""
        return len(self.account_ids), len(self.months)

    def active_mask(self) -> np.ndarray:
        """The active cells (all when not given)."""
        return np.ones(self.shape, dtype=bool) if self.active is None else np.asarray(self.active, dtype=bool)

    def device_counts(self) -> np.ndarray:
        """Devices per account (1 each when not given)."""
        return np.ones(self.shape[0], dtype=np.int64) if self.devices is None else np.asarray(self.devices)


@dataclass(frozen=True, slots=True)
class CostModel:
    """The cost floor: `per_unit` × the `unit_metric` usage plus `per_device_month` per active device-month."""

    per_unit: Decimal = Decimal(0)
    unit_metric: str | None = None
    per_device_month: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        if self.per_unit < 0 or self.per_device_month < 0:
            raise PricingError("costs must not be negative")
        if self.per_unit and self.unit_metric is None:
            raise PricingError("a cost per unit needs unit_metric (the usage key it is per)")


NO_COST = CostModel()


@dataclass(frozen=True, slots=True)
class DemandResponse:
    """Constant-elasticity response Q_new = Q_old · (P_new / P_old)^ε, P = the account-month's effective price.

    One step (no iteration to a fixed point): P_new / P_old is the bill ratio at the recorded usage.
    `keys`: the usage/outcome keys that respond (None = every usage and outcome key).
    """

    elasticity: float
    keys: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Quantiles:
    """p10 / p50 / p90 (inverted-CDF quantiles: each is one observed value, so money stays exact)."""

    p10: Decimal
    p50: Decimal
    p90: Decimal


@dataclass(frozen=True, slots=True)
class PlanSummary:
    """One plan's backtest figures over the cohort and period."""

    plan_key: str
    revenue: Decimal
    accounts: int
    customer_periods: int
    arpu: Decimal  # per active account over the whole period, rounded to the quantum (half-even)
    arpu_month: Decimal  # per active account-month, rounded likewise
    bill: Quantiles
    bill_change: Quantiles  # bill − baseline bill per customer-period
    revenue_delta: Decimal
    volatility_cv: float | None  # mean per-customer coefficient of variation of monthly bills
    winners: int  # accounts paying less over the period than under the baseline
    losers: int
    unchanged: int
    shock_rate: float
    shock_count: int
    fairness_gini: float | None
    cost: Decimal
    margin: Decimal
    below_cost_share: float  # customer-periods billed below their cost
    static_revenue: Decimal  # revenue before demand response (equal to revenue without one)
    low_coverage_periods: int = 0  # customer-periods whose coverage is below the threshold
    low_coverage_revenue: Decimal = Decimal(0)  # this plan's bills in those periods (uncertain revenue)
    coverage_shortfall: Decimal = Decimal(0)  # estimated revenue missed there (usage extrapolated by 1 / coverage)


@dataclass(frozen=True, slots=True)
class SegmentExperience:
    """Bill vs experience health in one segment under one plan: do unhappy customers pay more?"""

    plan_key: str
    segment: str
    accounts: int
    mean_bill_month: Decimal
    mean_health: float | None
    spearman: float | None  # rank correlation of an account's mean monthly bill with its mean health
    low_health_bill_ratio: float | None  # mean bill of the bottom health quartile / mean bill of the rest


@dataclass(frozen=True)
class BacktestResult:
    """Bills (int64 quanta, accounts × months, 0 where inactive) and figures per plan, baseline first."""

    cube: UsageCube
    plan_keys: tuple[str, ...]
    baseline: str
    currency: str
    rule: RoundingRule
    theta: Decimal
    bills: dict[str, np.ndarray]
    summaries: dict[str, PlanSummary]
    experience: tuple[SegmentExperience, ...]
    elasticity: float | None
    coverage_threshold: float | None = None
    low_coverage: np.ndarray | None = None  # accounts × months: flagged (below the threshold), before any exclusion
    excluded_low_coverage: bool = False

    def bill(self, plan_key: str, account_id: str, month: date) -> Decimal:
        """One account-month's bill under `plan_key`."""
        i, j = self.cube.account_ids.index(account_id), self.cube.months.index(month)
        return self.rule.from_quanta(int(self.bills[plan_key][i, j]))

    def account_totals(self, plan_key: str) -> dict[str, Decimal]:
        """Each account's total over the period under `plan_key`."""
        totals = self.bills[plan_key].sum(axis=1)
        return {a: self.rule.from_quanta(int(t)) for a, t in zip(self.cube.account_ids, totals, strict=True)}

    def rows(self) -> list[dict[str, Any]]:
        """Long form: one row per plan × active account-month (bill as an exact Decimal; coverage when known)."""
        act = self.cube.active_mask()
        ii, jj = np.nonzero(act)
        cov = self.cube.coverage
        out = []
        for key in self.plan_keys:
            b = self.bills[key]
            for i, j in zip(ii.tolist(), jj.tolist(), strict=True):
                row = {
                    "plan": key,
                    "account_id": self.cube.account_ids[i],
                    "segment": self.cube.segments[i],
                    "month": self.cube.months[j],
                    "bill": self.rule.from_quanta(int(b[i, j])),
                    "currency": self.currency,
                }
                if cov is not None:
                    c = float(cov[i, j])
                    row["coverage"] = None if np.isnan(c) else round(c, 4)
                    row["low_coverage"] = bool(self.low_coverage is not None and self.low_coverage[i, j])
                out.append(row)
        return out

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per plan with its figures."""
        out = []
        for key in self.plan_keys:
            s = self.summaries[key]
            out.append(
                {
                    "plan": key,
                    "baseline": key == self.baseline,
                    "currency": self.currency,
                    "revenue": s.revenue,
                    "revenue_delta": s.revenue_delta,
                    "arpu": s.arpu,
                    "arpu_month": s.arpu_month,
                    "bill_p10": s.bill.p10,
                    "bill_p50": s.bill.p50,
                    "bill_p90": s.bill.p90,
                    "change_p10": s.bill_change.p10,
                    "change_p50": s.bill_change.p50,
                    "change_p90": s.bill_change.p90,
                    "volatility_cv": s.volatility_cv,
                    "winners": s.winners,
                    "losers": s.losers,
                    "unchanged": s.unchanged,
                    "shock_rate": s.shock_rate,
                    "shock_theta": self.theta,
                    "fairness_gini": s.fairness_gini,
                    "cost": s.cost,
                    "margin": s.margin,
                    "below_cost_share": s.below_cost_share,
                    "static_revenue": s.static_revenue,
                    "elasticity": self.elasticity,
                    "low_coverage_periods": s.low_coverage_periods,
                    "low_coverage_revenue": s.low_coverage_revenue,
                    "coverage_shortfall": s.coverage_shortfall,
                }
            )
        return out


def _quantile_values(values: np.ndarray, qs: Sequence[float]) -> list[int]:
    """Inverted-CDF quantiles of integer values (each an observed value)."""
    if values.size == 0:
        return [0 for _ in qs]
    s = np.sort(values)
    n = s.size
    return [int(s[max(int(np.ceil(q * n)) - 1, 0)]) for q in qs]


def gini(*, values: np.ndarray) -> float | None:
    """Gini coefficient of non-negative values (0 = all equal); None with fewer than two or a zero sum."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    if n < 2 or x.sum() <= 0:
        return None
    i = np.arange(1, n + 1)
    return float((2.0 * (i * x).sum()) / (n * x.sum()) - (n + 1.0) / n)


def _mean_quanta(total: int, n: int, rule: RoundingRule) -> Decimal:
    if n == 0:
        return rule.from_quanta(0)
    return rule.round(rule.from_quanta(total) / Decimal(n))


def _tidy(d: Decimal, quantum: Decimal) -> Decimal:
    """`d` unchanged in value, shown with the quantum's decimals when it has no more (else minimal digits)."""
    q = d.quantize(quantum)
    return q if q == d else d.normalize()


def _fixed_float(x: FixedArray) -> np.ndarray:
    return x.values.astype(np.float64) / 10.0**x.decimals


def _respond(cube: UsageCube, factor: np.ndarray, keys: set[str]) -> tuple[dict, dict]:
    """Usage and outcomes scaled by `factor` for the responsive keys (back onto each key's decimal grid)."""

    def scale(m: Mapping[str, FixedArray]) -> dict[str, FixedArray]:
        out = {}
        for k, v in m.items():
            if k in keys:
                out[k] = to_fixed(values=_fixed_float(v) * factor, decimals=max(v.decimals, 3))
            else:
                out[k] = v
        return out

    return scale(cube.usage), scale(cube.outcomes)


def bill_cube(
    *,
    plan: Plan,
    cube: UsageCube,
    usage: Mapping[str, FixedArray] | None = None,
    outcomes: Mapping | None = None,
    recurring_only: bool = False,
) -> np.ndarray:
    """`plan`'s bills per account × month of `cube` (int64 quanta, 0 where inactive); usage/outcomes override;
    `recurring_only` leaves one-time sales out (revenue retention counts recurring revenue)."""
    res = bill_arrays(
        plan=plan,
        usage=cube.usage if usage is None else usage,
        outcomes=(cube.outcomes if outcomes is None else outcomes) or None,
        uptime_pct=cube.uptime_pct,
        period_index=None if cube.period_index is None else np.maximum(cube.period_index, 0),
        account_ids=list(cube.account_ids),
    )
    total = res.total
    if recurring_only:
        for key, line in res.lines.items():
            if key.endswith(":sale"):
                total = total - line
    if total.dtype == object:
        raise PricingError(f"plan {plan.key}: bills beyond int64 quanta")
    return np.where(cube.active_mask(), total, 0).astype(np.int64)


def _cost_scaled(cube: UsageCube, cost: CostModel, act: np.ndarray, scale: int) -> np.ndarray:
    """Each cell's cost as integers of 10^-scale currency units (exact)."""
    out = np.zeros(cube.shape, dtype=np.int64)
    if cost.per_unit and cost.unit_metric is not None:
        if cost.unit_metric not in cube.usage:
            raise PricingError(f"cost unit metric {cost.unit_metric!r} is not in the usage cube")
        q = cube.usage[cost.unit_metric]
        r = int(cost.per_unit.scaleb(scale - q.decimals, EXACT))
        out = out + q.values.astype(np.int64) * r
    if cost.per_device_month:
        r = int(cost.per_device_month.scaleb(scale, EXACT))
        out = out + cube.device_counts()[:, None].astype(np.int64) * r
    return np.where(act, out, 0)


def backtest(
    *,
    cube: UsageCube,
    plans: Sequence[Plan],
    baseline: str | None = None,
    theta: Decimal = Decimal("0.2"),
    cost: CostModel = NO_COST,
    value_metric: str | None = None,
    demand: DemandResponse | None = None,
    coverage_threshold: float | None = 0.9,
    exclude_low_coverage: bool = False,
) -> BacktestResult:
    """Bill every account-month under each plan (vectorised) and compare them with the baseline plan.

    `baseline`: a plan key (default: the first plan). `theta`: bill shock when bill_new / bill_old > 1 + θ.
    `value_metric`: the usage key whose units measure customer value (fairness = Gini of each account's
    bill per unit of it over the period). `demand`: optional constant-elasticity response of usage.
    `coverage_threshold`: customer-periods whose `cube.coverage` is below it are flagged (and with
    `exclude_low_coverage` left out of every figure); each plan's revenue at risk there is reported.
    """
    if not plans:
        raise PricingError("give at least one plan")
    keys = [p.key for p in plans]
    if len(set(keys)) != len(keys):
        raise PricingError(f"plan keys must be unique, got {keys}")
    base_key = baseline or keys[0]
    if base_key not in keys:
        raise PricingError(f"baseline {base_key!r} is not among the plans {keys}")
    rules = {(p.currency, p.rounding.quantum) for p in plans}
    if len(rules) != 1:
        raise PricingError(f"plans compared side by side need one currency and quantum, got {sorted(map(str, rules))}")
    if theta < 0:
        raise PricingError("theta must be ≥ 0")
    plans = sorted(plans, key=lambda p: p.key != base_key)  # baseline first
    rule = plans[0].rounding
    currency = plans[0].currency
    act = cube.active_mask()
    if act.shape != cube.shape:
        raise PricingError(f"active has shape {act.shape}, expected {cube.shape}")
    low, at_risk = _coverage_risk(cube, plans, act, coverage_threshold)
    if exclude_low_coverage and low is not None:
        cube = replace(cube, active=act & ~low)
        act = cube.active_mask()

    static = {p.key: bill_cube(plan=p, cube=cube) for p in plans}
    bills = dict(static)
    if demand is not None:
        rkeys = set(demand.keys) if demand.keys is not None else set(cube.usage) | set(cube.outcomes)
        old = static[base_key].astype(np.float64)
        for p in plans[1:]:
            new = static[p.key].astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where((old > 0) & (new > 0), new / np.where(old > 0, old, 1.0), 1.0)
            factor = ratio**demand.elasticity
            usage, outcomes = _respond(cube, factor, rkeys)
            bills[p.key] = bill_cube(plan=p, cube=cube, usage=usage, outcomes=outcomes)

    qdec = decimals_of(value=rule.quantum)
    scale = max(qdec, 6) + 6
    qscale = int(rule.quantum.scaleb(scale, EXACT))
    cell_cost = _cost_scaled(cube, cost, act, scale)
    cost_total = _tidy(Decimal(int(cell_cost.sum())).scaleb(-scale, EXACT), rule.quantum)

    n_cells = int(act.sum())
    acct_active = act.any(axis=1)
    n_acc = int(acct_active.sum())
    base = bills[base_key]
    baseline_totals = base.sum(axis=1)
    num, den = theta.as_integer_ratio()
    value_totals = None
    if value_metric is not None:
        if value_metric not in cube.usage:
            raise PricingError(f"value metric {value_metric!r} is not in the usage cube")
        v = cube.usage[value_metric]
        value_totals = np.where(act, v.values, 0).sum(axis=1).astype(np.float64) / 10.0**v.decimals

    summaries: dict[str, PlanSummary] = {}
    for p in plans:
        b = bills[p.key]
        vals = b[act]
        total = int(vals.sum())
        qs = _quantile_values(vals, (0.1, 0.5, 0.9))
        chg = _quantile_values((b - base)[act], (0.1, 0.5, 0.9))
        account_totals = b.sum(axis=1)
        winners = int(((account_totals < baseline_totals) & acct_active).sum())
        losers = int(((account_totals > baseline_totals) & acct_active).sum())
        # Shock in exact integers: new · den > old · (den + num); a zero old bill shocks when the new is > 0.
        old_c, new_c = base[act], vals
        if max(int(old_c.max(initial=0)), int(new_c.max(initial=0))) * (den + num) >= LIMIT:
            old_c, new_c = old_c.astype(object), new_c.astype(object)
        shock = np.where(old_c > 0, new_c * den > old_c * (den + num), new_c > 0)
        shock_count = int(np.count_nonzero(shock))
        # Per-customer CV of monthly bills over active months (≥ 2 months and a positive mean).
        active_months = act.sum(axis=1)
        monthly_bills = np.where(act, b, 0).astype(np.float64)
        mean = monthly_bills.sum(axis=1) / np.maximum(active_months, 1)
        var = (np.where(act, (monthly_bills - mean[:, None]) ** 2, 0.0)).sum(axis=1) / np.maximum(active_months - 1, 1)
        ok = (active_months >= 2) & (mean > 0)
        cv = float(np.mean(np.sqrt(var[ok]) / mean[ok])) if ok.any() else None
        fair = None
        if value_totals is not None:
            has = (value_totals > 0) & acct_active
            fair = gini(values=account_totals[has].astype(np.float64) / value_totals[has]) if has.any() else None
        bill_scaled = b.astype(object) * qscale if abs(int(b.max(initial=0))) * qscale >= LIMIT else b * qscale
        below = float(np.count_nonzero((bill_scaled < cell_cost)[act]) / n_cells) if n_cells else 0.0
        revenue = rule.from_quanta(total)
        summaries[p.key] = PlanSummary(
            plan_key=p.key,
            revenue=revenue,
            accounts=n_acc,
            customer_periods=n_cells,
            arpu=_mean_quanta(total, n_acc, rule),
            arpu_month=_mean_quanta(total, n_cells, rule),
            bill=Quantiles(*(rule.from_quanta(x) for x in qs)),
            bill_change=Quantiles(*(rule.from_quanta(x) for x in chg)),
            revenue_delta=revenue - rule.from_quanta(int(base[act].sum())),
            volatility_cv=cv,
            winners=winners,
            losers=losers,
            unchanged=n_acc - winners - losers,
            shock_rate=shock_count / n_cells if n_cells else 0.0,
            shock_count=shock_count,
            fairness_gini=fair,
            cost=cost_total,
            margin=revenue - cost_total,
            below_cost_share=below,
            static_revenue=rule.from_quanta(int(static[p.key][act].sum())),
            low_coverage_periods=0 if low is None else int(low.sum()),
            low_coverage_revenue=rule.from_quanta(at_risk.get(p.key, (0, 0))[0]),
            coverage_shortfall=rule.from_quanta(at_risk.get(p.key, (0, 0))[1]),
        )

    experience = _experience(cube, plans, bills, act, rule)
    return BacktestResult(
        cube=cube,
        plan_keys=tuple(p.key for p in plans),
        baseline=base_key,
        currency=currency,
        rule=rule,
        theta=theta,
        bills=bills,
        summaries=summaries,
        experience=experience,
        elasticity=None if demand is None else demand.elasticity,
        coverage_threshold=coverage_threshold if low is not None else None,
        low_coverage=low,
        excluded_low_coverage=exclude_low_coverage and low is not None,
    )


def _coverage_risk(
    cube: UsageCube, plans: Sequence[Plan], act: np.ndarray, threshold: float | None
) -> tuple[np.ndarray | None, dict[str, tuple[int, int]]]:
    """Flagged cells and, per plan, (quanta billed there, quanta missed: re-billed with usage × 1 / coverage − billed).

    Extrapolation needs coverage ≥ 0.1 (below it a cell's usage says too little to scale up).
    """
    if cube.coverage is None or threshold is None:
        return None, {}
    if not 0 <= threshold <= 1:
        raise PricingError("coverage_threshold must be within [0, 1]")
    cov = np.asarray(cube.coverage, dtype=np.float64)
    if cov.shape != cube.shape:
        raise PricingError(f"coverage has shape {cov.shape}, expected {cube.shape}")
    low = act & ~np.isnan(cov) & (cov < threshold)
    if not low.any():
        return low, {}
    factor = np.where(low & (cov >= 0.1), 1.0 / np.maximum(cov, 0.1), 1.0)
    usage, outcomes = _respond(cube, factor, set(cube.usage) | set(cube.outcomes))
    out = {}
    for p in plans:
        billed = bill_cube(plan=p, cube=cube)
        full = bill_cube(plan=p, cube=cube, usage=usage, outcomes=outcomes)
        out[p.key] = (int(billed[low].sum()), int((full - billed)[low].sum()))
    return low, out


def _experience(
    cube: UsageCube, plans: Sequence[Plan], bills: Mapping[str, np.ndarray], act: np.ndarray, rule: RoundingRule
) -> tuple[SegmentExperience, ...]:
    if cube.health is None:
        return ()
    from scipy.stats import spearmanr

    h = np.where(act, np.asarray(cube.health, dtype=np.float64), np.nan)
    seen = ~np.isnan(h)
    health_months = seen.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        health = np.where(health_months > 0, np.nansum(h, axis=1) / np.maximum(health_months, 1), np.nan)
    active_months = act.sum(axis=1)
    segs = np.array(cube.segments, dtype=object)
    out = []
    for p in plans:
        b = bills[p.key]
        mean_bill = b.sum(axis=1) / np.maximum(active_months, 1)
        for seg in sorted(set(cube.segments)):
            m = (segs == seg) & (active_months > 0)
            n = int(m.sum())
            if n == 0:
                continue
            segment_quanta = int(b[m].sum())
            mean_bill_month = _mean_quanta(segment_quanta, int(active_months[m].sum()), rule)
            hm = m & ~np.isnan(health)
            mh = float(np.mean(health[hm])) if hm.any() else None
            rho = ratio = None
            if hm.sum() >= 3:
                x, y = mean_bill[hm], health[hm]
                if np.ptp(x) > 0 and np.ptp(y) > 0:
                    rho = float(spearmanr(x, y).statistic)
                cut = np.quantile(y, 0.25)
                low, rest = x[y <= cut], x[y > cut]
                if low.size and rest.size and rest.mean() > 0:
                    ratio = float(low.mean() / rest.mean())
            out.append(SegmentExperience(p.key, seg, n, mean_bill_month, mh, rho, ratio))
    return tuple(out)
