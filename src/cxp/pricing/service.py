"""Service functions of the pricing lab: load usage from the database and run the pure pricing core.

Keyword-only, typed results. Every query aggregates in SQL (`pricing.queries`); money stays exact.
Every public function raises only `PricingError` (numeric and value failures mapped onto it) or a
store exception (`cxp.store.errors`, psycopg errors mapped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import numpy as np
import psycopg
from psycopg import sql

from cxp.pricing.core.backtest import (
    NO_COST,
    BacktestResult,
    CostModel,
    DemandResponse,
    Quantiles,
    UsageCube,
    backtest,
    bill_cube,
)
from cxp.pricing.core.experiments import (
    ExperimentDesign,
    ExperimentResult,
    analyse_experiment,
    arms_by_plan,
    assign_arms,
)
from cxp.pricing.core.horizon import NO_RESPONSE, HorizonResult, Response, horizon_backtest, response_band
from cxp.pricing.core.plans import BillableMetric, MetricFilter, Plan
from cxp.pricing.core.wtp import (
    ElasticityFit,
    GaborGrangerResult,
    VanWestendorpResult,
    gabor_granger,
    gabor_granger_from_records,
    van_westendorp,
    van_westendorp_from_records,
)
from cxp.pricing.errors import PricingError, maps_numeric_errors
from cxp.pricing.examples import example_metrics, example_plans
from cxp.pricing.metrics import (
    ALL_ACCOUNTS,
    BillingPeriod,
    Cohort,
    MetricTable,
    default_usage_metric,
    fetch_rows,
    get_activity,
    get_activity_and_uptime,
    get_metric_table,
    get_metric_tables,
    list_cohort_accounts,
    resolve_metrics,
)
from cxp.pricing.queries import SURVEY_RECORDS, Level
from cxp.store.errors import mapped_errors


@maps_numeric_errors
def get_billable_metric(
    *,
    conn: psycopg.Connection,
    metric: BillableMetric,
    period: BillingPeriod,
    cohort: Cohort = ALL_ACCOUNTS,
    level: Level = "account",
    decimals: int = 3,
) -> MetricTable:
    """One billable metric per account (or device) and month, aggregated in SQL."""
    return get_metric_table(conn, metric=metric, period=period, cohort=cohort, level=level, decimals=decimals)


def _month_number(d: date) -> int:
    """Months since year 0 of `d`'s month (differences are months between)."""
    return d.year * 12 + d.month - 1


@maps_numeric_errors
def get_usage_cube(
    *,
    conn: psycopg.Connection,
    plans: Sequence[Plan],
    period: BillingPeriod,
    cohort: Cohort = ALL_ACCOUNTS,
    metrics: Sequence[BillableMetric] = (),
    extra_usage: Sequence[str] = (),
    decimals: int = 3,
    until: datetime | None = None,
    with_health: bool = True,
    with_coverage: bool = True,
) -> UsageCube:
    """Every input the plans read, per cohort account × month (plus `extra_usage` keys, e.g. value or cost metrics).

    `with_coverage`: also the share of each account-month its devices reported (heartbeat-covered hours).
    """
    accounts = list_cohort_accounts(conn, cohort=cohort, period=period)
    keys = accounts.account_ids
    usage_defs, outcome_defs, needs_uptime = resolve_metrics(plans=plans, metrics=metrics)
    by_name = {m.name: m for m in metrics}
    for k in extra_usage:
        usage_defs.setdefault(k, by_name.get(k) or default_usage_metric(key=k))

    # every metric in one call: those the same daily rollup answers are read in one scan
    wanted = {("usage", k): m for k, m in usage_defs.items()} | {("outcome", k): m for k, m in outcome_defs.items()}
    tables = get_metric_tables(conn, metrics=wanted, period=period, cohort=cohort, keys=keys, decimals=decimals,
                               until=until)
    usage = {k: tables[("usage", k)].values for k in usage_defs}
    outcomes = {k: tables[("outcome", k)].values for k in outcome_defs}
    up = activity = None
    if with_health or needs_uptime or with_coverage:  # one read gives both
        activity, up = get_activity_and_uptime(conn, period=period, cohort=cohort, keys=keys, until=until)
    uptime = up.pct if needs_uptime and up is not None else None
    coverage = None
    if with_coverage and up is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            coverage = np.where(up.exposure_hours > 0, np.minimum(up.up_hours / up.exposure_hours, 1.0), np.nan)
    months = period.month_starts
    # months since each account's first activation (UTC); an account bills the months from its first on
    first = np.array([_month_number(f.astimezone(UTC)) for f in accounts.first_activation], dtype=np.int64)
    pidx = np.array([_month_number(m) for m in months], dtype=np.int64)[None, :] - first[:, None]
    active = pidx >= 0
    if until is not None:
        # Months starting at or after the data horizon hold no recorded usage: not billed.
        active &= np.array([datetime.combine(m, time(0), UTC) < until for m in months], dtype=bool)[None, :]
    health = activity.health_proxy() if with_health and activity is not None else None
    return UsageCube(
        account_ids=keys,
        segments=accounts.segments,
        months=months,
        usage=usage,
        outcomes=outcomes,
        uptime_pct=uptime,
        active=active,
        period_index=pidx,
        devices=accounts.devices,
        health=health,
        coverage=coverage,
    )


@maps_numeric_errors
def simulate_backtest(
    *,
    conn: psycopg.Connection,
    plans: Sequence[Plan],
    period: BillingPeriod,
    cohort: Cohort = ALL_ACCOUNTS,
    baseline: str | None = None,
    theta: Decimal = Decimal("0.2"),
    metrics: Sequence[BillableMetric] = (),
    cost: CostModel = NO_COST,
    value_metric: str | None = None,
    demand: DemandResponse | None = None,
    until: datetime | None = None,
    coverage_threshold: float | None = 0.9,
    exclude_low_coverage: bool = False,
) -> BacktestResult:
    """Backtest `plans` on the cohort's recorded usage over `period` (bills side by side, vs `baseline`).

    Customer-periods whose devices reported less than `coverage_threshold` of the time are flagged (and
    left out with `exclude_low_coverage`); each plan's revenue at risk there is in its summary.
    """
    extra = [k for k in (value_metric, cost.unit_metric) if k is not None]
    cube = get_usage_cube(
        conn=conn, plans=plans, period=period, cohort=cohort, metrics=metrics, extra_usage=extra, until=until
    )
    return backtest(
        cube=cube,
        plans=plans,
        baseline=baseline,
        theta=theta,
        cost=cost,
        value_metric=value_metric,
        demand=demand,
        coverage_threshold=coverage_threshold,
        exclude_low_coverage=exclude_low_coverage,
    )


@maps_numeric_errors
def simulate_horizon(
    *,
    conn: psycopg.Connection,
    plans: Sequence[Plan],
    period: BillingPeriod,
    months: int = 12,
    cohort: Cohort = ALL_ACCOUNTS,
    baseline: str | None = None,
    metrics: Sequence[BillableMetric] = (),
    elasticity: ElasticityFit | float | None = None,
    churn_base: float = 0.01,
    annual_discount: float = 0.0,
    until: datetime | None = None,
) -> HorizonResult:
    """`plans` over a `months` horizon from the cohort's recorded usage in `period` (repeated beyond it).

    With `elasticity` (the lab's fit or a stated ε): static, low, central and high customer response.
    """
    cube = get_usage_cube(
        conn=conn, plans=plans, period=period, cohort=cohort, metrics=metrics, until=until, with_health=False
    )
    responses: tuple[Response, ...] = (NO_RESPONSE,)
    if isinstance(elasticity, ElasticityFit):
        responses += response_band(fit=elasticity, churn_base=churn_base)
    elif elasticity is not None:
        responses += response_band(elasticity=float(elasticity), churn_base=churn_base)
    return horizon_backtest(
        cube=cube, plans=plans, months=months, baseline=baseline, responses=responses, annual_discount=annual_discount
    )


_CONVERSION = BillableMetric(
    name="plan_checkout", aggregation="count", filter=MetricFilter(touchpoints=("plan_checkout",), success_only=True)
)


@maps_numeric_errors
def get_experiment_results(
    *,
    conn: psycopg.Connection,
    design: ExperimentDesign,
    plans: Sequence[Plan],
    cohort: Cohort = ALL_ACCOUNTS,
    metrics: Sequence[BillableMetric] = (),
    until: datetime | None = None,
) -> ExperimentResult:
    """Assign the cohort's accounts to the design's arms and analyse them on recorded usage.

    Proxies (documented in docs/pricing.md): usage = usage events in the window; revenue = the
    account's bills under its arm's plan over the calendar months covering the window; health = the
    rollup health proxy; conversion = a successful `plan_checkout` in the window; churn = active in the
    first month but with no active day in the last.
    """
    if design.unit != "account":
        raise PricingError("the service analyses account-level experiments; assign devices with assign_arms")
    by_key = {p.key: p for p in plans}
    arms_by_plan(design=design, plans=by_key)
    period = BillingPeriod.covering(start=design.start, end=design.end)
    arm_plans = [by_key[a.plan_key] for a in design.arms]
    uniq = list({p.key: p for p in arm_plans}.values())
    cube = get_usage_cube(conn=conn, plans=uniq, period=period, cohort=cohort, metrics=metrics, until=until)
    idx = assign_arms(design=design, unit_ids=cube.account_ids)
    revenue = np.zeros(len(cube.account_ids), dtype=np.int64)
    rule = uniq[0].rounding
    for i, p in enumerate(arm_plans):
        if p.rounding != rule or p.currency != uniq[0].currency:
            raise PricingError("arms must bill in one currency and rounding quantum")
        account_revenue = bill_cube(plan=p, cube=cube).sum(axis=1)
        revenue = np.where(idx == i, account_revenue, revenue)
    keys = cube.account_ids
    activity = get_activity(conn, period=period, cohort=cohort, keys=keys, until=until)
    usage = activity.usage.sum(axis=1).astype(np.float64)
    monthly_health = activity.health_proxy()
    seen = np.isfinite(monthly_health)
    n_seen = seen.sum(axis=1)
    health = np.where(n_seen > 0, np.where(seen, monthly_health, 0.0).sum(axis=1) / np.maximum(n_seen, 1), np.nan)
    checkouts = get_metric_table(conn, metric=_CONVERSION, period=period, cohort=cohort, keys=keys, until=until)
    converted = checkouts.values.values.sum(axis=1) > 0
    churned = (activity.active_days[:, 0] > 0) & (activity.active_days[:, -1] == 0)
    return analyse_experiment(
        design=design,
        arm_index=idx,
        usage=usage,
        revenue_quanta=revenue,
        rule=rule,
        health=health,
        converted=converted,
        churned=churned,
    )


def _survey_records(conn: psycopg.Connection, survey: str, product: str | None) -> list[dict]:
    rows = fetch_rows(conn, SURVEY_RECORDS, {"survey": survey, "product": product})
    return [{"account_id": r[0], **(r[2] or {})} for r in rows]


@maps_numeric_errors
def get_van_westendorp(
    *, conn: psycopg.Connection, product: str | None = None, survey: str = "van_westendorp"
) -> VanWestendorpResult:
    """Van Westendorp from feedback events whose `detail` holds {"survey": survey, and the four price answers}."""
    return van_westendorp(responses=van_westendorp_from_records(records=_survey_records(conn, survey, product)))


@maps_numeric_errors
def get_gabor_granger(
    *, conn: psycopg.Connection, product: str | None = None, survey: str = "gabor_granger"
) -> GaborGrangerResult:
    """Gabor–Granger from feedback events whose `detail` holds {"survey": survey, price, would_buy}."""
    return gabor_granger(answers=gabor_granger_from_records(records=_survey_records(conn, survey, product)))


@dataclass(frozen=True, slots=True)
class DataSpan:
    """First and last day with rollup data for a product (None when there is none)."""

    first_day: date | None
    last_day: date | None


@maps_numeric_errors
def get_data_span(*, conn: psycopg.Connection, product: str | None = None) -> DataSpan:
    """The days the rollups cover for `product` (all products when None)."""
    # The first and the last day along the day index, stopping at the first of the product's rows, instead of
    # min/max over all its device-days (10,000 devices × 90 days: 108 → 2 ms).
    ends = [
        "(SELECT r.day FROM rollup_daily r JOIN devices d ON d.device_key = r.device_key"
        f" WHERE %(product)s::text IS NULL OR d.product_id = %(product)s::text ORDER BY r.day {order} LIMIT 1)"
        for order in ("ASC", "DESC")
    ]
    q = sql.SQL(f"SELECT {ends[0]}, {ends[1]}")
    with mapped_errors():
        row = conn.execute(q, {"product": product}).fetchone()
    return DataSpan(row[0], row[1]) if row else DataSpan(None, None)


COMPARISON_PLANS = ("hw-connect", "bundles", "ppu-graduated", "hybrid", "outcome")


@dataclass(frozen=True, slots=True)
class ModelComparisonRow:
    """One example model's figures against the baseline, with its monthly bills binned on the shared edges."""

    plan_key: str
    name: str
    revenue: Decimal
    arpu_month: Decimal
    bill: Quantiles
    revenue_delta: Decimal
    shock_rate: float
    shock_count: int
    winners: int
    losers: int
    unchanged: int
    histogram: tuple[int, ...]  # active account-months per bin of `ModelComparison.bin_edges`


@dataclass(frozen=True, slots=True)
class ModelComparison:
    """Example revenue models backtested side by side on a product's recorded fleet (what the demo prints).

    `bin_edges`: the histogram bins [edge_k, edge_k+1) shared by every model (the last bin includes
    its upper edge). Empty `models` with a `reason` when the product has no recorded usage.
    """

    product: str
    theta: Decimal
    currency: str | None
    baseline: str | None
    first_month: date | None
    last_month: date | None
    last_day: date | None
    accounts: int
    customer_periods: int
    bin_edges: tuple[Decimal, ...]
    models: tuple[ModelComparisonRow, ...]
    reason: str | None = None


def _bill_bins(res: BacktestResult, bins: int) -> tuple[tuple[Decimal, ...], dict[str, tuple[int, ...]]]:
    """Equal-width bins (a whole number of quanta wide) over every model's active monthly bills, and counts."""
    act = res.cube.active_mask()
    values = {k: res.bills[k][act] for k in res.plan_keys}
    everything = np.concatenate([v for v in values.values()]) if values else np.zeros(0, dtype=np.int64)
    lo = min(int(everything.min(initial=0)), 0)
    hi = int(everything.max(initial=0))
    width = max(-(-(hi - lo) // bins), 1)
    edges = tuple(res.rule.from_quanta(lo + k * width) for k in range(bins + 1))
    counts = {
        k: tuple(np.bincount(np.minimum((v - lo) // width, bins - 1), minlength=bins).tolist())
        for k, v in values.items()
    }
    return edges, counts


@maps_numeric_errors
def get_model_comparison(
    *,
    conn: psycopg.Connection,
    product: str = "thermo-x1",
    theta: Decimal = Decimal("0.2"),
    bins: int = 10,
    baseline: str | None = None,
) -> ModelComparison:
    """The example revenue models backtested side by side on `product`'s recorded fleet, with bill histograms.

    `baseline`: the plan id of one of `COMPARISON_PLANS` (default: the first, the device sale).
    """
    if bins < 1:
        raise PricingError("bins must be at least 1")
    plans = [p for p in example_plans() if p.plan_id in COMPARISON_PLANS]
    base_key = None
    if baseline is not None:
        base_key = next((p.key for p in plans if p.plan_id == baseline), None)
        if base_key is None:
            raise PricingError(f"baseline {baseline!r} is not one of the compared plans {list(COMPARISON_PLANS)}")
    span = get_data_span(conn=conn, product=product)
    if span.first_day is None or span.last_day is None:
        return ModelComparison(
            product, theta, None, None, None, None, None, 0, 0, (), (), reason=f"no recorded usage for {product} yet"
        )
    until = datetime.combine(span.last_day + timedelta(days=1), time(0), UTC)
    period = BillingPeriod.covering(start=datetime.combine(span.first_day, time(0), UTC), end=until)
    res = simulate_backtest(
        conn=conn,
        plans=plans,
        period=period,
        cohort=Cohort(product=product),
        theta=theta,
        baseline=base_key,
        metrics=example_metrics(),
        until=until,
    )
    if not res.cube.active_mask().any():
        return ModelComparison(
            product,
            theta,
            None,
            None,
            period.start,
            period.month_starts[-1],
            span.last_day,
            0,
            0,
            (),
            (),
            reason=f"no active {product} accounts in the recorded span",
        )
    names = {p.key: p.name for p in plans}
    edges, counts = _bill_bins(res, bins)
    rows = []
    for key in res.plan_keys:
        s = res.summaries[key]
        rows.append(
            ModelComparisonRow(
                plan_key=key,
                name=names[key],
                revenue=s.revenue,
                arpu_month=s.arpu_month,
                bill=s.bill,
                revenue_delta=s.revenue_delta,
                shock_rate=s.shock_rate,
                shock_count=s.shock_count,
                winners=s.winners,
                losers=s.losers,
                unchanged=s.unchanged,
                histogram=counts[key],
            )
        )
    s0 = res.summaries[res.baseline]
    return ModelComparison(
        product=product,
        theta=theta,
        currency=res.currency,
        baseline=res.baseline,
        first_month=period.start,
        last_month=period.month_starts[-1],
        last_day=span.last_day,
        accounts=s0.accounts,
        customer_periods=s0.customer_periods,
        bin_edges=edges,
        models=tuple(rows),
    )


@maps_numeric_errors
def get_model_comparison_text(
    *,
    conn: psycopg.Connection,
    product: str = "thermo-x1",
    theta: Decimal = Decimal("0.2"),
    horizon_months: int = 24,
    elasticity: float = -0.3,
) -> list[str]:
    """A few plain-text lines: example revenue models side by side on the recorded fleet, then over a horizon.

    The recorded window alone mixes one-time device sales into a few months; the horizon block shows
    recurring and one-time revenue apart over `horizon_months` (recorded months repeated) with a stated
    central customer response (`elasticity`, 1 %/month base churn) and says in one line who wins on what.
    """
    cmp = get_model_comparison(conn=conn, product=product, theta=theta)
    if cmp.reason is not None:
        return [f"pricing lab: {cmp.reason}"]
    lines = [
        f"Pricing lab: {cmp.accounts} {product} accounts, {cmp.customer_periods} account-months "
        f"{cmp.first_month:%Y-%m}..{cmp.last_month:%Y-%m} (to {cmp.last_day}); baseline {cmp.baseline}, "
        f"bill shock = bill > {1 + theta}× baseline",
        f"  {'model':<18}{'revenue':>12}{'ARPU/mo':>10}{'p50 bill':>10}{'Δ revenue':>12}{'shock':>8}{'win/lose':>12}",
    ]
    for r in cmp.models:
        lines.append(
            f"  {r.plan_key:<18}{r.revenue:>12,}{r.arpu_month:>10}{r.bill.p50:>10}{r.revenue_delta:>+12,}"
            f"{r.shock_rate:>8.1%}{f'{r.winners}/{r.losers}':>12}"
        )
    lines.append(
        f"  ({cmp.currency}; usage from the rollups; one-time device sales fall in an account's first month, "
        "so a short window over-weights them: see the horizon below)"
    )
    months = (cmp.last_month.year - cmp.first_month.year) * 12 + cmp.last_month.month - cmp.first_month.month + 1
    plans = [p for p in example_plans() if p.plan_id in COMPARISON_PLANS]
    hz = simulate_horizon(
        conn=conn,
        plans=plans,
        period=BillingPeriod(cmp.first_month, months),
        months=horizon_months,
        cohort=Cohort(product=product),
        metrics=example_metrics(),
        elasticity=elasticity,
        until=datetime.combine(cmp.last_day + timedelta(days=1), time(0), UTC),
    )
    lines.append(
        f"  Over {horizon_months} months ({months} recorded, repeated; device sold once; central response "
        f"ε = {elasticity} stated, churn 1 %/month at today's price):"
    )
    lines.append(f"  {'model':<18}{'recurring':>12}{'one-time':>11}{'total':>12}{'LTV':>9}{'kept':>7}")
    for p in plans:
        f = hz.get(p.key, "central")
        lines.append(f"  {p.key:<18}{f.recurring:>12,}{f.one_time:>11,}{f.total:>12,}{f.ltv:>9,}{f.retained:>7.0%}")
    lines.append("  " + hz.verdict("central"))
    return lines


@maps_numeric_errors
def estimate_backtest_size(
    *, conn: psycopg.Connection, plans: Sequence[Plan], period: BillingPeriod, cohort: Cohort = ALL_ACCOUNTS
) -> int:
    """Account-months × plans a backtest would bill (what decides between running it now and as a job)."""
    accounts = list_cohort_accounts(conn, cohort=cohort, period=period).account_ids
    return len(accounts) * period.months * len(plans)


@dataclass(frozen=True, slots=True)
class Assignment:
    """One unit's arm in an experiment."""

    unit_id: str
    arm: str
    plan_key: str


@maps_numeric_errors
def list_experiment_assignments(
    *, conn: psycopg.Connection, design: ExperimentDesign, cohort: Cohort = ALL_ACCOUNTS
) -> list[Assignment]:
    """Every cohort account active before the design's end, with its deterministic arm."""
    if design.unit != "account":
        raise PricingError("the service assigns accounts; assign devices with pricing.core.experiments.assign_arms")
    period = BillingPeriod.covering(start=design.start, end=design.end)
    ids = list_cohort_accounts(conn, cohort=cohort, period=period).account_ids
    idx = assign_arms(design=design, unit_ids=ids)
    return [Assignment(u, design.arms[i].name, design.arms[i].plan_key) for u, i in zip(ids, idx.tolist(), strict=True)]
