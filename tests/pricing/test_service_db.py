"""Pricing on a simulated fleet in the real database: metrics vs raw SQL, backtest reconciliation, experiments, WTP."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import numpy as np
import pytest

from cxp.pricing.core import bill_period
from cxp.pricing.core.backtest import CostModel
from cxp.pricing.core.experiments import ExperimentDesign
from cxp.pricing.core.plans import BillableMetric
from cxp.pricing.examples import example_metrics, example_plans
from cxp.pricing.exports import export_csv, export_parquet
from cxp.pricing.metrics import (
    Cohort,
    get_activity,
    get_activity_and_uptime,
    get_metric_table,
    get_metric_tables,
    get_uptime,
)
from cxp.pricing.queries import HOLD_FACTOR
from cxp.pricing.service import (
    get_billable_metric,
    get_data_span,
    get_experiment_results,
    get_model_comparison_text,
    get_usage_cube,
    get_van_westendorp,
    list_experiment_assignments,
    simulate_backtest,
)

pytestmark = pytest.mark.integration

MONTH = "(date_trunc('month', {c} AT TIME ZONE 'UTC'))::date"


def _raw(conn, query: str) -> dict[tuple[str, date], float]:
    return {(k, m): float(v) for k, m, v in conn.execute(query).fetchall() if v is not None}


def _check(table, raw: dict, tol: float = 0.0011) -> None:
    seen = 0
    for i, k in enumerate(table.keys):
        for j, m in enumerate(table.months):
            got = float(table.values.decimal_at((i, j)))
            assert got == pytest.approx(raw.get((k, m), 0.0), abs=tol), (k, m)
            seen += got != 0
    assert seen > 0
    assert set(raw) <= {(k, m) for k in table.keys for m in table.months}


@pytest.mark.parametrize(
    ("metric", "raw_value", "where"),
    [
        (
            {"aggregation": "count", "filter": {"touchpoints": ["heating_cycle"]}},
            "count(*)",
            "e.kind = 'usage' AND e.touchpoint = 'heating_cycle'",
        ),
        ({"aggregation": "count"}, "count(*)", "e.kind = 'usage'"),
        ({"aggregation": "count", "filter": {"success_only": True}}, "count(*)", "e.kind = 'usage' AND e.success"),
        (
            {
                "aggregation": "sum",
                "field": "quantity",
                "filter": {"touchpoints": ["heating_cycle", "demand_response"]},
            },
            "sum(e.quantity)",
            "e.kind = 'usage' AND e.touchpoint IN ('heating_cycle', 'demand_response')",
        ),
        (
            {"aggregation": "sum", "field": "quantity", "filter": {"success_only": True}},
            "sum(e.quantity)",
            "e.kind = 'usage' AND e.success",
        ),
        ({"aggregation": "sum", "field": "duration_s"}, "sum(e.duration_s::float8)", "e.kind = 'usage'"),
        ({"aggregation": "max", "field": "latency_ms"}, "max(e.latency_ms::text::numeric)", "e.kind = 'usage'"),
        (
            {"aggregation": "unique_count", "field": "day"},
            "count(DISTINCT (e.ts AT TIME ZONE 'UTC')::date)",
            "e.kind = 'usage'",
        ),
        ({"aggregation": "unique_count", "field": "touchpoint"}, "count(DISTINCT e.touchpoint)", "e.kind = 'usage'"),
        ({"aggregation": "unique_count", "field": "device"}, "count(DISTINCT e.device_key)", "e.kind = 'usage'"),
    ],
)
def test_usage_metrics_match_raw_sql(pricing_fleet, metric, raw_value, where):
    conn = pricing_fleet.conn
    m = BillableMetric(name="m", **metric)
    table = get_billable_metric(conn=conn, metric=m, period=pricing_fleet.period)
    raw = _raw(
        conn,
        f"SELECT d.account_id, {MONTH.format(c='e.ts')}, {raw_value} FROM events e "
        f"JOIN devices d ON d.device_key = e.device_key WHERE {where} GROUP BY 1, 2",
    )
    _check(table, raw)


def test_state_metrics_match_raw_sql(pricing_fleet):
    conn, period = pricing_fleet.conn, pricing_fleet.period
    beats = get_billable_metric(
        conn=conn, metric=BillableMetric(name="b", aggregation="count", source="state"), period=period, level="device"
    )
    _check(
        beats,
        _raw(
            conn,
            f"SELECT d.device_id, {MONTH.format(c='s.ts')}, count(*) FROM device_state s "
            "JOIN devices d ON d.device_key = s.device_key GROUP BY 1, 2",
        ),
    )
    latest = get_billable_metric(
        conn=conn,
        metric=BillableMetric(name="e", aggregation="latest", source="state", field="energy_wh"),
        period=period,
    )
    _check(
        latest,
        _raw(
            conn,
            f"""
        SELECT account_id, month, sum(v) FROM (
            SELECT DISTINCT ON (s.device_key, {MONTH.format(c="s.ts")}) d.account_id,
                   {MONTH.format(c="s.ts")} AS month, s.energy_wh AS v
            FROM device_state s JOIN devices d ON d.device_key = s.device_key WHERE s.energy_wh IS NOT NULL
            ORDER BY s.device_key, {MONTH.format(c="s.ts")}, s.ts DESC) x GROUP BY 1, 2""",
        ),
    )
    peak = get_billable_metric(
        conn=conn,
        metric=BillableMetric(name="p", aggregation="max", source="state", field="energy_wh"),
        period=period,
        level="device",
    )
    _check(
        peak,
        _raw(
            conn,
            f"SELECT d.device_id, {MONTH.format(c='s.ts')}, max(s.energy_wh) FROM device_state s "
            "JOIN devices d ON d.device_key = s.device_key GROUP BY 1, 2",
        ),
    )


def test_time_weighted_sum_matches_a_python_integration(pricing_fleet):
    conn, period = pricing_fleet.conn, pricing_fleet.period
    m = BillableMetric(name="bh", aggregation="time_weighted_sum", source="state", field="battery_pct")
    table = get_billable_metric(conn=conn, metric=m, period=period, level="device", decimals=6)
    devs = conn.execute(
        "SELECT d.device_id, d.device_key, p.heartbeat_interval_s FROM devices d JOIN products p USING (product_id) "
        "WHERE EXISTS (SELECT 1 FROM device_state s WHERE s.device_key = d.device_key AND s.battery_pct IS NOT NULL) "
        "ORDER BY 1 LIMIT 3"
    ).fetchall()
    assert devs
    for device_id, key, interval in devs:
        rows = conn.execute(
            "SELECT ts, battery_pct FROM device_state WHERE device_key = %s AND battery_pct IS NOT NULL ORDER BY ts",
            (key,),
        ).fetchall()
        hold = timedelta(seconds=interval * HOLD_FACTOR)
        want: dict[date, float] = {}
        for i, (ts, v) in enumerate(rows):
            end = min(rows[i + 1][0], ts + hold) if i + 1 < len(rows) else ts + hold
            end = min(end, period.end_at())
            t = ts
            while t < end:  # split at month boundaries
                nxt = datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=UTC)
                stop = min(end, nxt)
                mo = date(t.year, t.month, 1)
                want[mo] = want.get(mo, 0.0) + v * (stop - t).total_seconds() / 3600
                t = stop
        i = table.keys.index(device_id)
        for j, mo in enumerate(table.months):
            assert float(table.values.decimal_at((i, j))) == pytest.approx(want.get(mo, 0.0), rel=1e-6, abs=1e-3)


def test_account_level_adds_up_device_level(pricing_fleet):
    conn, period = pricing_fleet.conn, pricing_fleet.period
    m = BillableMetric(name="kwh", aggregation="sum", field="quantity", filter={"touchpoints": ["heating_cycle"]})
    acc = get_billable_metric(conn=conn, metric=m, period=period)
    dev = get_billable_metric(conn=conn, metric=m, period=period, level="device")
    owner = dict(conn.execute("SELECT device_id, account_id FROM devices").fetchall())
    sums: dict[str, np.ndarray] = {}
    for i, d in enumerate(dev.keys):
        sums.setdefault(owner[d], np.zeros(2, dtype=np.int64))
        sums[owner[d]] += dev.values.values[i]
    for i, a in enumerate(acc.keys):
        assert np.abs(acc.values.values[i] - sums[a]).max() <= 2  # each side rounded to 0.001 once


@pytest.mark.parametrize("level", ["account", "device"])
def test_metrics_read_together_equal_each_read_alone(pricing_fleet, level):
    conn, period = pricing_fleet.conn, pricing_fleet.period
    metrics = {
        "cycles": BillableMetric(name="cycles", aggregation="count", filter={"touchpoints": ["heating_cycle"]}),
        "ok": BillableMetric(name="ok", aggregation="count", filter={"touchpoints": ["heating_cycle"],
                                                                       "success_only": True}),
        "kwh": BillableMetric(name="kwh", aggregation="sum", field="quantity",
                              filter={"touchpoints": ["heating_cycle", "demand_response"]}),
        "dr_seconds": BillableMetric(name="dr_seconds", aggregation="sum", field="duration_s",
                                     filter={"touchpoints": ["demand_response"]}),
        "uses": BillableMetric(name="uses", aggregation="count"),
        "quantity": BillableMetric(name="quantity", aggregation="sum", field="quantity"),
        "max_latency": BillableMetric(name="max_latency", aggregation="max", field="latency_ms"),
        "days": BillableMetric(name="days", aggregation="unique_count", field="day"),
    }
    keys = get_billable_metric(conn=conn, metric=metrics["uses"], period=period, level=level).keys
    together = get_metric_tables(conn, metrics=metrics, period=period, keys=keys, level=level)
    assert list(together) == list(metrics)
    for name, metric in metrics.items():
        alone = get_metric_table(conn, metric=metric, period=period, keys=keys, level=level)
        assert together[name].keys == alone.keys and together[name].months == alone.months
        assert np.array_equal(together[name].values.values, alone.values.values), name
        assert together[name].values.decimals == alone.values.decimals
        assert together[name].values.values.any(), name


def test_uptime_and_activity_are_sane(pricing_fleet):
    conn, period = pricing_fleet.conn, pricing_fleet.period
    up = get_uptime(conn=conn, period=period)
    pct = up.pct.values / 1000
    assert ((pct >= 0) & (pct <= 100)).all() and np.median(pct) > 90
    act = get_activity(conn=conn, period=period)
    h = act.health_proxy()
    assert np.nanmin(h) >= 0 and np.nanmax(h) <= 100
    assert (act.active_days <= act.exposure_days).all()


@pytest.mark.parametrize("level", ["account", "device"])
def test_activity_and_uptime_from_one_read_equal_each_read_alone(pricing_fleet, level):
    conn, period = pricing_fleet.conn, pricing_fleet.period
    until = datetime.combine(period.month_starts[-1] + timedelta(days=9), time(0), UTC)  # a horizon mid-month
    up = get_uptime(conn=conn, period=period, level=level, until=until)
    act = get_activity(conn=conn, period=period, level=level, until=until)
    keys = sorted(set(up.keys) | set(act.keys) | {"no-such-key"})
    both_act, both_up = get_activity_and_uptime(conn, period=period, keys=keys, level=level, until=until)
    alone_up = get_uptime(conn=conn, period=period, level=level, keys=keys, until=until)
    alone_act = get_activity(conn=conn, period=period, level=level, keys=keys, until=until)
    assert both_up.keys == alone_up.keys == both_act.keys == tuple(keys)
    for f in ("up_hours", "exposure_hours"):
        assert np.array_equal(getattr(both_up, f), getattr(alone_up, f)), f
    assert np.array_equal(both_up.pct.values, alone_up.pct.values) and (both_up.up_hours > 0).any()
    for f in ("usage", "successes", "active_days", "exposure_days"):
        assert np.array_equal(getattr(both_act, f), getattr(alone_act, f)), f
    assert both_act.usage.any() and (both_up.pct.values < 100_000).any()


def test_uptime_pct_is_the_exact_ratio_of_the_hours_rounded_half_even(pricing_fleet):
    conn, period = pricing_fleet.conn, pricing_fleet.period
    up = get_uptime(conn=conn, period=period, level="device")
    checked = 0
    for (i, j), got in np.ndenumerate(up.pct.values):
        # the hours are exact 6-decimal numbers; repr gives back those decimals
        covered, exposed = Decimal(repr(float(up.up_hours[i, j]))), Decimal(repr(float(up.exposure_hours[i, j])))
        want = Decimal(100) if exposed == 0 else min(covered / exposed, Decimal(1)) * 100
        assert got == int(want.quantize(Decimal("0.001")).scaleb(3)), (up.keys[i], up.months[j])
        checked += 0 < covered < exposed
    assert checked > 0


def test_activity_counts_every_use_and_active_day_of_the_month(pricing_fleet):
    conn, period = pricing_fleet.conn, pricing_fleet.period
    act = get_activity(conn=conn, period=period)
    rows = conn.execute(
        "SELECT d.account_id, date_trunc('month', r.day)::date, sum(r.usage_count), sum(r.success_count),"
        " count(*) FILTER (WHERE r.usage_count > 0) FROM rollup_daily r JOIN devices d USING (device_key)"
        " WHERE r.day >= %s AND r.day < %s AND d.account_id IS NOT NULL GROUP BY 1, 2",
        (period.start, period.end),
    ).fetchall()
    expected = {(k, m): (u, ok, days) for k, m, u, ok, days in rows}
    seen = 0
    for i, k in enumerate(act.keys):
        for j, m in enumerate(act.months):
            want = expected.get((k, m), (0, 0, 0))
            assert (act.usage[i, j], act.successes[i, j], act.active_days[i, j]) == want, (k, m)
            seen += want[2] > 0
    assert seen > 0


@pytest.mark.parametrize("level", ["account", "device"])
def test_uptime_from_the_kept_covers_equals_the_raw_heartbeats(pricing_fleet, level):
    conn, period = pricing_fleet.conn, pricing_fleet.period
    kept = get_uptime(conn=conn, period=period, level=level)
    raw = get_uptime(conn=conn, period=period, level=level, source="raw")
    assert kept.keys == raw.keys and len(kept.keys) > 0
    assert np.abs(kept.up_hours - raw.up_hours).max() <= 2e-6  # both rounded to 6 decimals, the raw side in float
    assert (kept.up_hours > 0).any() and np.array_equal(kept.exposure_hours, raw.exposure_hours)
    assert np.abs(kept.pct.values - raw.pct.values).max() <= 1


def test_backtest_on_the_fleet_reconciles_with_per_account_bills(pricing_fleet, tmp_path):
    conn, period = pricing_fleet.conn, pricing_fleet.period
    plans = list(example_plans())
    twin = plans[2].model_copy(update={"plan_id": "graduated-twin"})
    cohort = Cohort(product="thermo-x1")
    cost = CostModel(per_unit=Decimal("0.002"), unit_metric="heating_kwh", per_device_month=Decimal("0.40"))
    res = simulate_backtest(
        conn=conn,
        plans=[plans[2], twin, *plans[:2], *plans[3:]],
        period=period,
        cohort=cohort,
        metrics=example_metrics(),
        value_metric="heating_kwh",
        cost=cost,
    )
    assert res.baseline == plans[2].key
    s = res.summaries[twin.key]
    assert (s.shock_count, s.winners, s.losers, s.revenue_delta) == (0, 0, 0, 0)
    cube = get_usage_cube(
        conn=conn, plans=plans, period=period, cohort=cohort, metrics=example_metrics(), extra_usage=["heating_kwh"]
    )
    assert cube.account_ids == res.cube.account_ids and len(cube.account_ids) > 3
    assert cube.usage["heating_kwh"].values.sum() > 0
    act = cube.active_mask()
    for plan in plans:
        total = Decimal(0)
        for i, a in enumerate(cube.account_ids):
            for j, mo in enumerate(cube.months):
                if not act[i, j]:
                    continue
                b = bill_period(
                    plan=plan,
                    usage={k: v.decimal_at((i, j)) for k, v in cube.usage.items()},
                    outcomes={k: v.decimal_at((i, j)) for k, v in cube.outcomes.items()},
                    uptime_pct=cube.uptime_pct.decimal_at((i, j)),
                    period_index=int(cube.period_index[i, j]),
                    account_id=a,
                ).total
                assert b == res.bill(plan.key, a, mo)
                total += b
        assert total == res.summaries[plan.key].revenue == sum(res.account_totals(plan.key).values())
    assert {e.segment for e in res.experience} <= {"consumer", "smb"} and res.experience
    rows = res.rows()
    assert sum(r["bill"] for r in rows) == sum(res.summaries[k].revenue for k in res.plan_keys)
    export_csv(result=res, path=tmp_path / "b.csv")
    pq = pytest.importorskip("pyarrow.parquet")
    assert pq.read_table(export_parquet(result=res, path=tmp_path / "b.parquet")).num_rows == len(rows)


def test_model_comparison_text(pricing_fleet):
    lines = get_model_comparison_text(conn=pricing_fleet.conn)
    assert len(lines) >= 7 and "thermo-x1" in lines[0]
    assert any(line.strip().startswith("hybrid@v1") for line in lines)


def test_experiment_on_the_fleet(pricing_fleet):
    plans = example_plans()
    design = ExperimentDesign(
        experiment_id="price-test",
        salt="pt-1",
        arms=[{"name": "control", "plan_key": plans[0].key}, {"name": "hybrid", "plan_key": plans[4].key}],
        start=datetime(2026, 1, 1, tzinfo=UTC),
        end=datetime(2026, 3, 1, tzinfo=UTC),
    )
    res = get_experiment_results(
        conn=pricing_fleet.conn,
        design=design,
        plans=plans,
        cohort=Cohort(product="thermo-x1"),
        metrics=example_metrics(),
    )
    assert sum(a.units for a in res.arms) > 3
    assert {d.metric for d in res.differences} >= {"usage", "revenue_per_unit", "health", "conversion", "churn"}
    assert 0 <= res.sample_ratio.p_value <= 1
    assigned = list_experiment_assignments(conn=pricing_fleet.conn, design=design, cohort=Cohort(product="thermo-x1"))
    assert [sum(a.arm == arm.arm for a in assigned) for arm in res.arms] == [arm.units for arm in res.arms]


def test_van_westendorp_from_feedback_events(pricing_fleet):
    conn = pricing_fleet.conn
    key = conn.execute("SELECT min(device_key) FROM devices").fetchone()[0]
    with conn.transaction():
        for i in range(1, 11):
            detail = {
                "survey": "van_westendorp_test",
                "too_cheap": i,
                "cheap": i + 2,
                "expensive": i + 5,
                "too_expensive": i + 7,
            }
            conn.execute(
                "INSERT INTO events (device_key, ts, seq, kind, detail) VALUES (%s, %s, %s, 'feedback', %s)",
                (key, datetime(2026, 1, 10, tzinfo=UTC) + timedelta(minutes=i), 10**12 + i, json.dumps(detail)),
            )
    res = get_van_westendorp(conn=conn, survey="van_westendorp_test")
    assert res.n == 10 and res.optimal_price == pytest.approx(9)
    assert res.acceptable_range == (pytest.approx(8), pytest.approx(10))


def test_json_state_metric_and_cohort_filters(pricing_fleet):
    conn, period = pricing_fleet.conn, pricing_fleet.period
    m = BillableMetric(name="t", aggregation="max", source="state", field="metrics.temperature_c")
    table = get_billable_metric(conn=conn, metric=m, period=period, level="device")
    raw = _raw(
        conn,
        f"SELECT d.device_id, {MONTH.format(c='s.ts')}, max((s.metrics ->> 'temperature_c')::numeric) "
        "FROM device_state s JOIN devices d ON d.device_key = s.device_key GROUP BY 1, 2",
    )
    _check(table, raw)
    count = BillableMetric(name="n", aggregation="count")
    everyone = get_billable_metric(conn=conn, metric=count, period=period)
    smb = get_billable_metric(conn=conn, metric=count, period=period, cohort=Cohort(segment="smb"))
    segments = dict(conn.execute("SELECT account_id, segment FROM accounts").fetchall())
    assert smb.keys and all(segments[k] == "smb" for k in smb.keys)
    assert set(smb.keys) < set(everyone.keys)
    pick = everyone.keys[:2]
    some = get_billable_metric(conn=conn, metric=count, period=period, cohort=Cohort(account_ids=tuple(pick)))
    assert some.keys == pick
    assert (some.values.values == everyone.values.values[:2]).all()


def test_empty_cohort_backtests_to_zero(pricing_fleet):
    res = simulate_backtest(conn=pricing_fleet.conn, plans=example_plans(), period=pricing_fleet.period,
                            cohort=Cohort(product="no-such-product"), metrics=example_metrics())
    s = res.summaries[res.baseline]
    assert (s.accounts, s.customer_periods, s.revenue, s.cost) == (0, 0, Decimal("0.00"), Decimal("0.00"))


def test_the_data_span_is_the_first_and_last_rollup_day_of_the_product(pricing_fleet):
    conn = pricing_fleet.conn
    products = [r[0] for r in conn.execute("SELECT DISTINCT product_id FROM devices ORDER BY 1").fetchall()]
    for product in [*products, None, "no-such-product"]:
        expected = conn.execute(
            "SELECT min(r.day), max(r.day) FROM rollup_daily r JOIN devices d USING (device_key)"
            " WHERE %(p)s::text IS NULL OR d.product_id = %(p)s", {"p": product}).fetchone()
        span = get_data_span(conn=conn, product=product)
        assert (span.first_day, span.last_day) == expected
    assert get_data_span(conn=conn, product=products[0]).first_day is not None
