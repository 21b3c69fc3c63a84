"""Price-experiment design before it starts: sample size, minimum detectable effect and duration from recorded usage.

Power analysis with statsmodels (`TTestIndPower` for a mean metric, `NormalIndPower` on Cohen's h for a
proportion); the metric's spread comes from the recorded values per unit, for each candidate duration
(the per-unit mean over k months varies less as k grows). Several treatment arms share alpha by
Bonferroni. Choices are in docs/pricing.md ("Experiment design").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cxp.pricing.errors import PricingError, maps_numeric_errors


@dataclass(frozen=True, slots=True)
class DurationOption:
    """One candidate duration: the metric's spread over it and what that needs or allows."""

    months: int
    units: int  # units with at least one active month among the first `months`
    mean: float
    sd: float
    n_per_arm: int | None  # for the asked MDE (None: the spread is zero or the metric has no mean)
    mde_at_available: float | None  # absolute MDE with every available unit in the experiment


@dataclass(frozen=True)
class ExperimentPlan:
    """Sample size, MDE and duration of a planned price experiment."""

    metric: str
    kind: str  # "mean" or "proportion"
    alpha: float  # per comparison (after Bonferroni)
    power: float
    arms: int
    ratio: float  # treatment units per control unit
    mde: float  # absolute, in the metric's units (or share points for a proportion)
    mde_relative: float | None
    baseline_mean: float
    sd: float
    n_per_arm: int  # control arm size; each treatment arm is ratio × it
    total_n: int
    duration_months: int | None  # the shortest duration whose need fits the available units (None: none does)
    available_units: int
    options: tuple[DurationOption, ...]
    guardrail_mde: float | None  # health-point drop the guardrail detects with this n (when health is given)
    method: str


def _per_unit_means(values: np.ndarray, active: np.ndarray, months: int) -> np.ndarray:
    """Each unit's mean over its active months among the first `months` (units with none dropped)."""
    v, a = values[:, :months], active[:, :months]
    n = a.sum(axis=1)
    keep = n > 0
    return (np.where(a, v, 0.0).sum(axis=1)[keep] / n[keep]).astype(np.float64)


def _alpha(alpha: float, arms: int) -> float:
    return alpha / max(arms - 1, 1)


def n_for_mean(*, mde: float, sd: float, alpha: float, power: float, ratio: float = 1.0) -> int | None:
    """Control-arm size of a two-sided two-sample t-test detecting a difference `mde` (statsmodels TTestIndPower)."""
    from statsmodels.stats.power import TTestIndPower

    if sd <= 0 or mde == 0:
        return None
    n = TTestIndPower().solve_power(effect_size=abs(mde) / sd, alpha=alpha, power=power, ratio=ratio)
    return int(math.ceil(float(np.squeeze(n)) - 1e-9))


def mde_for_mean(*, n: int, sd: float, alpha: float, power: float, ratio: float = 1.0) -> float | None:
    """Smallest absolute difference a two-sample t-test with `n` control units detects."""
    from statsmodels.stats.power import TTestIndPower

    if n < 2 or n * ratio < 2 or sd <= 0:
        return None
    d = TTestIndPower().solve_power(nobs1=n, alpha=alpha, power=power, ratio=ratio)
    return float(np.squeeze(d)) * sd


def n_for_proportion(*, p0: float, p1: float, alpha: float, power: float, ratio: float = 1.0) -> int | None:
    """Control-arm size of a two-sided z-test between proportions p0 and p1 (Cohen's h, NormalIndPower)."""
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    if not (0 <= p0 <= 1 and 0 <= p1 <= 1) or p0 == p1:
        return None
    h = abs(float(proportion_effectsize(p1, p0)))
    n = NormalIndPower().solve_power(effect_size=h, alpha=alpha, power=power, ratio=ratio)
    return int(math.ceil(float(np.squeeze(n)) - 1e-9))


@maps_numeric_errors
def design_experiment(
    *,
    metric: str,
    values: np.ndarray,
    active: np.ndarray | None = None,
    mde_relative: float | None = None,
    mde: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    arms: int = 2,
    ratio: float = 1.0,
    kind: str = "mean",
    health: np.ndarray | None = None,
) -> ExperimentPlan:
    """Plan an experiment on `metric` from its recorded `values` (units × months; `active` marks real cells).

    `kind="mean"`: the per-unit monthly mean, t-test. `kind="proportion"`: values are 0/1 per unit and
    month (e.g. converted); the unit's share over the months is compared by a z-test on Cohen's h.
    Give the effect as `mde` (absolute) or `mde_relative` (of the baseline mean). Durations 1..months
    are considered; the shortest whose sample size fits the available units in `arms` arms is chosen.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] == 0 or v.shape[1] == 0:
        raise PricingError("values must be units × months with at least one of each")
    a = np.ones(v.shape, dtype=bool) if active is None else np.asarray(active, dtype=bool)
    if a.shape != v.shape:
        raise PricingError(f"active has shape {a.shape}, expected {v.shape}")
    if not (0 < alpha < 1 and 0 < power < 1) or arms < 2 or ratio <= 0:
        raise PricingError("need 0 < alpha < 1, 0 < power < 1, arms ≥ 2 and ratio > 0")
    if (mde is None) == (mde_relative is None):
        raise PricingError("give exactly one of mde and mde_relative")
    if kind not in ("mean", "proportion"):
        raise PricingError("kind is 'mean' or 'proportion'")
    a_cmp = _alpha(alpha, arms)
    per_arm_factor = 1 + ratio * (arms - 1)  # units needed = n_control × this
    full = _per_unit_means(v, a, v.shape[1])
    base_mean = float(full.mean()) if full.size else 0.0
    delta = mde if mde is not None else float(mde_relative) * base_mean  # type: ignore[arg-type]
    options = []
    for k in range(1, v.shape[1] + 1):
        x = _per_unit_means(v, a, k)
        m = float(x.mean()) if x.size else 0.0
        sd = float(x.std(ddof=1)) if x.size >= 2 else 0.0
        if kind == "mean":
            n = n_for_mean(mde=delta, sd=sd, alpha=a_cmp, power=power, ratio=ratio)
            avail_n = int(x.size // per_arm_factor)
            mde_av = mde_for_mean(n=avail_n, sd=sd, alpha=a_cmp, power=power, ratio=ratio)
        else:
            n = n_for_proportion(p0=m, p1=min(max(m + delta, 0.0), 1.0), alpha=a_cmp, power=power, ratio=ratio)
            mde_av = None
        options.append(DurationOption(k, int(x.size), m, sd, n, mde_av))
    fits = [o for o in options if o.n_per_arm is not None and o.n_per_arm * per_arm_factor <= o.units]
    chosen = fits[0] if fits else options[-1]
    n_arm = chosen.n_per_arm or 0
    g_mde = None
    if health is not None and n_arm >= 2:
        hx = _per_unit_means(np.nan_to_num(np.asarray(health, dtype=np.float64)), a & ~np.isnan(health), chosen.months)
        if hx.size >= 2:
            g_mde = mde_for_mean(n=n_arm, sd=float(hx.std(ddof=1)), alpha=alpha, power=power, ratio=ratio)
    test = (
        "two-sided two-sample t-test (statsmodels TTestIndPower)"
        if kind == "mean"
        else ("two-sided z-test on Cohen's h (statsmodels NormalIndPower)")
    )
    return ExperimentPlan(
        metric=metric,
        kind=kind,
        alpha=a_cmp,
        power=power,
        arms=arms,
        ratio=ratio,
        mde=delta,
        mde_relative=(delta / base_mean) if base_mean else None,
        baseline_mean=base_mean,
        sd=chosen.sd,
        n_per_arm=n_arm,
        total_n=int(math.ceil(n_arm * per_arm_factor)),
        duration_months=chosen.months if fits else None,
        available_units=int(full.size),
        options=tuple(options),
        guardrail_mde=g_mde,
        method=f"{test}; per-unit monthly mean over the duration; alpha {alpha} / {max(arms - 1, 1)} (Bonferroni)",
    )
