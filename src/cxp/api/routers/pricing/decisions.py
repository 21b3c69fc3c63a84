"""Pricing decisions: solve a plan's prices for a goal, the trade-off curve of a plan family, horizon backtests.

Work = cohort accounts × months × the plans a search bills (an upper estimate); at most
`api.sync_backtest_limit` runs in the request (200), more runs as a job (202, `Location:
/v1/pricing/decisions/jobs/{id}`), above `api.max_backtest_size` it is refused (422).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import psycopg
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from cxp.api.deps import HeavyConnDep, JobsDep, PricingKey, SettingsDep
from cxp.api.errors import ErrorDetail, NotFound, Unprocessable
from cxp.api.jobs import Job
from cxp.api.routers.pricing.backtest_schemas import PlanSummaryOut
from cxp.api.routers.pricing.backtests import _baseline, _metrics, _resolve_plans
from cxp.api.routers.pricing.common import ERR_404, PREFIX, OutputModel, check_text
from cxp.api.routers.pricing.decision_schemas import (
    BoundOut,
    ExperimentDesignIn,
    ExperimentPlanOut,
    HorizonFiguresOut,
    HorizonIn,
    HorizonReport,
    MetricsOut,
    SolveIn,
    SolveReport,
    TradeoffIn,
    TradeoffPointOut,
    TradeoffReport,
)
from cxp.core.config import Settings
from cxp.pricing import decisions, service
from cxp.pricing.core.solve import SolveResult
from cxp.pricing.core.tradeoff import TradeoffCurve
from cxp.pricing.core.wtp import ElasticityFit
from cxp.pricing.examples import example_metrics

router = APIRouter()

JOB_KINDS = ("pricing-solve", "pricing-tradeoff")


class DecisionJobOut(OutputModel):
    """A solve or trade-off job: its record, request and, once done, its report."""

    job_id: UUID
    kind: str
    status: Literal["queued", "running", "done", "failed"]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    created_by: str | None
    error: str | None
    request: dict[str, Any]
    solve: SolveReport | None = None
    tradeoff: TradeoffReport | None = None
    links: dict[str, str]


def _location(job: Job) -> str:
    return f"{PREFIX}/decisions/jobs/{job.job_id}"


def _job_out(job: Job) -> DecisionJobOut:
    summary = job.summary if job.status == "done" and isinstance(job.summary, dict) else {}
    return DecisionJobOut(
        job_id=job.job_id, kind=job.kind, status=job.status, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, created_by=job.created_by, error=job.error, request=job.request,
        solve=summary.get("solve"), tradeoff=summary.get("tradeoff"), links={"self": _location(job)})


def _bounds(bounds: dict) -> dict[str, BoundOut]:
    return {k: BoundOut(lower=lo, upper=hi, step=s) for k, (lo, hi, s) in bounds.items()}


def solve_report(result: SolveResult, name: str) -> SolveReport:
    """The API form of a solve result."""
    s = result.summary
    fields = {f: getattr(s, f) for f in PlanSummaryOut.model_fields if hasattr(s, f)}
    return SolveReport(
        parameters=result.parameters, plan=result.plan.model_dump(mode="json"),
        metrics=MetricsOut.model_validate(result.metrics), baseline_revenue=result.baseline_revenue,
        target_revenue=result.target_revenue, feasible=result.feasible, violations=list(result.violations),
        evaluations=result.evaluations, method=result.method, stop_reason=result.stop_reason,
        bounds=_bounds(result.bounds),
        summary=PlanSummaryOut.model_validate({**fields, "name": name, "baseline": False}),
        decimal_check_accounts=result.decimal_check[0], decimal_check_equal=result.decimal_check[1])


def tradeoff_report(curve: TradeoffCurve, currency: str) -> TradeoffReport:
    """The API form of a trade-off curve."""
    lf, vf = set(curve.losers_front), set(curve.volatility_front)
    points = [
        TradeoffPointOut(index=i, baseline=p.baseline, parameters=p.parameters,
                         metrics=MetricsOut.model_validate(p.metrics), on_losers_front=i in lf,
                         on_volatility_front=i in vf)
        for i, p in enumerate(curve.points)
    ]
    return TradeoffReport(currency=currency, points=points, losers_front=list(curve.losers_front),
                          volatility_front=list(curve.volatility_front), evaluations=curve.evaluations,
                          bounds=_bounds(curve.bounds))


def _prepare(conn: psycopg.Connection, body: SolveIn | TradeoffIn) -> tuple[Any, Any, tuple, Any, Any]:
    check_text(body.model_dump(mode="json"), ["body"])
    baseline, plan = _resolve_plans(conn, [body.baseline, body.plan])
    return baseline, plan, _metrics(body, [baseline, plan]), body.period.period(), body.cohort.cohort()  # type: ignore[arg-type]


def _size(conn: psycopg.Connection, settings: Settings, plans: list, period: Any, cohort: Any, evaluations: int) -> int:
    cells = service.estimate_backtest_size(conn=conn, plans=plans[:1], period=period, cohort=cohort)
    size = cells * evaluations
    if size > settings.api.max_backtest_size:
        raise Unprocessable(
            f"work {size:,} (accounts × months × {evaluations} plans billed) exceeds api.max_backtest_size = "
            f"{settings.api.max_backtest_size:,}; narrow the cohort, the period, the grid or the parameters",
            details=[ErrorDetail(loc=["body"], message=f"size {size} > api.max_backtest_size")])
    return size


def _queue(jobs: Any, key: Any, kind: str, body: Any, size: int, fn: Callable) -> JSONResponse:
    job = jobs.submit(kind=kind, request={**body.model_dump(mode="json"), "size": size}, fn=fn, created_by=key.key_id)
    return JSONResponse(_job_out(job).model_dump(mode="json"), status_code=202, headers={"Location": _location(job)})


_202 = {"model": DecisionJobOut, "description": "Too much work to run now: queued as a job",
        "headers": {"Location": {"schema": {"type": "string"}, "description": "The job"}}}


@router.post("/solve", response_model=SolveReport, responses={202: _202, **ERR_404},
             summary="Solve a plan's free prices for a revenue target or the most revenue under limits")
def create_solve(key: PricingKey, conn: HeavyConnDep, settings: SettingsDep, jobs: JobsDep,
                 body: SolveIn) -> SolveReport | JSONResponse:
    """Deterministic search over the exact vectorised billing; the answer is re-billed (and partly in Decimal)."""
    baseline, plan, metrics, period, cohort = _prepare(conn, body)
    goal = body.goal.goal()
    params = [p.parameter() for p in body.parameters]
    evaluations = decisions.expected_evaluations(goal=goal, parameters=len(params), grid=body.grid)
    size = _size(conn, settings, [baseline], period, cohort, evaluations)

    def run(c: psycopg.Connection) -> SolveReport:
        result = decisions.solve_prices(
            conn=c, baseline=baseline, plan=plan, parameters=params, goal=goal, period=period, cohort=cohort,
            metrics=metrics, theta=body.theta, grid=body.grid, max_evaluations=body.max_evaluations,
            until=body.period.until())
        return solve_report(result, plan.name)

    if size > settings.api.sync_backtest_limit:
        return _queue(jobs, key, "pricing-solve", body, size,
                      lambda c, _id, _progress: {"solve": run(c).model_dump(mode="json")})
    return run(conn)


@router.post("/tradeoff", response_model=TradeoffReport, responses={202: _202, **ERR_404},
             summary="Pareto fronts of revenue vs customers paying more and vs bill volatility over a plan family")
def create_tradeoff(key: PricingKey, conn: HeavyConnDep, settings: SettingsDep, jobs: JobsDep,
                    body: TradeoffIn) -> TradeoffReport | JSONResponse:
    """Every plan of the family billed exactly against the baseline (point 0); the fronts list point indices."""
    baseline, plan, metrics, period, cohort = _prepare(conn, body)
    params = [p.parameter() for p in body.parameters]
    evaluations = decisions.expected_evaluations(goal=None, parameters=len(params), grid=body.points)
    size = _size(conn, settings, [baseline], period, cohort, evaluations)

    def run(c: psycopg.Connection) -> TradeoffReport:
        curve = decisions.get_tradeoff_curve(
            conn=c, baseline=baseline, plan=plan, parameters=params, period=period, cohort=cohort, metrics=metrics,
            theta=body.theta, points=body.points, until=body.period.until())
        return tradeoff_report(curve, plan.currency)

    if size > settings.api.sync_backtest_limit:
        return _queue(jobs, key, "pricing-tradeoff", body, size,
                      lambda c, _id, _progress: {"tradeoff": run(c).model_dump(mode="json")})
    return run(conn)


@router.post("/horizon", response_model=HorizonReport, responses=ERR_404,
             summary="Plans over a 12/24-month horizon: recurring vs one-time revenue, response band, LTV, verdict")
def create_horizon(_key: PricingKey, conn: HeavyConnDep, settings: SettingsDep, body: HorizonIn) -> HorizonReport:
    """Recorded months repeat beyond the data; with `elasticity`, low / central / high customer response too."""
    check_text(body.model_dump(mode="json"), ["body"])
    plans = _resolve_plans(conn, list(body.plans))
    base = _baseline(plans, body.baseline)
    scenarios = 1 if body.elasticity is None else 4
    cells = service.estimate_backtest_size(conn=conn, plans=plans, period=body.period.period(),
                                           cohort=body.cohort.cohort())
    size = cells // max(body.period.period().months, 1) * body.months * scenarios
    # Always in the request (one usage read, then arrays): refused above the backtest size limit.
    if size > settings.api.max_backtest_size:
        raise Unprocessable(
            f"work {size:,} (accounts × horizon months × plans × scenarios) exceeds api.max_backtest_size = "
            f"{settings.api.max_backtest_size:,}; narrow the cohort, the horizon or the plans",
            details=[ErrorDetail(loc=["body"], message=f"size {size} > api.max_backtest_size")])
    e = body.elasticity
    fit = None if e is None else ElasticityFit(elasticity=e.elasticity, intercept=0.0, std_error=None, low=e.low,
                                                high=e.high, n=0, r_squared=None)
    res = service.simulate_horizon(
        conn=conn, plans=plans, period=body.period.period(), months=body.months, cohort=body.cohort.cohort(),
        baseline=base, metrics=_metrics(body, plans), elasticity=fit, churn_base=body.churn_base,
        annual_discount=body.annual_discount, until=body.period.until())
    return HorizonReport(months=len(res.months), first_month=f"{res.months[0]:%Y-%m}", baseline=res.baseline,
                         currency=res.currency, figures=[HorizonFiguresOut.model_validate(f) for f in res.figures],
                         assumptions=list(res.assumptions),
                         verdict=res.verdict("central" if e is not None else "static"))


@router.post("/experiment-design", response_model=ExperimentPlanOut,
             summary="Sample size, MDE and duration of a price experiment from the metric's recorded variance")
def create_experiment_design(_key: PricingKey, conn: HeavyConnDep, body: ExperimentDesignIn) -> ExperimentPlanOut:
    """Power analysis (statsmodels) on the cohort's per-account monthly values of the metric over `period`."""
    check_text(body.model_dump(mode="json"), ["body"])
    metric = body.metric
    if isinstance(metric, str):
        known = {m.name: m for m in example_metrics()}
        if metric not in known:
            raise Unprocessable(f"unknown metric {metric!r}: give a definition or one of {sorted(known)}",
                                details=[ErrorDetail(loc=["body", "metric"], message="unknown metric name")])
        metric = known[metric]
    plan = decisions.get_experiment_plan(
        conn=conn, metric=metric, period=body.period.period(), cohort=body.cohort.cohort(),
        mde_relative=body.mde_relative, mde=body.mde, alpha=body.alpha, power=body.power, arms=body.arms,
        ratio=body.ratio, until=body.period.until())
    return ExperimentPlanOut.model_validate(plan)


@router.get("/decisions/jobs/{job_id}", response_model=DecisionJobOut, responses=ERR_404,
            summary="A solve or trade-off job: status, report when done, error")
def get_decision_job(_key: PricingKey, jobs: JobsDep, job_id: UUID) -> DecisionJobOut:
    """Poll until `status` is done (the report is under `solve` or `tradeoff`) or failed (`error`)."""
    job = jobs.get(job_id)
    if job is None or job.kind not in JOB_KINDS:
        raise NotFound(f"no solve or trade-off job {job_id}")
    return _job_out(job)
