"""The analytics package's exceptions, all under one root, and the mapping of numeric failures at the service edge."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import numpy as np

P = ParamSpec("P")
R = TypeVar("R")


class AnalyticsError(ValueError):
    """Root of analytics errors: a question that cannot be answered as asked (the caller's input)."""


class InvalidParameter(AnalyticsError):
    """An argument outside its allowed range or set (a weight, a window length, a unit, a grouping, start > end)."""


class InvalidInput(AnalyticsError):
    """Input data a formula cannot take: missing columns, duplicate rows, values outside their scale."""


class ComputationError(AnalyticsError):
    """A numeric or value failure inside numpy, pandas, SciPy or scikit-learn on the data asked about."""


# ValueError covers pandas' out-of-bounds datetimes and numpy's LinAlgError; ArithmeticError covers overflow
# in date arithmetic and floating-point errors.
NUMERIC_FAILURES: tuple[type[Exception], ...] = (ValueError, ArithmeticError, np.linalg.LinAlgError)


def maps_numeric_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Service-edge decorator: numeric and value failures leave as ComputationError, analytics errors unchanged."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except AnalyticsError:
            raise
        except NUMERIC_FAILURES as exc:
            raise ComputationError(f"{fn.__name__}: cannot compute the answer: {exc}") from exc

    return wrapper
