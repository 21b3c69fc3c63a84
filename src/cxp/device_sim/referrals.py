"""Planted referral behaviour (issue 18, earned growth): customers recommend the product less after failures, and a
referral wins a new customer less often when the referrer's product is the one planted to fail.

With `build_fleet(referral_experience=True)`:

* a customer's daily chance to share a referral is the persona's weekly propensity × REFERRAL_SCALE ÷ (1 + recent
  failures ÷ FAILURES_HALVING): the failures (per touchpoint, decaying by a quarter a day, incidents included) the
  customer has just lived halve it at FAILURES_HALVING;
* a share REFERRAL_ACQUISITION_SHARE of the accounts won during the fleet's span are referral candidates (else the
  default shares); a candidate becomes a referred customer with chance ACQUISITION_CHANCE, or
  ACQUISITION_CHANCE_FAILING when the referrer's first device is of the product planted to fail (`error_prone`),
  else it is organic; a referred customer buys the referrer's product (word of mouth is about a product).

The earned-growth measures must find fewer referrals and less earned-new revenue where the experience is worse
(tests/analytics/test_service_referrals.py, tests/pricing/test_earned_growth_db.py,
tests/device_sim/test_referral_acquisition.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cxp.device_sim.fleet import Account

REFERRAL_SCALE = 10.0
FAILURES_HALVING = 0.5
REFERRAL_ACQUISITION_SHARE = 0.5
ACQUISITION_CHANCE = 0.9
ACQUISITION_CHANCE_FAILING = 0.25


def referral_factor(*, recent_err: Mapping[str, float], recent_incident: float) -> float:
    """The planted multiplier of the referral chance for a customer with these recent failures."""
    failures = sum(recent_err.values()) + recent_incident
    return REFERRAL_SCALE / (1.0 + failures / FAILURES_HALVING)


def referred_acquisition(
    *, account: Account, draw: float, first_product: Mapping[str, str], failing_product: str | None
) -> tuple[Account, str | None]:
    """The account as won (referred, or organic when the referral did not convert) and the product its devices take
    (the referrer's; None: drawn as usual). `draw` is a stable uniform draw of this account."""
    product = first_product.get(account.referred_by) if account.referred_by else None
    if product is None:
        return account, None
    chance = ACQUISITION_CHANCE_FAILING if product == failing_product else ACQUISITION_CHANCE
    if draw < chance:
        return account, product
    return dataclasses.replace(account, acquisition="organic", referred_by=None), None
