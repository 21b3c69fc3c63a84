"""Planted referral behaviour (issue 18, earned growth): customers recommend the product less after failures.

With `build_fleet(referral_experience=True)` a customer's daily chance to share a referral is the persona's weekly
propensity × REFERRAL_SCALE ÷ (1 + recent failures ÷ FAILURES_HALVING): the failures (per touchpoint, decaying by
a quarter a day, incidents included) the customer has just lived halve it at FAILURES_HALVING. The earned-growth
measure must find fewer referrals where the experience is worse (tests/analytics/test_service_referrals.py)."""

from __future__ import annotations

from collections.abc import Mapping

REFERRAL_SCALE = 10.0
FAILURES_HALVING = 0.5


def referral_factor(*, recent_err: Mapping[str, float], recent_incident: float) -> float:
    """The planted multiplier of the referral chance for a customer with these recent failures."""
    failures = sum(recent_err.values()) + recent_incident
    return REFERRAL_SCALE / (1.0 + failures / FAILURES_HALVING)
