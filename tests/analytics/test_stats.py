"""Shared helpers: safe division, distributions, CIs, Theil–Sen (single and vectorised), usage trend."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxp.analytics.core import _frames, stats
from tests.analytics.helpers import assert_no_nan


def test_safe_div_and_finite() -> None:
    assert stats.safe_div(num=1, den=4) == 0.25
    assert stats.safe_div(num=1, den=0) is None
    assert stats.safe_div(num=None, den=2) is None
    assert stats.safe_div(num=float("nan"), den=2) is None
    assert _frames.finite_or_none(float("inf")) is None
    assert _frames.finite_or_none(pd.NA) is None
    r = stats.ratio_array(num=np.array([1.0, 1.0, np.nan]), den=np.array([2.0, 0.0, 1.0]))
    assert r[0] == 0.5 and np.isnan(r[1]) and np.isnan(r[2])


def test_distribution_empty_single_and_many() -> None:
    empty = stats.distribution(values=[])
    assert empty.n == 0 and empty.median is None and empty.reason
    one = stats.distribution(values=[5.0, None, float("nan")])
    assert one.n == 1 and one.median == 5.0 and one.p90 == 5.0
    many = stats.distribution(values=range(1, 11))
    assert many.median == 5.5 and many.p90 == pytest.approx(9.1)
    assert stats.percentile(values=[], q=50) is None
    assert_no_nan(empty)


def test_mean_ci_matches_t_formula_and_guards_small_n() -> None:
    r = stats.mean_ci(values=[1, 2, 3, 4, 5])
    sd = np.std([1, 2, 3, 4, 5], ddof=1)
    half = 2.7764451051977987 * sd / math.sqrt(5)
    assert r.mean == 3 and r.sd == pytest.approx(sd) and r.margin == pytest.approx(half)
    assert stats.mean_ci(values=[3]).mean is None
    assert stats.mean_ci(values=[]).reason


def test_proportion_ci_wald_and_wilson() -> None:
    r = stats.proportion_ci(successes=8, n=10)
    assert r.p == 0.8 and r.margin == pytest.approx(1.96 * math.sqrt(0.8 * 0.2 / 10), rel=1e-3)
    assert 0 <= r.low < 0.8 < r.high <= 1
    all_yes = stats.proportion_ci(successes=5, n=5)
    assert all_yes.margin == 0 and all_yes.low < 1  # Wilson is not degenerate at p = 1
    assert stats.proportion_ci(successes=0, n=0).p is None


@pytest.mark.parametrize("n", [1, 3, 7, 10, 13, 50, 99, 1000])
def test_proportion_ci_contains_p_at_the_extremes(n: int) -> None:
    for successes in (0, n):
        r = stats.proportion_ci(successes=successes, n=n)
        assert r.low <= r.p <= r.high
        assert (r.high == 1.0) if successes == n else (r.low == 0.0)


def test_diff_means_ci() -> None:
    d = stats.diff_means_ci(a=[10, 11, 12, 13], b=[1, 2, 3, 4])
    assert d.estimate == 9 and d.excludes_zero
    assert stats.diff_means_ci(a=[1], b=[1, 2]).estimate is None
    same = stats.diff_means_ci(a=[2, 2], b=[1, 1])
    assert same.estimate == 1 and same.low == same.high == 1


def test_theil_sen_single_and_rows_agree() -> None:
    y = [1.0, 2.0, 2.5, 100.0, 5.0, 6.0]
    single = stats.theil_sen(y=y)
    rows, points = stats.theil_sen_rows(matrix=np.array([y, [np.nan] * 6, [1, np.nan, 3, np.nan, 5, np.nan]]))
    assert rows[0] == pytest.approx(single.slope)
    assert np.isnan(rows[1]) and points[1] == 0
    assert rows[2] == pytest.approx(1.0)
    assert stats.theil_sen(y=[1.0]).slope is None
    assert stats.theil_sen(y=[1.0, 2.0], x=[3, 3], min_points=2).slope is None


def test_usage_trend_decay_vs_flat_and_missing_days_are_zero() -> None:
    days = pd.date_range("2026-01-01", periods=28)
    usage = pd.DataFrame(
        {
            "entity_id": ["dec"] * 28 + ["flat"] * 28 + ["sparse"],
            "day": list(days) * 2 + [days[-1]],
            "uses": [30 * 0.8**t for t in range(28)] + [10] * 28 + [5],
        }
    )
    t = stats.usage_trend(usage=usage, as_of="2026-01-28").set_index("entity_id")
    assert t.loc["dec", "slope_per_day"] < 0
    assert t.loc["flat", "slope_per_day"] == 0
    assert t.loc["sparse", "slope_per_day"] == 0  # 27 zero days then one use: median pairwise slope is 0
    assert t.loc["dec", "weekly_change"] == pytest.approx(math.expm1(7 * t.loc["dec", "slope_per_day"]))
    assert_no_nan(t.reset_index())


def test_usage_trend_starts_at_activation_and_handles_nothing() -> None:
    days = pd.date_range("2026-01-25", periods=4)
    usage = pd.DataFrame({"entity_id": ["new"] * 4, "day": days, "uses": [1, 2, 3, 4]})
    ent = pd.DataFrame({"entity_id": ["new", "none"], "activated_on": ["2026-01-25", "2026-01-27"]})
    t = stats.usage_trend(usage=usage, as_of="2026-01-28", entities=ent, min_points=3).set_index("entity_id")
    assert t.loc["new", "points"] == 4 and t.loc["new", "slope_per_day"] > 0
    assert t.loc["none", "points"] == 2 and pd.isna(t.loc["none", "slope_per_day"]) and t.loc["none", "reason"]
    empty = stats.usage_trend(usage=usage.iloc[:0], as_of="2026-01-28")
    assert len(empty) == 0


def test_usage_trend_weekly_buckets() -> None:
    days = pd.date_range("2025-12-04", periods=56)
    usage = pd.DataFrame({"entity_id": "w", "day": days, "uses": np.repeat([64, 32, 16, 8, 4, 2, 1, 0], 7)})
    t = stats.usage_trend(usage=usage, as_of=days[-1], window_days=56, bucket_days=7)
    assert t.loc[0, "points"] == 8 and t.loc[0, "slope_per_day"] < 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=0, max_size=30))
def test_distribution_never_nan(values: list[float]) -> None:
    assert_no_nan(stats.distribution(values=values))
    assert_no_nan(stats.mean_ci(values=values))
