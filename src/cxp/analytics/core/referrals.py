"""Referral rate with its exact Poisson interval (pure)."""

from __future__ import annotations

from scipy import stats

Rate = tuple[float | None, float | None, float | None]


def rate_interval(*, events: int, exposure: float, per: float = 100.0) -> Rate:
    """Events per `per` units of exposure with the exact (Garwood) 95 % Poisson interval; None without exposure."""
    if exposure <= 0 or events < 0:
        return None, None, None
    low = 0.0 if events == 0 else float(stats.chi2.ppf(0.025, 2 * events)) / 2
    high = float(stats.chi2.ppf(0.975, 2 * events + 2)) / 2
    scale = per / exposure
    return events * scale, low * scale, high * scale
