"""Planted referral behaviour (issue 18): the referral chance falls with recent failures, only when planted."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cxp.device_sim import build_fleet, device_events
from cxp.device_sim.referrals import FAILURES_HALVING, REFERRAL_SCALE, referral_factor

START = datetime(2025, 3, 3, tzinfo=UTC)


def test_failures_halve_the_referral_chance() -> None:
    assert referral_factor(recent_err={}, recent_incident=0.0) == REFERRAL_SCALE
    half = referral_factor(recent_err={"brew": FAILURES_HALVING / 2}, recent_incident=FAILURES_HALVING / 2)
    assert half == pytest.approx(REFERRAL_SCALE / 2)
    assert referral_factor(recent_err={"a": 3.0}, recent_incident=0.0) < half


def _referrals(fleet) -> int:
    return sum(
        1
        for d in fleet.devices
        for e in device_events(fleet=fleet, device=d)
        if e.kind == "lifecycle" and e.stage == "referred"
    )


def test_the_plant_is_opt_in_and_changes_only_referred_customers() -> None:
    plain = build_fleet(seed=6, devices=120, start=START, days=21)
    planted = build_fleet(seed=6, devices=120, start=START, days=21, referral_experience=True)
    assert plain.params()["referral_experience"] is False and planted.params()["referral_experience"] is True
    # only referred customers' devices take another product (their referrer's); every other device is as it was
    referred = {a.account_id for a in planted.accounts if a.referred_by is not None}
    rows = [(a, b) for a, b in zip(plain.device_rows(), planted.device_rows(), strict=True)]
    assert all(a == b for a, b in rows if b["account_id"] not in referred)
    assert any(a != b for a, b in rows if b["account_id"] in referred)
    assert [p.persona for p in plain.profiles] == [p.persona for p in planted.profiles]
    assert _referrals(planted) > _referrals(plain)  # REFERRAL_SCALE > 1 outweighs the failures' damping
