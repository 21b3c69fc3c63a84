"""Experience Health Score: five 0–100 components, weighted and re-normalised, reliability cap, bands, drivers, trend.

See docs/experience-score.md for the model. All functions are vectorised over many entities (rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cxp.analytics.core._frames import (
    epoch_seconds,
    epoch_seconds_scalar,
    float_column,
    nanmean_rows,
    require_columns,
    to_day,
    to_day_scalar,
    to_nullable,
    to_utc_scalar,
)
from cxp.analytics.core.stats import LN2, ratio_array, usage_trend
from cxp.analytics.errors import InvalidInput, InvalidParameter

COMPONENTS: tuple[str, ...] = ("reliability", "efficiency", "engagement", "trajectory", "voice")
KEY_COLS: tuple[str, ...] = ("entity_id", "period")
UPTIME_TOLERANCE = 1.5  # a device is "up" while last seen within 1.5 × its heartbeat interval


def _keys(frame: pd.DataFrame) -> list[str]:
    require_columns(frame, ["entity_id"], what="health")
    return [c for c in KEY_COLS if c in frame.columns]


# ---------------------------------------------------------------- reliability


def uptime_from_heartbeats(
    *,
    heartbeats: pd.DataFrame,
    window_start: datetime | str,
    window_end: datetime | str,
    interval_s: float | None = None,
    entities: pd.DataFrame | None = None,
    tolerance: float = UPTIME_TOLERANCE,
) -> pd.DataFrame:
    """Share of [window_start, window_end) each entity was "up": each heartbeat covers min(gap, tolerance × interval).

    `heartbeats`: entity_id, ts [, interval_s]. Include the last heartbeat before the window so coverage carries in.
    `interval_s`: scalar interval when the frame has no interval_s column. `entities` (optional): entity_id
    [, activated_at] lists entities with no heartbeats (uptime 0) and starts a window at activation.
    Returns entity_id, heartbeats, up_s, window_s, uptime (0–1, <NA> when the window is empty).
    """
    require_columns(heartbeats, ["entity_id", "ts"], what="uptime_from_heartbeats")
    start, end = to_utc_scalar(window_start), to_utc_scalar(window_end)
    if end <= start:
        raise InvalidParameter("window_end must be after window_start")
    t0, t1 = epoch_seconds_scalar(start), epoch_seconds_scalar(end)
    hb = pd.DataFrame({"entity_id": heartbeats["entity_id"].to_numpy(), "t": epoch_seconds(heartbeats["ts"])})
    if "interval_s" in heartbeats.columns:
        hb["interval_s"] = float_column(heartbeats, "interval_s")
    elif interval_s is not None and interval_s > 0:
        hb["interval_s"] = float(interval_s)
    else:
        raise InvalidParameter("give interval_s (> 0) or an interval_s column")
    hb = hb[np.isfinite(hb["t"].to_numpy()) & (hb["t"].to_numpy() < t1) & (hb["interval_s"].to_numpy() > 0)]
    hb = hb.sort_values(["entity_id", "t"], kind="stable")
    act = pd.Series(dtype=float)
    if entities is not None:
        require_columns(entities, ["entity_id"], what="uptime_from_heartbeats entities")
        if "activated_at" in entities.columns:
            act = pd.Series(epoch_seconds(entities["activated_at"]), index=entities["entity_id"].to_numpy())
            act = act[~act.index.duplicated()]
    t = hb["t"].to_numpy()
    nxt = hb.groupby("entity_id", sort=False)["t"].shift(-1).to_numpy(dtype=float, na_value=np.nan)
    nxt = np.where(np.isfinite(nxt), nxt, np.inf)
    cover_end = np.minimum(np.minimum(nxt, t + tolerance * hb["interval_s"].to_numpy()), t1)
    row_start = np.full(len(hb), t0)
    if len(act):
        row_start = np.fmax(row_start, act.reindex(hb["entity_id"].to_numpy()).to_numpy(dtype=float))
    covered = np.clip(cover_end - np.maximum(t, row_start), 0, None)
    per = pd.DataFrame({"entity_id": hb["entity_id"].to_numpy(), "up_s": covered, "one": 1})
    agg = per.groupby("entity_id", sort=True).agg(heartbeats=("one", "sum"), up_s=("up_s", "sum"))
    ids = agg.index
    if entities is not None:
        ids = ids.union(pd.Index(entities["entity_id"].unique()))
    agg = agg.reindex(ids).fillna({"heartbeats": 0, "up_s": 0.0})
    w_start = np.full(len(ids), t0)
    if len(act):
        w_start = np.fmax(w_start, act.reindex(ids).to_numpy(dtype=float))
    window_s = np.clip(t1 - w_start, 0, None)
    out = pd.DataFrame(
        {
            "entity_id": ids.to_numpy(),
            "heartbeats": agg["heartbeats"].to_numpy().astype(int),
            "up_s": agg["up_s"].to_numpy(dtype=float),
            "window_s": window_s,
        }
    )
    out["uptime"] = np.clip(ratio_array(num=out["up_s"], den=out["window_s"]), 0, 1)
    return to_nullable(out)


def reliability_component(*, frame: pd.DataFrame) -> pd.DataFrame:
    """Reliability 0–100 = mean of the available sub-scores: success rate, error-free day share, uptime (each ×100).

    Input: entity_id [, period] and any of uses, successes (task success), active_days, error_free_days
    (active days without an error), uptime (0–1, see uptime_from_heartbeats). A sub-score with a zero or
    missing denominator is missing; the others are re-averaged. Returns keys + success_score,
    error_free_score, uptime_score, reliability.
    """
    keys = _keys(frame)
    success = 100.0 * np.clip(ratio_array(num=float_column(frame, "successes"), den=float_column(frame, "uses")), 0, 1)
    error_free = 100.0 * np.clip(
        ratio_array(num=float_column(frame, "error_free_days"), den=float_column(frame, "active_days")), 0, 1
    )
    uptime = 100.0 * np.clip(float_column(frame, "uptime"), 0, 1)
    out = frame[keys].copy()
    out["success_score"], out["error_free_score"], out["uptime_score"] = success, error_free, uptime
    out["reliability"] = nanmean_rows(np.column_stack([success, error_free, uptime]))
    return to_nullable(out)


# ---------------------------------------------------------------- efficiency ("time well saved")


def latency_score(*, ratio: np.ndarray | float, zero_at_ratio: float = 2.0) -> np.ndarray:
    """100 at or under target (ratio = observed/target ≤ 1), falling linearly to 0 at `zero_at_ratio` × target."""
    if zero_at_ratio <= 1:
        raise InvalidParameter("zero_at_ratio must be > 1")
    r = np.asarray(ratio, dtype=float)
    return 100.0 * np.clip((zero_at_ratio - r) / (zero_at_ratio - 1.0), 0.0, 1.0)


def efficiency_component(*, frame: pd.DataFrame, zero_at_ratio: float = 2.0) -> pd.DataFrame:
    """Efficiency 0–100: use-weighted mean over touchpoints of each touchpoint's "within target" score.

    Input, one row per entity [× period] × touchpoint: entity_id [, period], touchpoint, uses, and either
    within_target_uses (exact: score = 100 · within/uses) or observed_mean + target in the same unit
    (latency ms or duration s; score = latency_score(observed/target)). Rows without a usable score or
    uses are ignored. Returns keys + efficiency, efficiency_uses.
    """
    keys = _keys(frame)
    require_columns(frame, ["touchpoint", "uses"], what="efficiency_component")
    uses = float_column(frame, "uses")
    exact = 100.0 * np.clip(ratio_array(num=float_column(frame, "within_target_uses"), den=uses), 0, 1)
    smooth = latency_score(
        ratio=ratio_array(num=float_column(frame, "observed_mean"), den=float_column(frame, "target")),
        zero_at_ratio=zero_at_ratio,
    )
    score = np.where(np.isfinite(exact), exact, smooth)
    ok = np.isfinite(score) & np.isfinite(uses) & (uses > 0)
    w = np.where(ok, uses, 0.0)
    tmp = frame[keys].copy()
    tmp["_ws"] = np.where(ok, score * w, 0.0)
    tmp["_w"] = w
    g = tmp.groupby(keys, sort=True, dropna=False)[["_ws", "_w"]].sum().reset_index()
    g["efficiency"] = ratio_array(num=g["_ws"], den=g["_w"])
    g["efficiency_uses"] = g["_w"]
    return to_nullable(g.drop(columns=["_ws", "_w"]))


# ---------------------------------------------------------------- engagement ("time well spent")


def engagement_component(*, frame: pd.DataFrame, stickiness_weight: float = 0.7) -> pd.DataFrame:
    """Engagement 0–100 = weighted mean of stickiness and breadth (default 70/30, re-normalised if one is missing).

    Stickiness = min(1, active_days / (expected_active_days_per_week · days_in_period / 7)) ×100;
    breadth = min(1, touchpoints_used / catalogue_size) ×100. Input: entity_id [, period], active_days,
    days_in_period (7 when absent), expected_active_days_per_week, touchpoints_used, catalogue_size.
    Returns keys + stickiness_score, breadth_score, engagement.
    """
    if not 0 <= stickiness_weight <= 1:
        raise InvalidParameter("stickiness_weight must be in [0, 1]")
    keys = _keys(frame)
    days = float_column(frame, "days_in_period") if "days_in_period" in frame.columns else np.full(len(frame), 7.0)
    expected = float_column(frame, "expected_active_days_per_week") * days / 7.0
    sticky = 100.0 * np.clip(ratio_array(num=float_column(frame, "active_days"), den=expected), 0, 1)
    breadth = 100.0 * np.clip(
        ratio_array(num=float_column(frame, "touchpoints_used"), den=float_column(frame, "catalogue_size")), 0, 1
    )
    out = frame[keys].copy()
    out["stickiness_score"], out["breadth_score"] = sticky, breadth
    out["engagement"] = nanmean_rows(
        np.column_stack([sticky, breadth]), np.array([stickiness_weight, 1.0 - stickiness_weight])
    )
    return to_nullable(out)


# ---------------------------------------------------------------- trajectory


def trend_score(*, weekly_log_change: np.ndarray | float) -> np.ndarray:
    """100 for flat or rising usage, falling linearly in the weekly log change to 0 at halving per week (w = −ln 2)."""
    w = np.asarray(weekly_log_change, dtype=float)
    return 100.0 * np.clip(1.0 + w / LN2, 0.0, 1.0) + 0.0


def recency_score(
    *, days_since: np.ndarray | float, expected_active_days_per_week: np.ndarray | float = 7.0, fade_days: float = 21.0
) -> np.ndarray:
    """100 within the expected gap between uses (⌈7 / expected days⌉), then linear to 0 over `fade_days` more days."""
    d = np.asarray(days_since, dtype=float)
    e = np.asarray(expected_active_days_per_week, dtype=float)
    grace = np.ceil(7.0 / np.where(np.isfinite(e) & (e > 0), np.clip(e, 0.1, 7.0), 7.0))
    return 100.0 * np.clip(1.0 - (d - grace) / fade_days, 0.0, 1.0)


def trajectory_component(
    *,
    usage: pd.DataFrame,
    entities: pd.DataFrame | None = None,
    as_of: date | datetime | str,
    window_days: int = 28,
    bucket_days: int = 1,
    slope_weight: float = 0.5,
    fade_days: float = 21.0,
    min_points: int | None = None,
    period: object | None = None,
) -> pd.DataFrame:
    """Trajectory 0–100 = slope_weight · trend_score(Theil–Sen of log(1+uses)) + (1 − slope_weight) · recency_score.

    `usage`: entity_id, day, uses (daily, window ending at as_of; absent days are 0). `entities` (optional):
    entity_id [, activated_on, expected_active_days_per_week, last_use_on]. Days since last use come from
    last_use_on, else the last day with uses > 0 in `usage`, else activation, else `window_days` (a lower
    bound). Without enough points for a slope, trajectory = recency alone. Returns entity_id [, period],
    points, slope_per_day, weekly_change, days_since_last_use, slope_score, recency_score, trajectory.
    """
    if not 0 <= slope_weight <= 1:
        raise InvalidParameter("slope_weight must be in [0, 1]")
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
    used = usage[(float_column(usage, "uses") > 0)]
    used_days = to_day(used["day"])
    used = pd.Series(used_days.to_numpy(), index=used["entity_id"].to_numpy())[(used_days <= end).to_numpy()]
    last = used.groupby(level=0).max().reindex(ids)
    expected = np.full(len(ids), 7.0)
    if entities is not None:
        ent = entities.drop_duplicates("entity_id").set_index("entity_id").reindex(ids)
        if "last_use_on" in ent.columns:
            given = pd.Series(to_day(ent["last_use_on"]).to_numpy(), index=ids)
            last = given.where(given.notna(), last)
        if "activated_on" in ent.columns:
            act = pd.Series(to_day(ent["activated_on"]).to_numpy(), index=ids)
            last = last.where(last.notna(), act)
        if "expected_active_days_per_week" in ent.columns:
            expected = float_column(ent.reset_index(), "expected_active_days_per_week")
    days_since = (end - pd.to_datetime(last)).dt.days.to_numpy(dtype=float, na_value=np.nan)
    days_since = np.where(np.isfinite(days_since), np.clip(days_since, 0, None), float(window_days))
    slope = float_column(trend, "slope_per_day")
    s_score = trend_score(weekly_log_change=7.0 * slope)
    r_score = recency_score(days_since=days_since, expected_active_days_per_week=expected, fade_days=fade_days)
    out = pd.DataFrame({"entity_id": ids})
    if period is not None:
        out["period"] = period
    out["points"] = trend["points"].to_numpy()
    out["slope_per_day"] = slope
    out["weekly_change"] = float_column(trend, "weekly_change")
    out["days_since_last_use"] = days_since
    out["slope_score"], out["recency_score"] = s_score, r_score
    out["trajectory"] = nanmean_rows(np.column_stack([s_score, r_score]), np.array([slope_weight, 1.0 - slope_weight]))
    return to_nullable(out)


# ---------------------------------------------------------------- voice


def voice_component(*, frame: pd.DataFrame, min_n: int = 1) -> pd.DataFrame:
    """Voice 0–100 = mean of the measures present, mapped linearly: NPS → (NPS+100)/2, CSAT as is, CES → (mean−1)/6·100.

    Input: entity_id [, period] and any of nps_n, nps_promoters, nps_detractors, csat_n, csat_top2,
    ces_n, ces_sum (response counts over the lookback). A measure with fewer than `min_n` answers is missing.
    Returns keys + nps_score, csat_score, ces_score, voice.
    """
    keys = _keys(frame)

    def counted(n_col: str) -> np.ndarray:
        n = float_column(frame, n_col)
        return np.where(np.isfinite(n) & (n >= max(min_n, 1)), n, np.nan)

    n_nps, n_csat, n_ces = counted("nps_n"), counted("csat_n"), counted("ces_n")
    nps = 100.0 * (float_column(frame, "nps_promoters") - float_column(frame, "nps_detractors")) / n_nps
    nps_score = np.clip((nps + 100.0) / 2.0, 0, 100)
    csat_score = np.clip(100.0 * float_column(frame, "csat_top2") / n_csat, 0, 100)
    ces_score = np.clip((float_column(frame, "ces_sum") / n_ces - 1.0) / 6.0 * 100.0, 0, 100)
    out = frame[keys].copy()
    out["nps_score"], out["csat_score"], out["ces_score"] = nps_score, csat_score, ces_score
    out["voice"] = nanmean_rows(np.column_stack([nps_score, csat_score, ces_score]))
    return to_nullable(out)


# ---------------------------------------------------------------- the score


class HealthConfig(BaseModel):
    """Weights (any positive scale, normalised per row over the components present), must-be cap, bands, trend band."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weights: dict[str, float] = Field(
        default_factory=lambda: {
            "reliability": 30.0,
            "efficiency": 15.0,
            "engagement": 25.0,
            "trajectory": 20.0,
            "voice": 10.0,
        }
    )
    product_weights: dict[str, dict[str, float]] = Field(default_factory=dict)
    must_be_threshold: float = Field(60.0, ge=0, le=100)
    cap_headroom: float = Field(10.0, ge=0, le=100)
    red_below: float = Field(50.0, ge=0, le=100)
    green_from: float = Field(70.0, ge=0, le=100)
    trend_dead_band: float = Field(3.0, ge=0)
    min_components: int = Field(2, ge=1, le=len(COMPONENTS))
    top_drivers: int = Field(3, ge=1, le=len(COMPONENTS))

    @model_validator(mode="after")
    def _check(self) -> HealthConfig:
        for name, w in [
            ("weights", self.weights),
            *[(f"product_weights[{k}]", v) for k, v in self.product_weights.items()],
        ]:
            bad = set(w) - set(COMPONENTS)
            if bad:
                raise InvalidParameter(f"{name}: unknown component(s) {sorted(bad)}")
            if any((not math.isfinite(x)) or x < 0 for x in w.values()) or sum(w.values()) <= 0:
                raise InvalidParameter(f"{name}: weights must be finite, ≥ 0 and not all zero")
        if self.red_below > self.green_from:
            raise InvalidParameter("red_below must be ≤ green_from")
        return self

    def weights_for(self, *, product_id: object) -> np.ndarray:
        """Raw weight vector in COMPONENTS order for a product (product override, else the default; absent = 0)."""
        w = self.product_weights.get(str(product_id), self.weights) if product_id is not None else self.weights
        return np.array([float(w.get(c, 0.0)) for c in COMPONENTS])


DRIVER_COLUMNS = ["entity_id", "period", "component", "score", "segment_median", "weight", "contribution", "rank"]


@dataclass(frozen=True)
class DriverArrays:
    """Each scored row's drivers as rows × COMPONENTS arrays (score, segment median, effective weight, contribution;
    contribution NaN where the component is no driver): what the long `drivers` frame holds, read row by row."""

    scores: np.ndarray
    segment_medians: np.ndarray
    weights: np.ndarray
    contributions: np.ndarray

    def of_row(self, row: int) -> list[tuple[str, float, float, float, float]]:
        """(component, score, segment median, weight, contribution) by contribution, ties by name (the long
        frame's rank order)."""
        pull = self.contributions[row]
        order = sorted((float(pull[j]), COMPONENTS[j], j) for j in range(len(COMPONENTS)) if math.isfinite(pull[j]))
        return [(name, float(self.scores[row, j]), float(self.segment_medians[row, j]), float(self.weights[row, j]),
                 contribution) for contribution, name, j in order]


@dataclass(frozen=True)
class HealthScores:
    """`scores`: one row per entity-period; `drivers`: one row per entity-period × component present (empty unless
    asked); `driver_arrays`: the same drivers per row of `scores`."""

    scores: pd.DataFrame
    drivers: pd.DataFrame
    driver_arrays: DriverArrays


def _band(score: np.ndarray, config: HealthConfig) -> np.ndarray:
    band = np.select(
        [score < config.red_below, score < config.green_from, score >= config.green_from],
        ["red", "amber", "green"],
        default="",
    )
    return np.where(np.isfinite(score), band, None)


@dataclass(frozen=True)
class _Weighted:
    """The weighted, re-normalised, must-be-capped score of each row and what it was made of."""

    components: np.ndarray
    weights: np.ndarray
    present: np.ndarray
    ok: np.ndarray
    n_present: np.ndarray
    uncapped: np.ndarray
    score: np.ndarray
    capped: np.ndarray
    products: pd.Series


def _weighted(df: pd.DataFrame, cfg: HealthConfig) -> _Weighted:
    """Each row's score from its components and its product's weights (rows need entity_id, period, product_id)."""
    require_columns(df, ["entity_id", "period", "product_id"], what="health_scores")
    if df.duplicated(["entity_id", "period"]).any():
        raise InvalidInput("health_scores: one row per (entity_id, period) expected")
    n = len(df)
    comp = np.column_stack([float_column(df, c) for c in COMPONENTS]) if n else np.empty((0, len(COMPONENTS)))
    if np.any(np.isfinite(comp) & ((comp < -1e-9) | (comp > 100 + 1e-9))):
        raise InvalidInput("component scores must lie in 0..100")
    comp = np.clip(comp, 0, 100)

    products = df["product_id"].astype(object).where(df["product_id"].notna(), None)
    codes, uniq = pd.factorize(products, use_na_sentinel=False)
    wtab = np.vstack([cfg.weights_for(product_id=p) for p in uniq]) if len(uniq) else np.empty((0, len(COMPONENTS)))
    raw_w = wtab[codes] if n else np.empty((0, len(COMPONENTS)))
    present = np.isfinite(comp) & (raw_w > 0)
    wsum = np.where(present, raw_w, 0.0).sum(axis=1)
    eff_w = np.divide(np.where(present, raw_w, 0.0), wsum[:, None], out=np.zeros_like(raw_w), where=wsum[:, None] > 0)
    n_present = present.sum(axis=1)
    ok = (n_present >= cfg.min_components) & (wsum > 0)
    uncapped = np.where(ok, (np.where(present, comp, 0.0) * eff_w).sum(axis=1), np.nan)
    rel = comp[:, 0]
    cap_applies = ok & np.isfinite(rel) & (rel < cfg.must_be_threshold)
    cap = rel + cfg.cap_headroom
    score = np.where(cap_applies, np.minimum(uncapped, cap), uncapped)
    return _Weighted(comp, eff_w, present, ok, n_present, uncapped, score, cap_applies & (uncapped > cap), products)


def score_values(*, frame: pd.DataFrame, config: HealthConfig | None = None) -> np.ndarray:
    """Only the score of each row of `frame` (float, NaN when not scored), as `health_scores` computes it: for
    views that need neither drivers, bands nor trend."""
    return _weighted(frame.reset_index(drop=True), config or HealthConfig()).score


def band_values(*, scores: np.ndarray, config: HealthConfig | None = None) -> np.ndarray:
    """The band of each score ('red', 'amber', 'green'; None when not scored)."""
    return _band(np.asarray(scores, dtype=float), config or HealthConfig())


def health_scores(*, frame: pd.DataFrame, config: HealthConfig | None = None, drivers: bool = True) -> HealthScores:
    """Weighted, re-normalised, must-be-capped Experience Health Score with bands, drivers and trend (the long
    `drivers` frame only when asked: the top drivers per row are in `scores` either way).

    Input: entity_id, period, product_id [, segment] and any of the component columns reliability,
    efficiency, engagement, trajectory, voice (0–100; missing = absent component). Drivers compare each
    component with the median of the entity's segment (segment, else product_id) in the same period.
    """
    cfg = config or HealthConfig()
    df = frame.reset_index(drop=True)
    n = len(df)
    weighted = _weighted(df, cfg)
    comp, eff_w, present, ok, products = (weighted.components, weighted.weights, weighted.present, weighted.ok,
                                          weighted.products)
    n_present, uncapped, score, capped = weighted.n_present, weighted.uncapped, weighted.score, weighted.capped

    scores = df[["entity_id", "period", "product_id"]].copy()
    seg = df["segment"].astype(object).where(df["segment"].notna(), products) if "segment" in df.columns else products
    scores["segment"] = seg.to_numpy()
    for i, c in enumerate(COMPONENTS):
        scores[c] = comp[:, i]
    for i, c in enumerate(COMPONENTS):
        scores[f"weight_{c}"] = np.where(ok, eff_w[:, i], np.nan)
    scores["components_used"] = n_present.astype(int)
    scores["score_uncapped"] = uncapped
    scores["score"] = score
    scores["capped"] = capped
    scores["band"] = _band(score, cfg)
    messages = np.array(
        [
            f"not enough data: {k} component(s) with weight present < {cfg.min_components}"
            for k in range(len(COMPONENTS) + 1)
        ],
        dtype=object,
    )
    scores["reason"] = np.where(ok, None, messages[n_present])

    # drivers: (component − segment median in the same period) × effective weight
    med = pd.DataFrame(np.where(present, comp, np.nan), columns=list(COMPONENTS))
    # the segment as integer codes: grouping on text (made of every value) cost more than the medians
    med["_period"] = df["period"].to_numpy()
    med["_seg"] = pd.factorize(scores["segment"].astype(str), use_na_sentinel=False)[0]
    medians = med.groupby(["_period", "_seg"], dropna=False)[list(COMPONENTS)].transform("median").to_numpy(dtype=float)
    contrib = np.where(present & ok[:, None], (comp - medians) * eff_w, np.nan)
    # each row's components by contribution, ties by name; NaN (absent) last
    by_name = np.broadcast_to(np.argsort(np.argsort(np.array(COMPONENTS))), contrib.shape)
    by_pull = np.lexsort((by_name, np.where(np.isfinite(contrib), contrib, np.inf)), axis=-1)
    ranked = np.take_along_axis(contrib, by_pull, axis=-1)
    names = np.array(COMPONENTS, dtype=object)
    for k in range(1, cfg.top_drivers + 1):
        scores[f"driver_{k}"] = np.where(ranked[:, k - 1] < -1e-12, names[by_pull[:, k - 1]], None)
    # trend vs the entity's previous period present in the frame
    entity_codes = pd.factorize(df["entity_id"], use_na_sentinel=False)[0]  # which entity, not text order, matters
    order = np.lexsort((df["period"].to_numpy(), entity_codes))
    ordered = pd.DataFrame({"entity_id": entity_codes[order], "pos": order.astype(float)})
    prev_pos = ordered.groupby("entity_id", sort=False)["pos"].shift(1).to_numpy(dtype=float, na_value=np.nan)
    back = np.empty(n, dtype=int)
    back[order] = np.arange(n)
    prev_pos = prev_pos[back]
    has_prev = np.isfinite(prev_pos)
    pidx = np.where(has_prev, prev_pos, 0).astype(int)
    prev_score = np.where(has_prev, score[pidx] if n else np.empty(0), np.nan)
    # the previous row's period in the column's own type, missing where none (not the column made of objects)
    prev_period = df["period"].take(pidx).reset_index(drop=True).where(has_prev) if n else df["period"].copy()
    delta = score - prev_score
    arrow = np.select([delta > cfg.trend_dead_band, delta < -cfg.trend_dead_band], ["up", "down"], default="flat")
    scores["previous_period"] = prev_period
    scores["previous_score"] = prev_score
    scores["delta"] = delta
    scores["arrow"] = np.where(np.isfinite(delta), arrow, None)
    arrays = DriverArrays(scores=comp, segment_medians=medians, weights=eff_w, contributions=contrib)
    if not drivers:
        return HealthScores(scores=to_nullable(scores), drivers=pd.DataFrame(columns=DRIVER_COLUMNS),
                            driver_arrays=arrays)
    present_rows, present_cols = np.nonzero(np.isfinite(contrib))
    long = pd.DataFrame(
        {
            "entity_id": df["entity_id"].to_numpy()[present_rows],
            "period": df["period"].to_numpy()[present_rows],
            "component": names[present_cols],
            "score": comp[present_rows, present_cols],
            "segment_median": medians[present_rows, present_cols],
            "weight": eff_w[present_rows, present_cols],
            "contribution": contrib[present_rows, present_cols],
            "_row": present_rows,
        }
    )
    long = long.sort_values(["_row", "contribution", "component"], kind="stable")
    long["rank"] = long.groupby("_row").cumcount() + 1
    drivers_frame = long.drop(columns=["_row"]).reset_index(drop=True)
    return HealthScores(scores=to_nullable(scores), drivers=to_nullable(drivers_frame), driver_arrays=arrays)


# ---------------------------------------------------------------- roll-up of device rows

SUB_SCORES: tuple[str, ...] = (
    "success_score",
    "error_free_score",
    "uptime_score",
    "efficiency",
    "stickiness_score",
    "breadth_score",
    "slope_score",
    "recency_score",
    "nps_score",
    "csat_score",
    "ces_score",
)


def aggregate_devices(*, device_rows: pd.DataFrame, level: str) -> pd.DataFrame:
    """Mean component and sub-scores of the member devices per (account | product | fleet) × period.

    `device_rows`: entity_id, period, period_end, product_id, account_id, segment and the component and sub-score
    columns. The result has entity_id, period, the means, devices, period_end, product_id and segment (the driver
    comparison group: accounts by account segment, products against all products).
    """
    columns = list(dict.fromkeys([*COMPONENTS, *SUB_SCORES]))
    rows = device_rows.copy()
    for column in columns:
        rows[column] = pd.to_numeric(rows[column], errors="coerce").astype(float)
    if level == "account":
        key = rows["account_id"].fillna("(no account)")
    elif level == "product":
        key = rows["product_id"]
    else:
        key = pd.Series("fleet", index=rows.index)
    rows["entity_id"] = key.to_numpy()
    groups = rows.groupby(["entity_id", "period"], sort=True)
    out = groups[columns].mean().reset_index()
    out["devices"] = groups.size().to_numpy()
    out["period_end"] = groups["period_end"].first().to_numpy()
    if level == "account":
        products = groups["product_id"].agg(lambda s: s.iloc[0] if s.nunique() == 1 else None)
        out["product_id"] = products.to_numpy()
        out["segment"] = groups["segment"].first().fillna("(none)").to_numpy()
    elif level == "product":
        out["product_id"] = out["entity_id"]
        out["segment"] = "all products"
    else:
        out["product_id"] = None
        out["segment"] = "fleet"
    return out
