"""Touchpoint classes from satisfaction answers: the penalty–reward contrast as a dummy regression per answer.

Each CSAT answer about a touchpoint k falls in one group by what the customer lived with k before answering:
*low* (the day's last use of k before the answer failed), *high* (it succeeded) or *middle* (no use of k that day
and no failure of k in the 7 days before: nothing to react to — the neutral level). Answers with a failure of k
in the previous 7 days but no use today are left out (neither clean). Per product, one least-squares fit

    score_i = a_device(i) + Σ_k (β_low,k · low_ik + β_high,k · high_ik) + ε_i

with a device intercept (each customer's own level, so heavy users answering after many uses do not bias the
contrasts) and the middle as the baseline. Penalty_k = −β_low,k (satisfaction lost by a failure), reward_k =
β_high,k (gained by a success), both with 95 % intervals; their sum is k's *derived importance* — the spread in
satisfaction between a failed and a successful use (no baseline needed). Kano class from the penalty share
π = penalty⁺ / (penalty⁺ + reward⁺): *basic* (must-be) when π ≥ `basic_share`, *attractive* (delighter) when
π ≤ `attractive_share`, else *performance*; *indifferent* when the spread's interval lies within
±`indifferent_spread`. Below `min_n` answers in a group, or `min_middle` middle answers in the product, the
class is "not enough data" with the n needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from cxp.analytics.core._frames import float_column, require_columns, to_nullable
from cxp.analytics.errors import InvalidParameter

GROUPS = ("low", "middle", "high")
_GROUP_OF_CODE = np.array([*GROUPS, None], dtype=object)  # answer_groups: 0 low, 1 middle, 2 high, 3 left out
KANO_CLASSES = ("basic", "performance", "attractive", "indifferent")
CLASS_COLUMNS = [
    "product_id",
    "touchpoint",
    "n_low",
    "n_high",
    "n_middle",
    "penalty",
    "penalty_ci_low",
    "penalty_ci_high",
    "reward",
    "reward_ci_low",
    "reward_ci_high",
    "spread",
    "spread_ci_low",
    "spread_ci_high",
    "penalty_share",
    "kano_class",
    "importance_basis",
    "reason",
]


def answer_groups(*, answers: pd.DataFrame) -> pd.Series:
    """The group of each answer: 'low', 'high', 'middle' or None (left out).

    `answers`: last_use_ok (the outcome of the day's last use of the answered touchpoint at or before the answer;
    null when there was none), failed_before (a failure of the touchpoint on one of the 7 days before the answer's
    day). Index of the result = answers' index.
    """
    require_columns(answers, ["last_use_ok", "failed_before"], what="answer_groups")
    # numpy on the objects, not a nullable boolean column: its conversion cost ~20 ms per 140,000 answers
    last_ok = answers["last_use_ok"].to_numpy(dtype=object)  # None, NaN or <NA> where there was no use
    used_today = pd.notna(last_ok)
    ok = np.zeros(len(last_ok), dtype=bool)
    ok[used_today] = last_ok[used_today].astype(bool)
    recent = answers["failed_before"].astype(bool).to_numpy()
    code = np.where(used_today, np.where(ok, 2, 0), np.where(recent, 3, 1))
    return pd.Series(_GROUP_OF_CODE[code], index=answers.index, dtype=object)


@dataclass(frozen=True)
class KanoFit:
    """Per product × touchpoint penalty, reward, spread and class (CLASS_COLUMNS); one row per answered touchpoint."""

    table: pd.DataFrame
    models: dict[str, dict[str, float | int | None]]


def _fit_product(frame: pd.DataFrame) -> tuple[dict[tuple[str, str], tuple[float, float]], int, float]:
    """Least squares with device intercepts and low/high dummies per touchpoint: {(touchpoint, group): (β, se)}, the
    residual degrees of freedom and σ.

    `frame`: device_id, touchpoint, group, score (one product's answers)."""
    tp_idx, tp_names = pd.factorize(frame["touchpoint"].astype(str).to_numpy(), sort=True)
    group = frame["group"].astype(object).to_numpy()
    return _fit_coded(device=frame["device_id"].to_numpy(), touchpoint=tp_idx, names=np.asarray(tp_names, dtype=object),
                      low=group == "low", high=group == "high", score=float_column(frame, "score"))


def _fit_coded(*, device: np.ndarray, touchpoint: np.ndarray, names: np.ndarray, low: np.ndarray, high: np.ndarray,
               score: np.ndarray) -> tuple[dict[tuple[str, str], tuple[float, float]], int, float]:
    """`_fit_product` on arrays: each answer's device, touchpoint code (into `names`), low / high flags and score.

    The device intercepts are absorbed by demeaning within device (Frisch–Waugh–Lovell): the dummies' estimates,
    residuals and covariance are those of the full model, without a matrix as wide as the fleet (its pseudo-inverse
    grew with the cube of the devices). Columns are touchpoint × (high, low) in that order, as integer codes: no text
    per answer."""
    dev_idx, devices = pd.factorize(device)
    dummy = low | high
    pair_idx, codes = pd.factorize(touchpoint[dummy] * 2 + low[dummy], sort=True)
    columns = [(str(names[c // 2]), "low" if c % 2 else "high") for c in codes.tolist()]
    col = {name: j for j, name in enumerate(columns)}
    k, n_devices, n = len(columns), len(devices), len(score)
    # Each answer has at most one dummy, so the demeaned products need no answers × dummies matrix: with S the
    # devices' dummy counts, n_d their answers and ȳ_d their mean score, X̃ᵀX̃ = diag(column counts) − Sᵀ(S / n_d)
    # and X̃ᵀỹ = (scores summed per column) − Sᵀȳ.
    rows, cols = np.flatnonzero(dummy), pair_idx
    counts = np.bincount(dev_idx, minlength=n_devices).astype(float)
    x_sums = np.bincount(dev_idx[rows] * k + cols, minlength=n_devices * k).reshape(n_devices, k).astype(float)
    x_means = x_sums / counts[:, None]
    y_means = np.bincount(dev_idx, weights=score, minlength=n_devices) / counts
    y_within = score - y_means[dev_idx]
    gram = np.diag(np.bincount(cols, minlength=k).astype(float)) - x_sums.T @ x_means
    x_y = np.bincount(cols, weights=score[rows], minlength=k) - x_sums.T @ y_means
    # Normal equations of a few dummies (a k × k system) instead of an SVD of the tall matrix: the same
    # minimum-norm solution (pinv(X) = pinv(XᵀX)Xᵀ) and rank (X's singular values are the roots of XᵀX's).
    inverse = np.linalg.pinv(gram) if k else np.zeros((0, 0))
    coef = inverse @ x_y
    singular = np.sqrt(np.clip(np.linalg.svd(gram, compute_uv=False), 0.0, None)) if k else np.zeros(0)
    rank = int((singular > np.finfo(float).eps * max(n, k) * singular[0]).sum()) if len(singular) else 0
    dof = n - n_devices - rank
    if dof < 1:
        return {}, dof, float("nan")
    fitted = -(x_means @ coef)[dev_idx]
    fitted[rows] += coef[cols]
    resid = y_within - fitted
    sigma2 = float(resid @ resid) / dof
    cov = sigma2 * inverse
    est = {name: (float(coef[c]), float(np.sqrt(max(cov[c, c], 0.0)))) for name, c in col.items()}
    # the spread needs the covariance of the two dummies of a touchpoint
    for t in {t for t, _ in columns}:
        if (t, "low") in col and (t, "high") in col:
            a, b = col[(t, "high")], col[(t, "low")]
            var = cov[a, a] + cov[b, b] - 2 * cov[a, b]
            est[(t, "spread")] = (float(coef[a] - coef[b]), float(np.sqrt(max(var, 0.0))))
    return est, dof, float(np.sqrt(sigma2))


def kano_classes(
    *,
    answers: pd.DataFrame,
    min_n: int = 10,
    min_middle: int = 30,
    basic_share: float = 0.8,
    attractive_share: float = 0.35,
    indifferent_spread: float = 0.5,
) -> KanoFit:
    """Penalty, reward, derived importance (spread) and Kano class per product × touchpoint (module docstring).

    `answers`: product_id, device_id, touchpoint, score (e.g. CSAT 1–5, one scale only), group ('low' | 'middle'
    | 'high'; other values are left out).
    """
    require_columns(answers, ["product_id", "device_id", "touchpoint", "score", "group"], what="kano_classes")
    if min_n < 2 or min_middle < 2 or not 0 < attractive_share < basic_share < 1 or indifferent_spread <= 0:
        raise InvalidParameter("need min_n ≥ 2, min_middle ≥ 2, 0 < attractive_share < basic_share < 1, spread > 0")
    score = float_column(answers, "score")
    codes = pd.Index(GROUPS).get_indexer(answers["group"])  # a hash lookup per answer; -1: not in a group
    keep = (codes >= 0) & np.isfinite(score)
    # Products, touchpoints and groups as integer codes (sorted): counts by bincount, one fit per product.
    # factorized as they come (Arrow strings: ~2 ms per 140,000), not as Python strings first (~11 ms)
    product_idx, products = pd.factorize(answers["product_id"][keep], sort=True)
    tp_idx, touchpoints = pd.factorize(answers["touchpoint"][keep], sort=True)
    group_idx = codes[keep]
    n_tp = len(touchpoints)
    counts = np.bincount((product_idx * n_tp + tp_idx) * len(GROUPS) + group_idx,
                         minlength=len(products) * n_tp * len(GROUPS)).reshape(len(products), n_tp, len(GROUPS))
    low, middle, high = (counts[:, :, GROUPS.index(g)] for g in ("low", "middle", "high"))
    device, score = answers["device_id"].to_numpy()[keep], score[keep]
    order = np.argsort(product_idx, kind="stable")
    bounds = np.searchsorted(product_idx[order], np.arange(len(products) + 1))
    names = np.asarray(touchpoints, dtype=object)
    rows: list[dict[str, object]] = []
    models: dict[str, dict[str, float | int | None]] = {}
    for p, product_id in enumerate(products):
        part = order[bounds[p]:bounds[p + 1]]
        n_middle = int(middle[p].sum())
        est, dof, sigma = _fit_coded(device=device[part], touchpoint=tp_idx[part], names=names,
                                     low=group_idx[part] == 0, high=group_idx[part] == 2, score=score[part])
        models[str(product_id)] = {"answers": len(part), "middle": n_middle, "dof": dof, "sigma": sigma}
        tq = float(sps.t.ppf(0.975, dof)) if dof >= 1 else float("nan")
        for t in np.flatnonzero(counts[p].sum(axis=1)):
            row: dict[str, object] = {
                "product_id": str(product_id),
                "touchpoint": str(names[t]),
                "n_low": int(low[p, t]),
                "n_high": int(high[p, t]),
                "n_middle": n_middle,
            }
            rows.append(
                _classify(row, est, str(names[t]), tq, min_n, min_middle, basic_share, attractive_share,
                          indifferent_spread)
            )
    table = pd.DataFrame(rows, columns=CLASS_COLUMNS)
    for c in CLASS_COLUMNS[5:15]:
        table[c] = table[c].astype(float)
    return KanoFit(to_nullable(table), models)


def _classify(
    row: dict[str, object],
    est: dict[tuple[str, str], tuple[float, float]],
    tp: str,
    tq: float,
    min_n: int,
    min_middle: int,
    basic_share: float,
    attractive_share: float,
    indifferent_spread: float,
) -> dict[str, object]:
    n_low, n_high, n_middle = int(row["n_low"]), int(row["n_high"]), int(row["n_middle"])  # type: ignore[call-overload]
    enough_low, enough_high, enough_middle = n_low >= min_n, n_high >= min_n, n_middle >= min_middle
    if enough_low and enough_middle and (tp, "low") in est:
        b, se = est[(tp, "low")]
        row.update(penalty=-b, penalty_ci_low=-b - tq * se, penalty_ci_high=-b + tq * se)
    if enough_high and enough_middle and (tp, "high") in est:
        b, se = est[(tp, "high")]
        row.update(reward=b, reward_ci_low=b - tq * se, reward_ci_high=b + tq * se)
    if enough_low and enough_high and (tp, "spread") in est:
        b, se = est[(tp, "spread")]
        row.update(spread=b, spread_ci_low=b - tq * se, spread_ci_high=b + tq * se)
    needs = []
    if not enough_low:
        needs.append(f"{min_n} answers after a failed use (have {n_low})")
    if not enough_high:
        needs.append(f"{min_n} answers after a successful use (have {n_high})")
    if not enough_middle:
        needs.append(f"{min_middle} answers without recent use in the product (have {n_middle})")
    row["importance_basis"] = (
        "spread" if "spread" in row else "penalty" if "penalty" in row else "reward" if "reward" in row else None
    )
    if needs:
        row["kano_class"] = None
        row["reason"] = "not enough data: need " + "; ".join(needs)
        return row
    penalty, reward = float(row.get("penalty", np.nan)), float(row.get("reward", np.nan))  # type: ignore[arg-type]
    lo, hi = float(row["spread_ci_low"]), float(row["spread_ci_high"])  # type: ignore[arg-type]
    if -indifferent_spread < lo and hi < indifferent_spread:
        row["kano_class"] = "indifferent"
        return row
    if lo <= 0 <= hi:
        row["kano_class"] = None
        row["reason"] = (
            f"not enough data: the spread's interval [{lo:.2f}, {hi:.2f}] includes 0 but not only small values"
        )
        return row
    p, r = max(penalty, 0.0), max(reward, 0.0)
    share = p / (p + r) if p + r > 0 else np.nan
    row["penalty_share"] = share
    row["kano_class"] = (
        "basic" if share >= basic_share else "attractive" if share <= attractive_share else "performance"
    )
    return row
