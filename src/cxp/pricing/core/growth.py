"""Earned growth (Bain): net revenue retention + earned-new-customer revenue − 100%, from revenue in minor units.

Inputs are integer minor units (cents) per customer and period, so every figure is exact Decimal:

* NRR = revenue this period from customers who were already customers at the start ÷ their revenue in the
  base period (expansion, contraction and churn included);
* earned-new share = revenue this period from new customers who came by referral ÷ base-period revenue;
* earned growth rate = NRR + earned-new share − 100% (percent);
* earned growth ratio = earned growth ÷ reported revenue growth (total this period ÷ base − 1), None when
  revenue did not grow or shrink.

Composing the inputs (bills from pricing, referrals from the registry, NPS from analytics) belongs to a layer
allowed to import both (analytics ⟂ pricing).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from scipy import stats

from cxp.pricing.errors import UncomputableError

HUNDRED = Decimal(100)


@dataclass(frozen=True)
class EarnedGrowth:
    """Earned growth of one group between a base period and the current period, all in percent (Decimal)."""

    base_revenue_minor: int
    retained_revenue_minor: int
    earned_new_revenue_minor: int
    other_new_revenue_minor: int
    nrr_pct: Decimal
    earned_new_pct: Decimal
    earned_growth_pct: Decimal
    revenue_growth_pct: Decimal
    earned_growth_ratio: Decimal | None


def earned_growth(
    *,
    base_revenue_minor: int,
    retained_revenue_minor: int,
    earned_new_revenue_minor: int,
    other_new_revenue_minor: int = 0,
) -> EarnedGrowth:
    """Earned growth from base-period revenue, this period's revenue from existing customers, from referred new
    customers and from other new customers (all integer minor units, ≥ 0; base > 0)."""
    values = (base_revenue_minor, retained_revenue_minor, earned_new_revenue_minor, other_new_revenue_minor)
    if any(not isinstance(v, int) or isinstance(v, bool) for v in values):
        raise UncomputableError("earned growth needs integer minor units")
    if min(values) < 0:
        raise UncomputableError("revenue in minor units must be non-negative")
    if base_revenue_minor == 0:
        raise UncomputableError("earned growth needs base-period revenue > 0")
    base = Decimal(base_revenue_minor)
    nrr = HUNDRED * retained_revenue_minor / base
    earned_new = HUNDRED * earned_new_revenue_minor / base
    growth = nrr + earned_new - HUNDRED
    total = retained_revenue_minor + earned_new_revenue_minor + other_new_revenue_minor
    reported = HUNDRED * total / base - HUNDRED
    return EarnedGrowth(
        base_revenue_minor=base_revenue_minor,
        retained_revenue_minor=retained_revenue_minor,
        earned_new_revenue_minor=earned_new_revenue_minor,
        other_new_revenue_minor=other_new_revenue_minor,
        nrr_pct=nrr,
        earned_new_pct=earned_new,
        earned_growth_pct=growth,
        revenue_growth_pct=reported,
        earned_growth_ratio=None if reported == 0 else growth / reported,
    )


@dataclass(frozen=True)
class CustomerRevenue:
    """One customer's revenue (minor units) in the base and the current period, and how a new one was won."""

    base_minor: int
    current_minor: int
    referred: bool


def split_revenue(customers: list[CustomerRevenue]) -> dict[str, int]:
    """Base, retained, earned-new and other-new revenue and customer counts: a customer billed in the base period
    is an existing one (its current revenue is retained, 0 when it left); one billed only now is new, earned when
    it came by referral."""
    out = dict.fromkeys(
        (
            "base",
            "retained",
            "earned_new",
            "other_new",
            "base_customers",
            "kept_customers",
            "earned_new_customers",
            "other_new_customers",
        ),
        0,
    )
    for c in customers:
        if c.base_minor > 0:
            out["base"] += c.base_minor
            out["retained"] += c.current_minor
            out["base_customers"] += 1
            out["kept_customers"] += c.current_minor > 0
        elif c.current_minor > 0:
            kind = "earned_new" if c.referred else "other_new"
            out[kind] += c.current_minor
            out[f"{kind}_customers"] += 1
    return out


def rank_correlation(pairs: list[tuple[float, float]]) -> float | None:
    """Spearman's rank correlation of the pairs (e.g. NPS and earned growth across groups); None with fewer than
    three pairs or when either side is constant."""
    if len(pairs) < 3:
        return None
    x, y = zip(*pairs, strict=True)
    if len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(stats.spearmanr(x, y).statistic)
