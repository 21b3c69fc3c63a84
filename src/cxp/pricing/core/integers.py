"""Exact integer arithmetic on numpy arrays: int64 while a bound proves it safe, Python ints beyond.

The vectorised charges and the backtest count money in integers (quanta, or 10^-k currency units).
An int64 array is switched to an object array of Python ints (exact at any size, slower) whenever a
bound computed from its largest value could reach `LIMIT`; results are narrowed back when they fit.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np

from cxp.pricing.core.money import EXACT, RoundingMode, decimals_of
from cxp.pricing.errors import PricingError

# Headroom below int64's 2^63 so a sum of two bounded values or 2·remainder cannot overflow.
LIMIT = 2**62
INT64_MAX = 2**63 - 1


def absmax(values: np.ndarray) -> int:
    """The largest absolute value (0 for an empty array)."""
    if values.size == 0:
        return 0
    return int(np.max(np.abs(values)))


def widen(values: np.ndarray, bound: int) -> np.ndarray:
    """`values` as object ints when values up to `bound` could overflow int64 arithmetic (else as int64)."""
    if values.dtype != object and bound >= LIMIT:
        return values.astype(object)
    if values.dtype != object and values.dtype != np.int64:
        return values.astype(np.int64)
    return values


def narrow(values: np.ndarray) -> np.ndarray:
    """Object ints back to int64 when they fit (results are small even when intermediates were not)."""
    if values.dtype == object and absmax(values) <= INT64_MAX:
        return values.astype(np.int64)
    return values


def constant_like(value: int, like: np.ndarray) -> np.ndarray:
    """`value` as a 0-d array of `like`'s integer kind (object or int64), for np.where and np.maximum."""
    return np.asarray(value, dtype=object if like.dtype == object else np.int64)


def scaled_int(value: Decimal, decimals: int) -> int:
    """`value` as an integer count of 10^-decimals (exact: decimals is at least the value's own)."""
    scaled = value.scaleb(decimals, EXACT)
    if scaled != scaled.to_integral_value():
        raise PricingError(f"{value} has more than {decimals} decimals")  # pragma: no cover - callers size decimals
    return int(scaled)


def decimals_needed(*values: Decimal) -> int:
    """The most decimal places any of `values` needs (0 for none)."""
    return max((decimals_of(value=v) for v in values), default=0)


def round_div(num: np.ndarray, den: int | np.ndarray, mode: RoundingMode) -> np.ndarray:
    """num / den rounded to an integer with `mode`, in exact integer arithmetic (`den` > 0: one, or one per value)."""
    if isinstance(den, np.ndarray):
        if num.dtype == object or absmax(den) >= LIMIT:
            num, den = num.astype(object), den.astype(object)
    elif den == 1:
        return num
    elif num.dtype != object and den >= LIMIT:
        num = num.astype(object)
    neg = num < 0
    has_neg = bool(neg.any())
    magnitude = np.where(neg, -num, num) if has_neg else num
    if magnitude.dtype == object:
        q, r = magnitude // den, magnitude % den
    else:
        q, r = np.divmod(magnitude, den)
    if mode is RoundingMode.DOWN:
        inc = None
    elif mode is RoundingMode.UP:
        inc = r > 0
    elif mode is RoundingMode.HALF_UP:
        inc = 2 * r >= den
    elif mode is RoundingMode.HALF_DOWN:
        inc = 2 * r > den
    elif mode is RoundingMode.HALF_EVEN:
        twice = 2 * r
        inc = (twice > den) | ((twice == den) & (q % 2 == 1))
    elif mode is RoundingMode.CEILING:
        inc = (r > 0) & ~neg  # toward +inf: up in magnitude only for positives
    else:
        inc = (r > 0) & neg
    if inc is not None:
        q = q + (inc.astype(object) if q.dtype == object else inc)
    return np.where(neg, -q, q) if has_neg else q
