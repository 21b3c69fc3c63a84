"""Standardised k-means with k by silhouette or Calinski–Harabasz, PM names, churn-risk ranking."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from cxp.analytics.core import segments as seg
from tests.analytics.helpers import assert_no_nan


def _three_clusters(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array(
        [
            [6.5, 8.0, 0.20, 0.00, 5.0, 0.5],  # daily power users
            [1.5, 3.0, 0.85, 0.00, 2.0, 3.0],  # weekend users
            [3.0, 4.0, 0.30, -0.40, 3.0, 10.0],  # fading users
        ]
    )
    scale = np.array([0.4, 0.8, 0.05, 0.05, 0.5, 0.8])
    x = np.vstack([c + rng.normal(0, scale, (120, 6)) for c in centres])
    f = pd.DataFrame(x, columns=list(seg.ROLES))
    f.insert(0, "entity_id", [f"d{i}" for i in range(len(f))])
    return f, np.repeat([0, 1, 2], 120)


def test_kmeans_recovers_three_clusters_and_names_them() -> None:
    f, truth = _three_clusters()
    r = seg.segment_entities(features=f)
    assert r.k == 3 and r.k_method == "silhouette" and set(r.k_scores) == set(range(2, 9))
    assert r.k_scores[3] == max(r.k_scores.values())
    assert adjusted_rand_score(truth, r.labels["cluster"].to_numpy(dtype=int)) >= 0.9
    names = {c.name for c in r.clusters}
    assert names == {"Daily power users", "Weekend users", "Fading users"}
    assert all(c.size == 120 and c.description for c in r.clusters)
    again = seg.segment_entities(features=f)
    assert (again.labels["cluster"] == r.labels["cluster"]).all()  # deterministic


def test_calinski_harabasz_chooses_k_in_the_same_single_fit() -> None:
    f, truth = _three_clusters()
    r = seg.segment_entities(features=f, k_method="calinski_harabasz")
    assert r.k == 3 and r.k_method == "calinski_harabasz" and set(r.k_scores) == set(range(2, 9))
    assert r.k_scores[3] == max(r.k_scores.values())
    assert adjusted_rand_score(truth, r.labels["cluster"].to_numpy(dtype=int)) >= 0.9


def test_segmentation_imputes_drops_constant_and_guards_small_n() -> None:
    f, _ = _three_clusters()
    f = f.assign(constant=1.0)
    f.loc[0, "weekend_share"] = None
    r = seg.segment_entities(features=f, k_range=range(2, 5))
    assert "constant" not in r.features and r.imputed == {"weekend_share": 1} and r.k == 3
    tiny = seg.segment_entities(features=f.iloc[:2])
    assert tiny.k is None and tiny.reason and tiny.labels["cluster"].isna().all()
    same = seg.segment_entities(features=pd.DataFrame({"entity_id": range(5), "x": [1.0] * 5}))
    assert same.k is None and same.reason


def test_cluster_names_from_centroids() -> None:
    assert seg.name_cluster(centroid_z={"active_days_per_week": 1.0, "uses_per_active_day": 1.0}) == "Daily power users"
    assert seg.name_cluster(centroid_z={"weekend_share": 1.2, "active_days_per_week": -0.8}) == "Weekend users"
    assert seg.name_cluster(centroid_z={"usage_trend": -1.0, "active_days_per_week": 1.0}) == "Fading users"
    assert seg.name_cluster(centroid_z={"active_days_per_week": -1.0}) == "Occasional users"
    assert seg.name_cluster(centroid_z={"unknown": 3.0}) == "Typical users"


def test_duplicate_names_are_disambiguated() -> None:
    rng = np.random.default_rng(5)
    x = np.vstack(
        [rng.normal([0, 0], 0.1, (50, 2)), rng.normal([0, 5], 0.1, (50, 2)), rng.normal([5, 0], 0.1, (50, 2))]
    )
    f = pd.DataFrame({"entity_id": range(150), "a": x[:, 0], "b": x[:, 1]})
    r = seg.segment_entities(features=f)
    names = [c.name for c in r.clusters]
    assert len(set(names)) == len(names)


def test_churn_risk_ranks_decay_above_flat() -> None:
    days = pd.date_range("2026-01-01", periods=28)
    usage = pd.DataFrame(
        {
            "entity_id": ["flat"] * 28 + ["decay"] * 28,
            "day": list(days) * 2,
            "uses": [10] * 28 + [30 * 0.85**t for t in range(28)],
        }
    )
    ent = pd.DataFrame(
        {
            "entity_id": ["flat", "decay"],
            "last_core_use_on": ["2026-01-28", "2026-01-28"],
            "expected_active_days_per_week": [7, 7],
            "recent_disruptions": [0, 0],
        }
    )
    r = seg.churn_risk(usage=usage, entities=ent, as_of="2026-01-28")
    t = r.table
    assert list(t["entity_id"]) == ["decay", "flat"] and list(t["rank"]) == [1, 2]
    assert t.loc[0, "risk_score"] > t.loc[1, "risk_score"]
    assert "usage down" in t.loc[0, "reasons"] and t.loc[1, "reasons"] == "no warning signs"
    assert_no_nan(t)


def test_churn_risk_recency_disruptions_and_missing_history() -> None:
    days = pd.date_range("2026-01-01", periods=28)
    usage = pd.DataFrame(
        {"entity_id": ["flat"] * 28 + ["new"] * 2, "day": list(days) + list(days[-2:]), "uses": [10] * 28 + [2, 2]}
    )
    ent = pd.DataFrame(
        {
            "entity_id": ["flat", "new", "silent"],
            "last_core_use_on": ["2026-01-28", "2026-01-28", None],
            "activated_on": ["2025-06-01", "2026-01-27", "2025-06-01"],
            "recent_disruptions": [3, 0, 0],
        }
    )
    t = seg.churn_risk(usage=usage, entities=ent, as_of="2026-01-28").table.set_index("entity_id")
    assert t.loc["silent", "rank"] == 1 and "no core use for" in t.loc["silent", "reasons"]
    assert "3 disruption(s)" in t.loc["flat", "reasons"]
    assert pd.isna(t.loc["new", "slope_risk"]) and "not enough history" in t.loc["new", "reasons"]
    assert_no_nan(t.reset_index())
    empty = seg.churn_risk(usage=usage.iloc[:0], as_of="2026-01-28")
    assert empty.reason and len(empty.table) == 0


def test_churn_reasons_of_a_few_rows_are_the_explained_tables() -> None:
    days = pd.date_range("2026-01-01", periods=28)
    usage = pd.DataFrame({"entity_id": ["flat"] * 28 + ["decay"] * 28 + ["new"] * 2,
                          "day": list(days) * 2 + list(days[-2:]),
                          "uses": [10] * 28 + [30 * 0.85**t for t in range(28)] + [2, 2]})
    ent = pd.DataFrame({"entity_id": ["flat", "decay", "new", "silent"],
                        "last_core_use_on": ["2026-01-28", "2026-01-28", "2026-01-28", None],
                        "activated_on": ["2025-06-01", "2025-06-01", "2026-01-27", "2025-06-01"],
                        "recent_disruptions": [3, 0, 0, 1]})
    explained = seg.churn_risk(usage=usage, entities=ent, as_of="2026-01-28", disruption_window_days=10).table
    bare = seg.churn_risk(usage=usage, entities=ent, as_of="2026-01-28", disruption_window_days=10,
                          explain=False).table
    assert bare["reasons"].isna().all()
    assert bare.drop(columns="reasons").equals(explained.drop(columns="reasons"))
    few = bare.iloc[[3, 1]]
    reasons = seg.churn_reasons(few, window_days=28, disruption_window_days=10)
    assert list(reasons) == list(explained["reasons"].iloc[[3, 1]])
    assert "in the last 10 days" in " ".join(explained["reasons"])
