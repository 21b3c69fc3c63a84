"""The vectorised path equals the Decimal path exactly, element by element (hypothesis)."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cxp.pricing.core import (
    FixedArray,
    GraduatedCharge,
    RoundingMode,
    Tier,
    VolumeCharge,
    assign_upgrades,
    bill_arrays,
    bill_period,
    charge_quanta,
    exact_charge,
    is_upgraded,
    line_keys,
    price_charge,
    rounding_rule,
    to_fixed,
)
from cxp.pricing.core.money import decimals_of
from cxp.pricing.errors import PricingError
from cxp.pricing.examples import example_plans
from tests.pricing.strategies import charge_models, plans, quantity_values, random_inputs, rounding_rules, tier_tables


def _fixed(values: list[Decimal]) -> FixedArray:
    d = max((decimals_of(value=v) for v in values), default=0)
    return to_fixed(values=np.array(values, dtype=object), decimals=d)


@given(charge=charge_models(), rule=rounding_rules, data=st.data())
def test_charges_equal_the_scalar_decimal_path(charge, rule, data) -> None:
    tiers = getattr(charge, "tiers", ())
    qs = data.draw(st.lists(quantity_values(tiers), min_size=1, max_size=20))
    fx = _fixed(qs)
    exact = exact_charge(quantity=fx, charge=charge).to_decimals()
    quanta = charge_quanta(quantity=fx, charge=charge, rule=rule)
    assert quanta.dtype == np.int64
    for i, q in enumerate(qs):
        scalar = price_charge(quantity=q, charge=charge)
        assert exact[i] == scalar
        assert int(quanta[i]) == rule.to_quanta(scalar)


@given(tiers=tier_tables(bounded_last=True), model=st.sampled_from([GraduatedCharge, VolumeCharge]))
def test_bounded_last_tier_is_enforced_in_both_paths(tiers, model) -> None:
    charge = model(tiers=tiers)
    over = tiers[-1].upper + Decimal("0.001")
    with pytest.raises(PricingError, match="exceed"):
        price_charge(quantity=over, charge=charge)
    with pytest.raises(PricingError, match="exceed"):
        exact_charge(quantity=_fixed([Decimal(0), over]), charge=charge)


@given(plan=plans(), seed=st.integers(0, 2**32 - 1), qdec=st.integers(0, 4))
def test_bills_equal_the_scalar_decimal_path(plan, seed, qdec) -> None:
    rng = np.random.default_rng(seed)
    shape = (3, 5)
    raw = random_inputs(rng, shape, qdec)
    usage = {k: FixedArray(v, d) for k, (v, d) in raw["usage"].items()}
    outcomes = {k: FixedArray(v, d) for k, (v, d) in raw["outcomes"].items()}
    uptime = FixedArray(*raw["uptime"])
    freemium = plan.required_inputs().freemium_components
    upgrades = {c: raw["upgrades"][:, None] for c in freemium}
    got = bill_arrays(plan=plan, usage=usage, outcomes=outcomes, uptime_pct=uptime, upgrades=upgrades)
    assert tuple(got.lines) == line_keys(plan=plan)
    for i in range(shape[0]):
        for j in range(shape[1]):
            bill = bill_period(
                plan=plan,
                period_index=j,
                usage={k: v.decimal_at((i, j)) for k, v in usage.items()},
                outcomes={k: v.decimal_at((i, j)) for k, v in outcomes.items()},
                uptime_pct=uptime.decimal_at((i, j)),
                upgrades={c: bool(raw["upgrades"][i]) for c in freemium},
            )
            assert {k: got.amount_at(k, (i, j)) for k in got.lines} == bill.amounts()
            assert got.total_at((i, j)) == bill.total


def test_example_plans_on_a_small_population() -> None:
    rng = np.random.default_rng(7)
    accounts, periods = 40, 12
    shape = (accounts, periods)
    kwh = to_fixed(values=np.round(rng.lognormal(5, 1, size=shape), 3), decimals=3)
    usage = {
        "heating_kwh": kwh,
        "app_sessions": rng.poisson(30, size=shape),
        **{f: rng.poisson(0.5, size=shape) for f in ("set_schedule", "voice_command", "demand_response")},
    }
    outcomes = {"optimised_cycles": rng.poisson(80, size=shape)}
    uptime = to_fixed(values=np.minimum(100, 100 - rng.exponential(0.6, size=shape)), decimals=3)
    ids = [f"acct-{i}" for i in range(accounts)]
    for plan in example_plans():
        got = bill_arrays(plan=plan, usage=usage, outcomes=outcomes, uptime_pct=uptime, account_ids=ids)
        for i in range(accounts):
            for j in range(periods):
                bill = bill_period(
                    plan=plan,
                    period_index=j,
                    account_id=ids[i],
                    usage={
                        k: (v.decimal_at((i, j)) if isinstance(v, FixedArray) else Decimal(int(v[i, j])))
                        for k, v in usage.items()
                    },
                    outcomes={"optimised_cycles": Decimal(int(outcomes["optimised_cycles"][i, j]))},
                    uptime_pct=uptime.decimal_at((i, j)),
                )
                assert got.total_at((i, j)) == bill.total, (plan.key, i, j)
        if plan.plan_id == "bundles":
            assert set(np.unique(got.bundles["bundle"])) <= {0, 1, 2}


def test_huge_quantities_switch_to_exact_python_ints() -> None:
    charge = GraduatedCharge(
        tiers=[Tier(lower=0, upper=10, unit_price="0.123456", flat_fee=1), Tier(lower=10, unit_price="0.000001")]
    )
    qs = [Decimal("12345678901234567.8901"), Decimal("0"), Decimal("10.0001"), Decimal("9" * 15)]
    fx = _fixed(qs)
    assert fx.values.dtype == object  # 1.2e20 does not fit int64
    rule = rounding_rule(currency="EUR")
    quanta = charge_quanta(quantity=fx, charge=charge, rule=rule)
    assert [int(x) for x in quanta] == [rule.to_quanta(price_charge(quantity=q, charge=charge)) for q in qs]
    # Small quantities with many-decimal prices: int64 quantities, object intermediates.
    small = to_fixed(values=np.array([3, 7], dtype=np.int64), decimals=0)
    fine = VolumeCharge(tiers=[Tier(lower=0, unit_price="0.000000000000000001234")])
    assert charge_quanta(quantity=small, charge=fine, rule=rule).tolist() == [0, 0]
    assert exact_charge(quantity=small, charge=fine).to_decimals().tolist() == [
        Decimal("3.702E-18"),
        Decimal("8.638E-18"),
    ]


@given(
    xs=st.lists(
        st.one_of(
            st.floats(min_value=-1e9, max_value=1e9, allow_nan=False),
            st.sampled_from([0.125, 2.5, 0.0005, 1.0005, 2.675, 1e-7, 3.0, -0.125]),
            st.integers(-(10**6), 10**6).map(lambda i: i / 8),
        ),
        min_size=1,
        max_size=30,
    ),
    decimals=st.integers(0, 6),
    mode=st.sampled_from(list(RoundingMode)),
)
def test_float_conversion_matches_decimal_str(xs, decimals, mode) -> None:
    fx = to_fixed(values=np.array(xs, dtype=np.float64), decimals=decimals, rounding=mode)
    quantum = Decimal(1).scaleb(-decimals)
    for i, x in enumerate(xs):
        assert fx.decimal_at(i) == Decimal(str(x)).quantize(quantum, rounding=mode.value), x


def test_conversions_and_errors() -> None:
    assert to_fixed(values=[1, 2], decimals=2).values.tolist() == [100, 200]
    assert to_fixed(values=["0.125", Decimal("2.5")], decimals=2).values.tolist() == [12, 250]
    assert to_fixed(values=FixedArray(np.array([12345]), 3), decimals=1).values.tolist() == [123]
    assert to_fixed(values=FixedArray(np.array([12355]), 3), decimals=2).values.tolist() == [1236]
    plan = example_plans()[2]
    with pytest.raises(PricingError, match="floats must be converted first"):
        bill_arrays(plan=plan, usage={"heating_kwh": np.array([[1.5]])})
    with pytest.raises(PricingError, match="must not be negative"):
        bill_arrays(plan=plan, usage={"heating_kwh": np.array([[-1]])})
    with pytest.raises(PricingError, match="usage has no 'heating_kwh'"):
        bill_arrays(plan=plan, usage={}, period_index=np.arange(3))
    with pytest.raises(PricingError, match="finite"):
        to_fixed(values=np.array([np.nan]), decimals=2)


def test_one_time_sale_follows_period_index() -> None:
    plan = example_plans()[0]
    got = bill_arrays(plan=plan, usage={}, period_index=np.array([[0, 1, 2], [5, 0, 1]]))
    assert got.lines["device:sale"].tolist() == [[14900, 0, 0], [0, 14900, 0]]
    assert got.total.tolist() == [[15199, 299, 299], [299, 15199, 299]]


def test_vectorised_upgrades_match_the_scalar_hash() -> None:
    ids = [f"a{i}" for i in range(500)]
    flags = assign_upgrades(account_ids=ids, conversion_rate=Decimal("0.3"), salt="premium")
    assert flags.tolist() == [is_upgraded(account_id=a, conversion_rate=Decimal("0.3"), salt="premium") for a in ids]
    with pytest.raises(PricingError, match="axis 0 = accounts"):
        bill_arrays(plan=example_plans()[-1], usage={}, period_index=np.zeros((3, 2), dtype=int), account_ids=ids)


def test_bundle_overrides_by_name_or_index() -> None:
    plan = example_plans()[1]
    got = bill_arrays(plan=plan, usage={}, bundles={"bundle": np.array([["basic", "pro"], ["plus", "plus"]])})
    assert got.total.tolist() == [[0, 799], [399, 399]]
    with pytest.raises(PricingError, match="no bundle 'gold'"):
        bill_arrays(plan=plan, usage={}, bundles={"bundle": np.array(["gold"])})
