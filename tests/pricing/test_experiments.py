"""Experiments: deterministic assignment, planted effects found, ~5% false positives, SRM and guardrail."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pytest

from cxp.core.stats import welch_difference
from cxp.pricing.core.experiments import (
    ExperimentDesign,
    analyse_experiment,
    assign_arms,
    sample_ratio_check,
    two_proportions,
)
from cxp.pricing.core.money import rounding_rule
from cxp.pricing.errors import PlanValidationError

RULE = rounding_rule(currency="EUR")


def _design(weights=(1, 1), salt="s1", drop=0.0) -> ExperimentDesign:
    return ExperimentDesign(
        experiment_id="exp",
        salt=salt,
        guardrail_health_drop=drop,
        arms=[{"name": f"arm{i}", "plan_key": f"p{i}@v1", "weight": w} for i, w in enumerate(weights)],
        start=datetime(2026, 1, 1, tzinfo=UTC),
        end=datetime(2026, 3, 1, tzinfo=UTC),
    )


def test_assignment_is_deterministic_and_follows_the_split():
    ids = [f"acct-{i:06d}" for i in range(20_000)]
    d = _design(weights=(1, 1, 2))
    a = assign_arms(design=d, unit_ids=ids)
    assert (a == assign_arms(design=d, unit_ids=ids)).all()
    shares = np.bincount(a, minlength=3) / len(ids)
    assert shares == pytest.approx([0.25, 0.25, 0.5], abs=0.015)
    other = assign_arms(design=_design(weights=(1, 1, 2), salt="s2"), unit_ids=ids)
    assert 0.3 < (a != other).mean() < 0.8
    assert not sample_ratio_check(counts=np.bincount(a, minlength=3).tolist(), shares=d.shares).mismatch


def test_design_validation():
    with pytest.raises(PlanValidationError, match="timezone"):
        ExperimentDesign(
            experiment_id="e",
            salt="s",
            arms=[{"name": "a", "plan_key": "x"}, {"name": "b", "plan_key": "y"}],
            start=datetime(2026, 1, 1),
            end=datetime(2026, 2, 1),
        )
    with pytest.raises(PlanValidationError, match="unique"):
        ExperimentDesign(
            experiment_id="e",
            salt="s",
            arms=[{"name": "a", "plan_key": "x"}, {"name": "a", "plan_key": "y"}],
            start=datetime(2026, 1, 1, tzinfo=UTC),
            end=datetime(2026, 2, 1, tzinfo=UTC),
        )


def _simulate(seed: int, n: int, usage_lift: float, health_drop: float, conv=(0.10, 0.10)):
    rng = np.random.default_rng(seed)
    ids = [f"u{seed}-{i}" for i in range(n)]
    d = _design()
    arm = assign_arms(design=d, unit_ids=ids)
    usage = rng.gamma(4.0, 25.0, size=n) * np.where(arm == 1, 1 + usage_lift, 1.0)
    revenue = np.round(usage * 5).astype(np.int64)  # 5 cents a unit
    health = rng.normal(70, 12, size=n) - np.where(arm == 1, health_drop, 0.0)
    converted = rng.random(n) < np.where(arm == 1, conv[1], conv[0])
    churned = rng.random(n) < 0.05
    return d, arm, usage, revenue, health, converted, churned


def test_planted_effect_is_found_and_guardrail_flags_the_harmful_arm():
    d, arm, usage, revenue, health, conv, churn = _simulate(
        1, 4000, usage_lift=0.15, health_drop=3.0, conv=(0.10, 0.15)
    )
    res = analyse_experiment(
        design=d,
        arm_index=arm,
        usage=usage,
        revenue_quanta=revenue,
        rule=RULE,
        health=health,
        converted=conv,
        churned=churn,
    )
    u = res.difference(metric="usage", arm="arm1")
    assert u.significant and u.low < 0.15 * 100 < u.high  # true lift: 15 % of a mean of 100
    assert res.difference(metric="revenue_per_unit", arm="arm1").significant
    c = res.difference(metric="conversion", arm="arm1")
    assert c.significant and c.low < 0.05 < c.high
    assert not res.difference(metric="churn", arm="arm1").significant
    assert res.guardrail_flags == ("arm1",)
    assert not res.sample_ratio.mismatch
    a0, a1 = res.arms
    assert a0.revenue + a1.revenue == RULE.from_quanta(int(revenue.sum()))
    assert isinstance(a1.revenue_per_unit, Decimal)


def test_tolerated_health_drop_is_not_flagged():
    d, arm, usage, revenue, health, conv, churn = _simulate(2, 4000, 0.0, 3.0)
    d = _design(drop=5.0)
    res = analyse_experiment(design=d, arm_index=arm, usage=usage, revenue_quanta=revenue, rule=RULE, health=health)
    assert res.guardrail_flags == ()


def test_false_positive_rate_without_effect_is_near_five_percent():
    rng = np.random.default_rng(12345)
    reps = 1000
    hits_mean = hits_prop = 0
    for _ in range(reps):
        a, b = rng.gamma(2.0, 10.0, size=150), rng.gamma(2.0, 10.0, size=150)
        hits_mean += welch_difference(a=a, b=b).significant
        xa, xb = rng.binomial(300, 0.2), rng.binomial(300, 0.2)
        hits_prop += two_proportions(x_a=int(xa), n_a=300, x_b=int(xb), n_b=300).significant
    assert 0.03 <= hits_mean / reps <= 0.07
    assert 0.03 <= hits_prop / reps <= 0.07


def test_sample_ratio_mismatch_is_detected():
    assert sample_ratio_check(counts=[5000, 5000], shares=[0.5, 0.5]).p_value == pytest.approx(1.0)
    srm = sample_ratio_check(counts=[5300, 4700], shares=[0.5, 0.5])
    assert srm.mismatch and srm.chi2 == pytest.approx(36.0)


def test_welch_matches_scipy():
    from scipy import stats

    rng = np.random.default_rng(3)
    a, b = rng.normal(1, 2, 40), rng.normal(0, 1, 60)
    d = welch_difference(a=a, b=b)
    assert d.p_value == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
