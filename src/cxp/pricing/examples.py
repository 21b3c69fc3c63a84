"""Seven example revenue models for a smart thermostat, one per IoT revenue model family.

Used by the benchmark and tests, and as a starting catalogue for the pricing lab. Usage keys:
`heating_kwh` (energy the thermostat controlled), `app_sessions` (count), feature keys
`set_schedule`, `demand_response`, `voice_command` (uses > 0 means the feature was used), outcome
`optimised_cycles` (successful autonomous heating cycles). Prices are illustrative, in EUR.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from cxp.pricing.core.plans import BillableMetric, Plan
from cxp.pricing.core.solve import FreeParameter

_ENERGY_TIERS = [
    {"lower": 0, "upper": 100, "unit_price": "0.0100"},
    {"lower": 100, "upper": 500, "unit_price": "0.0060", "flat_fee": "0.50"},
    {"lower": 500, "upper": None, "unit_price": "0.0035", "flat_fee": "1.00"},
]


def example_plans() -> tuple[Plan, ...]:
    """The seven example plans (product sale, bundles, graduated, volume, hybrid, outcome, freemium)."""
    common = {"version": 1, "currency": "EUR"}
    return (
        Plan(
            plan_id="hw-connect",
            name="Device sale + connectivity",
            **common,
            components=[
                {"kind": "one_time_sale", "id": "device", "price": "149.00"},
                {"kind": "flat_fee", "id": "connectivity", "fee": "2.99"},
            ],
        ),
        Plan(
            plan_id="bundles",
            name="Feature bundles",
            **common,
            components=[
                {
                    "kind": "tiered_subscription",
                    "id": "bundle",
                    "tiers": [
                        {"name": "basic", "fee": "0"},
                        {"name": "plus", "fee": "3.99", "features": ["set_schedule", "voice_command"]},
                        {
                            "name": "pro",
                            "fee": "7.99",
                            "features": ["set_schedule", "voice_command", "demand_response"],
                        },
                    ],
                }
            ],
        ),
        Plan(
            plan_id="ppu-graduated",
            name="Pay per kWh managed (graduated)",
            **common,
            components=[
                {
                    "kind": "usage",
                    "id": "energy",
                    "metric": "heating_kwh",
                    "charge": {"model": "graduated", "tiers": _ENERGY_TIERS},
                }
            ],
        ),
        Plan(
            plan_id="ppu-volume",
            name="Pay per kWh managed (volume)",
            **common,
            components=[
                {
                    "kind": "usage",
                    "id": "energy",
                    "metric": "heating_kwh",
                    "charge": {"model": "volume", "tiers": _ENERGY_TIERS},
                }
            ],
        ),
        Plan(
            plan_id="hybrid",
            name="Base + 200 kWh + packs, €4 minimum",
            **common,
            components=[
                {
                    "kind": "hybrid",
                    "id": "energy",
                    "metric": "heating_kwh",
                    "base_fee": "1.99",
                    "included": 200,
                    "overage": {"model": "package", "package_size": 100, "package_price": "0.79"},
                },
                {
                    "kind": "usage",
                    "id": "app",
                    "metric": "app_sessions",
                    "charge": {"model": "unit", "unit_price": "0.0035"},
                },
                {"kind": "minimum_commitment", "id": "minimum", "amount": "4.00"},
            ],
        ),
        Plan(
            plan_id="outcome",
            name="Per optimised cycle + uptime SLA",
            **common,
            components=[
                {"kind": "per_outcome", "id": "cycles", "outcome": "optimised_cycles", "price_per_success": "0.015"},
                {
                    "kind": "uptime_sla",
                    "id": "sla",
                    "fee": "1.50",
                    "bands": [
                        {"uptime_below": "99.5", "credit_pct": 10},
                        {"uptime_below": "99", "credit_pct": 25},
                        {"uptime_below": "95", "credit_pct": 100},
                    ],
                },
            ],
        ),
        Plan(
            plan_id="freemium",
            name="Free app, premium insights",
            **common,
            components=[
                {
                    "kind": "freemium",
                    "id": "premium",
                    "premium_fee": "2.49",
                    "premium_features": ["energy_report", "demand_response"],
                    "conversion_rate": "0.08",
                }
            ],
        ),
    )


def example_metrics() -> tuple[BillableMetric, ...]:
    """How the example plans' usage keys read the thermostat's telemetry (the rest default to touchpoint counts).

    heating_kwh: kWh of heating cycles (sum of quantity); app_sessions: app dashboard visits;
    optimised_cycles (outcome): successful heating cycles; the feature keys count uses of the
    touchpoint of the same name.
    """
    return (
        BillableMetric(
            name="heating_kwh",
            aggregation="sum",
            field="quantity",
            filter={"touchpoints": ["heating_cycle"]},
            unit_label="kWh",
        ),
        BillableMetric(name="app_sessions", aggregation="count", filter={"touchpoints": ["app_dashboard"]}),
        BillableMetric(
            name="optimised_cycles",
            aggregation="count",
            filter={"touchpoints": ["heating_cycle"], "success_only": True},
        ),
    )


def solve_family() -> tuple[Plan, FreeParameter]:
    """The dashboard's plan family: the device sale kept, connectivity replaced by a price per kWh managed.

    Its free parameter is that price, €0.0010–0.0500 per kWh in steps of €0.0005.
    """
    plan = Plan(
        plan_id="hw-ppu-kwh",
        version=1,
        name="Device sale + pay per kWh managed",
        currency="EUR",
        components=[
            {"kind": "one_time_sale", "id": "device", "price": "149.00"},
            {
                "kind": "usage",
                "id": "energy",
                "metric": "heating_kwh",
                "charge": {"model": "unit", "unit_price": "0.01"},
            },
        ],
    )
    return plan, FreeParameter("energy", "charge.unit_price", Decimal("0.0010"), Decimal("0.0500"), Decimal("0.0005"))


@dataclass(frozen=True)
class SolveFamily:
    """A plan with free parameters the decisions page solves and draws, with how to label each parameter."""

    key: str
    title: str
    plan: Plan
    parameters: tuple[FreeParameter, ...]
    units: tuple[str, ...]  # what each parameter's value is in, e.g. "EUR/kWh", "kWh"

    def label(self, values: dict[str, Decimal]) -> str:
        """The parameter values in words, e.g. "0.0125 EUR/kWh, 150 kWh free"."""
        return ", ".join(
            f"{values[p.name].normalize():f} {u}" for p, u in zip(self.parameters, self.units, strict=True)
        )


def solve_families() -> dict[str, SolveFamily]:
    """The decisions page's plan families, each keeping the device sale and replacing the connectivity fee.

    ppu-kwh: one price per kWh; hybrid-kwh: a base fee with 100 kWh included, then a price per kWh
    (two parameters); allowance-kwh: the first kWh free up to an allowance, then a price per kWh (two).
    """
    plan, price = solve_family()
    device = {"kind": "one_time_sale", "id": "device", "price": "149.00"}
    hybrid = Plan(
        plan_id="hw-hybrid-kwh",
        version=1,
        name="Device sale + base fee with 100 kWh, then per kWh",
        currency="EUR",
        components=[
            device,
            {
                "kind": "hybrid",
                "id": "energy",
                "metric": "heating_kwh",
                "base_fee": "1.00",
                "included": 100,
                "overage": {"model": "unit", "unit_price": "0.01"},
            },
        ],
    )
    allowance = Plan(
        plan_id="hw-allowance-kwh",
        version=1,
        name="Device sale + free kWh allowance, then per kWh",
        currency="EUR",
        components=[
            device,
            {
                "kind": "usage",
                "id": "energy",
                "metric": "heating_kwh",
                "charge": {
                    "model": "graduated",
                    "tiers": [
                        {"lower": 0, "upper": 100, "unit_price": "0"},
                        {"lower": 100, "upper": None, "unit_price": "0.01"},
                    ],
                },
            },
        ],
    )
    kwh = ("EUR/kWh",)
    return {
        "ppu-kwh": SolveFamily("ppu-kwh", "Pay per kWh managed", plan, (price,), kwh),
        "hybrid-kwh": SolveFamily(
            "hybrid-kwh",
            "Base fee + 100 kWh included + per kWh",
            hybrid,
            (
                FreeParameter("energy", "base_fee", Decimal("0"), Decimal("5.00"), Decimal("0.25")),
                FreeParameter("energy", "overage.unit_price", Decimal("0.0010"), Decimal("0.0500"), Decimal("0.0005")),
            ),
            ("EUR/month", "EUR/kWh"),
        ),
        "allowance-kwh": SolveFamily(
            "allowance-kwh",
            "Free kWh allowance, then per kWh",
            allowance,
            (
                FreeParameter("energy", "charge.tiers.0.upper", Decimal("25"), Decimal("500"), Decimal("25")),
                FreeParameter(
                    "energy", "charge.tiers.1.unit_price", Decimal("0.0010"), Decimal("0.0500"), Decimal("0.0005")
                ),
            ),
            ("kWh free", "EUR/kWh"),
        ),
    }
