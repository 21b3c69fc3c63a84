"""Experience Health Score: components, re-normalisation, must-be cap, bands, drivers, trend."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cxp.analytics.core import health
from cxp.analytics.core.health import COMPONENTS, HealthConfig
from tests.analytics.helpers import assert_no_nan


def _frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    base = {"period": "2026-W10", "product_id": "brew"}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_weighted_mean_with_all_components() -> None:
    f = _frame(
        [{"entity_id": "a", "reliability": 90, "efficiency": 80, "engagement": 70, "trajectory": 60, "voice": 50}]
    )
    s = health.health_scores(frame=f).scores.iloc[0]
    expected = (30 * 90 + 15 * 80 + 25 * 70 + 20 * 60 + 10 * 50) / 100
    assert s["score"] == pytest.approx(expected) and s["band"] == "green" and not s["capped"]
    assert sum(s[f"weight_{c}"] for c in COMPONENTS) == pytest.approx(1.0)


def test_missing_component_renormalises_the_rest() -> None:
    f = _frame([{"entity_id": "a", "reliability": 90, "efficiency": 80, "engagement": 70, "trajectory": 60}])
    s = health.health_scores(frame=f).scores.iloc[0]
    expected = (30 * 90 + 15 * 80 + 25 * 70 + 20 * 60) / 90
    assert s["score"] == pytest.approx(expected)
    assert s["weight_reliability"] == pytest.approx(30 / 90) and s["weight_voice"] == 0
    assert s["components_used"] == 4


def test_product_weights_override_and_validation() -> None:
    cfg = HealthConfig(product_weights={"bike": {"reliability": 1, "engagement": 1}})
    f = pd.DataFrame(
        {
            "entity_id": ["a", "b"],
            "period": 1,
            "product_id": ["bike", "brew"],
            "reliability": [80, 80],
            "engagement": [40, 40],
            "voice": [100, 100],
        }
    )
    s = health.health_scores(frame=f, config=cfg).scores.set_index("entity_id")
    assert s.loc["a", "score"] == pytest.approx(60.0)  # voice has no weight for bikes
    assert s.loc["b", "score"] == pytest.approx((30 * 80 + 25 * 40 + 10 * 100) / 65)
    with pytest.raises(ValidationError):
        HealthConfig(weights={"reliability": -1, "voice": 2})
    with pytest.raises(ValidationError):
        HealthConfig(weights={"happiness": 1})
    with pytest.raises(ValidationError):
        HealthConfig(red_below=80, green_from=70)


def test_reliability_must_be_caps_the_total() -> None:
    f = _frame(
        [
            {
                "entity_id": "a",
                "reliability": 30,
                "efficiency": 100,
                "engagement": 100,
                "trajectory": 100,
                "voice": 100,
            },
            {
                "entity_id": "b",
                "reliability": 60,
                "efficiency": 100,
                "engagement": 100,
                "trajectory": 100,
                "voice": 100,
            },
        ]
    )
    s = health.health_scores(frame=f).scores.set_index("entity_id")
    assert s.loc["a", "score_uncapped"] == pytest.approx(79.0)
    assert s.loc["a", "score"] == pytest.approx(40.0) and s.loc["a", "capped"] and s.loc["a", "band"] == "red"
    assert not s.loc["b", "capped"] and s.loc["b", "score"] == pytest.approx(88.0)  # at the threshold: no cap


def test_not_enough_components() -> None:
    f = _frame([{"entity_id": "a", "reliability": 90}, {"entity_id": "b"}])
    r = health.health_scores(frame=f)
    assert r.scores["score"].isna().all() and r.scores["reason"].notna().all()
    assert r.scores["band"].isna().all()
    assert_no_nan(r.scores)
    assert_no_nan(r.drivers)
    empty = health.health_scores(frame=f.iloc[:0])
    assert len(empty.scores) == 0


def test_bands() -> None:
    f = _frame([{"entity_id": e, "reliability": 100, "engagement": v} for e, v in (("r", 0), ("a", 20), ("g", 40))])
    s = health.health_scores(frame=f, config=HealthConfig(weights={"reliability": 1, "engagement": 1})).scores
    assert list(s["score"]) == [50.0, 60.0, 70.0]
    assert list(s["band"]) == ["amber", "amber", "green"]  # red < 50 ≤ amber < 70 ≤ green
    s2 = health.health_scores(
        frame=_frame([{"entity_id": "x", "reliability": 98, "engagement": 0}]),
        config=HealthConfig(weights={"reliability": 1, "engagement": 1}),
    ).scores
    assert s2.loc[0, "band"] == "red"


def test_drivers_name_worst_component_vs_segment_median() -> None:
    rows = [
        {"entity_id": f"e{i}", "reliability": 90, "efficiency": 80, "engagement": 70, "trajectory": 80, "voice": 60}
        for i in range(4)
    ]
    rows.append(
        {"entity_id": "bad", "reliability": 88, "efficiency": 80, "engagement": 20, "trajectory": 75, "voice": 60}
    )
    r = health.health_scores(frame=_frame(rows))
    s = r.scores.set_index("entity_id")
    assert s.loc["bad", "driver_1"] == "engagement" and s.loc["bad", "driver_2"] == "trajectory"
    assert s.loc["e0", "driver_1"] is None  # at the median everywhere
    d = r.drivers[r.drivers["entity_id"] == "bad"].set_index("component")
    assert d.loc["engagement", "contribution"] == pytest.approx((20 - 70) * 0.25)
    assert d.loc["engagement", "rank"] == 1


def test_drivers_use_segment_column_when_present() -> None:
    f = pd.DataFrame(
        {
            "entity_id": ["a", "b", "c", "d"],
            "period": 1,
            "product_id": "p",
            "segment": ["s1", "s1", "s2", "s2"],
            "reliability": [90, 70, 50, 30],
            "engagement": [50] * 4,
        }
    )
    s = health.health_scores(frame=f).scores.set_index("entity_id")
    assert s.loc["b", "driver_1"] == "reliability" and s.loc["a", "driver_1"] is None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_top_drivers_are_the_most_negative_contributions_with_or_without_the_long_frame(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    f = pd.DataFrame({"entity_id": [f"e{i}" for i in range(n)], "period": rng.integers(0, 3, n),
                      "product_id": rng.choice(["p", "q"], n)})
    for c in COMPONENTS:  # coarse values: ties in contribution; some components absent
        f[c] = np.where(rng.random(n) < 0.15, np.nan, rng.integers(0, 5, n) * 25.0)
    full = health.health_scores(frame=f)
    lean = health.health_scores(frame=f, drivers=False)
    assert lean.drivers.empty and list(lean.drivers.columns) == list(full.drivers.columns)
    pd.testing.assert_frame_equal(full.scores, lean.scores)
    negative = full.drivers[full.drivers["contribution"] < -1e-12].sort_values(
        ["entity_id", "contribution", "component"])
    negative = negative.assign(k=negative.groupby("entity_id").cumcount() + 1)
    tops = full.scores.set_index("entity_id")
    named = 0
    for k in (1, 2, 3):
        want = negative[negative["k"] == k].set_index("entity_id")["component"].to_dict()
        got = tops[f"driver_{k}"].dropna().to_dict()
        assert got == want
        named += len(got)
    assert named > n, "most rows have drivers"
    # each row's drivers read from the arrays: the long frame's rows of that row, in its rank order
    columns = ["component", "score", "segment_median", "weight", "contribution"]
    for i in range(n):
        mine = full.drivers[full.drivers["entity_id"] == f"e{i}"].sort_values("rank")
        assert lean.driver_arrays.of_row(i) == [tuple(r) for r in mine[columns].itertuples(index=False)]


@pytest.mark.parametrize("seed", [4, 5])
def test_score_values_and_bands_alone_equal_the_full_scores(seed: int) -> None:
    """Product weights, absent components, rows below the minimum and the must-be cap: the scores and bands computed
    alone equal those of the full frame, row for row."""
    rng = np.random.default_rng(seed)
    n = 400
    f = pd.DataFrame({"entity_id": [f"e{i}" for i in range(n)], "period": rng.integers(0, 3, n),
                      "product_id": rng.choice(["p", "q", "r"], n)})
    for c in COMPONENTS:
        f[c] = np.where(rng.random(n) < 0.3, np.nan, rng.uniform(0, 100, n))
    config = HealthConfig(product_weights={"q": {"reliability": 0.6, "efficiency": 0.1, "engagement": 0.1,
                                                 "trajectory": 0.1, "voice": 0.1}})
    full = health.health_scores(frame=f, config=config, drivers=False).scores
    alone = health.score_values(frame=f, config=config)
    expected = full["score"].to_numpy(dtype=float, na_value=np.nan)
    assert np.isnan(expected).sum() > 5 and full["capped"].sum() > 5
    assert np.array_equal(alone, expected, equal_nan=True)
    assert health.band_values(scores=alone, config=config).tolist() == full["band"].tolist()


def test_trend_delta_and_arrow_with_dead_band() -> None:
    f = pd.DataFrame(
        {
            "entity_id": ["a", "a", "a", "b", "b"],
            "period": [1, 2, 3, 2, 1],
            "product_id": "p",
            "reliability": [80, 90, 91, 60, 80],
            "engagement": [80, 90, 91, 60, 80],
        }
    )
    s = health.health_scores(frame=f).scores.set_index(["entity_id", "period"])
    assert s.loc[("a", 1), "arrow"] is None and pd.isna(s.loc[("a", 1), "delta"])
    assert s.loc[("a", 2), "delta"] == pytest.approx(10) and s.loc[("a", 2), "arrow"] == "up"
    assert s.loc[("a", 3), "arrow"] == "flat"  # +1 is inside the ±3 dead band
    assert s.loc[("b", 2), "arrow"] == "down" and s.loc[("b", 2), "previous_period"] == 1


def test_duplicate_rows_and_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError):
        health.health_scores(frame=_frame([{"entity_id": "a", "reliability": 1}, {"entity_id": "a", "reliability": 2}]))
    with pytest.raises(ValueError):
        health.health_scores(frame=_frame([{"entity_id": "a", "reliability": 120, "voice": 1}]))


# ---------------------------------------------------------------- component functions


def test_reliability_component() -> None:
    f = pd.DataFrame(
        {
            "entity_id": ["a", "b", "c"],
            "uses": [100, 0, 10],
            "successes": [90, 0, 10],
            "active_days": [10, 0, 5],
            "error_free_days": [8, 0, 5],
            "uptime": [0.5, None, 1.0],
        }
    )
    r = health.reliability_component(frame=f).set_index("entity_id")
    assert r.loc["a", "reliability"] == pytest.approx((90 + 80 + 50) / 3)
    assert pd.isna(r.loc["b", "reliability"])
    assert r.loc["c", "reliability"] == 100
    assert_no_nan(r.reset_index())


def test_uptime_from_heartbeats_tolerance() -> None:
    t0 = pd.Timestamp("2026-03-01", tz="UTC")
    hb = pd.DataFrame(
        {
            "entity_id": ["a"] * 4 + ["b"],
            "ts": [
                t0 - pd.Timedelta(minutes=30),
                t0 + pd.Timedelta(hours=1),
                t0 + pd.Timedelta(hours=5),
                t0 + pd.Timedelta(hours=5, minutes=30),
                t0,
            ],
        }
    )
    ent = pd.DataFrame({"entity_id": ["a", "b", "c"], "activated_at": [None, t0 + pd.Timedelta(hours=3), None]})
    r = health.uptime_from_heartbeats(
        heartbeats=hb, window_start=t0, window_end=t0 + pd.Timedelta(hours=6), interval_s=3600, entities=ent
    ).set_index("entity_id")
    # a: carry-in to 01:00 (1h), 01:00→02:30, 05:00→05:30, 05:30→06:00 = 1 + 1.5 + 0.5 + 0.5 h
    assert r.loc["a", "up_s"] == pytest.approx(3.5 * 3600) and r.loc["a", "uptime"] == pytest.approx(3.5 / 6)
    assert r.loc["b", "window_s"] == 3 * 3600 and r.loc["b", "up_s"] == 0  # heartbeat before its activation
    assert r.loc["c", "uptime"] == 0 and r.loc["c", "heartbeats"] == 0


def test_efficiency_component_exact_and_smooth() -> None:
    f = pd.DataFrame(
        {
            "entity_id": ["a", "a", "b", "c"],
            "touchpoint": ["brew", "app", "brew", "brew"],
            "uses": [30, 10, 5, 0],
            "within_target_uses": [27, None, None, None],
            "observed_mean": [None, 1500, 800, 100],
            "target": [None, 1000, 1000, 1000],
        }
    )
    r = health.efficiency_component(frame=f).set_index("entity_id")
    assert r.loc["a", "efficiency"] == pytest.approx((30 * 90 + 10 * 50) / 40)
    assert r.loc["b", "efficiency"] == 100
    assert pd.isna(r.loc["c", "efficiency"])
    assert list(health.latency_score(ratio=np.array([0.5, 1, 1.5, 2, 3]))) == [100, 100, 50, 0, 0]


def test_engagement_component() -> None:
    f = pd.DataFrame(
        {
            "entity_id": ["a", "b"],
            "active_days": [3, 10],
            "days_in_period": [7, 7],
            "expected_active_days_per_week": [6, 0],
            "touchpoints_used": [2, 4],
            "catalogue_size": [4, 4],
        }
    )
    r = health.engagement_component(frame=f).set_index("entity_id")
    assert r.loc["a", "engagement"] == pytest.approx(0.7 * 50 + 0.3 * 50)
    assert r.loc["b", "engagement"] == 100  # no expected rhythm: breadth alone


def test_voice_component_maps_scales_separately() -> None:
    f = pd.DataFrame(
        {
            "entity_id": ["a", "b", "c"],
            "nps_n": [2, 0, None],
            "nps_promoters": [2, 0, None],
            "nps_detractors": [0, 0, None],
            "csat_n": [0, 4, None],
            "csat_top2": [0, 1, None],
            "ces_n": [1, 0, None],
            "ces_sum": [4, 0, None],
        }
    )
    r = health.voice_component(frame=f).set_index("entity_id")
    assert r.loc["a", "voice"] == pytest.approx((100 + 50) / 2)
    assert r.loc["b", "voice"] == pytest.approx(25)
    assert pd.isna(r.loc["c", "voice"])


def test_trajectory_component_decay_flat_and_recency() -> None:
    days = pd.date_range("2026-01-01", periods=28)
    usage = pd.DataFrame(
        {
            "entity_id": ["dec"] * 28 + ["flat"] * 28,
            "day": list(days) * 2,
            "uses": [40 * 0.7**t for t in range(28)] + [5] * 28,
        }
    )
    ent = pd.DataFrame(
        {
            "entity_id": ["dec", "flat", "gone"],
            "expected_active_days_per_week": [7, 7, 7],
            "last_use_on": [None, None, "2025-12-01"],
        }
    )
    r = health.trajectory_component(usage=usage, entities=ent, as_of="2026-01-28", period="2026-W05").set_index(
        "entity_id"
    )
    assert r.loc["flat", "trajectory"] == 100
    assert r.loc["dec", "slope_score"] < 50 and r.loc["dec", "trajectory"] < r.loc["flat", "trajectory"]
    assert r.loc["gone", "recency_score"] == 0 and r.loc["gone", "days_since_last_use"] == 58
    assert (r["period"] == "2026-W05").all()
    assert list(health.trend_score(weekly_log_change=np.array([0.2, 0.0, -np.log(2), -5]))) == [100, 100, 0, 0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(0, 100)), min_size=5, max_size=5))
def test_score_is_bounded_and_respects_the_cap(values: list[float | None]) -> None:
    f = _frame([{"entity_id": "a", **dict(zip(COMPONENTS, values, strict=True))}])
    s = health.health_scores(frame=f).scores
    assert_no_nan(s)
    score = s.loc[0, "score"]
    if pd.notna(score):
        assert 0 <= score <= 100
        rel = values[0]
        if rel is not None and rel < 60:
            assert score <= rel + 10 + 1e-9
