"""Plan models: validation with clear messages, billable metrics, inputs, JSON round trip."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cxp.pricing.core import (
    BillableMetric,
    GraduatedCharge,
    PackageCharge,
    Plan,
    Tier,
    UptimeSla,
    parse_plan,
    validate_tiers,
)
from cxp.pricing.errors import PlanValidationError
from cxp.pricing.examples import example_plans

BASE = {"plan_id": "p", "version": 3, "name": "P", "currency": "EUR"}


def _usage(charge: dict) -> dict:
    return {**BASE, "components": [{"kind": "usage", "id": "api", "metric": "calls", "charge": charge}]}


def _problem(data: dict) -> PlanValidationError:
    with pytest.raises(PlanValidationError) as info:
        parse_plan(data=data)
    return info.value


def test_non_contiguous_tiers() -> None:
    err = _problem(
        _usage(
            {
                "model": "graduated",
                "tiers": [{"lower": 0, "upper": 100, "unit_price": 1}, {"lower": 150, "unit_price": "0.5"}],
            }
        )
    )
    assert err.problems == (
        "components[0].charge.tiers: tiers must be contiguous: tiers[1] starts at 150 but tiers[0] ends at 100",
    )
    assert str(err).startswith("invalid Plan 'p' v3: components[0].charge.tiers: tiers must be contiguous")


def test_first_tier_starts_at_zero_and_only_the_last_is_unbounded() -> None:
    err = _problem(_usage({"model": "volume", "tiers": [{"lower": 1, "unit_price": 1}]}))
    assert "the first tier must start at 0, but tiers[0] starts at 1" in str(err)
    err = _problem(_usage({"model": "volume", "tiers": [{"lower": 0, "unit_price": 1}, {"lower": 5, "unit_price": 1}]}))
    assert "only the last tier may be unbounded, but tiers[0] has no upper bound" in str(err)
    with pytest.raises(PlanValidationError, match="upper bound 5 must be greater than lower bound 5"):
        Tier(lower=5, upper=5)


def test_negative_price() -> None:
    err = _problem(
        _usage(
            {
                "model": "graduated",
                "tiers": [{"lower": 0, "upper": 100, "unit_price": 1}, {"lower": 100, "unit_price": "-0.5"}],
            }
        )
    )
    assert err.problems == (
        "components[0].charge.tiers[1].unit_price: Input should be greater than or equal to 0 (got '-0.5')",
    )
    err = _problem({**BASE, "components": [{"kind": "flat_fee", "id": "f", "fee": -1}]})
    assert err.problems == ("components[0].fee: Input should be greater than or equal to 0 (got -1)",)


def test_zero_package_size() -> None:
    err = _problem(_usage({"model": "package", "package_size": 0, "package_price": 3}))
    assert err.problems == ("components[0].charge.package_size: Input should be greater than 0 (got 0)",)
    with pytest.raises(PlanValidationError, match=r"package_size: Input should be greater than 0 \(got 0\)"):
        PackageCharge(package_size=0, package_price=1)


def test_direct_construction_raises_the_same_error() -> None:
    with pytest.raises(PlanValidationError, match="tiers must be contiguous"):
        GraduatedCharge(tiers=[Tier(lower=0, upper=1), Tier(lower=2)])
    with pytest.raises(PlanValidationError, match="the first tier must start at 0"):
        validate_tiers(tiers=[{"lower": 3}])
    # The nested-validation trick (our __init__ counts as pydantic's base init) must hold.
    assert Plan.__pydantic_custom_init__ is False and Tier.__pydantic_custom_init__ is False


def test_every_problem_is_listed() -> None:
    err = _problem(
        {
            **BASE,
            "currency": "eur",
            "components": [{"kind": "flat_fee", "id": "a", "fee": "x"}, {"kind": "nope", "id": "b"}],
        }
    )
    assert len(err.problems) == 3
    assert any(p.startswith("currency: String should match pattern") for p in err.problems)
    assert any(p.startswith("components[1]: Input tag 'nope'") for p in err.problems)


@pytest.mark.parametrize(
    ("components", "message"),
    [
        (
            [{"kind": "flat_fee", "id": "a", "fee": 1}, {"kind": "flat_fee", "id": "a", "fee": 2}],
            "component ids must be unique; repeated: ['a']",
        ),
        (
            [{"kind": "minimum_commitment", "id": "m", "amount": 5, "applies_to": ["x"]}],
            "commitment 'm' applies to unknown component 'x'",
        ),
        (
            [
                {
                    "kind": "tiered_subscription",
                    "id": "b",
                    "tiers": [{"name": "pro", "fee": 9}, {"name": "basic", "fee": 1}],
                }
            ],
            "bundles must be in ascending fee order",
        ),
        (
            [
                {
                    "kind": "uptime_sla",
                    "id": "s",
                    "fee": 1,
                    "bands": [{"uptime_below": 99, "credit_pct": 10}, {"uptime_below": 99.5, "credit_pct": 25}],
                }
            ],
            "bands must have strictly decreasing thresholds",
        ),
        (
            [{"kind": "freemium", "id": "f", "premium_fee": 1, "conversion_rate": "1.2"}],
            "components[0].conversion_rate: Input should be less than or equal to 1",
        ),
        ([{"kind": "flat_fee", "id": "a:b", "fee": 1}], "components[0].id: String should match pattern"),
    ],
)
def test_plan_rules(components: list, message: str) -> None:
    assert message in str(_problem({**BASE, "components": components}))


def test_currency_without_known_quantum() -> None:
    assert "no rounding quantum known for currency XYZ" in str(
        _problem({**BASE, "currency": "XYZ", "components": [{"kind": "flat_fee", "id": "a", "fee": 1}]})
    )
    plan = parse_plan(
        data={**BASE, "currency": "XYZ", "quantum": "0.5", "components": [{"kind": "flat_fee", "id": "a", "fee": 1}]}
    )
    assert plan.rounding.quantum == Decimal("0.5")


def test_metrics_must_define_what_components_bill() -> None:
    metric = {"name": "kwh", "aggregation": "time_weighted_sum", "source": "state", "field": "metrics.power_kw"}
    ok = parse_plan(
        data={**_usage({"model": "unit", "unit_price": 1}), "metrics": [metric, {**metric, "name": "calls"}]}
    )
    assert ok.metrics[0].field == "metrics.power_kw"
    err = _problem({**_usage({"model": "unit", "unit_price": 1}), "metrics": [metric]})
    assert "component 'api' bills metric 'calls', which the plan does not define" in str(err)


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        ({"aggregation": "count", "field": "quantity"}, "takes no field"),
        ({"aggregation": "sum"}, "a sum metric needs a field"),
        ({"aggregation": "sum", "field": "energy_wh"}, "usage events have numeric fields"),
        ({"aggregation": "time_weighted_sum", "field": "quantity"}, "use source 'state'"),
        ({"aggregation": "unique_count", "field": "quantity"}, "unique_count over usage_events counts one of"),
        (
            {"aggregation": "max", "source": "state", "field": "energy_wh", "filter": {"success_only": True}},
            "filters (touchpoints, success_only) apply to usage events only",
        ),
    ],
)
def test_billable_metric_rules(metric: dict, message: str) -> None:
    with pytest.raises(PlanValidationError) as info:
        BillableMetric(name="m", **metric)
    assert message in str(info.value)


def test_billable_metric_examples() -> None:
    m = BillableMetric(
        name="successful_brews", aggregation="count", filter={"touchpoints": ["brew"], "success_only": True}
    )
    assert m.source == "usage_events" and m.filter.success_only
    assert BillableMetric(name="active_devices", aggregation="unique_count", field="device").field == "device"
    assert BillableMetric(name="kwh", aggregation="latest", source="state", field="energy_wh").aggregation == "latest"


def test_required_inputs() -> None:
    plans = {p.plan_id: p for p in example_plans()}
    hybrid = plans["hybrid"].required_inputs()
    assert hybrid.usage_keys == {"heating_kwh", "app_sessions"} and not hybrid.needs_uptime
    bundles = plans["bundles"].required_inputs()
    assert bundles.usage_keys == {"set_schedule", "voice_command", "demand_response"}
    outcome = plans["outcome"].required_inputs()
    assert outcome.outcome_keys == {"optimised_cycles"} and outcome.needs_uptime
    assert plans["freemium"].required_inputs().freemium_components == ("premium",)


def test_json_round_trip_and_immutability() -> None:
    for plan in example_plans():
        again = parse_plan(data=plan.model_dump_json())
        assert again == plan and again.key == f"{plan.plan_id}@v1"
    plan = example_plans()[0]
    with pytest.raises(Exception, match="frozen"):
        plan.version = 2  # type: ignore[misc]


def test_sla_band_lookup() -> None:
    sla = UptimeSla(
        id="s", fee=1, bands=[{"uptime_below": "99.5", "credit_pct": 10}, {"uptime_below": 99, "credit_pct": 25}]
    )
    assert [sla.credit_pct(Decimal(u)) for u in ("100", "99.5", "99.49", "99", "98.999", "0")] == [0, 0, 10, 10, 25, 25]
