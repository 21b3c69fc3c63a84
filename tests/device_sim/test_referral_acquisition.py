"""The planted referral wins (device_sim/referrals.py): a referred customer buys its referrer's product, and
referrals about the product planted to fail win customers less often, on several seeds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cxp.device_sim import build_fleet
from cxp.device_sim.referrals import ACQUISITION_CHANCE, ACQUISITION_CHANCE_FAILING

START = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_referred_customers_follow_their_referrers_product_and_experience(seed: int):
    fleet = build_fleet(
        seed=seed, devices=3000, start=START, days=61, error_prone=("brew-c3", "brew"), referral_experience=True
    )
    first_product: dict[str, str] = {}
    for d in sorted(fleet.devices, key=lambda d: d.index):
        first_product.setdefault(d.account_id, d.product)
    referred = [a for a in fleet.accounts if a.referred_by is not None and a.account_id in first_product]
    assert referred and all(a.acquisition == "referral" for a in referred)
    assert all(first_product[a.account_id] == first_product[a.referred_by] for a in referred)
    # new customers per product, and how many of them came by referral
    new = [a for a in fleet.accounts if a.account_id in first_product]
    share = {}
    for group in ("failing", "others"):
        members = [a for a in new if (first_product[a.account_id] == "brew-c3") == (group == "failing")]
        share[group] = sum(a.referred_by is not None for a in members) / len(members)
    print(f"seed {seed}: referred share of customers {share}")
    assert share["failing"] < share["others"] * (ACQUISITION_CHANCE_FAILING / ACQUISITION_CHANCE + 1) / 2


def test_without_the_plant_referred_customers_draw_their_product():
    plain = build_fleet(seed=4, devices=1000, start=START, days=61, error_prone=("brew-c3", "brew"))
    first_product: dict[str, str] = {}
    for d in sorted(plain.devices, key=lambda d: d.index):
        first_product.setdefault(d.account_id, d.product)
    referred = [a for a in plain.accounts if a.referred_by is not None and a.account_id in first_product]
    assert referred
    assert any(first_product[a.account_id] != first_product[a.referred_by] for a in referred)
