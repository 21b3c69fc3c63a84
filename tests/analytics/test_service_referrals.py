"""Referrals beside NPS (the analytics half of earned growth, issue 18) on fleets whose referrals the simulator
makes depend on the customer's recent failures (device_sim/referrals.py), two seeds, with brew-c3's core failing."""

from __future__ import annotations

import pytest
from scipy import stats

from cxp.analytics import service
from cxp.analytics.core.referrals import rate_interval
from cxp.analytics.errors import InvalidParameter
from cxp.analytics.query import AnalyticsQuery
from cxp.device_sim import build_fleet, device_events
from cxp.store.db import connect
from tests.fixtures.fleet import REFERRAL_SEEDS, REFERRAL_WEEKS, TruthFleet, referral_fleet_params

pytestmark = pytest.mark.integration


def _lived_referrals(seed: int) -> dict[str, int]:
    fleet = build_fleet(**referral_fleet_params(seed))
    out: dict[str, int] = {}
    for d in fleet.devices:
        n = sum(1 for e in device_events(fleet=fleet, device=d) if e.kind == "lifecycle" and e.stage == "referred")
        out[d.product] = out.get(d.product, 0) + n
    return out


def test_referrals_are_counted_and_fewer_where_the_experience_is_worse(referral_fleets: dict[int, TruthFleet]):
    assert sorted(referral_fleets) == list(REFERRAL_SEEDS)
    for seed, rf in referral_fleets.items():
        with connect(rf.settings.db, autocommit=True) as conn:
            report = service.get_referrals(conn=conn, by=("product",), weeks=REFERRAL_WEEKS)
        groups = {g.key["product"]: g for g in report.groups}
        for p, g in sorted(groups.items()):
            print(
                f"seed {seed} {p}: {g.referrals} referrals / {g.customer_weeks:.0f} customer-weeks ="
                f" {g.rate_per_100_weeks:.1f} ({g.ci_low:.1f} … {g.ci_high:.1f}) per 100; NPS {g.nps:+.0f}"
                f" (n {g.nps_n}); earned new {g.earned_new_devices} / {g.new_devices}"
            )
        # every referral the simulator lived is counted (the fleet spans the window)
        assert {p: g.referrals for p, g in groups.items()} == _lived_referrals(seed)
        worse = groups["brew-c3"]
        others = [g for p, g in groups.items() if p != "brew-c3"]
        # the failing product's customers recommend it less: lower NPS, and a referral rate below the others' by a
        # conditional (exact) test of the two Poisson rates
        referrals = worse.referrals + sum(g.referrals for g in others)
        share = worse.customer_weeks / (worse.customer_weeks + sum(g.customer_weeks for g in others))
        test = stats.binomtest(worse.referrals, referrals, share, alternative="less")
        other_rate = 100 * sum(g.referrals for g in others) / sum(g.customer_weeks for g in others)
        print(f"seed {seed}: brew-c3 rate ÷ others' {worse.rate_per_100_weeks / other_rate:.2f}, p {test.pvalue:.4f}")
        assert test.pvalue < 0.05 and worse.rate_per_100_weeks < 0.75 * other_rate
        assert all(worse.nps < g.nps for g in others)
        assert sum(g.earned_new_devices for g in groups.values()) > 0


def test_nps_predicts_referrals_across_groups(referral_fleets: dict[int, TruthFleet]):
    for seed, rf in referral_fleets.items():
        with connect(rf.settings.db, autocommit=True) as conn:
            report = service.get_referrals(conn=conn, by=("product", "segment"), weeks=REFERRAL_WEEKS, min_n=10)
        print(
            f"seed {seed}: Spearman(NPS, referral rate) {report.nps_rate_correlation} over"
            f" {report.correlation_groups} groups"
        )
        assert report.correlation_groups >= 3 and report.nps_rate_correlation is not None
        assert report.nps_rate_correlation > 0


def test_small_scope_and_bad_grouping(referral_fleets: dict[int, TruthFleet]):
    rf = referral_fleets[REFERRAL_SEEDS[0]]
    with connect(rf.settings.db, autocommit=True) as conn:
        one = service.get_referrals(conn=conn, query=AnalyticsQuery(product="ebike-s2"), by=("product",))
        assert one.nps_rate_correlation is None and "not enough data" in one.reason
        with pytest.raises(InvalidParameter):
            service.get_referrals(conn=conn, by=("touchpoint",))


def test_rate_interval_is_the_exact_poisson_interval():
    rate, low, high = rate_interval(events=10, exposure=200.0)
    assert rate == pytest.approx(5.0)
    assert (low, high) == pytest.approx((100 * 4.795 / 200, 100 * 18.39 / 200), rel=1e-3)
    assert rate_interval(events=0, exposure=50.0)[1] == 0.0
    assert rate_interval(events=3, exposure=0.0) == (None, None, None)
