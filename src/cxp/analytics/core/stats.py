"""Shared numeric helpers: safe division, finite-or-None, distributions, CIs, Theil–Sen (single and vectorised)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd
from scipy import stats as sps

from cxp.analytics.core._frames import (
    as_float_array,
    clean_values,
    finite_or_none,
    float_column,
    require_columns,
    to_day,
    to_day_scalar,
    to_nullable,
)
from cxp.analytics.errors import InvalidInput, InvalidParameter

# Z95, Difference and t_quantile live in cxp.core.stats (shared with pricing); analytics imports them from here.
from cxp.core.stats import Z95, Difference, t_quantile, welch_difference, wilson_interval

LN2 = math.log(2.0)
_PAIR_CHUNK_ELEMENTS = 4_000_000  # entities × pairs per chunk in the vectorised Theil–Sen (~32 MB of float64)


# ---------------------------------------------------------------- scalars and arrays


def safe_div(*, num: float | None, den: float | None) -> float | None:
    """num / den, or None when either is missing or den is zero/non-finite."""
    n, d = finite_or_none(num), finite_or_none(den)
    if n is None or d is None or d == 0.0:
        return None
    return finite_or_none(n / d)


def ratio_array(*, num: object, den: object) -> np.ndarray:
    """Element-wise num / den as float64, NaN (internal "missing") where den <= 0 or either side is missing."""
    n = as_float_array(num)
    d = as_float_array(den)
    n, d = np.broadcast_arrays(n, d)
    out = np.full(n.shape, np.nan)
    ok = np.isfinite(n) & np.isfinite(d) & (d > 0)
    out[ok] = n[ok] / d[ok]
    return out


# ---------------------------------------------------------------- distributions


@dataclass(frozen=True)
class Distribution:
    """Summary of a sample: n, median, p90, mean, min, max (None with a reason when n < min_n)."""

    n: int
    median: float | None
    p90: float | None
    mean: float | None
    min: float | None
    max: float | None
    reason: str | None = None


def percentile(*, values: Iterable[float] | np.ndarray, q: float) -> float | None:
    """The q-th percentile (0–100, linear interpolation) of the finite values, or None when there are none."""
    v = clean_values(values)
    if v.size == 0:
        return None
    return finite_or_none(np.percentile(v, q))


def distribution(*, values: Iterable[float] | np.ndarray | pd.Series, min_n: int = 1) -> Distribution:
    """n, median, p90 (linear interpolation), mean, min, max of the finite values."""
    v = clean_values(values)
    if v.size < max(min_n, 1):
        return Distribution(
            int(v.size), None, None, None, None, None, reason=f"not enough data: n={v.size} < {max(min_n, 1)}"
        )
    return Distribution(
        int(v.size),
        finite_or_none(np.median(v)),
        finite_or_none(np.percentile(v, 90)),
        finite_or_none(v.mean()),
        finite_or_none(v.min()),
        finite_or_none(v.max()),
    )


# ---------------------------------------------------------------- confidence intervals


@dataclass(frozen=True)
class MeanCI:
    """Mean with a t-based 95% CI (margin = half-width)."""

    n: int
    mean: float | None
    sd: float | None
    margin: float | None
    low: float | None
    high: float | None
    reason: str | None = None


def mean_ci(*, values: Iterable[float] | np.ndarray | pd.Series, min_n: int = 2) -> MeanCI:
    """Mean, sample SD and t-based 95% CI of the finite values (needs n ≥ max(min_n, 2))."""
    v = clean_values(values)
    need = max(min_n, 2)
    if v.size < need:
        mean = finite_or_none(v.mean()) if v.size else None
        return MeanCI(
            int(v.size),
            None,
            None,
            None,
            None,
            None,
            reason=f"not enough data: n={v.size} < {need}" + ("" if mean is None else " (no CI from one value)"),
        )
    return mean_ci_from_moments(n=int(v.size), total=float(v.sum()), total_sq=float((v * v).sum()), min_n=min_n)


def mean_ci_from_moments(*, n: float, total: float, total_sq: float, min_n: int = 2) -> MeanCI:
    """Mean and t-based 95% CI from n, Σx and Σx² (aggregated in SQL)."""
    n_i = int(n) if finite_or_none(n) is not None else 0
    need = max(min_n, 2)
    if n_i < need:
        return MeanCI(n_i, None, None, None, None, None, reason=f"not enough data: n={n_i} < {need}")
    mean = total / n_i
    var = max((total_sq - n_i * mean * mean) / (n_i - 1), 0.0)
    sd = math.sqrt(var)
    margin = t_quantile(df=n_i - 1) * sd / math.sqrt(n_i)
    return MeanCI(
        n_i,
        finite_or_none(mean),
        finite_or_none(sd),
        finite_or_none(margin),
        finite_or_none(mean - margin),
        finite_or_none(mean + margin),
    )


@dataclass(frozen=True)
class ProportionCI:
    """A proportion with its Wald margin (1.96·√(p(1−p)/n)) and Wilson 95% bounds, all on the 0–1 scale."""

    n: int
    successes: int
    p: float | None
    margin: float | None
    low: float | None
    high: float | None
    reason: str | None = None


def proportion_ci(*, successes: int, n: int, min_n: int = 1) -> ProportionCI:
    """Binomial proportion with Wald margin and Wilson score interval."""
    if n < max(min_n, 1):
        return ProportionCI(
            int(n), int(successes), None, None, None, None, reason=f"not enough data: n={n} < {max(min_n, 1)}"
        )
    p = successes / n
    margin = Z95 * math.sqrt(p * (1 - p) / n)
    low, high = wilson_interval(successes=successes, n=n)
    return ProportionCI(int(n), int(successes), p, margin, low, high)


def diff_means_ci(*, a: Iterable[float] | np.ndarray, b: Iterable[float] | np.ndarray, min_n: int = 2) -> Difference:
    """Welch difference of means a − b with a t-based 95% CI (missing values of any kind dropped)."""
    return welch_difference(a=clean_values(a), b=clean_values(b), min_n=min_n)


def diff_with_variances(
    *, est_a: float | None, var_a: float | None, n_a: int, est_b: float | None, var_b: float | None, n_b: int
) -> Difference:
    """a − b with a normal 95% CI from the two estimates' sampling variances (e.g. NPS, proportions)."""
    if est_a is None or est_b is None or var_a is None or var_b is None:
        return Difference(None, None, None, n_a, n_b, test="normal", reason="not enough data in one of the groups")
    est = est_a - est_b
    half = Z95 * math.sqrt(max(var_a + var_b, 0.0))
    return Difference(est, est - half, est + half, n_a, n_b, test="normal")


# ---------------------------------------------------------------- Theil–Sen


@dataclass(frozen=True)
class TheilSen:
    """Theil–Sen slope (median of pairwise slopes), intercept and 95% CI of the slope."""

    n: int
    slope: float | None
    intercept: float | None
    low: float | None
    high: float | None
    reason: str | None = None


def theil_sen(
    *, y: Iterable[float] | np.ndarray, x: Iterable[float] | np.ndarray | None = None, min_points: int = 3
) -> TheilSen:
    """Robust slope of y on x (default x = 0, 1, 2, …); points with a missing x or y are dropped."""
    yy = as_float_array(y if isinstance(y, pd.Series | np.ndarray) else list(y)).ravel()
    xx = (
        np.arange(yy.size, dtype=float)
        if x is None
        else as_float_array(x if isinstance(x, pd.Series | np.ndarray) else list(x)).ravel()
    )
    if xx.size != yy.size:
        raise InvalidInput("x and y must have the same length")
    ok = np.isfinite(xx) & np.isfinite(yy)
    xx, yy = xx[ok], yy[ok]
    need = max(min_points, 2)
    if xx.size < need or np.unique(xx).size < 2:
        return TheilSen(
            int(xx.size), None, None, None, None, reason=f"not enough data: {xx.size} point(s) with distinct x < {need}"
        )
    res = sps.theilslopes(yy, xx, alpha=0.95)
    return TheilSen(
        int(xx.size),
        finite_or_none(res.slope),
        finite_or_none(res.intercept),
        finite_or_none(res.low_slope),
        finite_or_none(res.high_slope),
    )


def theil_sen_rows(
    *, matrix: np.ndarray, x: np.ndarray | None = None, min_points: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised Theil–Sen slope for each row of a (rows × T) matrix (NaN = missing point).

    Returns (slopes, points): slopes is NaN for rows with fewer than `min_points` points. Works in
    chunks of rows so memory stays bounded (T(T−1)/2 pairwise slopes per row).
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2:
        raise InvalidInput("matrix must be 2-D")
    rows, t = m.shape
    xs = np.arange(t, dtype=float) if x is None else np.asarray(x, dtype=float)
    points = np.isfinite(m).sum(axis=1)
    slopes = np.full(rows, np.nan)
    if rows == 0 or t < 2:
        return slopes, points
    i, j = np.triu_indices(t, k=1)
    dx = xs[j] - xs[i]
    keep = dx != 0
    i, j, dx = i[keep], j[keep], dx[keep]
    if i.size == 0:
        return slopes, points
    chunk = max(1, _PAIR_CHUNK_ELEMENTS // i.size)
    want = np.flatnonzero(points >= max(min_points, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows are filtered by `want`
        for start in range(0, want.size, chunk):
            idx = want[start : start + chunk]
            block = m[idx]
            pair = block[:, j]
            pair -= block[:, i]
            pair /= dx
            # np.median (a partition) is several times faster than nanmedian (a masked sort); most rows are
            # complete, so only the rows with gaps pay for nanmedian, taken first: the median then partitions the
            # pairs in place (a row with a gap gets NaN there and its nanmedian after).
            gaps = np.isnan(pair).any(axis=1)
            with_gaps = np.nanmedian(pair[gaps], axis=1) if gaps.any() else None
            out = np.median(pair, axis=1, overwrite_input=True)
            if with_gaps is not None:
                out[gaps] = with_gaps
            slopes[idx] = out
    return slopes, points


def usage_trend(
    *,
    usage: pd.DataFrame,
    as_of: date | datetime | str,
    window_days: int = 28,
    bucket_days: int = 1,
    entities: pd.DataFrame | None = None,
    min_points: int | None = None,
) -> pd.DataFrame:
    """Theil–Sen slope of log(1 + uses) per entity over the trailing window ending at `as_of` (inclusive).

    `usage`: columns entity_id, day, uses (rows for days with no use may be absent: they count as 0).
    `entities` (optional): entity_id [, activated_on] — lists entities with no usage rows at all and starts
    a series at its activation when that falls inside the window (earlier buckets are "not yet active").
    Buckets of `bucket_days` days are aligned so the last bucket ends on `as_of`; a bucket an entity was
    not active for in full is missing. Returns entity_id, points, slope_per_day (log units),
    weekly_change (= exp(7·slope) − 1, the relative change of 1 + uses per week), reason.
    """
    require_columns(usage, ["entity_id", "day", "uses"], what="usage_trend usage")
    if window_days < 2 or bucket_days < 1 or window_days % bucket_days:
        raise InvalidParameter("window_days must be ≥ 2 and a multiple of bucket_days")
    n_buckets = window_days // bucket_days
    need = min_points if min_points is not None else max(3, 7 // bucket_days)
    end = to_day_scalar(as_of)
    start = end - pd.Timedelta(days=window_days - 1)

    days = to_day(usage["day"])
    in_window = (days >= start) & (days <= end)
    u = pd.DataFrame(
        {
            "entity_id": usage["entity_id"].to_numpy()[in_window.to_numpy()],
            "age": (end - days[in_window]).dt.days.to_numpy(),
            "uses": np.clip(float_column(usage, "uses")[in_window.to_numpy()], 0, None),
        }
    )
    ids = pd.Index(
        pd.unique(pd.concat([u["entity_id"], entities["entity_id"]]) if entities is not None else u["entity_id"])
    )
    if len(ids) == 0:
        return to_nullable(
            pd.DataFrame(
                {
                    "entity_id": pd.Series([], dtype=object),
                    "points": pd.Series([], dtype=int),
                    "slope_per_day": pd.Series([], dtype=float),
                    "weekly_change": pd.Series([], dtype=float),
                    "reason": pd.Series([], dtype=object),
                }
            )
        )
    row = ids.get_indexer(u["entity_id"])
    col = n_buckets - 1 - (u["age"].to_numpy() // bucket_days)
    mat = np.zeros((len(ids), n_buckets))
    np.add.at(mat, (row, col), np.nan_to_num(u["uses"].to_numpy(), nan=0.0))
    mat = np.log1p(mat)

    if entities is not None and "activated_on" in entities.columns:
        act = pd.Series(to_day(entities["activated_on"]).to_numpy(), index=entities["entity_id"].to_numpy())
        act = act[~act.index.duplicated()].reindex(ids)
        # the first bucket fully inside the entity's active life
        bucket_start_age = (np.arange(n_buckets)[::-1] + 1) * bucket_days - 1  # age of each bucket's first day
        act_age = (end - act).dt.days.to_numpy(dtype=float, na_value=np.nan)
        inactive = bucket_start_age[None, :] > act_age[:, None]
        inactive &= np.isfinite(act_age)[:, None]
        mat[inactive] = np.nan

    slopes, points = theil_sen_rows(matrix=mat, min_points=need)
    slopes = slopes / bucket_days
    weekly = np.expm1(7.0 * slopes)
    reason = np.where(np.isfinite(slopes), None, [f"not enough history: fewer than {need} buckets"] * len(ids))
    return to_nullable(
        pd.DataFrame(
            {
                "entity_id": ids.to_numpy(),
                "points": points.astype(int),
                "slope_per_day": slopes,
                "weekly_change": weekly,
                "reason": reason,
            }
        )
    )
