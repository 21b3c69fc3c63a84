"""Earned growth formula: Bain's worked example and the edge cases, exact in Decimal."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cxp.pricing.core.growth import CustomerRevenue, earned_growth, rank_correlation, split_revenue
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


def test_split_revenue_classifies_existing_new_and_earned_customers():
    customers = [
        CustomerRevenue(1000, 1200, False),  # expanded
        CustomerRevenue(1000, 0, True),  # left (referred long ago: still an existing customer)
        CustomerRevenue(500, 500, False),
        CustomerRevenue(0, 300, True),  # new, by referral
        CustomerRevenue(0, 200, False),  # new, organic
        CustomerRevenue(0, 0, True),  # neither period billed
    ]
    s = split_revenue(customers)
    assert s == {
        "base": 2500,
        "retained": 1700,
        "earned_new": 300,
        "other_new": 200,
        "base_customers": 3,
        "kept_customers": 2,
        "earned_new_customers": 1,
        "other_new_customers": 1,
    }
    eg = earned_growth(
        base_revenue_minor=s["base"],
        retained_revenue_minor=s["retained"],
        earned_new_revenue_minor=s["earned_new"],
        other_new_revenue_minor=s["other_new"],
    )
    assert (eg.nrr_pct, eg.earned_new_pct, eg.earned_growth_pct) == (Decimal(68), Decimal(12), Decimal(-20))


def test_rank_correlation_needs_three_varying_pairs():
    assert rank_correlation([(1.0, 2.0), (2.0, 3.0)]) is None
    assert rank_correlation([(1.0, 5.0), (2.0, 5.0), (3.0, 5.0)]) is None
    assert rank_correlation([(-20.0, -4.0), (10.0, 1.5), (40.0, 9.0)]) == pytest.approx(1.0)
    assert rank_correlation([(-20.0, 9.0), (10.0, 1.5), (40.0, -4.0)]) == pytest.approx(-1.0)
