"""Billing periods (UTC calendar months) and the resolution of plan inputs to billable metrics."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from cxp.pricing.errors import PricingError
from cxp.pricing.examples import example_metrics, example_plans
from cxp.pricing.metrics import BillingPeriod, resolve_metrics


def test_billing_period_months():
    p = BillingPeriod(date(2025, 11, 1), 3)
    assert p.month_starts == (date(2025, 11, 1), date(2025, 12, 1), date(2026, 1, 1))
    assert p.end == date(2026, 2, 1) and p.start_at() == datetime(2025, 11, 1, tzinfo=UTC)
    with pytest.raises(PricingError):
        BillingPeriod(date(2025, 11, 2), 1)
    c = BillingPeriod.covering(start=datetime(2026, 1, 15, tzinfo=UTC), end=datetime(2026, 3, 1, tzinfo=UTC))
    assert (c.first_month, c.months) == (date(2026, 1, 1), 2)
    c = BillingPeriod.covering(start=datetime(2026, 1, 15, tzinfo=UTC), end=datetime(2026, 3, 1, 0, 1, tzinfo=UTC))
    assert c.months == 3
    # 00:30 on Feb 1 in UTC+1 is still January in UTC.
    tz = timezone(timedelta(hours=1))
    c = BillingPeriod.covering(start=datetime(2026, 2, 1, 0, 30, tzinfo=tz), end=datetime(2026, 2, 2, tzinfo=UTC))
    assert c.first_month == date(2026, 1, 1)


def test_resolve_metrics_defaults_and_overrides():
    usage, outcomes, uptime = resolve_metrics(plans=example_plans(), metrics=example_metrics())
    assert usage["heating_kwh"].field == "quantity"
    assert usage["set_schedule"].filter.touchpoints == ("set_schedule",)  # default: touchpoint count
    assert outcomes["optimised_cycles"].filter.success_only
    assert uptime
