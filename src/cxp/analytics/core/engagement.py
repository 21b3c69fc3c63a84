"""Customer engagement rate: engaged ÷ reached customers per group and period, its trend, and how it tracks health.

"Reached" = a device that was a customer for at least one day of the period. "Engaged" (per product, because
the thresholds are relative to the product's own rhythm and catalogue):

* active on at least `min_stickiness` of the days its product is expected to be used (thermostat 7/week,
  coffee machine 6/week, e-bike 4/week, pro rata for partial periods), and
* used at least `min_breadth` of the touchpoints a typical active device of the product uses in that period
  (the 90th percentile of touchpoints used, as in the health score's breadth).

Both ratios are the health score's stickiness and breadth sub-scores (0–100); the rate is therefore a
threshold view of the same behaviour as the engagement component, and must move with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cxp.analytics.core._frames import float_column, require_columns
from cxp.analytics.errors import InvalidParameter
from cxp.core.stats import wilson_interval


@dataclass(frozen=True)
class EngagementRule:
    """Thresholds (0–1) on the stickiness and breadth ratios that make a device-period "engaged"."""

    min_stickiness: float = 0.6
    min_breadth: float = 0.5

    def __post_init__(self) -> None:
        for name in ("min_stickiness", "min_breadth"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidParameter(f"{name} must be in [0, 1], got {value}")


def engaged_flags(*, stickiness_score: object, breadth_score: object, rule: EngagementRule) -> np.ndarray:
    """Engaged per row: stickiness and breadth (0–100) both at their thresholds; a missing score is not engaged."""
    sticky = np.asarray(stickiness_score, dtype=float)
    breadth = np.asarray(breadth_score, dtype=float)
    with np.errstate(invalid="ignore"):
        return (sticky >= 100.0 * rule.min_stickiness - 1e-9) & (breadth >= 100.0 * rule.min_breadth - 1e-9)


def engagement_rates(*, frame: pd.DataFrame, by: Sequence[str], rule: EngagementRule, min_n: int = 5) -> pd.DataFrame:
    """Engagement rate per group: one row per distinct `by` value with reached, engaged, rate (%) and its 95%
    Wilson interval, and the mean health engagement component of the same devices (`engagement_component`).

    Input: one row per reached device × period with `by` columns, stickiness_score, breadth_score, engagement.
    Groups with fewer than `min_n` reached devices get rate None and a reason.
    """
    require_columns(frame, [*by, "stickiness_score", "breadth_score", "engagement"], what="engagement rate input")
    if min_n < 1:
        raise InvalidParameter("min_n must be at least 1")
    work = frame[list(by)].copy()
    work["engaged"] = engaged_flags(
        stickiness_score=float_column(frame, "stickiness_score"),
        breadth_score=float_column(frame, "breadth_score"),
        rule=rule,
    )
    work["component"] = float_column(frame, "engagement")
    rows = []
    for key, group in work.groupby(list(by), sort=True, dropna=False):
        keys = key if isinstance(key, tuple) else (key,)
        reached = len(group)
        engaged = int(group["engaged"].sum())
        component = group["component"].to_numpy(dtype=float)
        component = component[np.isfinite(component)]
        row: dict[str, object] = dict(zip(by, keys, strict=True))
        row.update(reached=reached, engaged=engaged)
        if reached >= min_n:
            low, high = wilson_interval(successes=engaged, n=reached)
            row.update(rate=100.0 * engaged / reached, ci_low=100.0 * low, ci_high=100.0 * high, reason=None)
        else:
            row.update(rate=None, ci_low=None, ci_high=None, reason=f"not enough data: {reached} < {min_n} devices")
        row["engagement_component"] = float(component.mean()) if len(component) else None
        rows.append(row)
    columns = [*by, "reached", "engaged", "rate", "ci_low", "ci_high", "reason", "engagement_component"]
    return pd.DataFrame(rows, columns=columns)


def rate_trend(*, rates: Sequence[float | None]) -> float | None:
    """Theil–Sen slope of the rate per period (percentage points per period), None with fewer than 3 rates."""
    y = np.array([np.nan if r is None else float(r) for r in rates], dtype=float)
    x = np.arange(len(y), dtype=float)
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(y) < 3:
        return None
    i, j = np.triu_indices(len(y), k=1)
    return float(np.median((y[j] - y[i]) / (x[j] - x[i])))


def direction_agreement(*, rates: Sequence[float | None], components: Sequence[float | None]) -> float | None:
    """Share of period-to-period changes where the rate and the engagement component move the same way.

    Changes where either is missing or either does not move (|Δ| < 1e-9) are left out; None when none is left.
    """
    if len(rates) != len(components):
        raise InvalidParameter("rates and components differ in length")
    r = np.array([np.nan if v is None else float(v) for v in rates], dtype=float)
    c = np.array([np.nan if v is None else float(v) for v in components], dtype=float)
    dr, dc = np.diff(r), np.diff(c)
    keep = np.isfinite(dr) & np.isfinite(dc) & (np.abs(dr) > 1e-9) & (np.abs(dc) > 1e-9)
    if not keep.any():
        return None
    return float(np.mean(np.sign(dr[keep]) == np.sign(dc[keep])))


def rank_agreement(*, rates: Sequence[float | None], components: Sequence[float | None]) -> float | None:
    """Spearman rank correlation between the rate and the mean engagement component across groups (None below 3)."""
    r = np.array([np.nan if v is None else float(v) for v in rates], dtype=float)
    c = np.array([np.nan if v is None else float(v) for v in components], dtype=float)
    keep = np.isfinite(r) & np.isfinite(c)
    if keep.sum() < 3:
        return None
    rr = pd.Series(r[keep]).rank().to_numpy()
    cr = pd.Series(c[keep]).rank().to_numpy()
    if rr.std() == 0 or cr.std() == 0:
        return None
    return float(np.corrcoef(rr, cr)[0, 1])
