"""Group-sequential guardrail boundaries: α spent as stated, published boundaries reproduced, the error rate held."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from cxp.pricing.core.sequential import alpha_spent, boundaries, guardrail_check
from cxp.pricing.errors import PricingError


@pytest.mark.parametrize("spending", ["obrien-fleming", "pocock"])
def test_spending_reaches_alpha_at_the_end_and_only_rises(spending) -> None:
    ts = np.linspace(0, 1, 41)
    spent = [alpha_spent(t=t, alpha=0.05, spending=spending) for t in ts]
    assert spent[0] == 0 and spent[-1] == pytest.approx(0.05, abs=1e-12)
    assert all(b >= a for a, b in zip(spent, spent[1:], strict=False))
    assert all(b > a for a, b in zip(spent[8:], spent[9:], strict=False))  # strictly, once t ≥ 0.2
    # O'Brien–Fleming keeps almost all α for the end; Pocock spends it evenly.
    half = alpha_spent(t=0.5, alpha=0.05, spending=spending)
    assert half < 0.01 if spending == "obrien-fleming" else half > 0.025


def test_one_look_is_the_plain_one_sided_test() -> None:
    assert boundaries(fractions=[1.0], alpha=0.025) == [pytest.approx(sps.norm.isf(0.025))]


def test_obrien_fleming_boundaries_match_the_published_four_look_design() -> None:
    """Jennison & Turnbull (2000), Lan–DeMets O'Brien–Fleming spending, 4 equal looks, one-sided α = 0.025."""
    got = boundaries(fractions=[0.25, 0.5, 0.75, 1.0], alpha=0.025)
    assert got == pytest.approx([4.333, 2.963, 2.359, 2.014], abs=0.005)
    pocock = boundaries(fractions=[0.25, 0.5, 0.75, 1.0], alpha=0.025, spending="pocock")
    assert max(pocock) - min(pocock) < 0.05 and 2.3 < pocock[-1] < 2.4  # near-constant, above 1.96


@pytest.mark.parametrize("spending", ["obrien-fleming", "pocock"])
def test_repeated_looks_keep_the_false_stop_rate_at_alpha(spending) -> None:
    """Under no effect, a Brownian path watched at 5 uneven looks crosses some boundary with probability ≈ α,
    where testing each look at the plain 1.645 stops far more often."""
    fractions = [0.1, 0.3, 0.45, 0.8, 1.0]
    c = np.array(boundaries(fractions=fractions, alpha=0.05, spending=spending))
    rng = np.random.default_rng(7)
    n = 200_000
    steps = np.diff(np.concatenate([[0.0], fractions]))
    paths = np.cumsum(rng.standard_normal((n, len(fractions))) * np.sqrt(steps), axis=1)
    z = paths / np.sqrt(fractions)
    stopped = (z <= -c).any(axis=1).mean()
    naive = (z <= -sps.norm.isf(0.05)).any(axis=1).mean()
    se = np.sqrt(0.05 * 0.95 / n)
    assert abs(stopped - 0.05) < 4 * se
    assert naive > 0.09


def test_the_guardrail_stops_only_on_a_crossing_worse_than_the_tolerated_drop() -> None:
    fractions = [0.25, 0.5]
    c = boundaries(fractions=fractions, alpha=0.05)[-1]
    assert guardrail_check(fractions=fractions, z=-(c + 0.1), estimate=-3.0).stop
    assert not guardrail_check(fractions=fractions, z=-(c - 0.1), estimate=-3.0).stop  # not significant yet
    assert not guardrail_check(fractions=fractions, z=-(c + 0.1), estimate=-3.0, tolerated_drop=5.0).stop
    assert not guardrail_check(fractions=fractions, z=c + 1, estimate=3.0).stop  # better, not worse
    assert not guardrail_check(fractions=fractions, z=None, estimate=None).stop
    check = guardrail_check(fractions=fractions, z=-1.0, estimate=-1.0)
    assert check.look == 2 and check.boundary_z == pytest.approx(c) and check.information_fraction == 0.5


@pytest.mark.parametrize("fractions", [[], [0.5, 0.5], [0.6, 0.4], [0.0, 1.0], [0.5, 1.2]])
def test_fractions_must_rise_within_the_unit_interval(fractions) -> None:
    with pytest.raises(PricingError):
        boundaries(fractions=fractions)
