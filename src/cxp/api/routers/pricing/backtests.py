"""Backtests: plans billed on a cohort's recorded usage, in the request when small, as a job when large.

Backtests of at most `api.sync_backtest_limit` account-months × plans run in the request (200);
larger ones run as a job (202, `Location: /v1/pricing/jobs/{id}`); above `api.max_backtest_size` they
are refused at once (422 naming the limit).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from cxp.analytics import service as analytics
from cxp.analytics.query import AnalyticsQuery
from cxp.api.deps import HeavyConnDep, JobsDep, PricingKey, SettingsDep
from cxp.api.errors import ErrorDetail, NotFound, Unprocessable
from cxp.api.jobs import JobFn, Progress
from cxp.api.routers.pricing.backtest_schemas import (
    BILL_COLUMNS,
    BacktestIn,
    BacktestReport,
    CohortOut,
    ExperienceRiskOut,
    PeriodOut,
    PlanRef,
    PlanSummaryOut,
    SegmentExperienceOut,
)
from cxp.api.routers.pricing.common import ERR_404, check_text
from cxp.api.routers.pricing.jobs import JOB_KIND, JobOut, job_location, job_out
from cxp.api.schemas import CSV_RESPONSES, FormatQuery, csv_response
from cxp.pricing import repository as plan_store
from cxp.pricing import service
from cxp.pricing.core.backtest import NO_COST, BacktestResult, CostModel, DemandResponse
from cxp.pricing.core.experience import experience_risk
from cxp.pricing.core.plans import BillableMetric, Plan
from cxp.pricing.examples import example_metrics
from cxp.pricing.exports import bill_tuples
from cxp.pricing.metrics import BillingPeriod, Cohort
from cxp.store import job_results

router = APIRouter()


@dataclass(frozen=True)
class BacktestSpec:
    """A backtest request resolved against the store: everything `simulate_backtest` needs."""

    plans: tuple[Plan, ...]
    period: BillingPeriod
    cohort: Cohort
    baseline: str
    theta: Decimal
    metrics: tuple[BillableMetric, ...]
    cost: CostModel
    value_metric: str | None
    demand: DemandResponse | None
    until: datetime | None
    coverage_threshold: float | None = 0.9
    exclude_low_coverage: bool = False
    experience_risk: bool = False

    def run(self, conn: psycopg.Connection) -> BacktestResult:
        """Bill every plan on the recorded usage."""
        return service.simulate_backtest(
            conn=conn, plans=self.plans, period=self.period, cohort=self.cohort, baseline=self.baseline,
            theta=self.theta, metrics=self.metrics, cost=self.cost, value_metric=self.value_metric,
            demand=self.demand, until=self.until, coverage_threshold=self.coverage_threshold,
            exclude_low_coverage=self.exclude_low_coverage)


def _resolve_plans(conn: psycopg.Connection, items: list[PlanRef | Plan]) -> list[Plan]:
    plans = []
    for i, item in enumerate(items):
        if isinstance(item, Plan):
            plans.append(item)
            continue
        stored = plan_store.get_plan(conn, plan_id=item.plan_id, version=item.version)
        if stored is None:
            what = f"version {item.version} of plan" if item.version else "plan"
            raise NotFound(f"no {what} {item.plan_id!r} (plans[{i}])",
                           details=[ErrorDetail(loc=["body", "plans", i], message=f"no {what} {item.plan_id!r}")])
        plans.append(stored.plan)
    keys = [p.key for p in plans]
    if len(set(keys)) != len(keys):
        raise Unprocessable(f"each plan may appear once, got {keys}")
    return plans


def _baseline(plans: list[Plan], wanted: str | None) -> str:
    if wanted is None:
        return plans[0].key
    keys = [p.key for p in plans]
    if wanted in keys:
        return wanted
    by_id = [p.key for p in plans if p.plan_id == wanted]
    if len(by_id) == 1:
        return by_id[0]
    raise Unprocessable(f"baseline {wanted!r} is not one of the plans {keys}",
                        details=[ErrorDetail(loc=["body", "baseline"], message=f"not one of {keys}")])


def _metrics(body: BacktestIn, plans: list[Plan]) -> tuple[BillableMetric, ...]:
    given = list(body.metrics)
    if body.example_metrics:
        defined = {m.name for m in given} | {m.name for p in plans for m in p.metrics}
        given += [m for m in example_metrics() if m.name not in defined]
    return tuple(given)


def _spec(conn: psycopg.Connection, body: BacktestIn) -> BacktestSpec:
    check_text(body.model_dump(mode="json"), ["body"])
    plans = _resolve_plans(conn, body.plans)
    cost = NO_COST if body.cost is None else CostModel(body.cost.per_unit, body.cost.unit_metric,
                                                       body.cost.per_device_month)
    demand = None if body.demand is None else DemandResponse(
        body.demand.elasticity, tuple(body.demand.keys) if body.demand.keys is not None else None)
    return BacktestSpec(plans=tuple(plans), period=body.period.period(), cohort=body.cohort.cohort(),
                        baseline=_baseline(plans, body.baseline), theta=body.theta, metrics=_metrics(body, plans),
                        cost=cost, value_metric=body.value_metric, demand=demand, until=body.period.until(),
                        coverage_threshold=body.coverage_threshold, exclude_low_coverage=body.exclude_low_coverage,
                        experience_risk=body.experience_risk)


def account_health(conn: psycopg.Connection, *, cohort: Cohort, period: BillingPeriod) -> dict[str, float]:
    """Each account's mean weekly Experience Health Score over `period` (analytics; accounts without one left out)."""
    query = AnalyticsQuery(product=cohort.product, segment=cohort.segment, start=period.start,
                           end=period.end - timedelta(days=1))
    report = analytics.get_health(conn=conn, query=query, level="account", grain="week")
    scores: dict[str, list[float]] = {}
    for s in report.scores:
        if s.score is not None:
            scores.setdefault(s.entity_id, []).append(s.score)
    return {a: sum(v) / len(v) for a, v in scores.items()}


def _risk(conn: psycopg.Connection, spec: BacktestSpec, result: BacktestResult) -> list[ExperienceRiskOut] | None:
    if not spec.experience_risk:
        return None
    health = account_health(conn, cohort=spec.cohort, period=spec.period)
    return [ExperienceRiskOut.model_validate(r) for r in experience_risk(result=result, health=health)]


def _report(spec: BacktestSpec, result: BacktestResult,
            risk: list[ExperienceRiskOut] | None = None) -> BacktestReport:
    names = {p.key: p.name for p in spec.plans}
    summaries = []
    for key in result.plan_keys:
        summary = result.summaries[key]
        fields = {f: getattr(summary, f) for f in PlanSummaryOut.model_fields if hasattr(summary, f)}
        summaries.append(PlanSummaryOut.model_validate({**fields, "name": names[key],
                                                        "baseline": key == result.baseline}))
    cohort = spec.cohort
    cube = result.cube
    return BacktestReport(
        baseline=result.baseline, plan_keys=list(result.plan_keys), currency=result.currency,
        quantum=result.rule.quantum, theta=result.theta,
        period=PeriodOut(first_month=spec.period.first_month, months=spec.period.months,
                         month_starts=list(spec.period.month_starts), until=spec.until),
        cohort=CohortOut(product=cohort.product, segment=cohort.segment,
                         account_ids=list(cohort.account_ids) if cohort.account_ids is not None else None),
        accounts=len(cube.account_ids), size=len(cube.account_ids) * len(cube.months) * len(result.plan_keys),
        value_metric=spec.value_metric, elasticity=result.elasticity, summaries=summaries,
        experience=[SegmentExperienceOut.model_validate(e) for e in result.experience], experience_risk=risk)


def _backtest_job(spec: BacktestSpec) -> JobFn:
    def run(conn: psycopg.Connection, job_id: UUID, progress: Progress) -> dict[str, Any]:
        result = spec.run(conn)
        risk = _risk(conn, spec, result)
        total = int(result.cube.active_mask().sum()) * len(result.plan_keys)  # one bill per active account-month
        progress(0, total)
        count = job_results.write_bills(conn, job_id=job_id, plan_keys=result.plan_keys, rows=bill_tuples(result),
                                        progress=lambda done: progress(done, total))
        progress(count, count)
        return {"report": _report(spec, result, risk).model_dump(mode="json"), "bills": count}

    return run


@router.post(
    "/backtests",
    response_model=BacktestReport,
    summary="Backtest plans on recorded usage (in the request, or as a job when large)",
    responses={**CSV_RESPONSES, 202: {"model": JobOut, "description": "Too large to run now: queued as a job",
                                "headers": {"Location": {"schema": {"type": "string"}, "description": "The job"}}},
               **ERR_404},
)
def create_backtest(
    key: PricingKey,
    conn: HeavyConnDep,
    settings: SettingsDep,
    jobs: JobsDep,
    body: BacktestIn,
    format: FormatQuery = "json",
) -> BacktestReport | Response:
    """Bills every account-month under each plan; `format=csv` gives the per-account bills instead.

    Size = cohort accounts × months × plans; above `api.sync_backtest_limit` the backtest runs as a
    job: 202 with the job record and `Location`; poll `GET /v1/pricing/jobs/{id}`.
    """
    spec = _spec(conn, body)
    size = service.estimate_backtest_size(conn=conn, plans=spec.plans, period=spec.period, cohort=spec.cohort)
    if size > settings.api.max_backtest_size:
        raise Unprocessable(
            f"backtest size {size:,} (accounts × months × plans) exceeds the limit api.max_backtest_size ="
            f" {settings.api.max_backtest_size:,}; narrow the cohort, the period or the plans",
            details=[ErrorDetail(loc=["body"], message=f"size {size} > api.max_backtest_size")])
    if size > settings.api.sync_backtest_limit:
        request = {**body.model_dump(mode="json"), "plan_keys": [p.key for p in spec.plans], "size": size}
        job = jobs.submit(kind=JOB_KIND, request=request, fn=_backtest_job(spec), created_by=key.key_id)
        return JSONResponse(job_out(job).model_dump(mode="json"), status_code=202,
                            headers={"Location": job_location(job)})
    result = spec.run(conn)
    if format == "csv":
        return csv_response(result.rows(), filename="backtest-bills", columns=BILL_COLUMNS)
    return _report(spec, result, _risk(conn, spec, result))
