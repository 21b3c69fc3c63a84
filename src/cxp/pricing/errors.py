"""Exceptions of the pricing lab, all under one root, and the mapping of numeric failures onto them."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class PricingError(Exception):
    """Root of every error the pricing lab raises."""


class PlanValidationError(PricingError, ValueError):
    """A plan (or one of its parts) is invalid; `problems` lists every issue as 'where: what'."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class PlanVersionConflict(PricingError):
    """The posted version clashes with what is stored (taken by another definition, or not the next one)."""


class UncomputableError(PricingError, ArithmeticError):
    """A computation failed on these inputs: overflow, an inexact or invalid decimal operation, a float error."""


class UnusableValueError(PricingError, ValueError):
    """A value the computation cannot use (rejected by decimal, numpy or scipy)."""


@contextmanager
def mapped_numeric_errors() -> Iterator[None]:
    """Re-raise numeric and value failures (`ArithmeticError`, `ValueError`) as `PricingError` subclasses."""
    try:
        yield
    except PricingError:
        raise
    # decimal.InvalidOperation, Overflow and Inexact, OverflowError and numpy's FloatingPointError are
    # ArithmeticErrors; numpy's LinAlgError and AxisError and scipy's argument errors are ValueErrors.
    except ArithmeticError as exc:
        raise UncomputableError(f"these inputs cannot be computed: {type(exc).__name__}: {exc}") from exc
    except ValueError as exc:
        raise UnusableValueError(f"these inputs cannot be computed: {type(exc).__name__}: {exc}") from exc


def maps_numeric_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn` with `mapped_numeric_errors` around every call (for the functions at the package edge)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with mapped_numeric_errors():
            return fn(*args, **kwargs)

    return wrapper
