"""A fitted churn early-warning model: L2-regularised logistic regression on the early-warning parts.

The inputs (`model_inputs`) come from the churn risk table (core segments.churn_risk + core early_warning parts):
*drop* ln(1 + Poisson drop evidence), *satisfaction* the shrunk satisfaction index, *failures* ln(failures per
use), *experience* the experience load, and the *slope* and *recency* risks. `fit_churn_model` standardises them
and fits the coefficients by Newton's method; `churn_probability` scores new rows. `DEFAULT_MODEL` was fitted on a
simulated training fleet that is none of the evaluation fleets (docs/analytics.md says how to refit it).
Pure: numpy and pandas only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cxp.analytics.core._frames import float_column, require_columns
from cxp.analytics.errors import InvalidParameter

MODEL_FEATURES: tuple[str, ...] = ("drop", "satisfaction", "failures", "experience", "slope", "recency")
_SOURCES = (
    "drop_evidence",
    "satisfaction_index",
    "failure_rate",
    "experience_load",
    "slope_risk",
    "recency_risk",
)


@dataclass(frozen=True)
class ChurnModel:
    """Logistic model on standardised inputs: p = 1 / (1 + exp(−(intercept + Σ coef · (x − mean) / scale)))."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    lead_days: int
    trained_on: str

    def as_dict(self) -> dict[str, float]:
        """The coefficient per feature (per standard deviation of the input) and the intercept."""
        return {**dict(zip(self.features, self.coef, strict=True)), "intercept": self.intercept}


def model_inputs(table: pd.DataFrame) -> pd.DataFrame:
    """The model's inputs per row of a churn risk table (entity_id kept); missing parts count as no signal."""
    require_columns(table, ["entity_id", *_SOURCES], what="model_inputs")
    rate = float_column(table, "failure_rate")
    out = pd.DataFrame({"entity_id": table["entity_id"].to_numpy()})
    out["drop"] = np.log1p(np.nan_to_num(float_column(table, "drop_evidence"), nan=0.0).clip(min=0.0))
    out["satisfaction"] = np.nan_to_num(float_column(table, "satisfaction_index"), nan=0.0)
    out["failures"] = np.log(np.where(np.isfinite(rate) & (rate > 0), rate, 0.1))
    for name, source in zip(("experience", "slope", "recency"), _SOURCES[3:], strict=True):
        out[name] = np.nan_to_num(float_column(table, source), nan=0.0)
    return out


def fit_churn_model(
    *, inputs: pd.DataFrame, churned: np.ndarray, lead_days: int, trained_on: str, l2: float = 1.0
) -> ChurnModel:
    """Fit the logistic model: `inputs` (model_inputs rows), `churned` (bool per row: left within `lead_days`).

    Inputs are standardised with the training rows' mean and standard deviation; the penalty `l2` · ‖coef‖² / 2
    (not on the intercept) keeps collinear parts stable. Newton–Raphson to convergence (≤ 50 steps).
    """
    require_columns(inputs, list(MODEL_FEATURES), what="fit_churn_model")
    y = np.asarray(churned, dtype=float)
    if len(y) != len(inputs) or l2 < 0 or lead_days < 1:
        raise InvalidParameter("need one label per row, l2 ≥ 0 and lead_days ≥ 1")
    if y.min(initial=1.0) == y.max(initial=0.0):
        raise InvalidParameter("need both churners and stayers to fit a churn model")
    x = inputs[list(MODEL_FEATURES)].to_numpy(dtype=float)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = np.column_stack([np.ones(len(x)), (x - mean) / scale])
    penalty = np.diag([0.0] + [l2] * len(MODEL_FEATURES))
    beta = np.zeros(z.shape[1])
    beta[0] = np.log(y.mean() / (1 - y.mean()))
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(z @ beta)))
        gradient = z.T @ (y - p) - penalty @ beta
        hessian = (z * (p * (1 - p))[:, None]).T @ z + penalty
        step = np.linalg.solve(hessian, gradient)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-8:
            break
    return ChurnModel(
        features=MODEL_FEATURES,
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        coef=tuple(float(v) for v in beta[1:]),
        intercept=float(beta[0]),
        lead_days=lead_days,
        trained_on=trained_on,
    )


def churn_probability(*, inputs: pd.DataFrame, model: ChurnModel) -> np.ndarray:
    """The model's probability of churn within its lead time, per row of `inputs`."""
    require_columns(inputs, list(model.features), what="churn_probability")
    x = inputs[list(model.features)].to_numpy(dtype=float)
    z = (x - np.asarray(model.mean)) / np.asarray(model.scale)
    return 1.0 / (1.0 + np.exp(-(model.intercept + z @ np.asarray(model.coef))))


# Fitted by `cxp bench truth --fit-seed 11` (printed there): 14-day churn, as-of days 10–32 of the seed-11 truth fleet.
DEFAULT_MODEL = ChurnModel(
    features=MODEL_FEATURES,
    mean=(0.4112, -0.06817, -3.938, 0.2389, 0.04688, 0.004764),
    scale=(0.5993, 0.4268, 0.8295, 0.4547, 0.1404, 0.04406),
    coef=(0.5798, -0.4755, 0.1771, 0.1908, -0.08357, 0.1003),
    intercept=-2.124,
    lead_days=14,
    trained_on="truth fleet seed 11, as-of days 10-32",
)
