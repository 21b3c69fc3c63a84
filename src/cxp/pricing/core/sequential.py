"""Group-sequential guardrail checks: looking at a running experiment repeatedly without inflating the error rate.

Each look spends part of the total α by a Lan–DeMets spending function of the information fraction t
(here: elapsed share of the experiment's window): O'Brien–Fleming-type α(t) = 2 − 2Φ(z_{1−α/2} / √t)
(spends almost nothing early, so early stops need overwhelming evidence) or Pocock-type
α(t) = α · ln(1 + (e − 1) t). The boundary c_k of look k solves

    P(Z_1 > −c_1, …, Z_{k−1} > −c_{k−1}, Z_k ≤ −c_k) = α(t_k) − α(t_{k−1})

for the one-sided harm test (stop when the arm is significantly worse), with Corr(Z_i, Z_j) = √(t_i / t_j),
integrated by SciPy's multivariate normal CDF (Genz's method, fixed seed: deterministic). The sum of what
the looks spend is α whatever the number and timing of looks (Jennison & Turnbull, ch. 7).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps
from scipy.optimize import brentq

from cxp.pricing.errors import PricingError

Spending = Literal["obrien-fleming", "pocock"]
SPENDING: tuple[Spending, ...] = ("obrien-fleming", "pocock")
_SEED = 20261204  # Genz's integration is quasi-random: a fixed seed makes the boundaries reproducible


def alpha_spent(*, t: float, alpha: float, spending: Spending = "obrien-fleming") -> float:
    """The total α spent by information fraction `t` ∈ [0, 1] (α at t = 1)."""
    if not 0 < alpha < 1:
        raise PricingError("alpha must be in (0, 1)")
    t = min(max(t, 0.0), 1.0)
    if t == 0:
        return 0.0
    if spending == "obrien-fleming":
        return float(2 - 2 * sps.norm.cdf(sps.norm.ppf(1 - alpha / 2) / math.sqrt(t)))
    if spending == "pocock":
        return float(alpha * math.log(1 + (math.e - 1) * t))
    raise PricingError(f"unknown spending function {spending!r}; one of {', '.join(SPENDING)}")


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    t = np.asarray(fractions, dtype=np.float64)
    if t.size == 0 or not np.all((t > 0) & (t <= 1)) or np.any(np.diff(t) <= 0):
        raise PricingError("information fractions must rise strictly within (0, 1]")
    return t


def boundaries(
    *, fractions: Sequence[float], alpha: float = 0.05, spending: Spending = "obrien-fleming"
) -> list[float]:
    """The z boundaries c_1…c_K (stop for harm when Z_k ≤ −c_k) at looks with these information fractions."""
    t = _check_fractions(fractions)
    out: list[float] = []
    spent_before = 0.0
    for k in range(t.size):
        spent = alpha_spent(t=float(t[k]), alpha=alpha, spending=spending)
        increment = spent - spent_before
        spent_before = spent
        if k == 0:
            out.append(float(-sps.norm.ppf(increment)))
            continue
        if increment <= 1e-12:
            out.append(math.inf)
            continue
        ts = t[: k + 1]
        cov = np.sqrt(np.minimum.outer(ts, ts) / np.maximum.outer(ts, ts))
        mvn = sps.multivariate_normal(mean=np.zeros(k + 1), cov=cov, allow_singular=True, seed=_SEED)
        prior = -np.asarray(out)
        # P(Z_1 > −c_1 … Z_{k−1} > −c_{k−1}, Z_k ≤ −c): continue at every earlier look, then cross now.
        lower = np.append(prior, -np.inf)

        def crossing(c: float, lower=lower, prior=prior, mvn=mvn, increment=increment) -> float:
            upper = np.append(np.full(prior.size, np.inf), -c)
            return float(mvn.cdf(upper, lower_limit=lower)) - increment

        out.append(float(brentq(crossing, 0.0, 12.0, xtol=1e-6)))
    return out


@dataclass(frozen=True)
class GuardrailCheck:
    """One look at one arm: its z for the health difference, the look's boundary and the verdict."""

    look: int
    information_fraction: float
    alpha_spent: float
    boundary_z: float
    z: float | None
    estimate: float | None  # arm − control health, points
    tolerated_drop: float
    stop: bool  # significantly worse beyond the boundary and by more than the tolerated drop


def guardrail_check(
    *,
    fractions: Sequence[float],
    z: float | None,
    estimate: float | None,
    tolerated_drop: float = 0.0,
    alpha: float = 0.05,
    spending: Spending = "obrien-fleming",
) -> GuardrailCheck:
    """The verdict at the last of `fractions` (earlier entries: the fractions of earlier looks) for one arm."""
    c = boundaries(fractions=fractions, alpha=alpha, spending=spending)
    t = float(_check_fractions(fractions)[-1])
    stop = z is not None and estimate is not None and z <= -c[-1] and estimate < -tolerated_drop
    return GuardrailCheck(
        look=len(c),
        information_fraction=t,
        alpha_spent=alpha_spent(t=t, alpha=alpha, spending=spending),
        boundary_z=c[-1],
        z=z,
        estimate=estimate,
        tolerated_drop=tolerated_drop,
        stop=bool(stop),
    )
