"""Core churn_model (pure): the logistic fit recovers planted coefficients, scores rank by them, bad input says why."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxp.analytics.core import churn_model as cm
from cxp.analytics.errors import InvalidInput, InvalidParameter

PLANTED = {"drop": 1.2, "satisfaction": -0.8, "failures": 0.0, "experience": 0.5, "slope": 0.0, "recency": 0.3}


def _rows(seed: int, n: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({f: rng.normal(2.0, 1.5, n) for f in cm.MODEL_FEATURES})
    x.insert(0, "entity_id", [f"d{i}" for i in range(n)])
    logit = -2.0 + sum(c * (x[f] - 2.0) / 1.5 for f, c in PLANTED.items())
    p = 1.0 / (1.0 + np.exp(-logit.to_numpy()))
    return x, rng.random(n) < p, p


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fit_recovers_planted_coefficients_per_standard_deviation(seed: int) -> None:
    x, y, _ = _rows(seed, 20_000)
    model = cm.fit_churn_model(inputs=x, churned=y, lead_days=14, trained_on=f"synthetic {seed}", l2=0.0)
    for name, planted in PLANTED.items():
        assert model.as_dict()[name] == pytest.approx(planted, abs=0.08), name
    assert model.intercept == pytest.approx(-2.0, abs=0.1)
    # scored on fresh rows of another seed, the fitted probability ranks as well as the planted one
    fresh, y2, truth = _rows(seed + 100, 5_000)
    fitted = cm.churn_probability(inputs=fresh, model=model)
    assert roc_auc_score(y2, fitted) == pytest.approx(roc_auc_score(y2, truth), abs=0.01)
    assert abs(fitted.mean() - y2.mean()) < 0.02


def test_penalty_shrinks_coefficients_towards_zero() -> None:
    x, y, _ = _rows(4, 2_000)
    free = cm.fit_churn_model(inputs=x, churned=y, lead_days=14, trained_on="t", l2=0.0)
    shrunk = cm.fit_churn_model(inputs=x, churned=y, lead_days=14, trained_on="t", l2=500.0)
    assert np.abs(shrunk.coef).sum() < 0.7 * np.abs(free.coef).sum()


def test_model_inputs_from_a_risk_table_treat_missing_parts_as_no_signal() -> None:
    table = pd.DataFrame(
        {
            "entity_id": ["a", "b"],
            "drop_evidence": [np.e - 1, np.nan],
            "satisfaction_index": [-1.0, np.nan],
            "failure_rate": [0.5, np.nan],
            "experience_load": [2.0, np.nan],
            "slope_risk": [0.4, np.nan],
            "recency_risk": [0.2, None],
        }
    )
    inputs = cm.model_inputs(table)
    assert inputs.loc[0, "drop"] == pytest.approx(1.0)
    assert inputs.loc[0, "failures"] == pytest.approx(np.log(0.5))
    assert inputs.loc[1, ["drop", "satisfaction", "experience", "slope", "recency"]].tolist() == [0, 0, 0, 0, 0]
    assert np.isfinite(cm.churn_probability(inputs=inputs, model=cm.DEFAULT_MODEL)).all()


def test_bad_input_says_why() -> None:
    x, y, _ = _rows(5, 100)
    with pytest.raises(InvalidParameter, match="both churners and stayers"):
        cm.fit_churn_model(inputs=x, churned=np.zeros(100, dtype=bool), lead_days=14, trained_on="t")
    with pytest.raises(InvalidParameter, match="one label per row"):
        cm.fit_churn_model(inputs=x, churned=y[:50], lead_days=14, trained_on="t")
    with pytest.raises(InvalidInput, match="missing column"):
        cm.model_inputs(pd.DataFrame({"entity_id": ["a"]}))
