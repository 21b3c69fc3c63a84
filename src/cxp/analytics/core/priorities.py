"""Touchpoint priorities per product: derived importance from satisfaction answers (core kano), the IPA quadrant
placed on it, and the Kano class; the usage share and the Shapley importances vs retention and feedback are
reported beside it, assembled from the primitives in `touchpoints` and `kano`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from cxp.analytics.core._frames import finite_or_none, member_of, require_columns
from cxp.analytics.core.health import latency_score
from cxp.analytics.core.touchpoints import derived_importance, ipa_quadrants
from cxp.analytics.errors import InvalidParameter

KANO_COLUMNS = ("n_low", "n_high", "n_middle", "penalty", "reward", "spread", "spread_ci_low", "spread_ci_high")


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
    """`table`: the summary rows with importance_*, rho_*, n_*, importance (derived: CSAT points), importance_basis,
    quadrant and the class columns (classification, penalty, reward, spread, n_low, n_high, n_middle,
    classification_reason), plain values."""

    table: pd.DataFrame
    models: tuple[OutcomeFit, ...]
    crosshairs: dict[str, tuple[float | None, float | None]]


def touchpoint_priorities(
    *,
    summary: pd.DataFrame,
    performance: pd.DataFrame,
    outcomes: Mapping[str, pd.DataFrame],
    devices: pd.DataFrame,
    kano: pd.DataFrame | None = None,
    alpha: float = 0.05,
) -> TouchpointPriorities:
    """Derived importance, IPA quadrant and Kano class of each product's touchpoints.

    `summary`: product_id, touchpoint, usage_share, performance (core touchpoint_summary). `performance`:
    device_id, product_id, touchpoint, performance (per device). `outcomes`: name → device_id, outcome (e.g.
    retention, feedback): Shapley importances reported beside, counted only where the model's F test has
    p < `alpha`. `kano`: core kano_classes().table (penalty, reward, spread, class per product × touchpoint).

    IPA importance = the derived importance from answers: the satisfaction spread between a failed and a
    successful use (CSAT points); where only the answers after a failure suffice, the penalty (a lower bound of
    the spread), said in `importance_basis`. A touchpoint with neither is not placed (quadrant
    None, the answers it needs in the reason): usage share alone never makes it "low priority". Crosshairs: the
    means of each product's placed touchpoints.
    """
    require_columns(summary, ["product_id", "touchpoint", "usage_share", "performance"], what="summary")
    require_columns(performance, ["device_id", "product_id", "touchpoint", "performance"], what="performance")
    require_columns(devices, ["device_id", "product_id"], what="devices")
    models: list[OutcomeFit] = []
    derived: dict[tuple[str, str, str], tuple[float | None, float | None, int]] = {}
    for product_id in sorted(summary["product_id"].unique()):
        product_performance = performance[performance["product_id"] == product_id][
            ["device_id", "touchpoint", "performance"]
        ]
        product_devices = set(devices.loc[devices["product_id"] == product_id, "device_id"])
        for outcome_name, outcome_frame in outcomes.items():
            product_outcomes = outcome_frame[member_of(outcome_frame["device_id"], product_devices)]
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

    table = summary.copy()
    keys = list(zip(table["product_id"], table["touchpoint"], strict=True))
    table["importance_usage"] = 100.0 * table["usage_share"].astype(float)
    for outcome_name in outcomes:
        found = [derived.get((p, t, outcome_name), (None, None, 0)) for p, t in keys]
        # object columns: None stays None (a float column would turn it into NaN), counts stay Python ints
        for position, prefix in enumerate(("importance", "rho", "n")):
            table[f"{prefix}_{outcome_name}"] = pd.Series([f[position] for f in found], index=table.index, dtype=object)
    classes = _kano_by_key(kano)
    importance, basis, reasons = [], [], []
    for p, t in keys:
        k = classes.get((str(p), str(t)), {})
        value, text = _derived(k)
        importance.append(value)
        basis.append(text)
        reasons.append(k.get("reason") or ("no satisfaction answers about it" if not k else None))
    table["importance"] = pd.Series(importance, index=table.index, dtype=float)
    table["importance_basis"] = basis

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
    table["classification"] = pd.Series(
        [classes.get((str(p), str(t)), {}).get("kano_class") for p, t in keys], index=table.index, dtype=object
    )
    for column in KANO_COLUMNS:
        table[column] = pd.Series(
            [_plain(classes.get((str(p), str(t)), {}).get(column)) for p, t in keys], index=table.index, dtype=object
        )
    table["classification_reason"] = pd.Series(reasons, index=table.index, dtype=object)
    return TouchpointPriorities(table=table, models=tuple(models), crosshairs=crosshairs)


def _kano_by_key(kano: pd.DataFrame | None) -> dict[tuple[str, str], dict[str, object]]:
    if kano is None or kano.empty:
        return {}
    return {(str(r["product_id"]), str(r["touchpoint"])): r for r in kano.to_dict("records")}


def _plain(value: object) -> object:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float | np.floating):
        return finite_or_none(value)
    if isinstance(value, int | np.integer):
        return int(value)
    return value


def _derived(k: Mapping[str, object]) -> tuple[float | None, str]:
    """The IPA importance of a touchpoint from its class row and the words saying what it rests on."""
    n = f"n = {_count(k.get('n_low'))} after a failure, {_count(k.get('n_high'))} after a success"
    middle = f"{_count(k.get('n_middle'))} without recent use"
    spread, penalty, reward = (finite_or_none(k.get(c)) for c in ("spread", "penalty", "reward"))
    if spread is not None and penalty is not None and penalty > spread:
        # a touchpoint that keeps failing: answers after a success still carry the earlier failures (reward < 0),
        # so the spread understates what a failure costs; the penalty alone does not
        return penalty, f"derived: satisfaction lost by a failure, above the spread ({n}, {middle})"
    if spread is not None:
        return spread, f"derived: satisfaction spread between a failed and a successful use ({n})"
    if penalty is not None:
        return penalty, f"derived, lower bound: satisfaction lost by a failure vs no recent use ({n}, {middle})"
    if reward is not None:
        # a touchpoint nobody answered about after a failure may be a basic one whose failures hurt most: the
        # reward alone would place it as unimportant
        return None, f"not placed: too few answers after a failure to know what a failure costs ({n})"
    return None, f"not placed: too few answers for a derived importance ({n})"


def _count(value: object) -> int:
    number = finite_or_none(value)
    return 0 if number is None else int(number)


def _text(value: object) -> str | None:
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


CROSSHAIRS = {
    "data": "crosshairs at the means of the product's surveyed touchpoints",
    "midpoint": "crosshairs at the midpoint of the survey's scale",
}


def survey_quadrants(*, survey: pd.DataFrame, crosshairs: str = "data") -> tuple[pd.DataFrame, dict[str, tuple]]:
    """IPA quadrants of a stated importance × quality table (a classic questionnaire), per product, on its own scale.

    `survey`: product_id, touchpoint, importance, quality, scale_min, scale_max [, respondents]. `crosshairs`:
    "data" (the means of the product's rows) or "midpoint" (of the scale). Returns the rows with `quadrant` and
    {product_id: (importance crosshair, quality crosshair)}.
    """
    require_columns(
        survey, ["product_id", "touchpoint", "importance", "quality", "scale_min", "scale_max"], what="survey"
    )
    if crosshairs not in CROSSHAIRS:
        raise InvalidParameter(f"crosshairs must be one of {sorted(CROSSHAIRS)}")
    parts, lines = [], {}
    for product_id, rows in survey.groupby("product_id", sort=True):
        middle = (float(rows["scale_min"].min()) + float(rows["scale_max"].max())) / 2
        frame = rows[["touchpoint", "importance", "quality"]].rename(columns={"quality": "performance"})
        fixed = {"importance_crosshair": middle, "performance_crosshair": middle} if crosshairs == "midpoint" else {}
        ipa = ipa_quadrants(frame=frame, **fixed)
        lines[str(product_id)] = (finite_or_none(ipa.importance_crosshair), finite_or_none(ipa.performance_crosshair))
        parts.append(rows.assign(quadrant=ipa.table["quadrant"].to_numpy()))
    out = pd.concat(parts, ignore_index=True) if parts else survey.assign(quadrant=pd.Series(dtype=object))
    return out, lines
