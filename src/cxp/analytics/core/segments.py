"""Usage segments (standardised k-means, one fit per k, k by a stated index, named in product-manager words) and
churn-risk ranking."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import calinski_harabasz_score, silhouette_score

from cxp.analytics.core._frames import float_column, nanmean_rows, require_columns, to_day, to_day_scalar, to_nullable
from cxp.analytics.core.stats import LN2, usage_trend
from cxp.analytics.errors import InvalidParameter

HIGH_Z = 0.5  # a standardised centroid value ≥ +0.5 SD reads as "high", ≤ −0.5 SD as "low"

KMethod = Literal["silhouette", "calinski_harabasz"]
# How k is chosen, in words for reports: the index maximised over the k tried (ties go to the smaller k).
K_METHODS: dict[str, str] = {
    "silhouette": "silhouette maximum over k (mean silhouette on a sample of the entities)",
    "calinski_harabasz": "Calinski–Harabasz (variance ratio) maximum over k",
}

# Feature roles the naming rules understand (the column names expected by default).
ROLES: tuple[str, ...] = (
    "active_days_per_week",
    "uses_per_active_day",
    "weekend_share",
    "usage_trend",
    "touchpoints_used",
    "days_since_last_use",
)
LABELS: dict[str, str] = {
    "active_days_per_week": "active days per week",
    "uses_per_active_day": "uses per active day",
    "weekend_share": "weekend share",
    "usage_trend": "usage trend",
    "touchpoints_used": "features used",
    "days_since_last_use": "days since last use",
}


@dataclass(frozen=True)
class ClusterProfile:
    """One segment: its name, size, centroid (standardised and in original units) and a one-line description."""

    cluster: int
    name: str
    size: int
    share: float
    centroid_z: dict[str, float]
    centroid: dict[str, float]
    description: str


@dataclass(frozen=True)
class Segmentation:
    """Chosen k with the index it was chosen by (`k_scores`, per k tried), labels per entity and the named clusters."""

    k: int | None
    k_method: KMethod
    k_scores: dict[int, float]
    labels: pd.DataFrame
    clusters: list[ClusterProfile]
    features: list[str]
    imputed: dict[str, int] = field(default_factory=dict)
    reason: str | None = None


def _level(z: Mapping[str, float], role: str) -> int:
    v = z.get(role)
    if v is None:
        return 0
    return 1 if v >= HIGH_Z else -1 if v <= -HIGH_Z else 0


def name_cluster(*, centroid_z: Mapping[str, float]) -> str:
    """Product-manager name from a standardised centroid (rules checked in order; roles absent count as average)."""
    act, inten = _level(centroid_z, "active_days_per_week"), _level(centroid_z, "uses_per_active_day")
    wkd, trend = _level(centroid_z, "weekend_share"), _level(centroid_z, "usage_trend")
    breadth, since = _level(centroid_z, "touchpoints_used"), _level(centroid_z, "days_since_last_use")
    if trend < 0 or since > 0:
        return "Fading users"
    if wkd > 0 and act <= 0:
        return "Weekend users"
    if act > 0 and inten > 0:
        return "Daily power users"
    if act > 0:
        return "Daily regulars"
    if inten > 0 and act < 0:
        return "Occasional heavy users"
    if breadth > 0:
        return "Feature explorers"
    if act < 0:
        return "Occasional users"
    if breadth < 0:
        return "Single-feature users"
    if trend > 0:
        return "Growing users"
    return "Typical users"


def _describe(z: Mapping[str, float], top: int = 3) -> str:
    items = sorted(z.items(), key=lambda kv: -abs(kv[1]))[:top]
    return ", ".join(f"{LABELS.get(k, k)} {v:+.1f} SD" for k, v in items)


def segment_entities(
    *,
    features: pd.DataFrame,
    k_range: Sequence[int] = range(2, 9),
    random_state: int = 0,
    log_features: Sequence[str] = (),
    fit_sample: int = 20_000,
    silhouette_sample: int = 5_000,
    n_init: int = 4,
    k_method: KMethod = "silhouette",
) -> Segmentation:
    """Standardise the numeric feature columns, fit k-means once for each k in k_range, keep the k with the best index.

    `features`: entity_id + numeric columns (roles the namer knows: see ROLES). Missing values are set to
    the column median (counted in `imputed`); constant columns are dropped; `log_features` get log1p first.
    Deterministic: fixed random_state, k-means (k-means++, n_init restarts) fitted on a random sample of
    ≤ fit_sample rows (all rows labelled). `k_method`: "silhouette" (on ≤ silhouette_sample rows) or
    "calinski_harabasz" (variance ratio; silhouette favours k = 2 whenever one group stands far apart). Ties go to
    the smaller k.
    """
    if k_method not in K_METHODS:
        raise InvalidParameter(f"k_method must be one of {sorted(K_METHODS)}")
    require_columns(features, ["entity_id"], what="segment_entities")
    cols = [c for c in features.columns if c != "entity_id" and pd.api.types.is_numeric_dtype(features[c])]
    empty = pd.DataFrame(
        {
            "entity_id": features["entity_id"].to_numpy(),
            "cluster": pd.array([None] * len(features), "Int64"),
            "segment": pd.Series([None] * len(features), dtype=object),
        }
    )

    def unsegmented(reason: str) -> Segmentation:
        # late binding: `cols` and `imputed` as they stand when the guard fires
        return Segmentation(
            k=None,
            k_method=k_method,
            k_scores={},
            labels=to_nullable(empty),
            clusters=[],
            features=cols,
            imputed=imputed,
            reason=reason,
        )

    x = np.column_stack([float_column(features, c) for c in cols]) if cols else np.empty((len(features), 0))
    for i, c in enumerate(cols):
        if c in log_features:
            x[:, i] = np.log1p(np.clip(x[:, i], 0, None))
    imputed: dict[str, int] = {}
    for i, c in enumerate(cols):
        miss = ~np.isfinite(x[:, i])
        if miss.any():
            imputed[c] = int(miss.sum())
            med = np.nanmedian(x[:, i]) if (~miss).any() else 0.0
            x[miss, i] = med
    sd = x.std(axis=0) if len(x) else np.zeros(len(cols))
    use = sd > 1e-12
    cols = [c for c, u in zip(cols, use, strict=True) if u]
    x = x[:, use]
    ks = sorted({int(k) for k in k_range if k >= 2})
    n = len(x)
    if len(cols) < 1 or not ks:
        return unsegmented("not enough data: no varying feature")
    ks = [k for k in ks if k < n]
    if not ks or n < 3:
        return unsegmented(f"not enough data: {n} entities")
    mean = x.mean(axis=0)
    z = (x - mean) / x.std(axis=0)
    rng = np.random.default_rng(random_state)
    fit_idx = np.sort(rng.choice(n, size=fit_sample, replace=False)) if n > fit_sample else np.arange(n)
    zf = z[fit_idx]
    scores: dict[int, float] = {}
    models: dict[int, KMeans] = {}
    for k in ks:
        if k >= len(np.unique(zf, axis=0)):
            continue
        km = KMeans(n_clusters=k, n_init=n_init, random_state=random_state).fit(zf)
        if len(np.unique(km.labels_)) < 2:
            continue
        if k_method == "silhouette":
            sample = min(silhouette_sample, len(zf))
            scores[k] = float(silhouette_score(zf, km.labels_, sample_size=sample, random_state=random_state))
        else:
            scores[k] = float(calinski_harabasz_score(zf, km.labels_))
        models[k] = km
    if not scores:
        return unsegmented("not enough data: too few distinct entities")
    best = max(scores, key=lambda k: (round(scores[k], 12), -k))
    km = models[best]
    labels = km.predict(z)
    sizes = np.bincount(labels, minlength=best)
    profiles = []
    names: list[str] = []
    for c in range(best):
        cz = {f: float(v) for f, v in zip(cols, km.cluster_centers_[c], strict=True)}
        raw = {f: float(v) for f, v in zip(cols, x[labels == c].mean(axis=0) if sizes[c] else mean, strict=True)}
        names.append(name_cluster(centroid_z=cz))
        profiles.append((c, cz, raw))
    # disambiguate repeated names by the cluster's most distinctive feature
    final = list(names)
    for nm in set(names):
        idx = [i for i, v in enumerate(names) if v == nm]
        if len(idx) > 1:
            for i in idx:
                f, v = max(profiles[i][1].items(), key=lambda kv: abs(kv[1]))
                final[i] = f"{nm} ({'high' if v > 0 else 'low'} {LABELS.get(f, f)})"
            if len({final[i] for i in idx}) < len(idx):
                for r, i in enumerate(idx, start=1):
                    final[i] = f"{final[i]} #{r}"
    clusters = [
        ClusterProfile(c, final[c], int(sizes[c]), float(sizes[c] / n), cz, raw, _describe(cz))
        for c, cz, raw in profiles
    ]
    out = pd.DataFrame(
        {
            "entity_id": features["entity_id"].to_numpy(),
            "cluster": labels.astype(int),
            "segment": np.array(final, dtype=object)[labels],
        }
    )
    return Segmentation(
        k=best,
        k_method=k_method,
        k_scores=scores,
        labels=to_nullable(out),
        clusters=clusters,
        features=cols,
        imputed=imputed,
    )


# ---------------------------------------------------------------- churn risk


def churn_reasons(table: pd.DataFrame, *, window_days: int, disruption_window_days: int) -> np.ndarray:
    """The "; "-joined human-readable reasons of churn risk rows (`churn_risk(explain=False)`'s columns), for any
    subset of its rows: a caller showing a few entities explains only those."""
    slope_risk = float_column(table, "slope_risk")
    weekly = float_column(table, "weekly_change")
    slope = float_column(table, "slope_per_day")
    since = float_column(table, "days_since_last_core_use")
    recency_risk = float_column(table, "recency_risk")
    never = table["no_core_use"].to_numpy(dtype=bool)
    has_core = table["core_use_known"].to_numpy(dtype=bool)
    disr = float_column(table, "recent_disruptions")
    n = slope.size
    if n == 0:
        return np.empty(0, dtype=object)

    def txt(values: np.ndarray, fmt: str) -> pd.Series:
        return pd.Series(np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)).map(fmt.format)

    parts = [
        pd.Series(
            np.where(
                np.isfinite(slope_risk) & (slope_risk > 0.1),
                "usage down " + txt(np.abs(weekly) * 100, "{:.0f}") + f"% per week over the last {window_days} days",
                "",
            )
        ),
        pd.Series(
            np.where(
                np.isfinite(since) & (recency_risk > 0),
                "no core use for "
                + txt(since, "{:.0f}")
                + " days"
                + pd.Series(np.where(never, " (none since activation)", "")),
                "",
            )
        ),
        pd.Series(np.where(never & ~np.isfinite(since) & has_core, "no core use recorded", "")),
        pd.Series(
            np.where(
                np.isfinite(disr) & (disr >= 1),
                txt(disr, "{:.0f}") + f" disruption(s) in the last {disruption_window_days} days",
                "",
            )
        ),
        pd.Series(np.where(~np.isfinite(slope), "not enough history for a usage trend", "")),
    ]
    joined = pd.Series([""] * n, dtype=object)
    for p in parts:
        joined = np.where((joined != "") & (p != ""), joined + "; " + p, joined + p)
        joined = pd.Series(joined, dtype=object)
    return np.where(joined == "", "no warning signs", joined).astype(object)


@dataclass(frozen=True)
class ChurnRisk:
    """Entities ranked by churn risk (0–100, higher = riskier) with human-readable reasons."""

    table: pd.DataFrame
    weights: dict[str, float]
    reason: str | None = None


def churn_risk(
    *,
    usage: pd.DataFrame,
    entities: pd.DataFrame | None = None,
    as_of: date | datetime | str,
    window_days: int = 28,
    bucket_days: int = 1,
    weights: Mapping[str, float] | None = None,
    recency_horizon_days: float = 21.0,
    disruption_saturation: float = 3.0,
    disruption_window_days: int = 14,
    min_points: int | None = None,
    explain: bool = True,
) -> ChurnRisk:
    """Rank entities by risk = weighted mean of slope, recency, disruption risks (each 0–1, missing re-normalised).

    slope risk = clip(−7·slope / ln 2, 0, 1) from the Theil–Sen slope of log(1 + uses) over the window
    (halving per week or faster = 1); recency risk = clip((days since last core use − grace) / horizon, 0, 1),
    grace = ⌈7 / expected active days per week⌉; disruption risk = min(1, recent_disruptions / saturation).
    `usage`: entity_id, day, uses. `entities`: entity_id [, activated_on, last_core_use_on,
    expected_active_days_per_week, recent_disruptions]. Default weights: slope 0.5, recency 0.35, disruptions 0.15.
    Returns table: rank, entity_id, risk_score, slope_risk, recency_risk, disruption_risk, weekly_change,
    days_since_last_core_use, recent_disruptions, slope_per_day, no_core_use, core_use_known, reasons ("; "-joined
    text; None with `explain=False`: `churn_reasons` of the rows shown), reason.
    """
    w = {"slope": 0.5, "recency": 0.35, "disruptions": 0.15, **(weights or {})}
    if set(w) - {"slope", "recency", "disruptions"} or any(v < 0 for v in w.values()) or sum(w.values()) <= 0:
        raise InvalidParameter("weights: keys slope/recency/disruptions, ≥ 0, not all zero")
    trend = usage_trend(
        usage=usage,
        as_of=as_of,
        window_days=window_days,
        bucket_days=bucket_days,
        entities=entities,
        min_points=min_points,
    )
    ids = trend["entity_id"].to_numpy()
    end = to_day_scalar(as_of)
    ent = (
        entities.drop_duplicates("entity_id").set_index("entity_id").reindex(ids).reset_index()
        if entities is not None
        else pd.DataFrame({"entity_id": ids})
    )
    slope = float_column(trend, "slope_per_day")
    weekly = float_column(trend, "weekly_change")
    slope_risk = np.clip(-7.0 * slope / LN2, 0, 1) + 0.0  # + 0.0 turns −0.0 into 0.0

    since = np.full(len(ids), np.nan)
    if "last_core_use_on" in ent.columns:
        since = (end - to_day(ent["last_core_use_on"])).dt.days.to_numpy(dtype=float, na_value=np.nan)
    never = ~np.isfinite(since)
    if "activated_on" in ent.columns:
        since = np.where(
            never, (end - to_day(ent["activated_on"])).dt.days.to_numpy(dtype=float, na_value=np.nan), since
        )
    expected = float_column(ent, "expected_active_days_per_week")
    grace = np.ceil(7.0 / np.where(np.isfinite(expected) & (expected > 0), np.clip(expected, 0.1, 7), 7.0))
    recency_risk = np.clip((np.clip(since, 0, None) - grace) / recency_horizon_days, 0, 1)
    disr = float_column(ent, "recent_disruptions")
    disruption_risk = (
        np.clip(disr / disruption_saturation, 0, 1) if disruption_saturation > 0 else np.full(len(ids), np.nan)
    )

    parts = np.column_stack([slope_risk, recency_risk, disruption_risk]) if len(ids) else np.empty((0, 3))
    score = 100.0 * nanmean_rows(parts, np.array([w["slope"], w["recency"], w["disruptions"]]))
    table = pd.DataFrame(
        {
            "entity_id": ids,
            "risk_score": score,
            "slope_risk": slope_risk,
            "recency_risk": recency_risk,
            "disruption_risk": disruption_risk,
            "weekly_change": weekly,
            "days_since_last_core_use": since,
            "recent_disruptions": disr,
            "slope_per_day": slope,
            "no_core_use": never,
            "core_use_known": np.full(len(ids), "last_core_use_on" in ent.columns),
        }
    )
    table["reasons"] = (churn_reasons(table, window_days=window_days, disruption_window_days=disruption_window_days)
                        if explain else None)
    table["reason"] = np.where(np.isfinite(score), None, "not enough data: no risk signal available")
    table = table.assign(_s=np.where(np.isfinite(score), score, -1.0), _id=table["entity_id"].astype(str))
    table = table.sort_values(["_s", "_id"], ascending=[False, True], kind="stable").drop(columns=["_s", "_id"])
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    reason = None if len(table) else "not enough data: no entities"
    return ChurnRisk(to_nullable(table.reset_index(drop=True)), dict(w), reason)
