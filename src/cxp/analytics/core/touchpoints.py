"""Touchpoint prioritisation: performance summaries, derived importance, IPA quadrants, penalty–reward.

Importance that drives the IPA quadrant = each touchpoint's Shapley (LMG) share of the explained R² of the
outcome (Johnson's relative weights when there are more than `max_shapley` touchpoints), computed on
rank-transformed data; Spearman's ρ is reported alongside to show direction and the plain association.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as sps

from cxp.analytics.core._frames import float_column, member_of, nanmean_rows, require_columns, to_nullable
from cxp.analytics.core.health import latency_score
from cxp.analytics.core.stats import ratio_array
from cxp.analytics.errors import InvalidParameter

QUADRANTS = {
    (True, False): "concentrate here",
    (True, True): "keep up the good work",
    (False, False): "low priority",
    (False, True): "possible overkill",
}


# ---------------------------------------------------------------- summaries


def touchpoint_summary(
    *, frame: pd.DataFrame, group_cols: Sequence[str] = (), zero_at_ratio: float = 2.0
) -> pd.DataFrame:
    """Reach, usage share, success rate and latency vs target per touchpoint (within each group, e.g. product).

    Input, one row per group × touchpoint: touchpoint, devices (distinct devices using it), uses, successes,
    latency_count, latency_sum (ms), target_latency_ms (nullable), fleet_devices (devices active in the
    window). performance (0–100) = mean of the available success rate ×100 and latency_score(mean/target).
    """
    require_columns(frame, [*group_cols, "touchpoint", "uses"], what="touchpoint_summary")
    out = frame[[*group_cols, "touchpoint"]].copy()
    uses = float_column(frame, "uses")
    out["devices"] = float_column(frame, "devices")
    out["uses"] = uses
    out["reach"] = np.clip(ratio_array(num=out["devices"], den=float_column(frame, "fleet_devices")), 0, 1)
    totals = (
        pd.Series(np.nan_to_num(uses), index=frame.index).groupby([frame[c] for c in group_cols]).transform("sum")
        if group_cols
        else pd.Series(np.nansum(uses), index=frame.index)
    )
    out["usage_share"] = ratio_array(num=uses, den=totals.to_numpy())
    out["success_rate"] = np.clip(ratio_array(num=float_column(frame, "successes"), den=uses), 0, 1)
    out["mean_latency_ms"] = ratio_array(
        num=float_column(frame, "latency_sum"), den=float_column(frame, "latency_count")
    )
    out["target_latency_ms"] = float_column(frame, "target_latency_ms")
    out["latency_vs_target"] = ratio_array(num=out["mean_latency_ms"], den=out["target_latency_ms"])
    out["latency_score"] = latency_score(ratio=out["latency_vs_target"].to_numpy(), zero_at_ratio=zero_at_ratio)
    out["performance"] = nanmean_rows(
        np.column_stack([100.0 * out["success_rate"].to_numpy(), out["latency_score"].to_numpy()])
    )
    out["reason"] = np.where(np.isfinite(uses) & (uses > 0), None, "not enough data: no uses")
    return to_nullable(out)


# ---------------------------------------------------------------- shared input shaping


def _wide(performance: pd.DataFrame, outcomes: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    require_columns(performance, ["device_id", "touchpoint", "performance"], what="performance")
    require_columns(outcomes, ["device_id", "outcome"], what="outcomes")
    y = pd.Series(float_column(outcomes, "outcome"), index=outcomes["device_id"].to_numpy())
    y = y[np.isfinite(y.to_numpy())]
    y = y[~y.index.duplicated()]
    perf = pd.DataFrame(
        {
            "device_id": performance["device_id"].to_numpy(),
            "touchpoint": performance["touchpoint"].to_numpy(),
            "performance": float_column(performance, "performance"),
        }
    )
    perf = perf[np.isfinite(perf["performance"].to_numpy()) & member_of(perf["device_id"], y.index)]
    # The mean per device × touchpoint as a matrix from integer codes (what a pivot table gives, without its groupby):
    # devices in the outcomes' order, touchpoints sorted.
    row = y.index.get_indexer(perf["device_id"])
    column, touchpoints = pd.factorize(perf["touchpoint"].astype(str).to_numpy(), sort=True)
    cells = row * len(touchpoints) + column
    size = len(y) * len(touchpoints)
    sums = np.bincount(cells, weights=perf["performance"].to_numpy(dtype=float), minlength=size)
    counts = np.bincount(cells, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / counts, np.nan).reshape(len(y), len(touchpoints))
    wide = pd.DataFrame(means, index=y.index, columns=[str(t) for t in touchpoints])
    return wide, y.to_numpy(dtype=float)


def _ranks(matrix: np.ndarray) -> np.ndarray:
    return np.column_stack([sps.rankdata(matrix[:, k]) for k in range(matrix.shape[1])]) if matrix.size else matrix


def _r2(corr_xx: np.ndarray, corr_xy: np.ndarray, subset: Sequence[int]) -> float:
    if not subset:
        return 0.0
    idx = np.asarray(subset)
    r = corr_xy[idx]
    return float(r @ np.linalg.pinv(corr_xx[np.ix_(idx, idx)]) @ r)


def shapley_r2(*, corr_xx: np.ndarray, corr_xy: np.ndarray) -> np.ndarray:
    """Exact Shapley (LMG) decomposition of R² from predictor correlations and predictor–outcome correlations.

    Every subset's R² as a bit mask; the subsets of one size solved as one stack of pseudo-inverses, and each
    predictor's weighted gains summed over the masks without it (arrays, not a Python step per subset)."""
    p = corr_xy.size
    r2 = np.zeros(1 << p)
    for size in range(1, p + 1):
        subsets = np.array(list(combinations(range(p), size)))
        r = corr_xy[subsets]
        blocks = corr_xx[subsets[:, :, None], subsets[:, None, :]]
        r2[(1 << subsets).sum(axis=1)] = np.einsum("ci,ci->c", np.einsum("ci,cij->cj", r, np.linalg.pinv(blocks)), r)
    masks = np.arange(1 << p)
    sizes = np.bitwise_count(masks).astype(int)
    fact = np.array([math.factorial(k) for k in range(p + 1)], dtype=float)
    out = np.zeros(p)
    for j in range(p):
        without = masks[(masks >> j) & 1 == 0]
        k = sizes[without]
        out[j] = float((fact[k] * fact[p - k - 1] / fact[p] * (r2[without | (1 << j)] - r2[without])).sum())
    return out


def relative_weights(*, corr_xx: np.ndarray, corr_xy: np.ndarray) -> np.ndarray:
    """Johnson's (2000) relative weights: R² shared out over correlated predictors via their orthogonal counterparts."""
    vals, vecs = np.linalg.eigh(corr_xx)
    lam = vecs @ np.diag(np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    beta = np.linalg.pinv(lam) @ corr_xy
    return (lam**2) @ (beta**2)


@dataclass(frozen=True)
class DerivedImportance:
    """Per-touchpoint Spearman ρ and R² decomposition; `importance` = % of the explained R² (drives the IPA x-axis)."""

    table: pd.DataFrame
    r2: float | None
    n_devices: int
    method: str | None
    reason: str | None = None


def derived_importance(
    *, performance: pd.DataFrame, outcomes: pd.DataFrame, min_n: int = 30, max_shapley: int = 12
) -> DerivedImportance:
    """Association of per-device touchpoint performance with an outcome (retention 0/1 or a feedback score).

    `performance`: device_id, touchpoint, performance (e.g. the device's success rate on it ×100).
    `outcomes`: device_id, outcome. Spearman ρ uses the devices that used the touchpoint; the R²
    decomposition uses all devices with an outcome, a touchpoint a device did not use being set to that
    touchpoint's median (stated limitation), all variables rank-transformed. Touchpoints with n < min_n or
    no variation get <NA> and a reason.
    """
    wide, y = _wide(performance, outcomes)
    rows = []
    eligible = []
    for tp in wide.columns:
        x = wide[tp].to_numpy(dtype=float)
        ok = np.isfinite(x)
        n = int(ok.sum())
        rho = p_val = np.nan
        reason = None
        if n < min_n:
            reason = f"not enough data: n={n} < {min_n}"
        elif np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
            reason = "no variation in performance or outcome"
        else:
            res = sps.spearmanr(x[ok], y[ok])
            rho, p_val = float(res.statistic), float(res.pvalue)
            eligible.append(tp)
        rows.append({"touchpoint": tp, "n": n, "spearman_rho": rho, "spearman_p": p_val, "reason": reason})
    table = pd.DataFrame(rows, columns=["touchpoint", "n", "spearman_rho", "spearman_p", "reason"])
    table["r2_share"] = np.nan
    table["importance"] = np.nan
    n_dev = int(len(y))
    why = None
    if n_dev < min_n:
        why = f"not enough data: {n_dev} devices with an outcome < {min_n}"
    elif np.ptp(y) == 0:
        why = "outcome does not vary"
    elif not eligible:
        why = "not enough data: no touchpoint with enough devices"
    if why:
        return DerivedImportance(to_nullable(table), None, n_dev, None, why)
    x = wide[eligible].to_numpy(dtype=float)
    x = np.where(np.isfinite(x), x, np.nanmedian(x, axis=0))
    z = _ranks(np.column_stack([x, y]))
    keep = np.ptp(z[:, :-1], axis=0) > 0
    kept_tp = [tp for tp, k in zip(eligible, keep, strict=True) if k]
    if not kept_tp:
        return DerivedImportance(to_nullable(table), None, n_dev, None, "no variation after imputation")
    corr = np.atleast_2d(np.corrcoef(z[:, np.append(keep, True)], rowvar=False))
    p = len(kept_tp)
    cxx, cxy = corr[:p, :p], corr[:p, p]
    if len(kept_tp) <= max_shapley:
        parts, method = shapley_r2(corr_xx=cxx, corr_xy=cxy), "shapley"
    else:
        parts, method = relative_weights(corr_xx=cxx, corr_xy=cxy), "relative_weights"
    r2 = float(np.clip(_r2(cxx, cxy, list(range(len(kept_tp)))), 0, 1))
    pos = table.set_index("touchpoint").index.get_indexer(kept_tp)
    table.loc[pos, "r2_share"] = parts
    if r2 > 1e-9:
        table.loc[pos, "importance"] = (
            100.0 * np.clip(parts, 0, None) / max(float(np.clip(parts, 0, None).sum()), 1e-12)
        )
    else:
        table.loc[pos, "reason"] = "outcome not explained (R² ≈ 0)"
    return DerivedImportance(to_nullable(table), r2, n_dev, method)


# ---------------------------------------------------------------- importance–performance analysis


@dataclass(frozen=True)
class IpaResult:
    """Quadrant per touchpoint with the crosshairs used (means of the touchpoints that have both values)."""

    table: pd.DataFrame
    importance_crosshair: float | None
    performance_crosshair: float | None
    reason: str | None = None


def ipa_quadrants(
    *, frame: pd.DataFrame, importance_crosshair: float | None = None, performance_crosshair: float | None = None
) -> IpaResult:
    """Martilla–James quadrants; "high" means ≥ the crosshair (default: the mean over touchpoints with both values).

    Input: touchpoint, importance, performance (any scales; e.g. derived_importance().importance and
    touchpoint_summary().performance). Needs ≥ 2 complete touchpoints for default crosshairs.
    """
    require_columns(frame, ["touchpoint", "importance", "performance"], what="ipa_quadrants")
    imp, perf = float_column(frame, "importance"), float_column(frame, "performance")
    ok = np.isfinite(imp) & np.isfinite(perf)
    out = frame[["touchpoint"]].copy()
    out["importance"], out["performance"] = imp, perf
    if ok.sum() < 2 and (importance_crosshair is None or performance_crosshair is None):
        out["quadrant"] = None
        out["reason"] = "not enough data: fewer than 2 touchpoints with importance and performance"
        return IpaResult(to_nullable(out), None, None, "not enough data: fewer than 2 complete touchpoints")
    ix = float(imp[ok].mean()) if importance_crosshair is None else float(importance_crosshair)
    py = float(perf[ok].mean()) if performance_crosshair is None else float(performance_crosshair)
    labels = np.array([QUADRANTS[(bool(a), bool(b))] for a, b in zip(imp >= ix, perf >= py, strict=True)], dtype=object)
    out["quadrant"] = np.where(ok, labels, None)
    out["reason"] = np.where(ok, None, "not enough data: importance or performance missing")
    return IpaResult(to_nullable(out), ix, py)


# ---------------------------------------------------------------- penalty–reward contrast


@dataclass(frozen=True)
class PenaltyReward:
    """Per-touchpoint penalty (|β_low|) and reward (β_high) from one joint OLS, with the classification."""

    table: pd.DataFrame
    n_devices: int
    r2: float | None
    reason: str | None = None


def _classify(penalty: float, reward: float, sig: bool, tol: float) -> str:
    if not sig:
        return "no clear effect"
    if penalty > tol * reward and penalty > 0:
        return "dissatisfier"
    if reward > tol * penalty and reward > 0:
        return "satisfier"
    return "performance factor"


def penalty_reward(
    *,
    performance: pd.DataFrame,
    outcomes: pd.DataFrame,
    low_quantile: float = 0.25,
    high_quantile: float = 0.75,
    thresholds: Mapping[str, tuple[float, float]] | None = None,
    ratio_tolerance: float = 1.5,
    min_group_n: int = 10,
) -> PenaltyReward:
    """Penalty–reward contrast: outcome ~ Σ_touchpoints (low dummy + high dummy [+ not-used dummy]), middle = baseline.

    Low = performance ≤ the touchpoint's `low_quantile` value, high = ≥ its `high_quantile` value (or
    absolute (low, high) cuts from `thresholds`). Dissatisfier when penalty > ratio_tolerance × reward,
    satisfier when reward > ratio_tolerance × penalty, else performance factor; "no clear effect" when both
    95% CIs include 0. Touchpoints with fewer than `min_group_n` devices in any of low/middle/high are
    left out of the regression with a "not enough data" reason.
    """
    if not 0 < low_quantile < high_quantile < 1:
        raise InvalidParameter("need 0 < low_quantile < high_quantile < 1")
    if ratio_tolerance < 1:
        raise InvalidParameter("ratio_tolerance must be ≥ 1")
    wide, y = _wide(performance, outcomes)
    cols = [
        "touchpoint",
        "n",
        "n_low",
        "n_mid",
        "n_high",
        "low_cut",
        "high_cut",
        "beta_low",
        "beta_low_ci_low",
        "beta_low_ci_high",
        "beta_high",
        "beta_high_ci_low",
        "beta_high_ci_high",
        "penalty",
        "reward",
        "classification",
        "reason",
    ]
    rows: list[dict[str, object]] = []
    design: list[np.ndarray] = []
    names: list[tuple[str, str]] = []
    for tp in wide.columns:
        x = wide[tp].to_numpy(dtype=float)
        ok = np.isfinite(x)
        row: dict[str, object] = {"touchpoint": tp, "n": int(ok.sum())}
        if thresholds and tp in thresholds:
            lo_cut, hi_cut = map(float, thresholds[tp])
        elif ok.any():
            lo_cut, hi_cut = float(np.quantile(x[ok], low_quantile)), float(np.quantile(x[ok], high_quantile))
        else:
            lo_cut = hi_cut = np.nan
        low, high = ok & (x <= lo_cut), ok & (x >= hi_cut) & ~(x <= lo_cut)
        mid = ok & ~low & ~high
        row.update(n_low=int(low.sum()), n_mid=int(mid.sum()), n_high=int(high.sum()), low_cut=lo_cut, high_cut=hi_cut)
        if not lo_cut < hi_cut:
            row["reason"] = "not enough data: no spread between the low and high cuts"
        elif min(low.sum(), mid.sum(), high.sum()) < min_group_n:
            row["reason"] = f"not enough data: a low/middle/high group has < {min_group_n} devices"
        else:
            design += [low.astype(float), high.astype(float)]
            names += [(tp, "low"), (tp, "high")]
            if (~ok).sum() > 0:
                design.append((~ok).astype(float))
                names.append((tp, "missing"))
        rows.append(row)
    table = pd.DataFrame(rows, columns=cols)
    if not names:
        return PenaltyReward(
            to_nullable(table.astype({c: float for c in cols[7:15]})),
            int(len(y)),
            None,
            "not enough data: no touchpoint with enough devices in every group",
        )
    xmat = np.column_stack([np.ones(len(y)), *design])
    coef, _, rank, _ = np.linalg.lstsq(xmat, y, rcond=None)
    dof = len(y) - rank
    if dof < 1:
        return PenaltyReward(
            to_nullable(table.astype({c: float for c in cols[7:15]})),
            int(len(y)),
            None,
            "not enough data: no residual degrees of freedom",
        )
    resid = y - xmat @ coef
    sigma2 = float(resid @ resid) / dof
    se = np.sqrt(np.clip(np.diag(sigma2 * np.linalg.pinv(xmat.T @ xmat)), 0, None))
    tq = float(sps.t.ppf(0.975, dof))
    tss = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(resid @ resid) / tss if tss > 0 else None
    est = {name: (coef[k + 1], se[k + 1]) for k, name in enumerate(names)}
    table = table.astype({c: float for c in cols[7:15]}).astype({"classification": object, "reason": object})
    for i, tp in enumerate(table["touchpoint"]):
        if (tp, "low") not in est:
            continue
        (bl, sl), (bh, sh) = est[(tp, "low")], est[(tp, "high")]
        lo_ci, hi_ci = (bl - tq * sl, bl + tq * sl), (bh - tq * sh, bh + tq * sh)
        sig = not (lo_ci[0] <= 0 <= lo_ci[1]) or not (hi_ci[0] <= 0 <= hi_ci[1])
        penalty, reward = abs(bl), bh
        table.loc[i, cols[7:15]] = [bl, lo_ci[0], lo_ci[1], bh, hi_ci[0], hi_ci[1], penalty, reward]
        table.loc[i, "classification"] = _classify(penalty, reward, sig, ratio_tolerance)
        if bl > 0 and lo_ci[0] > 0:
            table.loc[i, "reason"] = "note: low performance goes with a better outcome (unexpected sign)"
    return PenaltyReward(to_nullable(table), int(len(y)), r2)
