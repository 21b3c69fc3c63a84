"""NPS, CSAT, CES: hand computations, the notes' margin, small-n states, grouped without mixing scales."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxp.analytics.core import voice
from tests.analytics.helpers import assert_no_nan


def test_nps_matches_hand_computation_and_margin_formula() -> None:
    scores = [10, 10, 9, 9, 9, 8, 7, 6, 3, 0]  # 5 promoters, 2 passives, 3 detractors
    r = voice.nps(scores=scores)
    assert (r.n, r.promoters, r.passives, r.detractors) == (10, 5, 2, 3)
    assert r.nps == pytest.approx(20.0)
    p, d = 0.5, 0.3
    var = 100**2 * (p + d - (p - d) ** 2) / 10
    assert r.variance == pytest.approx(var)
    assert r.margin == pytest.approx(1.96 * math.sqrt(var), rel=1e-4)
    assert r.ci_low == pytest.approx(20 - r.margin) and r.ci_high == pytest.approx(20 + r.margin)


def test_nps_ignores_missing_and_rejects_out_of_scale() -> None:
    assert voice.nps(scores=[10, None, float("nan"), 0]).n == 2
    with pytest.raises(ValueError):
        voice.nps(scores=[11])
    with pytest.raises(ValueError):
        voice.nps(scores=[7.5])


def test_nps_not_enough_data() -> None:
    for scores in ([], [10]):
        r = voice.nps(scores=scores)
        assert r.nps is None and r.margin is None and r.reason and r.variance is None
        assert_no_nan(r)
    assert voice.nps(scores=[10], min_n=1).nps == 100.0


def test_csat_top2_box_and_binomial_margin() -> None:
    r = voice.csat(scores=[5, 4, 4, 3, 2, 1, 5, 5])  # 5 of 8 are 4–5
    assert r.csat == pytest.approx(62.5)
    assert r.margin == pytest.approx(100 * 1.96 * math.sqrt(0.625 * 0.375 / 8), rel=1e-4)
    assert r.ci_low < 62.5 < r.ci_high
    empty = voice.csat(scores=[])
    assert empty.csat is None and empty.reason
    with pytest.raises(ValueError):
        voice.csat(scores=[0])


def test_ces_mean_and_t_interval() -> None:
    r = voice.ces(scores=[7, 6, 5, 6])
    assert r.mean == 6.0 and r.sd == pytest.approx(math.sqrt(2 / 3))
    assert r.margin == pytest.approx(3.182446305284263 * math.sqrt(2 / 3) / 2)
    one = voice.ces(scores=[7])
    assert one.mean is None and one.reason
    with pytest.raises(ValueError):
        voice.ces(scores=[8])


def test_grouped_voice_keeps_scales_apart_and_matches_single() -> None:
    raw = pd.DataFrame(
        {
            "product": ["a"] * 6 + ["b"] * 2,
            "nps": [10, 9, 3, None, None, 8, 10, None],
            "csat": [None, None, None, 5, 2, 4, None, 5],
            "ces": [None, None, None, 7, 5, None, None, None],
        }
    )
    hist = voice.feedback_histogram(responses=raw, group_cols=["product"])
    g = voice.voice_by_group(histogram=hist, group_cols=["product"], min_n=2).set_index(["product", "measure"])
    assert set(g.index) == {("a", "nps"), ("a", "csat"), ("a", "ces"), ("b", "nps"), ("b", "csat")}
    single = voice.nps(scores=[10, 9, 3, 8])
    assert g.loc[("a", "nps"), "value"] == pytest.approx(single.nps)
    assert g.loc[("a", "nps"), "margin"] == pytest.approx(single.margin)
    assert g.loc[("a", "csat"), "value"] == pytest.approx(voice.csat(scores=[5, 2, 4]).csat)
    assert g.loc[("a", "ces"), "value"] == pytest.approx(6.0)
    assert g.loc[("a", "ces"), "margin"] == pytest.approx(voice.ces(scores=[7, 5]).margin)
    assert pd.isna(g.loc[("b", "nps"), "value"]) and "not enough" in g.loc[("b", "nps"), "reason"]
    assert g.loc[("a", "nps"), "scale"] != g.loc[("a", "csat"), "scale"]
    assert_no_nan(g.reset_index())


def test_grouped_voice_empty_and_invalid() -> None:
    out = voice.voice_by_group(histogram=pd.DataFrame({"measure": [], "score": [], "responses": []}))
    assert len(out) == 0
    with pytest.raises(ValueError):
        voice.voice_by_group(histogram=pd.DataFrame({"measure": ["csat"], "score": [9], "responses": [1]}))
    with pytest.raises(ValueError):
        voice.voice_by_group(histogram=pd.DataFrame({"measure": ["stars"], "score": [3], "responses": [1]}))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10), max_size=50))
def test_nps_bounds_property(scores: list[int]) -> None:
    r = voice.nps(scores=scores)
    assert_no_nan(r)
    if r.nps is not None:
        assert -100 <= r.nps <= 100 and r.margin >= 0 and -100 <= r.ci_low <= r.ci_high <= 100


@pytest.mark.parametrize("n", [3, 7, 13, 99])
def test_grouped_csat_bounds_contain_all_or_nothing_answers(n: int) -> None:
    hist = pd.DataFrame({"g": ["all5", "all1"], "measure": ["csat", "csat"], "score": [5, 1], "responses": [n, n]})
    out = voice.voice_by_group(histogram=hist, group_cols=["g"]).set_index("g")
    assert out.loc["all5", "ci_low"] <= out.loc["all5", "value"] == 100.0 == out.loc["all5", "ci_high"]
    assert out.loc["all1", "ci_low"] == 0.0 == out.loc["all1", "value"] <= out.loc["all1", "ci_high"]
