"""Properties of the scalar charge models (hypothesis)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import assume, given
from hypothesis import strategies as st

from cxp.pricing.core import PackageCharge, price_graduated, price_package, price_volume, volume_drops
from tests.pricing.strategies import decimals, prices, quantity_values, tier_tables


@given(tiers=tier_tables(), data=st.data())
def test_graduated_totals_never_decrease(tiers, data) -> None:
    q1, q2 = sorted([data.draw(quantity_values(tiers)), data.draw(quantity_values(tiers))])
    assert price_graduated(quantity=q1, tiers=tiers) <= price_graduated(quantity=q2, tiers=tiers)


@given(
    size=decimals(500, 3, "0.001"),
    price=prices,
    free=decimals(300, 2),
    q=decimals(20000, 4),
    frac=st.fractions(min_value=0, max_value=1).filter(lambda f: f > 0),
)
def test_package_totals_step_only_at_package_boundaries(size, price, free, q, frac) -> None:
    charge = PackageCharge(package_size=size, package_price=price, free_units=free)

    def total(x: Decimal) -> Decimal:
        return price_package(quantity=x, package_size=size, package_price=price, free_units=free)

    if q <= free:
        assert total(q) == 0
        return
    whole, rest = divmod(q - free, size)  # Decimal // truncates, so take the ceiling by hand
    n = whole + (1 if rest else 0)  # ⌈(q − free) / size⌉ packages
    lower, upper = free + (n - 1) * size, free + n * size  # q lies in (lower, upper]
    assert lower < q <= upper
    inside = lower + size * Decimal(frac.numerator) / Decimal(frac.denominator)
    assume(lower < inside <= upper)
    # Constant on the whole package (lower, upper], one package price more just above it.
    assert total(q) == total(inside) == total(upper) == n * charge.package_price
    assert total(upper + Decimal("1e-9")) == total(upper) + charge.package_price


@given(tiers=tier_tables(bounded_last=None))
def test_volume_drops_are_exactly_the_observed_drops(tiers) -> None:
    reported = {d.boundary: d for d in volume_drops(tiers=tiers)}
    eps = Decimal("1e-15")  # far below any difference the drawn prices and bounds can make
    for i, t in enumerate(tiers[:-1]):
        b = t.upper
        at, above = price_volume(quantity=b, tiers=tiers), price_volume(quantity=b + eps, tiers=tiers)
        assert (above < at) == (b in reported)
        if b in reported:
            d = reported[b]
            assert d.tier == i + 1 and d.total_at_boundary == at
            assert above - d.total_just_above == eps * tiers[i + 1].unit_price
            assert d.drop == at - d.total_just_above > 0


@given(tiers=tier_tables(), data=st.data())
def test_volume_without_reported_drops_never_decreases(tiers, data) -> None:
    q1, q2 = sorted([data.draw(quantity_values(tiers)), data.draw(quantity_values(tiers))])
    if not volume_drops(tiers=tiers):
        assert price_volume(quantity=q1, tiers=tiers) <= price_volume(quantity=q2, tiers=tiers)


@given(tiers=tier_tables(), q=decimals(12000, 4))
def test_graduated_equals_the_sum_of_its_slices(tiers, q) -> None:
    # An independent formulation: the total is the integral of the marginal rate plus reached flats.
    expected = Decimal(0)
    for i, t in enumerate(tiers):
        hi = q if t.upper is None else min(q, t.upper)
        if hi > t.lower or i == 0:
            expected += max(hi - t.lower, Decimal(0)) * t.unit_price + t.flat_fee
    assert price_graduated(quantity=q, tiers=tiers) == expected
