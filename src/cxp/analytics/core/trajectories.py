"""Trajectory of many entities at many period ends in one pass: the numbers `health.trajectory_component` gives
period by period, from one entity × day matrix instead of a usage frame filtered, grouped and pivoted per period."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxp.analytics.core._frames import float_column, nanmean_rows, require_columns, to_day
from cxp.analytics.core.health import recency_score, trend_score
from cxp.analytics.core.stats import theil_sen_rows
from cxp.analytics.errors import InvalidInput, InvalidParameter

WEEKLY_BELOW_DAYS = 3.0  # entities expected on fewer days a week: a sparse daily series hides a decline
_ROWS_PER_CHUNK = 16_384
_OUT = ("points", "slope_per_day", "days_since_last_use", "slope_score", "recency_score", "trajectory")


def day_numbers(values: pd.Series) -> np.ndarray:
    """UTC days as float day numbers since the epoch (NaN for missing)."""
    days = to_day(values)
    return np.where(days.isna(), np.nan, days.to_numpy(dtype="datetime64[D]").astype(np.int64)).astype(float)


def trajectories_at(
    *,
    usage: pd.DataFrame,
    rows: pd.DataFrame,
    window_days: int = 28,
    slope_weight: float = 0.5,
    fade_days: float = 21.0,
) -> pd.DataFrame:
    """Trajectory 0–100 per row (entity at a period end), as `trajectory_component` computes it per period.

    `usage`: entity_id, day, uses (one row per active day up to the last period end; absent days are 0 uses).
    `rows`: entity_id, period_end, activated_on, expected_active_days_per_week, last_use_before (the last active day
    before `usage` begins, or missing). Entities expected on fewer than 3 days a week are bucketed by weeks. Returns,
    in the order of `rows`: points, slope_per_day, days_since_last_use, slope_score, recency_score, trajectory.
    """
    require_columns(usage, ["entity_id", "day", "uses"], what="trajectories_at usage")
    require_columns(rows, ["entity_id", "period_end", "activated_on", "expected_active_days_per_week",
                           "last_use_before"], what="trajectories_at rows")
    if not 0 <= slope_weight <= 1:
        raise InvalidParameter("slope_weight must be in [0, 1]")
    if window_days < 7 or window_days % 7:
        raise InvalidParameter("window_days must be a whole number of weeks")
    n = len(rows)
    if n == 0:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in _OUT}, index=rows.index)
    entities = pd.Index(pd.unique(rows["entity_id"]))
    row_entity = entities.get_indexer(rows["entity_id"])
    ends = day_numbers(rows["period_end"])
    if not np.isfinite(ends).all():
        raise InvalidInput("trajectories_at rows: every row needs its period_end")
    end = ends.astype(np.int64)
    use_day = day_numbers(usage["day"])
    use_entity = entities.get_indexer(usage["entity_id"])
    known = (use_entity >= 0) & np.isfinite(use_day)
    lo = int(end.min()) - window_days + 1  # the first day of the earliest window, or of usage if that is earlier
    if known.any():
        lo = min(lo, int(use_day[known].min()))
    width = int(end.max()) - lo + 1
    col = (use_day[known] - lo).astype(np.int64)
    inside = col < width
    ent, col = use_entity[known][inside], col[inside]
    uses = np.clip(float_column(usage, "uses")[known][inside], 0, None)
    matrix = np.zeros((len(entities), width))
    np.add.at(matrix, (ent, col), np.nan_to_num(uses, nan=0.0))
    # The last active day on or before each day, per entity (-1: none yet).
    seen = np.full(matrix.shape, -1, dtype=np.int64)
    seen[ent, col] = col
    seen = np.maximum.accumulate(seen, axis=1)

    end_col = end - lo
    act = day_numbers(rows["activated_on"])
    act_age = end - act
    expected = float_column(rows, "expected_active_days_per_week")
    weekly = expected < WEEKLY_BELOW_DAYS
    slope = np.full(n, np.nan)
    points = np.zeros(n, dtype=np.int64)
    window = np.arange(window_days) - window_days + 1
    for bucket_days, mask in ((1, ~weekly), (7, weekly)):
        buckets = window_days // bucket_days
        first_day_age = (np.arange(buckets)[::-1] + 1) * bucket_days - 1
        every = np.flatnonzero(mask)
        for start in range(0, every.size, _ROWS_PER_CHUNK):  # bounded memory: rows × window days at a time
            idx = every[start : start + _ROWS_PER_CHUNK]
            daily = matrix[row_entity[idx, None], end_col[idx, None] + window[None, :]]
            values = np.log1p(daily.reshape(idx.size, buckets, bucket_days).sum(axis=2))
            ages = act_age[idx]
            values[(first_day_age[None, :] > ages[:, None]) & np.isfinite(ages)[:, None]] = np.nan
            slopes, counted = theil_sen_rows(matrix=values, min_points=max(3, 7 // bucket_days))
            slope[idx], points[idx] = slopes / bucket_days, counted

    last_col = seen[row_entity, end_col]
    last = np.where(last_col >= 0, (lo + last_col).astype(float), np.nan)
    last = np.where(np.isfinite(last), last, day_numbers(rows["last_use_before"]))
    out = trajectory_scores(
        slope_per_day=slope, points=points,
        days_since=days_since_last_use(end=end, last_use=last, activated=act, window_days=window_days),
        expected=expected, slope_weight=slope_weight, fade_days=fade_days,
    )
    out.index = rows.index
    return out


def days_since_last_use(
    *, end: np.ndarray, last_use: np.ndarray, activated: np.ndarray, window_days: int
) -> np.ndarray:
    """Days from the last use (else activation) to each period end, ≥ 0; `window_days` when neither is known.

    All three arrays are day numbers (float, NaN for missing)."""
    last = np.where(np.isfinite(last_use), last_use, activated)
    days_since = np.asarray(end, dtype=float) - last
    return np.where(np.isfinite(days_since), np.clip(days_since, 0, None), float(window_days))


def trajectory_scores(
    *,
    slope_per_day: np.ndarray,
    points: np.ndarray,
    days_since: np.ndarray,
    expected: np.ndarray,
    slope_weight: float = 0.5,
    fade_days: float = 21.0,
) -> pd.DataFrame:
    """The trajectory frame from its inputs: slope and recency scores, and their weighted mean (recency alone
    without a slope)."""
    s_score = trend_score(weekly_log_change=7.0 * np.asarray(slope_per_day, dtype=float))
    r_score = recency_score(days_since=days_since, expected_active_days_per_week=expected, fade_days=fade_days)
    return pd.DataFrame({
        "points": points,
        "slope_per_day": slope_per_day,
        "days_since_last_use": days_since,
        "slope_score": s_score,
        "recency_score": r_score,
        "trajectory": nanmean_rows(np.column_stack([s_score, r_score]), np.array([slope_weight, 1.0 - slope_weight])),
    })
