"""Early-warning parts (pure): the usage drop and the experience load per entity against a per-entity computation
written out plainly."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
import scipy.stats as sps

from cxp.analytics.core.early_warning import combine_risk, experience_load, usage_drop, warning_reasons

AS_OF = date(2025, 4, 5)


def _plain_drop(usage: pd.DataFrame, entity: str, windows=(2, 3, 4, 7), base_days: int = 28) -> tuple[float, ...]:
    """recent_uses, expected_uses and drop_evidence of one entity, one filter per window."""
    mine = usage[usage["entity_id"] == entity]
    ago = np.array([(AS_OF - d).days for d in mine["day"]])
    uses = np.nan_to_num(mine["uses"].to_numpy(dtype=float))
    rate = uses[(ago >= max(windows)) & (ago < max(windows) + base_days)].sum() / base_days
    evidence = 0.0
    for w in windows:
        count = uses[(ago >= 0) & (ago < w)].sum()
        evidence = max(evidence, -np.log(np.clip(sps.poisson.cdf(count, rate * w + 1e-12), 1e-12, 1.0)))
    return uses[(ago >= 0) & (ago < 7)].sum(), rate * 7, evidence


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_usage_drop_equals_a_plain_per_entity_computation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(40):
        stops = rng.integers(0, 12)  # days of silence before as_of (a drop when large)
        for ago in range(-2, 40):  # two days after as_of too: never counted
            if ago >= stops and rng.random() < 0.6:
                rows.append((f"d{i:02d}", AS_OF - timedelta(days=int(ago)), float(rng.integers(1, 5))))
    rows += [("d00", AS_OF, 2.0), ("d01", AS_OF - timedelta(days=3), np.nan), ("stranger", AS_OF, 9.0)]
    usage = pd.DataFrame(rows, columns=["entity_id", "day", "uses"]).sample(frac=1.0, random_state=seed)
    entities = pd.Series([f"d{i:02d}" for i in range(40)] + ["silent"])
    got = usage_drop(usage=usage, entities=entities, as_of=AS_OF).set_index("entity_id")
    assert list(got.index) == entities.tolist() and "stranger" not in got.index
    for entity in entities:
        recent, expected, evidence = _plain_drop(usage, entity)
        row = got.loc[entity]
        assert (row["recent_uses"], row["expected_uses"]) == pytest.approx((recent, expected), abs=1e-12)
        assert row["drop_evidence"] == pytest.approx(evidence, rel=1e-9, abs=1e-12)
    assert got.loc["silent", "drop_evidence"] == pytest.approx(0.0, abs=1e-9)
    assert got.loc["silent", "recent_uses"] == 0.0
    assert (got["drop_evidence"] > 3).any() and (got["drop_evidence"] < 0.5).any()


def _plain_load(events: pd.DataFrame, entity, weights: dict[str, float], window: int = 14, decay: float = 0.75
                ) -> tuple[float, str | None, str | None]:
    """experience_load, drivers and top_driver of one entity: per driver min(decayed count, 1) × weight."""
    terms = []
    for driver, rows in events[events["entity_id"] == entity].groupby("driver", sort=True):
        ago = np.array([(AS_OF - d).days for d in rows["day"]])
        inside = (ago >= 0) & (ago < window)
        if not inside.any():
            continue
        decayed = float((rows["count"].to_numpy(dtype=float)[inside] * decay ** ago[inside]).sum())
        given = rows["weight"].to_numpy(dtype=float)[inside]
        weight = np.nanmax(np.where(np.isfinite(given), given, weights.get(driver, 1.0)))
        term = min(decayed, 1.0) * weight
        if term > 0:
            terms.append((term, driver, round(float(rows["count"].to_numpy(dtype=float)[inside].sum()))))
    terms.sort(key=lambda t: -t[0])  # stable: equal terms keep the drivers' name order
    if not terms:
        return 0.0, None, None
    return sum(t for t, _, _ in terms), ", ".join(f"{d} ×{n}" for _, d, n in terms), terms[0][1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_experience_load_equals_a_plain_per_entity_computation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    drivers = ["brew", "pairing", "incident", "support contact"]
    weights = {"brew": 2.0, "incident": 0.5}
    rows = []
    for i in range(60):
        for _ in range(int(rng.integers(0, 8))):
            given = float(rng.choice([np.nan, 0.0, 1.5, 3.0]))
            rows.append((i, AS_OF - timedelta(days=int(rng.integers(-2, 20))), str(rng.choice(drivers)),
                         float(rng.integers(1, 4)), given))
    events = pd.DataFrame(rows, columns=["entity_id", "day", "driver", "count", "weight"])
    entities = pd.Series([*range(60), 99])  # integer keys, as the churn view passes device keys; 99 lived nothing
    got = experience_load(events=events, weights=weights, entities=entities, as_of=AS_OF).set_index("entity_id")
    assert list(got.index) == entities.tolist()
    for entity in entities:
        load, named, top = _plain_load(events, entity, weights)
        row = got.loc[entity]
        assert row["experience_load"] == pytest.approx(load, rel=1e-12, abs=1e-12)
        assert row["experience_risk"] == pytest.approx(1 - np.exp(-load), rel=1e-12, abs=1e-12)
        assert (row["drivers"], row["top_driver"]) == (named, top) or (named is None and pd.isna(row["drivers"]))
    assert (got["experience_load"] > 1).any() and (got["experience_load"] == 0).any()
    assert got["drivers"].str.contains(", ").any()


def test_warning_reasons_of_a_few_rows_are_the_combined_tables() -> None:
    risk = pd.DataFrame({"entity_id": ["a", "b", "c"], "risk_score": [10.0, 20.0, 30.0],
                         "slope_risk": [0.1, 0.9, np.nan], "recency_risk": [0.0, 0.5, 1.0],
                         "reasons": ["usage down 40% per week", "no warning signs", "no core use for 30 days"]})
    drop = pd.DataFrame({"entity_id": ["a", "b", "c"], "drop_risk": [0.9, 0.1, 0.6],
                         "recent_uses": [1.0, 9.0, 0.0], "expected_uses": [12.0, 9.0, 5.0]})
    lived = pd.DataFrame({"entity_id": ["a", "b", "c"], "experience_risk": [0.2, 0.7, 0.0],
                          "drivers": [None, "brew ×3, incident ×1", None], "satisfaction_risk": [0.8, 0.1, np.nan],
                          "failure_risk": [0.0, 0.6, 0.0], "failure_rate": [0.01, 0.25, 0.0]})
    explained, _ = combine_risk(risk=risk, parts=[drop, lived])
    bare, _ = combine_risk(risk=risk, parts=[drop, lived], explain=False)
    assert bare.drop(columns="reasons").equals(explained.drop(columns="reasons"))
    assert list(bare["reasons"]) == list(risk.set_index("entity_id").loc[bare["entity_id"], "reasons"])
    few = bare.iloc[[2, 0]]
    assert warning_reasons(few) == list(explained["reasons"].iloc[[2, 0]])
    by_id = dict(zip(explained["entity_id"], explained["reasons"], strict=True))
    assert by_id["a"] == "usage down 40% per week; use dropped: 1 uses in the last week against 12 expected;" \
                         " unhappy in its answers"
    assert by_id["b"] == "lived lately: brew ×3, incident ×1; fails 25% of its uses, far above its product's usual"
