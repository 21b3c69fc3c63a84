"""Money: exact `Decimal` amounts with an ISO 4217 currency and explicit rounding rules.

Never float for money. A float that must enter (a quantity from telemetry) goes through
`to_decimal`, which uses `Decimal(str(x))` so 0.1 stays 0.1 instead of 0.1000000000000000055….

A `RoundingRule` is a quantum (the smallest amount a bill can show: 0.01 for EUR/USD, 1 for
JPY, or e.g. 0.05 for Swiss cash rounding) and a rounding mode (half-even by default, the
banker's rounding: ties go to the even quantum, so rounding errors do not drift one way over
many line items).
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cxp.pricing.errors import PricingError


class RoundingMode(StrEnum):
    """Rounding modes a plan may choose; the values are the `decimal` module's own constants."""

    HALF_EVEN = decimal.ROUND_HALF_EVEN
    HALF_UP = decimal.ROUND_HALF_UP
    HALF_DOWN = decimal.ROUND_HALF_DOWN
    UP = decimal.ROUND_UP
    DOWN = decimal.ROUND_DOWN
    CEILING = decimal.ROUND_CEILING
    FLOOR = decimal.ROUND_FLOOR


# ISO 4217 minor units of common currencies, as the quantum a bill is rounded to.
CURRENCY_QUANTA: Mapping[str, Decimal] = MappingProxyType(
    {
        **{
            c: Decimal("0.01")
            for c in (
                "EUR",
                "USD",
                "GBP",
                "CHF",
                "SEK",
                "NOK",
                "DKK",
                "PLN",
                "CZK",
                "HUF",
                "CAD",
                "AUD",
                "NZD",
                "CNY",
                "INR",
                "BRL",
                "MXN",
                "ZAR",
                "SGD",
                "HKD",
            )
        },
        **{c: Decimal("1") for c in ("JPY", "KRW", "ISK", "CLP", "VND")},
        **{c: Decimal("0.001") for c in ("BHD", "KWD", "JOD", "OMR", "TND")},
    }
)

# Rounding itself must never round on the way: 100 significant digits is far beyond any bill.
_ROUNDING_CTX = decimal.Context(prec=100, traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow])

# Charges run in this context: an amount is either exact or an error, never silently rounded on the way.
EXACT = decimal.Context(
    prec=100, traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow, decimal.Inexact]
)


def to_decimal(*, value: Decimal | int | float | str | np.integer | np.floating) -> Decimal:
    """`value` as an exact, finite Decimal (floats via `Decimal(str(x))`; numpy scalars too)."""
    if isinstance(value, bool | np.bool_):
        # bool is an int subclass; True as a quantity of 1 is almost certainly a bug upstream.
        raise PricingError(f"expected a number, got {value!r}")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int | np.integer):
        d = Decimal(int(value))
    elif isinstance(value, float | np.floating):
        d = Decimal(str(float(value)))
    elif isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except decimal.InvalidOperation:
            raise PricingError(f"not a number: {value!r}") from None
    else:
        raise PricingError(f"expected a number, got {type(value).__name__}")
    if not d.is_finite():
        raise PricingError(f"expected a finite number, got {value!r}")
    return d


def decimals_of(*, value: Decimal) -> int:
    """How many decimal places `value` needs (0 for integers, 4 for 0.0035, 0 for 1E+3)."""
    if not value.is_finite():
        raise PricingError(f"expected a finite number, got {value!r}")
    if value == 0:
        return 0
    exponent = value.normalize(_ROUNDING_CTX).as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


class RoundingRule(BaseModel):
    """Round to a multiple of `quantum` with `mode`; amounts are counted in quanta when integers are needed."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    quantum: Annotated[Decimal, Field(gt=0)] = Decimal("0.01")
    mode: RoundingMode = RoundingMode.HALF_EVEN

    @field_validator("quantum")
    @classmethod
    def _normalise(cls, v: Decimal) -> Decimal:
        # 0.010 and 0.01 are the same quantum; normalising keeps quantize() exponents canonical.
        return v.normalize(_ROUNDING_CTX)

    @property
    def is_power_of_ten(self) -> bool:
        """True when the quantum is 10^k (then `Decimal.quantize` does the rounding)."""
        return self.quantum.as_tuple().digits == (1,)

    @property
    def decimals(self) -> int:
        """Decimal places of the quantum (2 for 0.01 and 0.05, 0 for 1)."""
        return decimals_of(value=self.quantum)

    def round(self, amount: Decimal) -> Decimal:
        """`amount` rounded to a multiple of the quantum with this rule's mode."""
        if self.is_power_of_ten:
            return amount.quantize(self.quantum, rounding=self.mode.value, context=_ROUNDING_CTX)
        # A quantum such as 0.05 is not an exponent: count quanta, round that count, scale back.
        n = _ROUNDING_CTX.divide(amount, self.quantum).to_integral_value(rounding=self.mode.value)
        return _ROUNDING_CTX.multiply(n, self.quantum)

    def to_quanta(self, amount: Decimal) -> int:
        """`amount` rounded, as an integer number of quanta (cents for EUR, yen for JPY)."""
        return int(_ROUNDING_CTX.divide(self.round(amount), self.quantum))

    def from_quanta(self, n: int) -> Decimal:
        """The amount of `n` quanta."""
        return _ROUNDING_CTX.multiply(Decimal(n), self.quantum)


def rounding_rule(
    *, currency: str, mode: RoundingMode | str = RoundingMode.HALF_EVEN, quantum: Decimal | None = None
) -> RoundingRule:
    """The rounding rule of `currency` (its ISO minor unit unless `quantum` overrides it)."""
    if quantum is None:
        try:
            quantum = CURRENCY_QUANTA[currency]
        except KeyError:
            raise PricingError(f"no rounding quantum known for currency {currency!r}; give one explicitly") from None
    return RoundingRule(quantum=quantum, mode=RoundingMode(mode))


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount in one currency; arithmetic refuses to mix currencies."""

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.amount, Decimal) or not self.amount.is_finite():
            raise PricingError(f"money needs a finite Decimal amount, got {self.amount!r}")

    def _same(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise PricingError(f"cannot combine money with {type(other).__name__}")
        if other.currency != self.currency:
            raise PricingError(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(_ROUNDING_CTX.add(self.amount, other.amount), self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(_ROUNDING_CTX.subtract(self.amount, other.amount), self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def rounded(self, rule: RoundingRule | None = None) -> Money:
        """This amount rounded by `rule` (default: the currency's own rule, half-even)."""
        rule = rule or rounding_rule(currency=self.currency)
        return Money(rule.round(self.amount), self.currency)

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"
