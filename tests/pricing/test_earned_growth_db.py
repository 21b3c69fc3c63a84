"""Earned growth from the pricing lab's bills (issue 18, the revenue half) on the referral fleets: April against
March, two seeds, brew-c3's core `brew` planted to fail (its customers churn, and their referrals win fewer
customers: device_sim/referrals.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from cxp.device_sim import build_fleet
from cxp.pricing.core.plans import Plan
from cxp.pricing.earned import get_earned_growth
from cxp.pricing.errors import PricingError
from cxp.store.db import connect
from tests.fixtures.fleet import REFERRAL_SEEDS, TruthFleet, referral_fleet_params

pytestmark = pytest.mark.integration

APRIL = date(2025, 4, 1)
PLAN = Plan(
    plan_id="eg-flat",
    name="Subscription per account",
    version=1,
    currency="EUR",
    components=[{"kind": "flat_fee", "id": "subscription", "fee": "9.99"}],
)


def _new_referred_accounts(seed: int) -> dict[str, set[str]]:
    """Per product: the fleet's accounts first activated in April that were won by referral (the plant)."""
    fleet = build_fleet(**referral_fleet_params(seed))
    by_account = {a.account_id: a for a in fleet.accounts}
    first: dict[str, datetime] = {}
    products: dict[str, set[str]] = {}
    for d in fleet.devices:
        first[d.account_id] = min(first.get(d.account_id, d.activated_at), d.activated_at)
        products.setdefault(d.account_id, set()).add(d.product)
    out: dict[str, set[str]] = {}
    for account, at in first.items():
        if at >= datetime(2025, 4, 1, tzinfo=UTC) and by_account[account].referred_by is not None:
            for p in products[account]:
                out.setdefault(p, set()).add(account)
    return out


def test_earned_growth_recovers_the_planted_referred_customers_exactly(referral_fleets: dict[int, TruthFleet]):
    assert sorted(referral_fleets) == list(REFERRAL_SEEDS)
    for seed, rf in referral_fleets.items():
        with connect(rf.settings.db, autocommit=True) as conn:
            report = get_earned_growth(conn=conn, plan=PLAN, by=("product",), min_n=10)
        assert (report.base_month, report.month, report.partial) == (date(2025, 3, 1), APRIL, False)
        groups = {g.key["product"]: g for g in report.groups}
        planted = _new_referred_accounts(seed)
        for p, g in sorted(groups.items()):
            eg = g.growth
            print(
                f"seed {seed} {p}: NRR {eg.nrr_pct:.1f} % + earned new {eg.earned_new_pct:.1f} % → earned growth"
                f" {eg.earned_growth_pct:+.1f} % (reported {eg.revenue_growth_pct:+.1f} %); customers"
                f" {g.base_customers} base, {g.kept_customers} kept, {g.earned_new_customers} earned new,"
                f" {g.other_new_customers} other new"
            )
            # a flat fee per account-month: the revenue is exactly 9.99 per billed customer
            assert eg.base_revenue_minor == 999 * g.base_customers
            assert eg.retained_revenue_minor == 999 * g.kept_customers
            assert eg.earned_new_revenue_minor == 999 * g.earned_new_customers
            assert eg.earned_growth_pct == eg.nrr_pct + eg.earned_new_pct - 100
            # the earned new customers are exactly those the simulator won by referral in April
            assert g.earned_new_customers == len(planted.get(p, ()))
        assert sum(g.earned_new_customers for g in groups.values()) > 0
        total = report.total.growth
        assert total.base_revenue_minor == sum(g.growth.base_revenue_minor for g in groups.values())


def test_groups_bad_input_and_empty_scope(referral_fleets: dict[int, TruthFleet]):
    rf = referral_fleets[REFERRAL_SEEDS[0]]
    with connect(rf.settings.db, autocommit=True) as conn:
        both = get_earned_growth(conn=conn, plan=PLAN, by=("segment", "cohort"), min_n=10)
        # the groups partition the customers: their revenue adds up to the total
        assert sum(g.growth.base_revenue_minor for g in both.groups if g.growth) == both.total.growth.base_revenue_minor
        assert {tuple(g.key) for g in both.groups} == {("segment", "cohort")}
        # April's cohort has no March revenue: not computable, and said so
        april = [g for g in both.groups if g.key["cohort"] == "2025-04"]
        assert april and all(g.growth is None and g.reason for g in april)
        assert any(g.reason and "not enough data" in g.reason for g in both.groups if g.growth is not None)
        with pytest.raises(PricingError):
            get_earned_growth(conn=conn, plan=PLAN, by=("touchpoint",))
        with pytest.raises(PricingError):
            get_earned_growth(conn=conn, plan=PLAN, month=date(2025, 4, 2))
        none = get_earned_growth(conn=conn, plan=PLAN, product="no-such-product")
        assert none.groups == () and "not enough data" in none.reason


def test_one_time_sales_are_not_recurring_revenue(referral_fleets: dict[int, TruthFleet]):
    rf = referral_fleets[REFERRAL_SEEDS[0]]
    with_sale = Plan(
        plan_id="eg-sale",
        name="Device sale + subscription",
        version=1,
        currency="EUR",
        components=[
            {"kind": "one_time_sale", "id": "device", "price": "149.00"},
            {"kind": "flat_fee", "id": "subscription", "fee": "9.99"},
        ],
    )
    with connect(rf.settings.db, autocommit=True) as conn:
        sale = get_earned_growth(conn=conn, plan=with_sale, by=("product",))
        flat = get_earned_growth(conn=conn, plan=PLAN, by=("product",))
    # new customers buy the device in their first month: left out, the figures are the subscription's alone
    assert [g.growth for g in sale.groups] == [g.growth for g in flat.groups]
