"""Pricing decisions on the real store: bill coverage (half-month offline ≠ light user), experiment design."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pytest

from cxp.pricing.examples import example_metrics
from cxp.pricing.metrics import Cohort
from cxp.pricing.service import get_usage_cube, simulate_backtest
from cxp.store.db import connect
from cxp.store.rollups import refresh_all_pending
from tests.pricing.test_backtest import FLAT
from tests.pricing.test_solve import UNIT

pytestmark = pytest.mark.integration

OFF_FROM, OFF_TO = datetime(2026, 1, 16, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)


def test_half_month_offline_device_is_flagged_not_a_light_user(pricing_fleet, stack):
    period, cohort = pricing_fleet.period, Cohort(product="thermo-x1")
    single = pricing_fleet.conn.execute(
        "SELECT d.account_id, min(d.device_key) FROM devices d WHERE d.product_id = 'thermo-x1' "
        "AND d.account_id IS NOT NULL GROUP BY 1 HAVING count(*) = 1 AND max(d.activated_at) < '2026-01-02' ORDER BY 1"
    ).fetchall()
    assert len(single) >= 3
    account, device_key = single[0]
    # The device goes silent for the second half of January: no heartbeats, no usage; the rollups of those days
    # (daily, covers, months) recomputed by the refresh. Rolled back afterwards.
    with connect(stack.db, autocommit=False) as conn, conn.transaction(force_rollback=True):
        for table in ("device_state", "events"):
            conn.execute(f"DELETE FROM {table} WHERE device_key = %s AND ts >= %s AND ts < %s",
                         (device_key, OFF_FROM, OFF_TO))
        conn.execute("INSERT INTO rollup_dirty (device_key, day) SELECT %s, g::date"
                     " FROM generate_series(%s::date, %s::date - 1, interval '1 day') g",
                     (device_key, OFF_FROM, OFF_TO))
        refresh_all_pending(conn)
        res = simulate_backtest(conn=conn, plans=[FLAT, UNIT], period=period, cohort=cohort, metrics=example_metrics())
        cube = res.cube
        i = cube.account_ids.index(account)
        assert 0.4 < cube.coverage[i, 0] < 0.6  # about half of January reported
        assert cube.coverage[i, 1] > 0.9 and not res.low_coverage[i, 1]  # February is whole again
        assert res.low_coverage[i, 0]
        # The lightest fully covered January user is a light user, not a gap: not flagged.
        kwh = cube.usage["heating_kwh"].values[:, 0]
        covered = np.flatnonzero((cube.coverage[:, 0] >= 0.9) & cube.active_mask()[:, 0])
        light = covered[np.argmin(kwh[covered])]
        assert kwh[light] < kwh[i] * 4 and not res.low_coverage[light, 0]
        unit = res.summaries[UNIT.key]
        assert unit.low_coverage_periods == int(res.low_coverage.sum()) >= 1
        assert unit.low_coverage_revenue > 0 and unit.coverage_shortfall > 0
        rows = [r for r in res.rows() if r["account_id"] == account and r["plan"] == UNIT.key]
        assert rows[0]["low_coverage"] and not rows[1]["low_coverage"]
        # Excluded, the gap month leaves the figures.
        ex = simulate_backtest(
            conn=conn,
            plans=[FLAT, UNIT],
            period=period,
            cohort=cohort,
            metrics=example_metrics(),
            exclude_low_coverage=True,
        )
        assert ex.summaries[UNIT.key].customer_periods == unit.customer_periods - unit.low_coverage_periods
    # Without the gap, the same account reports (nearly) all of January.
    whole = get_usage_cube(
        conn=pricing_fleet.conn, plans=[UNIT], period=period, cohort=cohort, metrics=example_metrics()
    )
    assert whole.coverage[whole.account_ids.index(account), 0] > 0.9


def test_experiment_plan_from_recorded_usage(pricing_fleet):
    from cxp.pricing.core.design import n_for_mean
    from cxp.pricing.decisions import get_experiment_plan
    from cxp.pricing.service import get_usage_cube

    kwh = next(m for m in example_metrics() if m.name == "heating_kwh")
    plan = get_experiment_plan(
        conn=pricing_fleet.conn,
        metric=kwh,
        period=pricing_fleet.period,
        cohort=Cohort(product="thermo-x1"),
        mde_relative=0.5,
    )
    cube = get_usage_cube(
        conn=pricing_fleet.conn,
        plans=(),
        period=pricing_fleet.period,
        cohort=Cohort(product="thermo-x1"),
        metrics=(kwh,),
        extra_usage=("heating_kwh",),
    )
    # The spread over the chosen duration is the sample SD of the accounts' monthly means, computed here by hand.
    k = plan.duration_months or 2
    act = cube.active_mask()[:, :k]
    v = cube.usage["heating_kwh"].values[:, :k] / 1000.0
    means = (np.where(act, v, 0).sum(axis=1) / np.maximum(act.sum(axis=1), 1))[act.any(axis=1)]
    assert plan.sd == pytest.approx(float(np.std(means, ddof=1)))
    assert plan.n_per_arm == n_for_mean(mde=plan.mde, sd=plan.sd, alpha=0.05, power=0.8)
    assert plan.available_units == len(cube.account_ids) and plan.guardrail_mde is not None


def test_demo_comparison_reads_over_a_horizon_with_device_sales_apart(pricing_fleet):
    from cxp.pricing.service import get_model_comparison_text

    lines = get_model_comparison_text(conn=pricing_fleet.conn, horizon_months=24)
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("Over 24 months ("))
    rows = {line.split()[0]: line.split()[1:] for line in lines[start + 2 : start + 7]}
    assert set(rows) == {"hw-connect@v1", "bundles@v1", "ppu-graduated@v1", "hybrid@v1", "outcome@v1"}
    # Only the device-sale plan has one-time revenue; recurring + one-time = total on every row.
    for key, (recurring, one_time, total, *_rest) in rows.items():
        r, o, t = (Decimal(x.replace(",", "")) for x in (recurring, one_time, total))
        assert r + o == t and (o > 0) == (key == "hw-connect@v1")
    assert lines[-1].strip().startswith("Over 24 months (central response):") and "earns most" in lines[-1]
