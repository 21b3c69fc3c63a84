"""Horizon backtests: LTV on a hand-made two-account case, recurring vs one-time apart, cyclic extension, bands."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import numpy as np
import pytest

from cxp.pricing.core import Plan
from cxp.pricing.core.backtest import UsageCube
from cxp.pricing.core.horizon import Response, extend_cube, horizon_backtest, response_band, survival
from cxp.pricing.core.vectorised import to_fixed
from cxp.pricing.core.wtp import ElasticityFit
from cxp.pricing.errors import PricingError
from tests.pricing.test_backtest import FLAT, UNIT

MONTHS = (date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1))
HW = Plan(
    plan_id="hw",
    version=1,
    name="hw",
    currency="EUR",
    components=[
        {"kind": "one_time_sale", "id": "device", "price": "100.00"},
        {"kind": "flat_fee", "id": "c", "fee": "5"},
    ],
)


def _cube(kwh, pidx=None) -> UsageCube:
    n = len(kwh)
    return UsageCube(
        account_ids=tuple(f"a{i}" for i in range(n)),
        segments=("consumer",) * n,
        months=MONTHS,
        usage={"kwh": to_fixed(values=np.array(kwh, dtype=object), decimals=3)},
        period_index=None if pidx is None else np.array(pidx, dtype=np.int64),
    )


def test_ltv_two_accounts_by_hand():
    # a0 uses 100 kWh a month (unit bill 10.00 = flat, r = 1); a1 200 kWh (unit bill 20.00, r = 2).
    cube = _cube([["100", "100", "100"], ["200", "200", "200"]])
    resp = Response("central", elasticity=0.0, churn_elasticity=1.0, churn_base=0.1)
    monthly = 0.01
    res = horizon_backtest(
        cube=cube, plans=[FLAT, UNIT], months=3, responses=[resp], annual_discount=(1 + monthly) ** 12 - 1
    )

    def ltv(bill: float, h: float) -> float:
        return sum(bill * (1 - h) ** t / (1 + monthly) ** t for t in range(3))

    flat, unit = res.get("flat@v1", "central"), res.get("unit@v1", "central")
    # Flat: both accounts r = 1, h = 0.1: 10 · (1 + 0.9/1.01 + 0.81/1.01²) each.
    assert flat.ltv == Decimal(str(round(ltv(10, 0.1), 2))) == Decimal("26.85")
    # Unit: a0 as flat; a1 r = 2, h = 0.1 · 2 = 0.2: 20 · (1 + 0.8/1.01 + 0.64/1.01²).
    assert unit.ltv == Decimal(str(round((ltv(10, 0.1) + ltv(20, 0.2)) / 2, 2))) == Decimal("37.62")
    assert unit.total == Decimal("75.90")  # 10 · 2.71 + 20 · 2.44 undiscounted
    assert unit.revenue_delta == Decimal("75.90") - Decimal("54.20")
    assert unit.retained == pytest.approx((0.81 + 0.64) / 2)
    assert (unit.one_time, unit.recurring) == (Decimal("0.00"), unit.total)
    assert "unit@v1 earns most" in res.verdict() and "flat@v1 keeps most customers" in res.verdict()
    assert any("κ = 1.000" in a for a in res.assumptions)


def test_recurring_and_one_time_apart_and_cyclic_extension():
    # a0 starts in month 1 (buys the device in the window), a1 started three months earlier (no sale inside).
    cube = _cube([["1", "2", "3"], ["4", "5", "6"]], pidx=[[0, 1, 2], [3, 4, 5]])
    res = horizon_backtest(cube=cube, plans=[HW, FLAT], months=3)
    hw = res.get("hw@v1", "static")
    assert (hw.one_time, hw.recurring, hw.total) == (Decimal("100.00"), Decimal("30.00"), Decimal("130.00"))
    assert hw.retained == 1.0
    long = horizon_backtest(cube=cube, plans=[HW, FLAT], months=24)
    assert long.get("hw@v1", "static").one_time == Decimal("100.00")  # sold once, not once a year
    assert long.get("hw@v1", "static").recurring == Decimal("240.00") and len(long.months) == 24
    ext = extend_cube(cube=cube, months=7)
    assert ext.months[3] == date(2026, 4, 1) and ext.months[6] == date(2026, 7, 1)
    assert ext.usage["kwh"].values[:, 3].tolist() == ext.usage["kwh"].values[:, 0].tolist()
    assert ext.period_index[1].tolist() == [3, 4, 5, 6, 7, 8, 9]
    # An account that joins in month 2 takes its last active month where the repeat falls before it joined.
    late = UsageCube(
        account_ids=("x",),
        segments=("c",),
        months=MONTHS,
        usage={"kwh": to_fixed(values=np.array([["0", "7", "8"]], dtype=object), decimals=3)},
        active=np.array([[False, True, True]]),
    )
    e = extend_cube(cube=late, months=5)
    assert e.active.tolist() == [[False, True, True, True, True]]
    assert e.usage["kwh"].values[0, 3:].tolist() == [8000, 7000]


def test_response_band_and_its_direction():
    fit = ElasticityFit(elasticity=-0.5, intercept=0.0, std_error=0.1, low=-0.8, high=-0.2, n=30, r_squared=0.8)
    low, central, high = response_band(fit=fit, churn_base=0.02)
    assert (low.elasticity, central.elasticity, high.elasticity) == (-0.2, -0.5, -0.8)
    assert (low.churn_elasticity, high.churn_elasticity) == (0.2, 0.8)
    cube = _cube([["100", "100", "100"], ["300", "300", "300"]])
    res = horizon_backtest(cube=cube, plans=[FLAT, UNIT], months=12, responses=[low, central, high])
    totals = [res.get("unit@v1", s).total for s in ("low", "central", "high")]
    assert totals[0] > totals[1] > totals[2]  # stronger response to a dearer plan, less revenue
    flat = {res.get("flat@v1", s).total for s in ("low", "central", "high")}
    assert len(flat) == 1  # the baseline has r = 1 everywhere: only the base churn
    with pytest.raises(PricingError):
        response_band()
    crossing = ElasticityFit(elasticity=-0.3, intercept=0.0, std_error=0.2, low=-0.7, high=0.1, n=9, r_squared=0.2)
    assert response_band(fit=crossing)[0].elasticity == 0.0


def test_survival_is_per_active_month():
    act = np.array([[True, True, True], [False, True, True]])
    s = survival(active=act, hazard=np.array([0.5, 1.0]))
    assert s.tolist() == [[1.0, 0.5, 0.25], [0.0, 1.0, 0.0]]
