"""Engagement rate formulas on hand-made inputs: the engaged rule, rates with Wilson intervals, trend, agreement."""

from __future__ import annotations

import pandas as pd
import pytest

from cxp.analytics.core.engagement import (
    EngagementRule,
    direction_agreement,
    engaged_flags,
    engagement_rates,
    rank_agreement,
    rate_trend,
)
from cxp.analytics.errors import InvalidParameter
from cxp.core.stats import wilson_interval


def test_engaged_needs_both_thresholds_and_a_missing_score_is_not_engaged() -> None:
    rule = EngagementRule(min_stickiness=0.6, min_breadth=0.5)
    flags = engaged_flags(
        stickiness_score=[60.0, 59.9, 100.0, 80.0, None],
        breadth_score=[50.0, 100.0, 49.0, None, 80.0],
        rule=rule,
    )
    assert flags.tolist() == [True, False, False, False, False]


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_rule_thresholds_are_shares(bad: float) -> None:
    with pytest.raises(InvalidParameter):
        EngagementRule(min_stickiness=bad)


def test_rates_per_group_with_wilson_interval_component_and_small_groups() -> None:
    frame = pd.DataFrame(
        {
            "product_id": ["a"] * 6 + ["b"] * 2,
            "stickiness_score": [100, 90, 70, 30, 100, 10, 100, 100],
            "breadth_score": [100, 60, 40, 90, 80, 10, 100, 100],
            "engagement": [100, 81, 61, 48, 94, 10, 100, 100],
        }
    )
    out = engagement_rates(frame=frame, by=["product_id"], rule=EngagementRule(), min_n=5).set_index("product_id")
    a = out.loc["a"]
    assert (a.reached, a.engaged) == (6, 3)  # rows 0, 1, 4
    assert a.rate == pytest.approx(50.0)
    low, high = wilson_interval(successes=3, n=6)
    assert (a.ci_low, a.ci_high) == (pytest.approx(100 * low), pytest.approx(100 * high))
    assert a.engagement_component == pytest.approx((100 + 81 + 61 + 48 + 94 + 10) / 6)
    b = out.loc["b"]
    assert pd.isna(b.rate) and b.reached == 2 and "not enough data" in b.reason


def test_trend_is_theil_sen_in_points_per_period() -> None:
    assert rate_trend(rates=[10.0, 20.0, 30.0, 40.0, 200.0]) == pytest.approx(10.0)  # robust to the last outlier
    assert rate_trend(rates=[50.0, None, 40.0, 30.0]) == pytest.approx(-20.0 / 3)  # slopes -5, -20/3, -10
    assert rate_trend(rates=[50.0, None]) is None


def test_direction_and_rank_agreement() -> None:
    assert direction_agreement(rates=[10, 20, 15, 15, 30], components=[50, 60, 55, 70, 20]) == pytest.approx(2 / 3)
    assert direction_agreement(rates=[10, 10], components=[1, 2]) is None
    with pytest.raises(InvalidParameter):
        direction_agreement(rates=[1, 2], components=[1])
    assert rank_agreement(rates=[1, 2, 3, 4], components=[10, 20, 30, 45]) == pytest.approx(1.0)
    assert rank_agreement(rates=[1, 2, 3, 4], components=[4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_agreement(rates=[1, 2], components=[1, 2]) is None
