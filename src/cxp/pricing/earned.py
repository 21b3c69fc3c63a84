"""Earned growth per group from the bills of a plan on the recorded fleet (issue 18): the revenue half.

A month is compared with the month before. Each account's revenue in both is its recurring bill under `plan` (the
pricing lab's exact billing of the recorded usage; one-time sales such as a device's price are not recurring revenue
and are left out), counted only while the account was a customer: an account whose devices reported nothing in a
month (churned, silent) pays nothing that month. An account billed in the base month is an existing customer (NRR);
one billed only in the current month is new, and *earned* when its activation names a referrer (the `referred_by`
of the `activated` lifecycle event). NPS beside each group comes from analytics and is joined by the API
(analytics ⟂ pricing).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import psycopg
from psycopg import sql

from cxp.pricing.core.backtest import bill_cube
from cxp.pricing.core.growth import CustomerRevenue, EarnedGrowth, earned_growth, split_revenue
from cxp.pricing.core.plans import BillableMetric, Plan
from cxp.pricing.errors import PricingError, maps_numeric_errors
from cxp.pricing.metrics import BillingPeriod, Cohort, add_months, fetch_rows
from cxp.pricing.service import get_data_span, get_usage_cube

GROUPS = ("product", "segment", "cohort")
DEFINITIONS = {
    "revenue": "the account's recurring bill under the plan for the month (recorded usage; one-time sales such as"
    " the device price left out), 0 in a month its devices did not report at all (churned or silent)",
    "base_revenue": "revenue in the base month (the month before) of the accounts billed then",
    "nrr_pct": "those accounts' revenue this month ÷ base revenue (expansion, contraction and churn included)",
    "earned_new_pct": "revenue this month of accounts new this month whose activation names a referrer ÷ base revenue",
    "earned_growth_pct": "nrr_pct + earned_new_pct − 100",
    "revenue_growth_pct": "all revenue this month ÷ base revenue − 100 (reported growth)",
    "earned_growth_ratio": "earned_growth_pct ÷ revenue_growth_pct (None when revenue did not change)",
    "cohort": "the account's first activation month (UTC)",
    "product": "the account's devices of that product only (an account with two products counts in both)",
}

_REFERRED_ACCOUNTS = sql.SQL(
    "SELECT DISTINCT d.account_id FROM events e JOIN devices d ON d.device_key = e.device_key"
    " WHERE e.kind = 'lifecycle' AND e.stage = 'activated' AND e.detail ? 'referred_by'"
    " AND d.account_id IS NOT NULL AND e.ts < %(end)s"
)
_PRODUCTS = sql.SQL(
    "SELECT DISTINCT product_id FROM devices WHERE account_id IS NOT NULL"
    " AND (%(product)s::text IS NULL OR product_id = %(product)s::text) ORDER BY 1"
)


@dataclass(frozen=True)
class GrowthGroup:
    """One group's earned growth (None with the reason when it cannot be computed) and the customers behind it."""

    key: dict[str, str]
    base_customers: int
    kept_customers: int
    earned_new_customers: int
    other_new_customers: int
    growth: EarnedGrowth | None
    reason: str | None


@dataclass(frozen=True)
class EarnedGrowthReport:
    """Earned growth of `month` against `base_month` per group of `by`, and over all groups."""

    plan_key: str
    currency: str
    base_month: date | None
    month: date | None
    partial: bool  # a compared month is not wholly covered by the recorded data
    by: tuple[str, ...]
    groups: tuple[GrowthGroup, ...]
    total: GrowthGroup | None
    definitions: dict[str, str]
    reason: str | None = None


def _group(key: dict[str, str], customers: list[CustomerRevenue], min_n: int) -> GrowthGroup:
    s = split_revenue(customers)
    counts = (s["base_customers"], s["kept_customers"], s["earned_new_customers"], s["other_new_customers"])
    if s["base"] == 0:
        return GrowthGroup(key, *counts, None, "no revenue in the base month")
    growth = earned_growth(
        base_revenue_minor=s["base"],
        retained_revenue_minor=s["retained"],
        earned_new_revenue_minor=s["earned_new"],
        other_new_revenue_minor=s["other_new"],
    )
    reason = None
    if s["base_customers"] < min_n:
        reason = f"not enough data: {s['base_customers']} customers in the base month, {min_n} needed"
    return GrowthGroup(key, *counts, growth, reason)


@maps_numeric_errors
def get_earned_growth(
    *,
    conn: psycopg.Connection,
    plan: Plan,
    by: Sequence[str] = ("product",),
    month: date | None = None,
    product: str | None = None,
    metrics: Sequence[BillableMetric] = (),
    min_n: int = 10,
) -> EarnedGrowthReport:
    """Earned growth of `month` (default: the last month the data covers wholly) against the month before, per group
    of `by` (product, segment, cohort) and in total, with `plan`'s bills as revenue."""
    unknown = set(by) - set(GROUPS)
    if unknown or not by:
        raise PricingError(f"by must be a non-empty subset of {', '.join(GROUPS)}; got {sorted(unknown)}")
    if month is not None and month.day != 1:
        raise PricingError(f"month is the 1st of a month, got {month}")
    by = tuple(by)
    span = get_data_span(conn=conn, product=product)
    empty = EarnedGrowthReport(plan.key, plan.currency, None, None, False, by, (), None, DEFINITIONS)
    if span.first_day is None or span.last_day is None:
        return dataclasses.replace(empty, reason="not enough data: nothing recorded yet")
    if month is None:
        after = span.last_day + timedelta(days=1)
        month = add_months(date(after.year, after.month, 1), -1)
    base_month = add_months(month, -1)
    period = BillingPeriod(base_month, 2)
    partial = span.first_day > period.start or span.last_day < period.end - timedelta(days=1)
    until = min(period.end_at(), datetime.combine(span.last_day + timedelta(days=1), time(0), UTC))
    referred = {r[0] for r in fetch_rows(conn, _REFERRED_ACCOUNTS, {"end": period.end_at()})}
    products = [r[0] for r in fetch_rows(conn, _PRODUCTS, {"product": product})] if "product" in by else [product]
    rows: list[tuple[dict[str, str], CustomerRevenue]] = []
    for p in products:
        cube = get_usage_cube(
            conn=conn,
            plans=[plan],
            period=period,
            cohort=Cohort(product=p),
            metrics=metrics,
            until=until,
            with_health=False,
            with_coverage=True,
        )
        if not cube.account_ids:
            continue
        bills = bill_cube(plan=plan, cube=cube, recurring_only=True)
        reported = np.nan_to_num(np.asarray(cube.coverage, dtype=float), nan=0.0) > 0
        bills = np.where(reported, bills, 0)
        # period_index: months from the account's first activation month to each month of the period
        cohorts = [f"{add_months(base_month, -int(k)):%Y-%m}" for k in cube.period_index[:, 0]]
        for i, account in enumerate(cube.account_ids):
            key = {"product": str(p), "segment": cube.segments[i] or "(none)", "cohort": cohorts[i]}
            customer = CustomerRevenue(int(bills[i, 0]), int(bills[i, 1]), account in referred)
            rows.append(({g: key[g] for g in by}, customer))
    if not rows:
        reason = "not enough data: no accounts in scope"
        return dataclasses.replace(empty, base_month=base_month, month=month, partial=partial, reason=reason)
    grouped: dict[tuple[str, ...], list[CustomerRevenue]] = {}
    for key, customer in rows:
        grouped.setdefault(tuple(key[g] for g in by), []).append(customer)
    groups = tuple(_group(dict(zip(by, k, strict=True)), c, min_n) for k, c in sorted(grouped.items()))
    total = _group({}, [c for _, c in rows], min_n)
    return EarnedGrowthReport(plan.key, plan.currency, base_month, month, partial, by, groups, total, DEFINITIONS)
