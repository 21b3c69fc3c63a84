"""Experience-aware pricing: does a plan raise bills most where the experience is worst?

Health comes from the caller (the API passes analytics' Experience Health Score per account, mean over
the period); this module only compares it with each account's bill change against the baseline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cxp.pricing.core.backtest import BacktestResult


@dataclass(frozen=True, slots=True)
class ExperienceRisk:
    """One plan: its accounts' relative bill change against their health, and whether it hits the unhappy hardest."""

    plan_key: str
    accounts: int  # with a health score and a positive baseline total
    spearman: float | None  # rank correlation of bill change with health (< 0: worse experience, bigger increase)
    p_value: float | None
    low_health_change: float | None  # mean relative bill change of the bottom health quartile
    rest_change: float | None  # of the other accounts
    flagged: bool  # the bottom quartile's change exceeds the rest's and ρ < 0 with p < `alpha`


def experience_risk(
    *, result: BacktestResult, health: Mapping[str, float], alpha: float = 0.05
) -> tuple[ExperienceRisk, ...]:
    """Per plan other than the baseline: bill change (period total new / baseline − 1) against account health."""
    from scipy.stats import spearmanr

    ids = result.cube.account_ids
    h = np.array([float(health.get(a, np.nan)) if health.get(a) is not None else np.nan for a in ids])
    base = result.bills[result.baseline].sum(axis=1).astype(np.float64)
    keep = ~np.isnan(h) & (base > 0) & result.cube.active_mask().any(axis=1)
    out = []
    for key in result.plan_keys:
        if key == result.baseline:
            continue
        change = result.bills[key].sum(axis=1) / np.where(base > 0, base, 1.0) - 1.0
        x, y = change[keep], h[keep]
        rho = p = low = rest = None
        if x.size >= 4:
            if np.ptp(x) > 0 and np.ptp(y) > 0:
                r = spearmanr(x, y)
                rho, p = float(r.statistic), float(r.pvalue)
            cut = np.quantile(y, 0.25)
            lo, hi = x[y <= cut], x[y > cut]
            if lo.size and hi.size:
                low, rest = float(lo.mean()), float(hi.mean())
        flagged = bool(
            low is not None and rest is not None and low > rest and rho is not None and rho < 0 and p < alpha
        )
        out.append(ExperienceRisk(key, int(x.size), rho, p, low, rest, flagged))
    return tuple(out)
