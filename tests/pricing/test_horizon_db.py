"""Horizon backtest from the recorded fleet: 24 months, one-time sales once, a response band ordered."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cxp.pricing.examples import example_metrics, example_plans
from cxp.pricing.metrics import Cohort
from cxp.pricing.service import simulate_horizon

pytestmark = pytest.mark.integration


def test_two_year_horizon_on_the_fleet(pricing_fleet):
    plans = {p.plan_id: p for p in example_plans()}
    hw, grad = plans["hw-connect"], plans["ppu-graduated"]
    res = simulate_horizon(
        conn=pricing_fleet.conn,
        plans=[hw, grad],
        period=pricing_fleet.period,
        months=24,
        cohort=Cohort(product="thermo-x1"),
        metrics=example_metrics(),
        elasticity=-0.4,
        churn_base=0.01,
    )
    assert len(res.months) == 24 and res.baseline == hw.key
    # Each account's first activation month relative to 2026-01 (negative: it started before the window).
    starts = [
        int(r[0])
        for r in pricing_fleet.conn.execute(
            "SELECT (extract(year FROM min(activated_at) AT TIME ZONE 'UTC') - 2026) * 12 "
            "+ extract(month FROM min(activated_at) AT TIME ZONE 'UTC') - 1 FROM devices "
            "WHERE product_id = 'thermo-x1' AND account_id IS NOT NULL GROUP BY account_id"
        ).fetchall()
    ]
    static = res.get(hw.key, "static")
    # The device is sold once, to accounts starting inside the recorded window, never again over 24 months.
    assert static.one_time == Decimal("149.00") * sum(1 for s in starts if s >= 0) > 0
    assert static.recurring == Decimal("2.99") * sum(24 - max(s, 0) for s in starts)
    for f in res.figures:
        assert f.recurring + f.one_time == f.total and f.ltv > 0
    g = [res.get(grad.key, s) for s in ("static", "low", "central", "high")]
    # Static: no churn. With a response, the baseline keeps the base churn in every band; the cheaper plan
    # (per recurring month) keeps more customers the stronger the response, the dearer one fewer.
    assert g[0].retained == 1.0
    base = {res.get(hw.key, s).retained for s in ("low", "central", "high")}
    assert len(base) == 1 and 0 < base.pop() < 1
    cheaper = g[0].recurring < static.recurring
    order = [x.retained for x in g[1:]]
    assert order == sorted(order, reverse=not cheaper) and order[0] != order[2]
    assert "Over 24 months (central response)" in res.verdict()
