"""Touchpoint priorities per product: importance (usage share and significant derived importances), IPA quadrant,
and the penalty–reward class, assembled from the primitives in `touchpoints`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from cxp.analytics.core._frames import finite_or_none, require_columns
from cxp.analytics.core.health import latency_score
from cxp.analytics.core.touchpoints import derived_importance, ipa_quadrants, penalty_reward

IMPORTANCE_COLUMNS = ("importance_usage", "importance_retention", "importance_feedback")
CLASSIFIED_OUTCOME = "feedback"  # penalty–reward runs on the satisfaction index only


def device_performance(*, frame: pd.DataFrame) -> np.ndarray:
    """Per device × touchpoint: mean of the success rate ×100 and latency_score(mean latency / target).

    `frame`: uses, successes, latency_sum, latency_count, target_latency_ms (nullable).
    """
    require_columns(
        frame, ["uses", "successes", "latency_sum", "latency_count", "target_latency_ms"], what="device_performance"
    )
    success_pct = 100.0 * frame["successes"] / frame["uses"]
    mean_latency = frame["latency_sum"] / frame["latency_count"].where(frame["latency_count"] > 0)
    latency = latency_score(ratio=(mean_latency / frame["target_latency_ms"]).to_numpy(dtype=float))
    return np.nanmean(np.column_stack([success_pct.to_numpy(dtype=float), latency]), axis=1)


def f_test_p(*, r2: float | None, n: int, k: int) -> float | None:
    """p-value of the overall F test of a linear model with k predictors explaining R² of n observations."""
    if r2 is None or k < 1 or n - k - 1 < 1 or r2 >= 1:
        return None
    statistic = (r2 / k) / ((1 - r2) / (n - k - 1))
    return finite_or_none(sps.f.sf(statistic, k, n - k - 1))


@dataclass(frozen=True)
class OutcomeFit:
    """How well touchpoint performance explains one outcome in one product."""

    product_id: str
    outcome: str
    n_devices: int
    r2: float | None
    p_value: float | None
    significant: bool
    method: str | None
    reason: str | None


@dataclass(frozen=True)
class TouchpointPriorities:
    """`table`: the summary rows with importance_*, rho_*, n_*, importance, importance_basis, quadrant and the
    penalty–reward columns (classification, penalty, reward, n_low, n_high, classification_reason), plain values."""

    table: pd.DataFrame
    models: tuple[OutcomeFit, ...]
    crosshairs: dict[str, tuple[float | None, float | None]]


def touchpoint_priorities(
    *,
    summary: pd.DataFrame,
    performance: pd.DataFrame,
    outcomes: Mapping[str, pd.DataFrame],
    devices: pd.DataFrame,
    alpha: float = 0.05,
) -> TouchpointPriorities:
    """Importance, IPA quadrant and penalty–reward class of each product's touchpoints.

    `summary`: product_id, touchpoint, usage_share, performance (core touchpoint_summary). `performance`:
    device_id, product_id, touchpoint, performance (per device). `outcomes`: name → device_id, outcome
    (e.g. retention, feedback). `devices`: device_id, product_id (the devices in scope). A derived importance
    counts only where its outcome model's F test has p < `alpha`; importance = mean of the usage share (%) and
    the counted derived importances; IPA crosshairs at each product's means.
    """
    require_columns(summary, ["product_id", "touchpoint", "usage_share", "performance"], what="summary")
    require_columns(performance, ["device_id", "product_id", "touchpoint", "performance"], what="performance")
    require_columns(devices, ["device_id", "product_id"], what="devices")
    models: list[OutcomeFit] = []
    derived: dict[tuple[str, str, str], tuple[float | None, float | None, int]] = {}
    classes: dict[tuple[str, str], dict[str, object]] = {}
    for product_id in sorted(summary["product_id"].unique()):
        product_performance = performance[performance["product_id"] == product_id][
            ["device_id", "touchpoint", "performance"]
        ]
        product_devices = set(devices.loc[devices["product_id"] == product_id, "device_id"])
        for outcome_name, outcome_frame in outcomes.items():
            product_outcomes = outcome_frame[outcome_frame["device_id"].isin(product_devices)]
            importance = derived_importance(performance=product_performance, outcomes=product_outcomes)
            predictors = int(importance.table["r2_share"].notna().sum())
            p_value = f_test_p(r2=importance.r2, n=importance.n_devices, k=predictors)
            significant = p_value is not None and p_value < alpha
            models.append(
                OutcomeFit(
                    product_id=product_id,
                    outcome=outcome_name,
                    n_devices=importance.n_devices,
                    r2=finite_or_none(importance.r2),
                    p_value=p_value,
                    significant=significant,
                    method=importance.method,
                    reason=importance.reason,
                )
            )
            for row in importance.table.itertuples(index=False):
                derived[(product_id, str(row.touchpoint), outcome_name)] = (
                    finite_or_none(row.importance) if significant else None,
                    finite_or_none(row.spearman_rho),
                    _count(row.n),
                )
            if outcome_name == CLASSIFIED_OUTCOME:
                contrast = penalty_reward(performance=product_performance, outcomes=product_outcomes)
                for row in contrast.table.itertuples(index=False):
                    classes[(product_id, str(row.touchpoint))] = {
                        "classification": _text(row.classification),
                        "penalty": finite_or_none(row.penalty),
                        "reward": finite_or_none(row.reward),
                        "n_low": _count(row.n_low),
                        "n_high": _count(row.n_high),
                        "classification_reason": _text(row.reason),
                    }

    table = summary.copy()
    keys = list(zip(table["product_id"], table["touchpoint"], strict=True))
    table["importance_usage"] = 100.0 * table["usage_share"].astype(float)
    for outcome_name in outcomes:
        found = [derived.get((p, t, outcome_name), (None, None, 0)) for p, t in keys]
        # object columns: None stays None (a float column would turn it into NaN), counts stay Python ints
        for position, prefix in enumerate(("importance", "rho", "n")):
            table[f"{prefix}_{outcome_name}"] = pd.Series([f[position] for f in found], index=table.index, dtype=object)
    present = [c for c in IMPORTANCE_COLUMNS if c in table.columns]
    measures = table[present].apply(pd.to_numeric, errors="coerce").astype(float)
    table["importance"] = measures.mean(axis=1, skipna=True)
    table["importance_basis"] = measures.apply(
        lambda r: " + ".join(c.removeprefix("importance_") for c in present if pd.notna(r[c])), axis=1
    )

    quadrants: dict[tuple[str, str], str | None] = {}
    crosshairs: dict[str, tuple[float | None, float | None]] = {}
    for product_id, group in table.groupby("product_id"):
        ipa = ipa_quadrants(frame=group[["touchpoint", "importance", "performance"]])
        crosshairs[str(product_id)] = (
            finite_or_none(ipa.importance_crosshair),
            finite_or_none(ipa.performance_crosshair),
        )
        for row in ipa.table.itertuples(index=False):
            quadrants[(str(product_id), str(row.touchpoint))] = row.quadrant
    table["quadrant"] = pd.Series([quadrants.get((str(p), str(t))) for p, t in keys], index=table.index, dtype=object)
    for column in ("classification", "penalty", "reward", "n_low", "n_high", "classification_reason"):
        table[column] = pd.Series(
            [classes.get((str(p), str(t)), {}).get(column) for p, t in keys], index=table.index, dtype=object
        )
    return TouchpointPriorities(table=table, models=tuple(models), crosshairs=crosshairs)


def _count(value: object) -> int:
    number = finite_or_none(value)
    return 0 if number is None else int(number)


def _text(value: object) -> str | None:
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)
