"""The pricing page's data: the example revenue models backtested side by side on a product's recorded usage."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import psycopg

from cxp.pricing.core.backtest import BacktestResult
from cxp.pricing.examples import example_metrics, example_plans
from cxp.pricing.metrics import BillingPeriod, Cohort
from cxp.pricing.service import COMPARISON_PLANS, DataSpan, get_data_span, simulate_backtest


@dataclass(frozen=True)
class Comparison:
    """A product's backtest of the comparison plans (result None, with a reason, when it has no usage)."""

    product: str
    span: DataSpan
    period: BillingPeriod | None
    result: BacktestResult | None
    reason: str | None = None


def comparison_plan_ids() -> tuple[str, ...]:
    """The plans compared on the page (the same ones as the demo's side-by-side)."""
    return tuple(p.plan_id for p in example_plans() if p.plan_id in COMPARISON_PLANS)


def model_comparison(*, conn: psycopg.Connection, product: str, theta: Decimal,
                     baseline: str | None = None) -> Comparison:
    """Backtest the comparison plans on `product`'s whole recorded span, as pricing.service's text version does."""
    span = get_data_span(conn=conn, product=product)
    if span.first_day is None or span.last_day is None:
        return Comparison(product, span, None, None, f"no recorded usage for {product} yet")
    until = datetime.combine(span.last_day + timedelta(days=1), time(0), UTC)
    period = BillingPeriod.covering(start=datetime.combine(span.first_day, time(0), UTC), end=until)
    plans = [p for p in example_plans() if p.plan_id in COMPARISON_PLANS]
    base_key = next((p.key for p in plans if p.plan_id == baseline), None)
    result = simulate_backtest(conn=conn, plans=plans, period=period, cohort=Cohort(product=product), theta=theta,
                               baseline=base_key, metrics=example_metrics(), until=until)
    if not result.cube.active_mask().any():
        return Comparison(product, span, period, None, f"no active {product} accounts in the recorded span")
    return Comparison(product, span, period, result)
