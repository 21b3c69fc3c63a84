"""Earned growth formula: Bain's worked example and the edge cases, exact in Decimal."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cxp.pricing.core.growth import earned_growth
from cxp.pricing.errors import UncomputableError


def test_worked_example_nrr_104_and_12_earned_new_gives_16() -> None:
    # base 1,000.00; existing customers now pay 1,040.00 (NRR 104 %); referred new customers 120.00 (12 %);
    # bought (not earned) new customers 80.00 count in reported growth only
    g = earned_growth(
        base_revenue_minor=100_000,
        retained_revenue_minor=104_000,
        earned_new_revenue_minor=12_000,
        other_new_revenue_minor=8_000,
    )
    assert g.nrr_pct == Decimal(104) and g.earned_new_pct == Decimal(12)
    assert g.earned_growth_pct == Decimal(16)
    assert g.revenue_growth_pct == Decimal(24)
    assert g.earned_growth_ratio == Decimal(16) / Decimal(24)


def test_churn_can_make_earned_growth_negative_and_flat_revenue_has_no_ratio() -> None:
    g = earned_growth(base_revenue_minor=1000, retained_revenue_minor=900, earned_new_revenue_minor=50)
    assert g.earned_growth_pct == Decimal(-5)
    flat = earned_growth(
        base_revenue_minor=1000, retained_revenue_minor=950, earned_new_revenue_minor=0, other_new_revenue_minor=50
    )
    assert flat.revenue_growth_pct == 0 and flat.earned_growth_ratio is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_revenue_minor": 0, "retained_revenue_minor": 1, "earned_new_revenue_minor": 0},
        {"base_revenue_minor": 10, "retained_revenue_minor": -1, "earned_new_revenue_minor": 0},
        {"base_revenue_minor": 10, "retained_revenue_minor": 1.5, "earned_new_revenue_minor": 0},
    ],
)
def test_bad_inputs_are_pricing_errors(kwargs: dict) -> None:
    with pytest.raises(UncomputableError):
        earned_growth(**kwargs)
