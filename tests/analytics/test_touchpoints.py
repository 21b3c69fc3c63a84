"""Touchpoint summaries, derived importance, IPA quadrants, penalty–reward classification."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxp.analytics.core import touchpoints as tp
from tests.analytics.helpers import assert_no_nan


def test_touchpoint_summary() -> None:
    f = pd.DataFrame(
        {
            "product_id": ["p", "p", "p", "q"],
            "touchpoint": ["brew", "app", "idle", "ride"],
            "devices": [8, 4, 0, 2],
            "uses": [300, 100, 0, 50],
            "successes": [297, 80, 0, 50],
            "latency_count": [300, 100, 0, 0],
            "latency_sum": [300 * 500, 100 * 1500, 0, 0],
            "target_latency_ms": [1000, 1000, None, 200],
            "fleet_devices": [10, 10, 10, 2],
        }
    )
    s = tp.touchpoint_summary(frame=f, group_cols=["product_id"]).set_index("touchpoint")
    assert s.loc["brew", "reach"] == 0.8 and s.loc["brew", "usage_share"] == 0.75
    assert s.loc["ride", "usage_share"] == 1.0
    assert s.loc["app", "success_rate"] == 0.8 and s.loc["app", "latency_vs_target"] == 1.5
    assert s.loc["app", "performance"] == pytest.approx((80 + 50) / 2)
    assert s.loc["ride", "performance"] == 100  # no latency measured: success alone
    assert pd.isna(s.loc["idle", "performance"]) and s.loc["idle", "reason"]
    assert_no_nan(s.reset_index())


def test_ipa_quadrant_assignment() -> None:
    f = pd.DataFrame(
        {
            "touchpoint": ["a", "b", "c", "d", "e"],
            "importance": [40, 40, 10, 10, None],
            "performance": [60, 90, 60, 90, 50],
        }
    )
    r = tp.ipa_quadrants(frame=f)
    assert r.importance_crosshair == 25 and r.performance_crosshair == 75
    q = r.table.set_index("touchpoint")["quadrant"]
    assert q["a"] == "concentrate here" and q["b"] == "keep up the good work"
    assert q["c"] == "low priority" and q["d"] == "possible overkill" and q["e"] is None
    one = tp.ipa_quadrants(frame=f.iloc[:1])
    assert one.reason and one.table["quadrant"].isna().all()
    fixed = tp.ipa_quadrants(frame=f.iloc[:1], importance_crosshair=50, performance_crosshair=50)
    assert fixed.table.loc[0, "quadrant"] == "possible overkill"


def _synthetic(n: int = 800, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """'pair' is a dissatisfier (only low performance hurts), 'brew' a satisfier (only high helps), 'lamp' noise."""
    rng = np.random.default_rng(seed)
    dev = [f"d{i}" for i in range(n)]
    pair, brew, lamp = rng.uniform(0, 100, n), rng.uniform(0, 100, n), rng.uniform(0, 100, n)
    y = 7 - 3.0 * (pair <= 25) + 2.5 * (brew >= 75) + rng.normal(0, 1, n)
    perf = pd.concat(
        [
            pd.DataFrame({"device_id": dev, "touchpoint": name, "performance": v})
            for name, v in (("pair", pair), ("brew", brew), ("lamp", lamp))
        ]
    )
    return perf, pd.DataFrame({"device_id": dev, "outcome": y})


def test_penalty_reward_finds_dissatisfier_and_satisfier() -> None:
    perf, out = _synthetic()
    r = tp.penalty_reward(performance=perf, outcomes=out)
    t = r.table.set_index("touchpoint")
    assert t.loc["pair", "classification"] == "dissatisfier"
    assert t.loc["brew", "classification"] == "satisfier"
    assert t.loc["lamp", "classification"] == "no clear effect"
    assert t.loc["pair", "penalty"] == pytest.approx(3.0, abs=0.3)
    assert t.loc["brew", "reward"] == pytest.approx(2.5, abs=0.3)
    assert t.loc["pair", "n_low"] == 200 and t.loc["pair", "n"] == 800 and r.n_devices == 800
    assert_no_nan(r.table)


def test_penalty_reward_performance_factor_and_small_n() -> None:
    rng = np.random.default_rng(2)
    n = 600
    x = rng.uniform(0, 100, n)
    y = 5 - 2 * (x <= 25) + 2 * (x >= 75) + rng.normal(0, 0.5, n)
    perf = pd.DataFrame({"device_id": range(n), "touchpoint": "app", "performance": x})
    r = tp.penalty_reward(performance=perf, outcomes=pd.DataFrame({"device_id": range(n), "outcome": y}))
    assert r.table.loc[0, "classification"] == "performance factor"
    small = tp.penalty_reward(
        performance=perf.iloc[:20], outcomes=pd.DataFrame({"device_id": range(20), "outcome": y[:20]})
    )
    assert small.reason and "not enough data" in small.table.loc[0, "reason"]
    assert pd.isna(small.table.loc[0, "penalty"])
    assert_no_nan(small.table)
    flat = tp.penalty_reward(
        performance=perf.assign(performance=1.0), outcomes=pd.DataFrame({"device_id": range(n), "outcome": y})
    )
    assert "no spread" in flat.table.loc[0, "reason"]


def test_penalty_reward_handles_devices_that_did_not_use_a_touchpoint() -> None:
    perf, out = _synthetic()
    perf = perf[~((perf["touchpoint"] == "lamp") & (perf["device_id"].str[-1] == "7"))]
    t = tp.penalty_reward(performance=perf, outcomes=out).table.set_index("touchpoint")
    assert t.loc["lamp", "n"] == 720
    assert t.loc["pair", "classification"] == "dissatisfier" and t.loc["brew", "classification"] == "satisfier"


def test_derived_importance_spearman_and_shapley() -> None:
    perf, out = _synthetic()
    r = tp.derived_importance(performance=perf, outcomes=out)
    t = r.table.set_index("touchpoint")
    assert r.method == "shapley" and 0 < r.r2 < 1
    assert t.loc["lamp", "importance"] < 5
    assert t.loc["pair", "importance"] > 30 and t.loc["brew", "importance"] > 30
    assert t["importance"].sum() == pytest.approx(100)
    assert t.loc["pair", "spearman_rho"] > 0.3
    # Shapley parts add up to the model R² and agree in ranking with relative weights
    assert t["r2_share"].sum() == pytest.approx(r.r2, rel=1e-6)


def test_shapley_and_relative_weights_on_correlated_predictors() -> None:
    cxx = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.0], [0.0, 0.0, 1.0]])
    cxy = np.array([0.5, 0.5, 0.2])
    sh = tp.shapley_r2(corr_xx=cxx, corr_xy=cxy)
    rw = tp.relative_weights(corr_xx=cxx, corr_xy=cxy)
    r2 = cxy @ np.linalg.inv(cxx) @ cxy
    assert sh.sum() == pytest.approx(r2) and rw.sum() == pytest.approx(r2)
    assert sh[0] == pytest.approx(sh[1]) and rw[0] == pytest.approx(rw[1])


def test_derived_importance_not_enough_data() -> None:
    perf, out = _synthetic(n=10)
    r = tp.derived_importance(performance=perf, outcomes=out)
    assert r.r2 is None and r.reason and r.table["importance"].isna().all()
    assert_no_nan(r.table)
    const = tp.derived_importance(performance=_synthetic()[0], outcomes=_synthetic()[1].assign(outcome=1.0))
    assert const.reason == "outcome does not vary"


def test_the_performance_matrix_equals_a_pivot_table_in_the_outcomes_order() -> None:
    """Devices in the outcomes' order (those without a use all missing), touchpoints sorted, the mean of repeated
    rows; rows of devices without an outcome or without a finite performance are left out."""
    from cxp.analytics.core.touchpoints import _wide

    rng = np.random.default_rng(5)
    perf = pd.DataFrame({"device_id": rng.choice([f"d{i}" for i in range(40)], 300),
                         "touchpoint": rng.choice(["b", "a", "c10", "c2"], 300),
                         "performance": np.where(rng.random(300) < 0.05, np.nan, rng.uniform(0, 100, 300))})
    outcomes = pd.DataFrame({"device_id": [f"d{i}" for i in range(45, 0, -1)], "outcome": rng.integers(0, 2, 45)})
    wide, y = _wide(perf, outcomes)
    known = perf[perf["performance"].notna() & perf["device_id"].isin(outcomes["device_id"])]
    expected = known.pivot_table(index="device_id", columns="touchpoint", values="performance", aggfunc="mean")
    expected = expected.reindex(outcomes["device_id"].to_numpy())
    assert list(wide.columns) == ["a", "b", "c10", "c2"] and list(wide.index) == list(outcomes["device_id"])
    assert np.allclose(wide.to_numpy(), expected.to_numpy(), equal_nan=True, rtol=1e-12)
    assert wide.loc["d45"].isna().all() and np.array_equal(y, outcomes["outcome"].to_numpy(dtype=float))


@pytest.mark.parametrize("p", [1, 2, 5, 8])
def test_shapley_shares_equal_the_subset_by_subset_definition(p: int) -> None:
    """Each predictor's mean gain in R² over every order, computed subset by subset, on correlations with a
    duplicated (collinear) predictor: equal, and the shares add up to the full R²."""
    import math
    from itertools import combinations

    from cxp.analytics.core.touchpoints import shapley_r2

    rng = np.random.default_rng(p)
    x = rng.normal(size=(200, p))
    if p > 2:
        x[:, 1] = x[:, 0]  # a singular block: the pseudo-inverse's minimum-norm fit
    y = x @ rng.uniform(0.2, 1.0, p) + rng.normal(size=200)
    corr = np.corrcoef(np.column_stack([x, y]), rowvar=False)
    cxx, cxy = corr[:p, :p], corr[:p, p]

    def r2(subset: tuple[int, ...]) -> float:
        idx = list(subset)
        return float(cxy[idx] @ np.linalg.pinv(cxx[np.ix_(idx, idx)]) @ cxy[idx]) if idx else 0.0

    plain = np.zeros(p)
    for size in range(p):
        for subset in combinations(range(p), size):
            weight = math.factorial(size) * math.factorial(p - size - 1) / math.factorial(p)
            for j in set(range(p)) - set(subset):
                plain[j] += weight * (r2(tuple(sorted((*subset, j)))) - r2(subset))
    got = shapley_r2(corr_xx=cxx, corr_xy=cxy)
    assert np.allclose(got, plain, rtol=1e-9, atol=1e-12)
    assert got.sum() == pytest.approx(r2(tuple(range(p))), rel=1e-9)
