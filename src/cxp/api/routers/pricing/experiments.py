"""Pricing experiments: immutable designs, deterministic arm assignment, and results on recorded usage."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated

import psycopg
from fastapi import APIRouter, Path
from fastapi.responses import Response
from pydantic import Field

from cxp.api.deps import CachedDep, ConnDep, PageDep, PricingKey
from cxp.api.errors import Conflict, ErrorDetail, NotFound, Unprocessable
from cxp.api.routers.pricing.backtest_schemas import CohortOut
from cxp.api.routers.pricing.common import (
    ERR_404,
    ERR_409,
    PREFIX,
    ExperimentIdPath,
    OutputModel,
    Stat,
    TextQuery,
    as_decimal,
    check_text,
)
from cxp.api.schemas import Page
from cxp.core.stats import Difference
from cxp.pricing import repository as plan_store
from cxp.pricing import service
from cxp.pricing.core.experiments import ExperimentDesign, assign_arms
from cxp.pricing.core.plans import BillableMetric, Plan
from cxp.pricing.examples import example_metrics
from cxp.pricing.metrics import BillingPeriod, Cohort

router = APIRouter()


class ExperimentRecord(OutputModel):
    """A stored experiment design."""

    experiment_id: str
    created_at: datetime
    created_by: str | None
    design: ExperimentDesign


class AssignmentOut(OutputModel):
    """A unit's arm: a pure function of the salt and the unit id, stable across calls."""

    experiment_id: str
    unit_id: str
    arm: str
    plan_key: str


class ArmStatsOut(OutputModel):
    """One arm's figures."""

    arm: str
    plan_key: str
    units: int
    usage_mean: Stat
    revenue_per_unit: Decimal
    revenue: Decimal
    health_mean: Stat
    conversion: Stat
    churn: Stat


class DifferenceOut(OutputModel):
    """Treatment − control with a 95% CI and a two-sided p-value (estimates as decimal strings; money metrics
    rounded to the quantum)."""

    metric: str
    arm: str
    control: str
    diff: Decimal | None
    low: Decimal | None
    high: Decimal | None
    p_value: Stat
    test: str
    significant: bool


class SampleRatioOut(OutputModel):
    """Chi-square test of the arm sizes against the design's split; `mismatch` at p < 0.001."""

    counts: list[int]
    expected: list[float]
    chi2: float
    p_value: float
    mismatch: bool


class ExperimentResultOut(OutputModel):
    """Per-arm figures, differences against the control, sample-ratio check and guardrail flags."""

    experiment_id: str
    cohort: CohortOut
    arms: list[ArmStatsOut]
    differences: list[DifferenceOut]
    sample_ratio: SampleRatioOut
    guardrail_flags: list[str] = Field(description="Arms whose experience health fell beyond the tolerated drop")
    guardrail_breached: bool


def _experiment_record(stored: plan_store.StoredExperiment) -> ExperimentRecord:
    return ExperimentRecord(experiment_id=stored.design.experiment_id, created_at=stored.created_at,
                            created_by=stored.created_by, design=stored.design)


def stored_experiment(conn: psycopg.Connection, experiment_id: str) -> plan_store.StoredExperiment:
    stored = plan_store.get_experiment(conn, experiment_id=experiment_id)
    if stored is None:
        raise NotFound(f"no experiment {experiment_id!r}")
    return stored


def experiment_inputs(
    conn: psycopg.Connection, experiment_id: str
) -> tuple[ExperimentDesign, dict[str, Plan], tuple[BillableMetric, ...]]:
    """A stored design, its arms' plans by key, and the example metrics the plans do not define themselves."""
    design = stored_experiment(conn, experiment_id).design
    plans = plan_store.get_plans_by_key(conn, keys=[a.plan_key for a in design.arms])
    metrics = tuple(m for m in example_metrics() if m.name not in {x.name for p in plans.values() for x in p.metrics})
    return design, plans, metrics


@router.post("/experiments", response_model=ExperimentRecord, status_code=201, summary="Store an experiment design",
             responses=ERR_409)
def create_experiment(key: PricingKey, conn: ConnDep, body: ExperimentDesign, response: Response) -> ExperimentRecord:
    """Arms bill with stored plan keys (`id@vN`); the first arm is the control. 409 if the id is taken."""
    check_text(body.model_dump(mode="json"), ["body"])
    if body.start.year < 1970 or body.end.year >= 2200:  # keeps every month computation in range
        raise Unprocessable("start and end must lie between 1970 and 2199")
    if BillingPeriod.covering(start=body.start, end=body.end).months > 120:
        raise Unprocessable("an experiment window spans at most 120 months")
    known = plan_store.get_plans_by_key(conn, keys=[a.plan_key for a in body.arms])
    missing = [(i, a.plan_key) for i, a in enumerate(body.arms) if a.plan_key not in known]
    if missing:
        raise Unprocessable(
            f"arms bill with plans that are not stored: {[k for _, k in missing]} (keys are plan_id@vN)",
            details=[ErrorDetail(loc=["body", "arms", i, "plan_key"], message=f"no stored plan {k!r}")
                     for i, k in missing])
    stored = plan_store.insert_experiment(conn, design=body, created_by=key.key_id)
    if stored is None:
        raise Conflict(f"experiment {body.experiment_id!r} exists; designs are immutable, use a new id")
    response.headers["Location"] = f"{PREFIX}/experiments/{body.experiment_id}"
    return _experiment_record(stored)


@router.get("/experiments", response_model=Page[ExperimentRecord], summary="Experiment designs, newest first")
def list_experiments(_: PricingKey, conn: ConnDep, page: PageDep) -> Page[ExperimentRecord]:
    """Newest first."""
    rows, total = plan_store.list_experiments(conn, limit=page.limit, offset=page.offset)
    return Page[ExperimentRecord](items=[_experiment_record(r) for r in rows], total=total, limit=page.limit,
                                  offset=page.offset)


@router.get("/experiments/{experiment_id}", response_model=ExperimentRecord, summary="One experiment design",
            responses=ERR_404)
def get_experiment(_: PricingKey, conn: ConnDep, experiment_id: ExperimentIdPath) -> ExperimentRecord:
    """The stored design."""
    return _experiment_record(stored_experiment(conn, experiment_id))


@router.get("/experiments/{experiment_id}/assignments", response_model=Page[AssignmentOut],
            summary="Every cohort account's arm", responses=ERR_404)
def list_assignments(
    _: PricingKey,
    conn: ConnDep,
    page: PageDep,
    experiment_id: ExperimentIdPath,
    product: TextQuery = None,
    segment: TextQuery = None,
) -> Page[AssignmentOut]:
    """Accounts with a device activated before the window ends, by account id (account-unit designs)."""
    design = stored_experiment(conn, experiment_id).design
    rows = service.list_experiment_assignments(conn=conn, design=design,
                                               cohort=Cohort(product=product, segment=segment))
    items = [AssignmentOut(experiment_id=experiment_id, unit_id=a.unit_id, arm=a.arm, plan_key=a.plan_key)
             for a in rows[page.offset:page.offset + page.limit]]
    return Page[AssignmentOut](items=items, total=len(rows), limit=page.limit, offset=page.offset)


@router.get("/experiments/{experiment_id}/assignments/{unit_id}", response_model=AssignmentOut,
            summary="One unit's arm", responses=ERR_404)
def get_assignment(
    _: PricingKey,
    conn: ConnDep,
    experiment_id: ExperimentIdPath,
    unit_id: Annotated[str, Path(min_length=1, max_length=200, description="Account (or device) id")],
) -> AssignmentOut:
    """Deterministic: the same arm on every call (sha256 of salt and unit id against the arms' weights)."""
    design = stored_experiment(conn, experiment_id).design
    arm = design.arms[int(assign_arms(design=design, unit_ids=[unit_id])[0])]
    return AssignmentOut(experiment_id=experiment_id, unit_id=unit_id, arm=arm.name, plan_key=arm.plan_key)


def _difference_out(difference: Difference, quantum: Decimal) -> DifferenceOut:
    """A difference with its estimates as decimals; revenue per unit is money, so rounded to the quantum."""

    def estimate(value: float | None) -> Decimal | None:
        number = as_decimal(value)
        if number is None or difference.metric != "revenue_per_unit":
            return number
        try:
            return number.quantize(quantum)
        except InvalidOperation as exc:  # more digits than the decimal context holds
            raise Unprocessable(f"these inputs cannot be computed: {type(exc).__name__}: {exc}") from exc

    return DifferenceOut(metric=difference.metric, arm=difference.arm, control=difference.control,
                         diff=estimate(difference.estimate), low=estimate(difference.low),
                         high=estimate(difference.high), p_value=difference.p_value, test=difference.test,
                         significant=difference.significant)


@router.get("/experiments/{experiment_id}/results", response_model=ExperimentResultOut,
            summary="Per-arm usage, revenue, health, conversion and churn with differences, SRM and guardrail",
            responses=ERR_404)
def get_experiment_results(
    _: PricingKey,
    conn: ConnDep,
    cached: CachedDep,
    experiment_id: ExperimentIdPath,
    product: TextQuery = None,
    segment: TextQuery = None,
) -> ExperimentResultOut:
    """Analysed on recorded usage in the design's window (proxies: docs/pricing.md, Experiments)."""
    design, plans, metrics = experiment_inputs(conn, experiment_id)
    cohort = Cohort(product=product, segment=segment)
    result = cached.service(service.get_experiment_results, design=design, plans=tuple(plans.values()),
                            cohort=cohort, metrics=metrics)
    quantum = plans[design.arms[0].plan_key].rounding.quantum
    differences = [_difference_out(d, quantum) for d in result.differences]
    return ExperimentResultOut(
        experiment_id=experiment_id, cohort=CohortOut(product=product, segment=segment, account_ids=None),
        arms=[ArmStatsOut.model_validate(a) for a in result.arms], differences=differences,
        sample_ratio=SampleRatioOut.model_validate(result.sample_ratio), guardrail_flags=list(result.guardrail_flags),
        guardrail_breached=bool(result.guardrail_flags))
