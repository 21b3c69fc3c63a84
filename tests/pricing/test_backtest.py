"""Backtest on arrays: hand-computed bills, reconciliation with the scalar path, shock, winners, fairness, exports."""

from __future__ import annotations

import csv
from datetime import date
from decimal import Decimal

import numpy as np
import pytest

from cxp.pricing.core import Plan, bill_period, to_fixed
from cxp.pricing.core.backtest import CostModel, DemandResponse, UsageCube, backtest, gini
from cxp.pricing.core.vectorised import FixedArray
from cxp.pricing.errors import PricingError
from cxp.pricing.examples import example_plans
from cxp.pricing.exports import export_csv, export_parquet
from cxp.tools.bench.pricing_core import FEATURES, synthetic_inputs

MONTHS = (date(2026, 1, 1), date(2026, 2, 1))


def _plan(pid: str, *components: dict) -> Plan:
    return Plan(plan_id=pid, version=1, name=pid, currency="EUR", components=list(components))


FLAT = _plan("flat", {"kind": "flat_fee", "id": "sub", "fee": "10.00"})
UNIT = _plan("unit", {"kind": "usage", "id": "kwh", "metric": "kwh", "charge": {"model": "unit", "unit_price": "0.10"}})


def _cube(kwh: list[list[str]], active=None, health=None, segments=None) -> UsageCube:
    n = len(kwh)
    return UsageCube(
        account_ids=tuple(f"a{i}" for i in range(n)),
        segments=tuple(segments or ["consumer"] * n),
        months=MONTHS,
        usage={"kwh": to_fixed(values=np.array(kwh, dtype=object), decimals=3)},
        active=None if active is None else np.array(active, dtype=bool),
        health=None if health is None else np.array(health, dtype=float),
        devices=np.ones(n, dtype=np.int64),
    )


def test_hand_computed_bills_and_figures():
    cube = _cube([["50", "150"], ["100", "100"], ["0", "120.5"]], active=[[1, 1], [1, 1], [0, 1]])
    res = backtest(
        cube=cube,
        plans=[FLAT, UNIT],
        baseline="flat@v1",
        theta=Decimal("0.2"),
        cost=CostModel(per_unit=Decimal("0.02"), unit_metric="kwh", per_device_month=Decimal("1")),
        value_metric="kwh",
    )
    assert res.plan_keys == ("flat@v1", "unit@v1")
    unit = res.summaries["unit@v1"]
    # Unit bills: 5.00, 15.00 | 10.00, 10.00 | (inactive), 12.05 (12.05 is half-even of 12.050 exactly)
    assert res.bill("unit@v1", "a0", MONTHS[1]) == Decimal("15.00")
    assert res.bill("unit@v1", "a2", MONTHS[0]) == Decimal("0.00")  # inactive cells bill nothing
    assert unit.revenue == Decimal("52.05")
    assert res.summaries["flat@v1"].revenue == Decimal("50.00")
    assert unit.revenue_delta == Decimal("2.05")
    assert unit.customer_periods == 5 and unit.accounts == 3
    assert unit.arpu == Decimal("17.35")  # 52.05 / 3
    assert unit.arpu_month == Decimal("10.41")
    assert (unit.bill.p10, unit.bill.p50, unit.bill.p90) == (Decimal("5.00"), Decimal("10.00"), Decimal("15.00"))
    # Shock at θ = 0.2: 15/10 and 12.05/10 exceed 1.2; 10/10 does not.
    assert unit.shock_count == 2 and unit.shock_rate == pytest.approx(0.4)
    # Account totals: a0 20 vs 20 (unchanged), a1 20 vs 20, a2 12.05 vs 10 (loser).
    assert (unit.winners, unit.losers, unit.unchanged) == (0, 1, 2)
    # Cost: 0.02 × 520.5 kWh + 1 × 5 device-months = 15.41; margin exact.
    assert unit.cost == Decimal("15.41") and unit.margin == Decimal("36.64")
    # Every account pays 0.10/kWh under the unit plan: perfectly fair.
    assert unit.fairness_gini == pytest.approx(0.0, abs=1e-12)
    assert res.summaries["flat@v1"].fairness_gini > 0
    # Volatility: a0 (5, 15) has CV = std/mean = 7.0711/10; a1 has 0; a2 has one month (excluded).
    assert unit.volatility_cv == pytest.approx((np.sqrt(50) / 10 + 0) / 2)
    totals = res.account_totals("unit@v1")
    assert sum(totals.values()) == unit.revenue


def test_theta_boundary_is_exact_and_zero_old_bill_counts_as_shock():
    cube = _cube([["120", "0"]])
    base = _plan(
        "base", {"kind": "usage", "id": "kwh", "metric": "kwh", "charge": {"model": "unit", "unit_price": "0.10"}}
    )
    up = _plan(
        "up",
        {"kind": "usage", "id": "kwh", "metric": "kwh", "charge": {"model": "unit", "unit_price": "0.12"}},
        {"kind": "flat_fee", "id": "f", "fee": "0"},
    )
    res = backtest(cube=cube, plans=[base, up], theta=Decimal("0.2"))
    assert res.summaries["up@v1"].shock_count == 0  # 14.40 / 12.00 = 1.2 exactly: not above 1 + θ
    withfee = _plan("fee", {"kind": "flat_fee", "id": "f", "fee": "1"})
    res = backtest(cube=cube, plans=[base, withfee], theta=Decimal("0.2"))
    assert res.summaries["fee@v1"].shock_count == 1  # 0 → 1.00 in month 2; 12 → 1 is no shock


def test_model_equal_to_baseline_shows_no_shock_and_no_winners_or_losers():
    raw = synthetic_inputs(accounts=300, periods=6, seed=3)
    plans = example_plans()
    twin = plans[4].model_copy(update={"plan_id": "hybrid-twin"})
    cube = _synthetic_cube(raw)
    res = backtest(cube=cube, plans=[plans[4], twin, *plans[:2]], theta=Decimal("0"))
    s = res.summaries[twin.key]
    assert s.shock_count == 0 and s.shock_rate == 0.0
    assert s.winners == 0 and s.losers == 0 and s.unchanged == 300
    assert s.revenue_delta == 0
    assert s.bill_change.p10 == s.bill_change.p90 == 0


def _synthetic_cube(raw: dict) -> UsageCube:
    n, p = raw["heating_kwh"].shape
    usage = {
        "heating_kwh": to_fixed(values=raw["heating_kwh"], decimals=3),
        "app_sessions": FixedArray(raw["app_sessions"].astype(np.int64), 0),
        **{f: FixedArray(raw[f].astype(np.int64), 0) for f in FEATURES},
    }
    rng = np.random.default_rng(7)
    first = rng.integers(-3, p, size=n)  # some accounts start before the window, some during
    pidx = np.arange(p)[None, :] - first[:, None]
    return UsageCube(
        account_ids=tuple(raw["account_ids"]),
        segments=tuple("smb" if i % 5 == 0 else "consumer" for i in range(n)),
        months=tuple(date(2025, m + 1, 1) for m in range(p)),
        usage=usage,
        outcomes={"optimised_cycles": FixedArray(raw["optimised_cycles"].astype(np.int64), 0)},
        uptime_pct=to_fixed(values=raw["uptime_pct"], decimals=3),
        active=pidx >= 0,
        period_index=pidx,
        devices=rng.integers(1, 4, size=n),
        health=rng.uniform(20, 100, size=(n, p)),
    )


def test_totals_reconcile_with_per_account_scalar_bills():
    raw = synthetic_inputs(accounts=120, periods=4, seed=11)
    cube = _synthetic_cube(raw)
    plans = example_plans()
    res = backtest(
        cube=cube,
        plans=plans,
        value_metric="heating_kwh",
        cost=CostModel(per_unit=Decimal("0.004"), unit_metric="heating_kwh", per_device_month=Decimal("0.5")),
    )
    act = cube.active_mask()
    for plan in plans:
        s = res.summaries[plan.key]
        scalar_total = Decimal(0)
        for i, acc in enumerate(cube.account_ids):
            for j in range(4):
                if not act[i, j]:
                    continue
                b = bill_period(
                    plan=plan,
                    usage={
                        "heating_kwh": cube.usage["heating_kwh"].decimal_at((i, j)),
                        **{k: cube.usage[k].decimal_at((i, j)) for k in ("app_sessions", *FEATURES)},
                    },
                    outcomes={"optimised_cycles": cube.outcomes["optimised_cycles"].decimal_at((i, j))},
                    uptime_pct=cube.uptime_pct.decimal_at((i, j)),
                    period_index=int(cube.period_index[i, j]),
                    account_id=acc,
                )
                assert b.total == res.bill(plan.key, acc, cube.months[j])
                scalar_total += b.total
        assert s.revenue == scalar_total == sum(res.account_totals(plan.key).values())
        assert s.margin == s.revenue - s.cost
    # The one-time sale lands only in an account's first month inside the window.
    sale = res.bills["hw-connect@v1"]
    assert (sale[cube.period_index == 0] >= 14900).all()
    assert res.experience and {e.segment for e in res.experience} == {"consumer", "smb"}


def test_demand_response():
    cube = _cube([["100", "100"]])
    dear = _plan(
        "dear", {"kind": "usage", "id": "kwh", "metric": "kwh", "charge": {"model": "unit", "unit_price": "0.40"}}
    )
    res0 = backtest(cube=cube, plans=[UNIT, dear], demand=DemandResponse(elasticity=0.0))
    assert res0.summaries["dear@v1"].revenue == Decimal("80.00")
    res = backtest(cube=cube, plans=[UNIT, dear], demand=DemandResponse(elasticity=-0.5))
    # Price ×4 → usage × 4^-0.5 = 50 kWh a month → 20.00 a month.
    assert res.summaries["dear@v1"].revenue == Decimal("40.00")
    assert res.summaries["dear@v1"].static_revenue == Decimal("80.00")
    assert res.summaries["unit@v1"].revenue == Decimal("20.00")


def test_gini_known_values():
    assert gini(values=np.array([1.0, 1.0, 1.0])) == pytest.approx(0.0)
    assert gini(values=np.array([0.0, 0.0, 0.0, 1.0])) == pytest.approx(0.75)
    assert gini(values=np.array([1.0])) is None


def test_errors():
    cube = _cube([["1", "2"]])
    with pytest.raises(PricingError, match="baseline"):
        backtest(cube=cube, plans=[UNIT], baseline="nope@v1")
    usd = Plan(
        plan_id="usd", version=1, name="u", currency="USD", components=[{"kind": "flat_fee", "id": "f", "fee": "1"}]
    )
    with pytest.raises(PricingError, match="one currency"):
        backtest(cube=cube, plans=[UNIT, usd])
    with pytest.raises(PricingError, match="value metric"):
        backtest(cube=cube, plans=[UNIT], value_metric="nope")


def test_exports_are_exact(tmp_path):
    cube = _cube([["50.125", "150"], ["100", "100"]], health=[[80, 90], [50, 60]])
    res = backtest(cube=cube, plans=[FLAT, UNIT])
    p = export_csv(result=res, path=tmp_path / "bills.csv")
    rows = list(csv.DictReader(p.open()))
    assert len(rows) == 8
    assert sum(Decimal(r["bill"]) for r in rows if r["plan"] == "unit@v1") == res.summaries["unit@v1"].revenue
    s = list(csv.DictReader(export_csv(result=res, path=tmp_path / "summary.csv", summary=True).open()))
    assert [r["plan"] for r in s] == ["flat@v1", "unit@v1"]
    pq = pytest.importorskip("pyarrow.parquet")
    t = pq.read_table(export_parquet(result=res, path=tmp_path / "bills.parquet"))
    bills = t.column("bill").to_pylist()
    assert all(isinstance(b, Decimal) for b in bills)
    assert sum(bills) == res.summaries["flat@v1"].revenue + res.summaries["unit@v1"].revenue
