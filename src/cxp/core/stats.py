"""Statistics shared by analytics and pricing: Welch's difference of means, the Wilson interval, t quantiles."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def t_quantile(*, df: float) -> float:
    """Two-sided 95% Student-t quantile (df ≥ 1)."""
    return float(sps.t.ppf(0.975, df))


@dataclass(frozen=True, slots=True)
class Difference:
    """a − b with a 95% CI, the group sizes behind it and the test's two-sided p-value; None where not computable.

    `metric`, `arm` and `control` label the comparison in experiment reports (empty when unlabelled).
    """

    estimate: float | None
    low: float | None
    high: float | None
    n_a: int
    n_b: int
    p_value: float | None = None
    test: str = ""
    reason: str | None = None
    metric: str = ""
    arm: str = ""
    control: str = ""

    @property
    def excludes_zero(self) -> bool | None:
        """True when the CI lies wholly above or below zero; None without a CI."""
        if self.low is None or self.high is None:
            return None
        return self.low > 0 or self.high < 0

    @property
    def significant(self) -> bool:
        """p < 0.05."""
        return self.p_value is not None and self.p_value < 0.05


def _finite(values: Iterable[float] | np.ndarray) -> np.ndarray:
    """1-D float64 of the finite values (None, NaN and ±inf dropped)."""
    arr = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def welch_difference(*, a: Iterable[float] | np.ndarray, b: Iterable[float] | np.ndarray, min_n: int = 2) -> Difference:
    """mean(a) − mean(b) with Welch's t: 95% CI (Welch–Satterthwaite df) and two-sided p-value.

    Non-finite values are dropped; with fewer than max(min_n, 2) values in a group there is no estimate.
    """
    x, y = _finite(a), _finite(b)
    need = max(min_n, 2)
    if x.size < need or y.size < need:
        return Difference(
            None,
            None,
            None,
            int(x.size),
            int(y.size),
            test="welch",
            reason=f"not enough data: n_a={x.size}, n_b={y.size} (need ≥ {need} each)",
        )
    var_a, var_b = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    estimate = float(x.mean() - y.mean())
    se2 = var_a + var_b
    if se2 <= 0:
        # Both groups constant: the difference is exact, and any nonzero one is certain.
        p_value = None if estimate == 0 else 0.0
        return Difference(estimate, estimate, estimate, int(x.size), int(y.size), p_value, "welch")
    dof = se2 * se2 / ((var_a * var_a) / (x.size - 1) + (var_b * var_b) / (y.size - 1))
    se = math.sqrt(se2)
    half = t_quantile(df=dof) * se
    p_value = float(2 * sps.t.sf(abs(estimate / se), dof))
    return Difference(estimate, estimate - half, estimate + half, int(x.size), int(y.size), p_value, "welch")


def wilson_interval(*, successes: int, n: int) -> tuple[float, float]:
    """Wilson score 95% interval of the proportion successes / n (n ≥ 1), always containing the proportion."""
    p = successes / n
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # Clamping keeps rounding (e.g. 0.9999999999999999 at p = 1) from leaving p outside.
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))
