"""One error root: numeric and value failures at the package edge become PricingError subclasses."""

from __future__ import annotations

import decimal
import inspect
from types import ModuleType

import numpy as np
import pytest

from cxp.pricing import guardrail, repository, service
from cxp.pricing.core import wtp
from cxp.pricing.errors import (
    PlanValidationError,
    PricingError,
    UncomputableError,
    UnusableValueError,
    maps_numeric_errors,
)


def _raising(exc: Exception):
    @maps_numeric_errors
    def compute(*, value: int) -> int:
        raise exc

    return compute


@pytest.mark.parametrize(
    "exc",
    [decimal.InvalidOperation("quantize"), decimal.Overflow("big"), OverflowError("int too large"),
     FloatingPointError("overflow"), ZeroDivisionError("division by zero")],
)
def test_arithmetic_failures_become_uncomputable(exc: Exception) -> None:
    with pytest.raises(UncomputableError, match="cannot be computed") as info:
        _raising(exc)(value=1)
    assert isinstance(info.value, ArithmeticError) and isinstance(info.value, PricingError)
    assert info.value.__cause__ is exc


@pytest.mark.parametrize("exc", [ValueError("bad"), np.linalg.LinAlgError("singular")])
def test_value_failures_become_unusable_values(exc: Exception) -> None:
    with pytest.raises(UnusableValueError, match=type(exc).__name__) as info:
        _raising(exc)(value=1)
    assert isinstance(info.value, ValueError) and isinstance(info.value, PricingError)


def test_pricing_errors_and_other_exceptions_pass_unchanged() -> None:
    plan_error = PlanValidationError("invalid plan", ("x: bad",))
    with pytest.raises(PlanValidationError) as info:
        _raising(plan_error)(value=1)
    assert info.value is plan_error
    with pytest.raises(KeyError):
        _raising(KeyError("k"))(value=1)


def test_the_wrapper_keeps_name_and_signature() -> None:
    # The API's result cache keys on the function's module, qualified name and bound arguments.
    fn = service.get_model_comparison
    assert fn.__name__ == "get_model_comparison" and fn.__module__ == "cxp.pricing.service"
    assert "theta" in inspect.signature(fn).parameters


def _public_functions(module: ModuleType) -> list[str]:
    own = {name: value for name, value in vars(module).items() if getattr(value, "__module__", "") == module.__name__}
    return [name for name, value in own.items() if inspect.isfunction(value) and not name.startswith("_")]


@pytest.mark.parametrize("module", [service, repository, guardrail])
def test_every_service_and_repository_function_is_mapped(module: ModuleType) -> None:
    functions = _public_functions(module)
    assert functions
    assert [f for f in functions if not hasattr(getattr(module, f), "__wrapped__")] == []


@pytest.mark.parametrize(
    "name",
    ["van_westendorp", "van_westendorp_from_records", "gabor_granger",
     "gabor_granger_from_records", "fit_elasticity", "fit_elasticity_from_arms"],
)
def test_willingness_to_pay_functions_the_api_calls_are_mapped(name: str) -> None:
    assert hasattr(getattr(wtp, name), "__wrapped__")
