"""Exact integer helpers: division by one denominator per value, rounded as Decimal rounds (hypothesis)."""

from __future__ import annotations

from decimal import Decimal, localcontext

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cxp.pricing.core.integers import LIMIT, round_div
from cxp.pricing.core.money import RoundingMode

_modes = st.sampled_from(list(RoundingMode))


def _decimal_quotient(n: int, d: int, mode: RoundingMode) -> int:
    with localcontext(prec=100):
        return int((Decimal(n) / Decimal(d)).quantize(Decimal(1), rounding=mode.value))


@given(pairs=st.lists(st.tuples(st.integers(-10**12, 10**12), st.integers(1, 10**6)), min_size=1, max_size=30),
       mode=_modes)
def test_one_denominator_per_value_rounds_as_decimal(pairs, mode):
    num = np.array([n for n, _ in pairs], dtype=np.int64)
    den = np.array([d for _, d in pairs], dtype=np.int64)
    got = round_div(num, den, mode)
    assert got.tolist() == [_decimal_quotient(n, d, mode) for n, d in pairs]


@given(n=st.integers(0, 2**70), d=st.integers(LIMIT, 2**63 - 1), mode=_modes)
def test_huge_denominators_switch_to_exact_python_ints(n, d, mode):
    got = round_div(np.array([n], dtype=object), np.array([d], dtype=np.int64), mode)
    assert got.tolist() == [_decimal_quotient(n, d, mode)]


def test_ties_go_to_the_even_neighbour_per_value():
    got = round_div(np.array([5, 15, 25, 7]), np.array([10, 10, 10, 2]), RoundingMode.HALF_EVEN)
    assert got.tolist() == [0, 2, 2, 4]
