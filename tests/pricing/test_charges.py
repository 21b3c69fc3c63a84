"""Every charge model on hand-computed examples, and whole bills."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from cxp.pricing.core import (
    Plan,
    Tier,
    bill_period,
    is_upgraded,
    line_keys,
    price_charge,
    price_graduated,
    price_package,
    price_unit,
    price_volume,
    tier_index,
    volume_drops,
)
from cxp.pricing.errors import PricingError
from cxp.pricing.examples import example_plans

# [0, 100] at 0.10 + 5 flat; (100, 1000] at 0.0035 + 2 flat; (1000, ∞) at 0.001.
TIERS = (
    Tier(lower=0, upper=100, unit_price="0.10", flat_fee=5),
    Tier(lower=100, upper=1000, unit_price="0.0035", flat_fee=2),
    Tier(lower=1000, unit_price="0.001"),
)
PLANS = {p.plan_id: p for p in example_plans()}


def _plan(*components: dict, **kw) -> Plan:
    return Plan(plan_id="t", version=1, name="T", currency=kw.pop("currency", "EUR"), components=components, **kw)


# --- charge models -----------------------------------------------------------------------------


def test_unit() -> None:
    assert price_unit(quantity=1234, rate=D("0.0035")) == D("4.3190")
    assert price_unit(quantity=0, rate=D("0.0035")) == 0
    assert price_unit(quantity=0.1, rate=3) == D("0.3")  # the float enters as 0.1 exactly


@pytest.mark.parametrize(
    ("q", "tier"), [(0, 0), (D("99.999"), 0), (100, 0), (D("100.5"), 1), (D("100.001"), 1), (1000, 1), (1001, 2)]
)
def test_upper_bounds_are_inclusive(q, tier: int) -> None:
    assert tier_index(quantity=q, tiers=TIERS) == tier


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0, "5"),  # tier 0 holds q = 0, so its flat fee is due
        (50, "10"),
        (100, "15"),  # exactly at the inclusive bound: tier 1's flat fee not yet
        ("100.5", "17.00175"),  # just above: 15 + 0.5 · 0.0035 + 2
        (1000, "20.15"),  # 15 + 900 · 0.0035 + 2
        (1500, "20.65"),  # + 500 · 0.001
    ],
)
def test_graduated(q, expected: str) -> None:
    assert price_graduated(quantity=q, tiers=TIERS) == D(expected)


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0, "5"), (100, "15"), ("100.5", "2.35175"), (1000, "5.5"), ("1000.001", "1.000001"), (6000, "6")],
)
def test_volume(q, expected: str) -> None:
    assert price_volume(quantity=q, tiers=TIERS) == D(expected)


def test_volume_drops_are_reported() -> None:
    drops = volume_drops(tiers=TIERS)
    assert [(d.boundary, d.tier, d.total_at_boundary, d.total_just_above, d.drop) for d in drops] == [
        (100, 1, D("15"), D("2.35"), D("12.65")),
        (1000, 2, D("5.5"), D("1"), D("4.5")),
    ]
    assert drops[0].recovers_at is None  # (100, 1000] never gets back to 15: 1000 · 0.0035 + 2 = 5.5
    assert drops[1].recovers_at == 5500  # 5500 · 0.001 = 5.5
    rising = (Tier(lower=0, upper=10, unit_price=1), Tier(lower=10, unit_price=1, flat_fee=1))
    assert volume_drops(tiers=rising) == []


def test_bounded_last_tier() -> None:
    tiers = (Tier(lower=0, upper=10, unit_price=1),)
    assert price_graduated(quantity=10, tiers=tiers) == 10
    with pytest.raises(PricingError, match="exceeds the last tier's upper bound 10"):
        price_volume(quantity=D("10.01"), tiers=tiers)


@pytest.mark.parametrize(("q", "packages"), [(0, 0), (4, 0), ("4.001", 1), (14, 1), ("14.5", 2), (25, 3), (24, 2)])
def test_package_with_free_units(q, packages: int) -> None:
    # ⌈max(q − 4, 0) / 10⌉ packages at 3 each.
    assert price_package(quantity=q, package_size=10, package_price=3, free_units=4) == 3 * packages


def test_fractional_package_size() -> None:
    assert price_package(quantity=1, package_size=D("0.3"), package_price=1) == 4  # ⌈3.33…⌉


def test_negative_quantity_is_refused() -> None:
    with pytest.raises(PricingError, match="must not be negative"):
        price_graduated(quantity=-1, tiers=TIERS)


def test_public_functions_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        price_unit(3, D(1))  # type: ignore[misc]


# --- bills -------------------------------------------------------------------------------------


def test_line_rounding_half_even_and_half_up() -> None:
    comp = {"kind": "usage", "id": "api", "metric": "calls", "charge": {"model": "unit", "unit_price": "0.0035"}}
    even, up = _plan(comp), _plan(comp, rounding_mode="ROUND_HALF_UP")
    # 30 · 0.0035 = 0.105: half-even → 0.10, half-up → 0.11; 10 · 0.0035 = 0.035 → 0.04 either way.
    assert bill_period(plan=even, usage={"calls": 30}, period_index=0).total == D("0.10")
    assert bill_period(plan=up, usage={"calls": 30}, period_index=0).total == D("0.11")
    assert bill_period(plan=even, usage={"calls": 10}, period_index=0).total == D("0.04")
    jpy = _plan({**comp, "charge": {"model": "unit", "unit_price": "1.5"}}, currency="JPY")
    assert bill_period(plan=jpy, usage={"calls": 3}, period_index=0).total == D("4")  # 4.5 → 4
    assert bill_period(plan=jpy, usage={"calls": 5}, period_index=0).total == D("8")  # 7.5 → 8


def test_rounding_is_per_line_item() -> None:
    a = {"kind": "usage", "id": "a", "metric": "m", "charge": {"model": "unit", "unit_price": "0.005"}}
    plan = _plan(a, {**a, "id": "b"})
    bill = bill_period(plan=plan, usage={"m": 1}, period_index=0)
    # Each line 0.005 → 0.00 (half-even); summing first would have given 0.01.
    assert bill.amounts() == {"a:usage": D("0.00"), "b:usage": D("0.00")} and bill.total == 0


def test_zero_usage_bill() -> None:
    bill = bill_period(plan=PLANS["ppu-graduated"], usage={"heating_kwh": 0}, period_index=3)
    assert bill.total == 0 and bill.lines[0].quantity == 0


def test_fractional_quantities_across_a_boundary() -> None:
    plan = PLANS["ppu-volume"]
    # 100 kWh → tier 1 at 0.01 = 1.00; 100.5 → tier 2: 0.603 + 0.50 = 1.103 → 1.10.
    assert bill_period(plan=plan, usage={"heating_kwh": 100}, period_index=0).total == D("1.00")
    assert bill_period(plan=plan, usage={"heating_kwh": D("100.5")}, period_index=0).total == D("1.10")


def test_one_time_sale_only_in_the_first_period() -> None:
    plan = PLANS["hw-connect"]
    first, later = (bill_period(plan=plan, usage={}, period_index=i) for i in (0, 1))
    assert first.amounts() == {"device:sale": D("149.00"), "connectivity:fee": D("2.99")}
    assert first.total == D("151.99") and later.total == D("2.99")
    assert later.line("device:sale").quantity == 0


def test_feature_bundles() -> None:
    plan = PLANS["bundles"]

    def bundle(**used: int) -> str:
        usage = {"set_schedule": 0, "voice_command": 0, "demand_response": 0, **used}
        return bill_period(plan=plan, usage=usage, period_index=0).line("bundle:bundle").label

    assert bundle() == "basic"
    assert bundle(set_schedule=3) == "plus"
    assert bundle(set_schedule=3, demand_response=1) == "pro"
    explicit = bill_period(plan=plan, usage={}, period_index=0, bundles={"bundle": "pro"})
    assert explicit.total == D("7.99")
    with pytest.raises(PricingError, match="give 0 explicitly"):
        bill_period(plan=plan, usage={"set_schedule": 1}, period_index=0)


def test_hybrid_allowance_and_package_overage() -> None:
    plan = PLANS["hybrid"]  # 1.99 base, 200 kWh included, packs of 100 kWh at 0.79, 0.0035/app session, 4.00 min

    def lines(kwh, sessions=0) -> dict:
        return bill_period(plan=plan, usage={"heating_kwh": kwh, "app_sessions": sessions}, period_index=0).amounts()

    assert lines(200) == {
        "energy:base": D("1.99"),
        "energy:overage": D("0.00"),
        "app:usage": D("0.00"),
        "minimum:true_up": D("2.01"),
    }
    assert lines(D("200.01"))["energy:overage"] == D("0.79")
    assert lines(300)["energy:overage"] == D("0.79")
    assert lines(D("300.5"))["energy:overage"] == D("1.58")
    big = lines(800, 1000)  # 6 packs = 4.74, sessions 3.50: above the minimum
    assert big["energy:overage"] == D("4.74") and big["app:usage"] == D("3.50") and big["minimum:true_up"] == 0


def test_hybrid_with_unit_overage() -> None:
    plan = _plan(
        {
            "kind": "hybrid",
            "id": "h",
            "metric": "m",
            "base_fee": "9.99",
            "included": 200,
            "overage": {"model": "unit", "unit_price": "0.05"},
        }
    )
    assert bill_period(plan=plan, usage={"m": 250}, period_index=0).total == D("12.49")
    assert bill_period(plan=plan, usage={"m": 150}, period_index=0).line("h:overage").quantity == 0


def test_minimum_commitment_true_up() -> None:
    plan = _plan(
        {"kind": "one_time_sale", "id": "hw", "price": 100},
        {"kind": "usage", "id": "u", "metric": "m", "charge": {"model": "unit", "unit_price": "0.10"}},
        {"kind": "minimum_commitment", "id": "min", "amount": 10, "applies_to": ["u"]},
    )
    first = bill_period(plan=plan, usage={"m": 30}, period_index=0)
    assert first.amounts() == {"hw:sale": D("100.00"), "u:usage": D("3.00"), "min:true_up": D("7.00")}
    assert first.total == D("110.00")
    assert bill_period(plan=plan, usage={"m": 150}, period_index=1).line("min:true_up").amount == 0
    # Without applies_to the hardware sale counts towards the commitment.
    every = _plan(*plan.model_dump()["components"][:2], {"kind": "minimum_commitment", "id": "min", "amount": 10})
    assert bill_period(plan=every, usage={"m": 30}, period_index=0).line("min:true_up").amount == 0
    assert bill_period(plan=every, usage={"m": 30}, period_index=1).line("min:true_up").amount == D("7.00")


def test_outcome_per_success() -> None:
    bill = bill_period(
        plan=PLANS["outcome"], usage={}, outcomes={"optimised_cycles": 37}, uptime_pct=100, period_index=0
    )
    assert bill.line("cycles:outcomes").amount == D("0.56")  # 0.555 → 0.56 (half-even: 5 is odd)
    assert bill.total == D("2.06")
    with pytest.raises(PricingError, match="outcomes has no 'optimised_cycles'"):
        bill_period(plan=PLANS["outcome"], usage={}, uptime_pct=100, period_index=0)


@pytest.mark.parametrize(
    ("uptime", "credit"),
    [("100", "0.00"), ("99.5", "0.00"), ("99.49", "-0.15"), ("99", "-0.15"), ("98.999", "-0.38"), ("94.9", "-1.50")],
)
def test_sla_credits(uptime: str, credit: str) -> None:
    # Fee 1.50; < 99.5 → 10 %, < 99 → 25 % (0.375 → 0.38), < 95 → 100 %.
    bill = bill_period(
        plan=PLANS["outcome"], usage={}, outcomes={"optimised_cycles": 0}, uptime_pct=D(uptime), period_index=0
    )
    assert bill.line("sla:credit").amount == D(credit)
    assert bill.total == D("1.50") + D(credit)


def test_sla_needs_uptime() -> None:
    with pytest.raises(PricingError, match="give uptime_pct"):
        bill_period(plan=PLANS["outcome"], usage={}, outcomes={"optimised_cycles": 1}, period_index=0)


def test_freemium_conversion() -> None:
    plan = PLANS["freemium"]  # 2.49 premium, 8 % conversion
    ids = [f"acct-{i}" for i in range(20_000)]
    billed = [bill_period(plan=plan, usage={}, period_index=0, account_id=a).total for a in ids[:2000]]
    assert set(billed) == {D("0.00"), D("2.49")}
    share = sum(is_upgraded(account_id=a, conversion_rate=D("0.2"), salt="s") for a in ids) / len(ids)
    assert abs(share - 0.2) < 0.01  # ±3.5 binomial standard deviations
    # Deterministic per account, salt-dependent, and exact at the extremes.
    assert is_upgraded(account_id="a", conversion_rate=D("0.5"), salt="s") == is_upgraded(
        account_id="a", conversion_rate=D("0.5"), salt="s"
    )
    assert not any(is_upgraded(account_id=a, conversion_rate=D(0), salt="s") for a in ids[:100])
    assert all(is_upgraded(account_id=a, conversion_rate=D(1), salt="s") for a in ids[:100])
    # Upgrades are per account, so the same account is billed the same in every period.
    assert len({bill_period(plan=plan, usage={}, period_index=p, account_id="acct-7").total for p in range(12)}) == 1
    assert bill_period(plan=plan, usage={}, period_index=0, upgrades={"premium": True}).total == D("2.49")
    with pytest.raises(PricingError, match="needs upgrades"):
        bill_period(plan=plan, usage={}, period_index=0)


def test_combined_plan_line_keys_are_stable() -> None:
    plan = _plan(
        {"kind": "flat_fee", "id": "sub", "fee": "4.99"},
        {
            "kind": "usage",
            "id": "energy",
            "metric": "kwh",
            "charge": {
                "model": "graduated",
                "tiers": [{"lower": 0, "upper": 50, "unit_price": 0}, {"lower": 50, "unit_price": "0.02"}],
            },
        },
        {"kind": "uptime_sla", "id": "sla", "fee": 0, "bands": [{"uptime_below": 99, "credit_pct": 50}]},
    )
    bill = bill_period(plan=plan, usage={"kwh": D("75.25")}, uptime_pct=98, period_index=0)
    assert tuple(li.key for li in bill.lines) == line_keys(plan=plan)
    assert bill.amounts() == {
        "sub:fee": D("4.99"),
        "energy:usage": D("0.50"),
        "sla:fee": D("0.00"),
        "sla:credit": D("0.00"),
    }  # 25.25 · 0.02 = 0.505 → 0.50
    assert bill.total == D("5.49") and bill.total_money.currency == "EUR"


def test_missing_usage_is_an_error_not_zero() -> None:
    with pytest.raises(PricingError, match="usage has no 'heating_kwh'"):
        bill_period(plan=PLANS["ppu-volume"], usage={"heating_kwh_typo": 3}, period_index=0)


def test_price_charge_dispatches() -> None:
    plan = PLANS["hybrid"]
    assert price_charge(quantity=250, charge=plan.components[0].overage) == D("2.37")  # 3 packs
