"""Money: Decimal conversion, rounding rules per currency and mode, currency safety."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cxp.pricing.core import Money, RoundingMode, RoundingRule, rounding_rule, to_decimal
from cxp.pricing.core.money import decimals_of
from cxp.pricing.errors import PricingError


def test_floats_enter_through_their_shortest_repr() -> None:
    assert to_decimal(value=0.1) == Decimal("0.1")
    assert to_decimal(value=1e-7) == Decimal("1E-7")
    assert to_decimal(value=3) == Decimal(3)
    assert to_decimal(value=" 2.50 ") == Decimal("2.50")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "NaN", "abc", True, None])
def test_non_numbers_are_refused(bad) -> None:
    with pytest.raises(PricingError):
        to_decimal(value=bad)


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("0.125", "0.12"),
        ("0.135", "0.14"),
        ("0.105", "0.10"),
        ("0.035", "0.04"),
        ("2.675", "2.68"),
        ("1.0049", "1.00"),
        ("-0.125", "-0.12"),
    ],
)
def test_half_even_is_the_default(amount: str, expected: str) -> None:
    assert rounding_rule(currency="EUR").round(Decimal(amount)) == Decimal(expected)


def test_modes_are_configurable() -> None:
    up = rounding_rule(currency="EUR", mode=RoundingMode.HALF_UP)
    assert up.round(Decimal("0.125")) == Decimal("0.13")
    assert rounding_rule(currency="EUR", mode="ROUND_CEILING").round(Decimal("0.121")) == Decimal("0.13")
    assert rounding_rule(currency="EUR", mode="ROUND_DOWN").round(Decimal("0.129")) == Decimal("0.12")


def test_currency_quanta() -> None:
    jpy = rounding_rule(currency="JPY")
    assert jpy.round(Decimal("4.5")) == Decimal("4") and jpy.round(Decimal("7.5")) == Decimal("8")
    assert rounding_rule(currency="BHD").round(Decimal("1.2345")) == Decimal("1.234")
    # Swiss cash rounding: a quantum that is not a power of ten.
    chf = rounding_rule(currency="CHF", quantum=Decimal("0.05"))
    assert chf.round(Decimal("1.025")) == Decimal("1.00")  # 20.5 quanta → 20 (even)
    assert chf.round(Decimal("1.075")) == Decimal("1.10")  # 21.5 quanta → 22
    assert chf.to_quanta(Decimal("1.10")) == 22 and chf.from_quanta(22) == Decimal("1.10")


def test_unknown_currency_needs_an_explicit_quantum() -> None:
    with pytest.raises(PricingError, match="quantum"):
        rounding_rule(currency="XYZ")
    assert rounding_rule(currency="XYZ", quantum=Decimal("0.1")).quantum == Decimal("0.1")


def test_rule_normalises_its_quantum() -> None:
    assert RoundingRule(quantum=Decimal("0.010")).quantum == Decimal("0.01")
    assert RoundingRule(quantum=Decimal("0.010")).decimals == 2
    assert decimals_of(value=Decimal("1E+3")) == 0 and decimals_of(value=Decimal("0.0035")) == 4


def test_money_refuses_to_mix_currencies() -> None:
    a, b = Money(Decimal("1.10"), "EUR"), Money(Decimal("2.205"), "EUR")
    assert (a + b).amount == Decimal("3.305")
    assert (a + b).rounded().amount == Decimal("3.30")
    with pytest.raises(PricingError, match="EUR with USD"):
        a + Money(Decimal(1), "USD")
    with pytest.raises(PricingError):
        Money(1.5, "EUR")  # type: ignore[arg-type]
