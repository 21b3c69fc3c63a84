"""Pricing endpoints (role `pricing`): plans, backtests and their jobs, the model comparison, experiments, WTP.

Choices callers can rely on:

* Money is exact: every amount is a decimal string in JSON (statistics such as shares, p-values and
  correlations are numbers).
* Plans are versioned. `POST /plans` stores the next version when `version` is left out; a given
  version must be the next one. Posting the latest definition again (or an existing version with the
  same definition) is idempotent: 200 with the stored version, nothing new is stored. An existing
  version with a different definition, or a version that skips ahead, is a 409.
* Backtests of at most `api.sync_backtest_limit` account-months × plans run in the request (200);
  larger ones run as a job (202, `Location: /v1/pricing/jobs/{id}`); the job's bills are at
  `/v1/pricing/jobs/{id}/bills` (JSON pages or `?format=csv`).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

import numpy as np
import psycopg
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from cxp.api.deps import CachedDep, ConnDep, PageDep, PricingKey, SettingsDep
from cxp.api.errors import ApiError, Conflict, ErrorBody, ErrorDetail, NotFound, Unprocessable
from cxp.api.jobs import Job, JobRunner
from cxp.api.schemas import CSV_RESPONSES, FormatQuery, Page, csv_response
from cxp.pricing import repository as plan_store
from cxp.pricing import service
from cxp.pricing.core import wtp
from cxp.pricing.core.backtest import NO_COST, BacktestResult, CostModel, DemandResponse
from cxp.pricing.core.charges import volume_drops
from cxp.pricing.core.experiments import ExperimentDesign, assign_arms
from cxp.pricing.core.money import RoundingRule
from cxp.pricing.core.plans import BillableMetric, Hybrid, Name, Plan, UsageCharge, VolumeCharge
from cxp.pricing.errors import PricingError
from cxp.pricing.examples import example_metrics, example_plans
from cxp.pricing.metrics import BillingPeriod, Cohort

log = logging.getLogger("cxp.api.pricing")

# 400: a body that is not parseable JSON (FastAPI's own check, before any validation).
router = APIRouter(prefix="/v1/pricing", tags=["pricing"],
                   responses={400: {"model": ErrorBody, "description": "The body could not be parsed"}})

MAX_VERSION = 2_147_483_647  # plan_versions.version is a PostgreSQL integer
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_SURVEY_ROWS = 100_000
JOB_KIND = "backtest"
_ID_PATTERN = r"^[A-Za-z0-9_.-]+$"
_NO_NUL = r"^[^\x00]+$"  # PostgreSQL text cannot hold NUL characters

PlanIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=_ID_PATTERN, description="Plan id")]
VersionPath = Annotated[int, Path(ge=1, le=MAX_VERSION, description="Plan version")]
ExperimentIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=_ID_PATTERN, description="Experiment id")]
TextQuery = Annotated[str | None, Query(min_length=1, max_length=200, pattern=_NO_NUL)]
Text = Annotated[str, Field(min_length=1, max_length=200, pattern=_NO_NUL)]
PlanIdField = Annotated[str, Field(min_length=1, max_length=64, pattern=_ID_PATTERN)]
VersionField = Annotated[int, Field(ge=1, le=MAX_VERSION)]


def _decimal_text(places: int) -> Callable[[dict[str, Any]], None]:
    """Document the decimal-string form a Decimal field accepts (plain digits, at most `places` decimals)."""

    def extra(schema: dict[str, Any]) -> None:
        for branch in schema.get("anyOf", []):
            if branch.get("type") == "string":
                branch["pattern"] = rf"^\+?[0-9]+(\.[0-9]{{1,{places}}})?$"

    return extra


Theta = Annotated[Decimal, Field(ge=0, le=100, max_digits=12, decimal_places=6, json_schema_extra=_decimal_text(6))]
CostAmount = Annotated[
    Decimal, Field(ge=0, le=Decimal("1e9"), max_digits=18, decimal_places=6, json_schema_extra=_decimal_text(6))
]
Price = Annotated[
    Decimal, Field(ge=0, le=Decimal("1e12"), max_digits=24, decimal_places=8, json_schema_extra=_decimal_text(8))
]

_ERR_404 = {404: {"model": ErrorBody, "description": "No such resource"}}
_ERR_409 = {409: {"model": ErrorBody, "description": "Conflicts with what is stored"}}


class UnsupportedMediaType(ApiError):
    """The request body's content type is not one the endpoint reads."""

    status, code = 415, "unsupported_media_type"


def _finite(value: Any) -> Any:
    """NaN and infinities (not JSON) become None."""
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None
    return value


Stat = Annotated[float | None, BeforeValidator(_finite)]


def _decimal(value: float | None) -> Decimal | None:
    """A float estimate as the decimal string it prints as (None stays None)."""
    return None if value is None or not np.isfinite(value) else Decimal(repr(float(value)))


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def _check_text(value: Any, loc: list[str | int]) -> None:
    """Reject strings PostgreSQL cannot store (NUL characters, unpaired surrogates) before they reach it."""
    if isinstance(value, str):
        bad = "\x00" in value
        if not bad:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                bad = True
        if bad:
            where = ".".join(str(p) for p in loc)
            raise Unprocessable(
                f"invalid request: {where}: text may not contain NUL characters or unpaired surrogates",
                details=[ErrorDetail(loc=loc, message="text may not contain NUL characters or unpaired surrogates")],
            )
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k, loc)
            _check_text(v, [*loc, str(k)])
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_text(v, [*loc, i])


@contextmanager
def _computed() -> Iterator[None]:
    """Numeric failures of the pricing library on extreme inputs (overflow, inexact decimals) become 422s."""
    try:
        yield
    except PricingError:
        raise
    except (ArithmeticError, ValueError) as exc:
        log.warning("pricing computation failed: %s: %s", type(exc).__name__, exc)
        raise Unprocessable(f"these inputs cannot be computed: {type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Plans


class PlanIn(Plan):
    """A plan definition to store or validate; leave `version` out to store the next version."""

    version: VersionField | None = None  # type: ignore[assignment]


def _as_plan(body: Plan, version: int) -> Plan:
    return Plan.model_validate({**body.model_dump(exclude={"version"}), "version": version})


class PlanRecord(_Out):
    """A stored plan version."""

    plan_id: str
    version: int
    key: str
    created_at: datetime
    created_by: str | None
    definition: Plan


def _record(stored: plan_store.StoredPlan) -> PlanRecord:
    p = stored.plan
    return PlanRecord(plan_id=p.plan_id, version=p.version, key=p.key, created_at=stored.created_at,
                      created_by=stored.created_by, definition=p)


class PlanInputsOut(_Out):
    """What billing the plan reads: usage keys, outcome keys, uptime, freemium and bundle components."""

    usage_keys: list[str]
    outcome_keys: list[str]
    needs_uptime: bool
    freemium_components: list[str]
    bundle_components: list[str]


class PlanValidation(_Out):
    """A valid plan, normalised, with what it reads and warnings worth a look (e.g. volume-tier drops)."""

    valid: bool = True
    key: str | None
    plan: PlanIn
    inputs: PlanInputsOut
    warnings: list[str]


def _warnings(plan: Plan) -> list[str]:
    out = []
    defined = {m.name for m in plan.metrics}
    for c in plan.components:
        charge = c.charge if isinstance(c, UsageCharge) else c.overage if isinstance(c, Hybrid) else None
        if isinstance(charge, VolumeCharge):
            try:
                drops = volume_drops(tiers=charge.tiers)
            except (PricingError, ArithmeticError):
                drops = []
            for d in drops:
                recovers = f", back at q = {d.recovers_at}" if d.recovers_at is not None else ""
                out.append(f"{c.id}: the volume-tier total drops by {d.drop} just above q = {d.boundary}{recovers}")
    for key in sorted(plan.required_inputs().usage_keys - defined):
        out.append(f"usage key {key!r} has no metric in the plan: backtests use the request's metrics "
                   f"(the examples' by default) or count usage events of touchpoint {key!r}")
    return out


def _plan_from_body(body: PlanIn) -> Plan:
    _check_text(body.model_dump(mode="json"), ["body"])
    return _as_plan(body, body.version or 1)


@router.post("/plans/validate", response_model=PlanValidation, summary="Validate a plan without storing it")
def validate_plan(_: PricingKey, body: PlanIn) -> PlanValidation:
    """200 with the normalised plan, or 422 naming every invalid field (`error.details[].loc`)."""
    plan = _plan_from_body(body)
    need = plan.required_inputs()
    inputs = PlanInputsOut(usage_keys=sorted(need.usage_keys), outcome_keys=sorted(need.outcome_keys),
                           needs_uptime=need.needs_uptime, freemium_components=list(need.freemium_components),
                           bundle_components=list(need.bundle_components))
    return PlanValidation(key=plan.key if body.version else None, plan=body, inputs=inputs, warnings=_warnings(plan))


@router.post("/plans", response_model=PlanRecord, status_code=201, summary="Store a plan (a new version)",
             responses={200: {"model": PlanRecord, "description": "Same as the latest (or the given) version: "
                                                                   "nothing stored"}, **_ERR_409})
def create_plan(key: PricingKey, conn: ConnDep, body: PlanIn, response: Response) -> PlanRecord:
    """Store the next version of `plan_id` (or version 1); idempotent for a re-post of the same definition."""
    plan = _plan_from_body(body)
    try:
        saved = plan_store.save_plan(conn, plan=plan, version=body.version, created_by=key.key_id)
    except plan_store.PlanVersionConflict as exc:
        raise Conflict(str(exc)) from exc
    record = _record(saved.stored)
    response.headers["Location"] = f"{router.prefix}/plans/{record.plan_id}/versions/{record.version}"
    if not saved.created:
        response.status_code = 200
    return record


@router.get("/plans", response_model=Page[PlanRecord], summary="The latest version of every stored plan")
def list_plans(
    _: PricingKey,
    conn: ConnDep,
    page: PageDep,
    prefix: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.-]*$",
                                        description="Only plan ids starting with this")] = None,
) -> Page[PlanRecord]:
    """By plan id."""
    rows, total = plan_store.list_latest_plans(conn, prefix=prefix, limit=page.limit, offset=page.offset)
    return Page[PlanRecord](items=[_record(r) for r in rows], total=total, limit=page.limit, offset=page.offset)


@router.get("/plans/{plan_id}", response_model=PlanRecord, summary="A plan's latest version", responses=_ERR_404)
def get_plan(_: PricingKey, conn: ConnDep, plan_id: PlanIdPath) -> PlanRecord:
    """The latest version."""
    stored = plan_store.get_plan(conn, plan_id=plan_id)
    if stored is None:
        raise NotFound(f"no plan {plan_id!r}")
    return _record(stored)


@router.get("/plans/{plan_id}/versions", response_model=Page[PlanRecord], summary="Every version of a plan",
            responses=_ERR_404)
def list_plan_versions(_: PricingKey, conn: ConnDep, page: PageDep, plan_id: PlanIdPath) -> Page[PlanRecord]:
    """Oldest first."""
    rows, total = plan_store.list_plan_versions(conn, plan_id=plan_id, limit=page.limit, offset=page.offset)
    if total == 0:
        raise NotFound(f"no plan {plan_id!r}")
    return Page[PlanRecord](items=[_record(r) for r in rows], total=total, limit=page.limit, offset=page.offset)


@router.get("/plans/{plan_id}/versions/{version}", response_model=PlanRecord, summary="One version of a plan",
            responses=_ERR_404)
def get_plan_version(_: PricingKey, conn: ConnDep, plan_id: PlanIdPath, version: VersionPath) -> PlanRecord:
    """One stored version."""
    stored = plan_store.get_plan(conn, plan_id=plan_id, version=version)
    if stored is None:
        raise NotFound(f"no version {version} of plan {plan_id!r}")
    return _record(stored)


class Examples(_Out):
    """The built-in example plans (one per IoT revenue model) and the metrics their usage keys read."""

    plans: list[Plan]
    metrics: list[BillableMetric]
    comparison_plans: list[str]


@router.get("/examples", response_model=Examples, summary="Built-in example plans and metrics to start from")
def get_examples(_: PricingKey) -> Examples:
    """Copy one, change it, `POST /plans` it; the metrics are what backtests use by default."""
    return Examples(plans=list(example_plans()), metrics=list(example_metrics()),
                    comparison_plans=list(service.COMPARISON_PLANS))


class ExamplesInstalled(_Out):
    """Which example plans were stored now and which plan ids existed already (left untouched)."""

    created: list[str]
    existing: list[str]


@router.post("/examples/install", response_model=ExamplesInstalled,
             summary="Store the example plans whose ids are not taken yet")
def install_examples(key: PricingKey, conn: ConnDep) -> ExamplesInstalled:
    """Idempotent: a plan id that exists (an example or your own plan) is left as it is."""
    created, existing = [], []
    for plan in example_plans():
        if plan_store.get_plan(conn, plan_id=plan.plan_id) is not None:
            existing.append(plan.plan_id)
            continue
        try:
            saved = plan_store.save_plan(conn, plan=plan, version=1, created_by=key.key_id)
        except plan_store.PlanVersionConflict:  # another caller stored a different plan under this id just now
            existing.append(plan.plan_id)
            continue
        if saved.created:
            created.append(saved.stored.plan.key)
        else:
            existing.append(plan.plan_id)
    return ExamplesInstalled(created=created, existing=existing)


# ---------------------------------------------------------------------------------------------
# Backtests and jobs


class PlanRef(_In):
    """A stored plan: its id and a version (default: the latest)."""

    plan_id: PlanIdField
    version: VersionField | None = None


def _plan_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "inline" if "components" in value else "ref"
    return "inline" if isinstance(value, Plan) else "ref"


BacktestPlan = Annotated[Annotated[PlanRef, Tag("ref")] | Annotated[Plan, Tag("inline")], Discriminator(_plan_kind)]


class CohortIn(_In):
    """Which accounts: those with a device of `product` (only those devices count), in `segment`, listed ids."""

    product: Text | None = None
    segment: Text | None = None
    account_ids: Annotated[list[Text], Field(min_length=1, max_length=10_000)] | None = None

    def cohort(self) -> Cohort:
        """As the library's cohort."""
        ids = tuple(dict.fromkeys(self.account_ids)) if self.account_ids is not None else None
        return Cohort(product=self.product, segment=self.segment, account_ids=ids)


_FIRST_DAY, _LAST_DAY = date(1970, 1, 1), date(2199, 12, 31)


class PeriodIn(_In):
    """Calendar months billed: `start_month` (YYYY-MM) + `months`, or the months covering `start`..`end`.

    With dates, `end` is the last day (inclusive) and also the data horizon: usage after it is not
    counted and months after it are not billed.
    """

    start_month: Annotated[str, Field(pattern=r"^(19[7-9][0-9]|2[01][0-9]{2})-(0[1-9]|1[0-2])$")] | None = None
    months: Annotated[int, Field(ge=1, le=120)] | None = None
    start: date | None = None
    end: date | None = None

    @model_validator(mode="after")
    def _one_form(self) -> PeriodIn:
        by_month = self.start_month is not None or self.months is not None
        by_date = self.start is not None or self.end is not None
        if by_month == by_date:
            raise ValueError("give either start_month and months, or start and end")
        if by_month and (self.start_month is None or self.months is None):
            raise ValueError("start_month and months go together")
        if by_date:
            if self.start is None or self.end is None:
                raise ValueError("start and end go together")
            if not (_FIRST_DAY <= self.start <= self.end <= _LAST_DAY):
                raise ValueError(f"need {_FIRST_DAY} <= start <= end <= {_LAST_DAY}")
            if (self.end.year - self.start.year) * 12 + self.end.month - self.start.month >= 120:
                raise ValueError("a backtest spans at most 120 months")
        return self

    def period(self) -> BillingPeriod:
        """The billing period."""
        if self.start_month is not None and self.months is not None:
            year, month = map(int, self.start_month.split("-"))
            return BillingPeriod(date(year, month, 1), self.months)
        assert self.start is not None and self.until() is not None
        return BillingPeriod.covering(start=datetime.combine(self.start, time(0), UTC), end=self.until())

    def until(self) -> datetime | None:
        """The data horizon (the day after `end`), None for a month range."""
        return None if self.end is None else datetime.combine(self.end + timedelta(days=1), time(0), UTC)


class CostIn(_In):
    """The cost floor: `per_unit` × units of `unit_metric` + `per_device_month` per active device-month."""

    per_unit: CostAmount = Decimal(0)
    unit_metric: Name | None = None
    per_device_month: CostAmount = Decimal(0)

    @model_validator(mode="after")
    def _metric_with_unit_cost(self) -> CostIn:
        if self.per_unit and self.unit_metric is None:
            raise ValueError("a cost per unit needs unit_metric (the usage key it is per)")
        return self


class DemandIn(_In):
    """Constant-elasticity response of usage to the bill ratio: Q_new = Q_old · (P_new / P_old)^ε."""

    elasticity: Annotated[float, Field(ge=-5, le=5)]
    keys: Annotated[list[Name], Field(max_length=100)] | None = None


class BacktestIn(_In):
    """What to backtest: plans (stored references and/or inline definitions) on a cohort's recorded usage."""

    plans: Annotated[list[BacktestPlan], Field(min_length=1, max_length=20)]
    period: PeriodIn
    cohort: CohortIn = CohortIn()
    baseline: Annotated[str, Field(min_length=1, max_length=80)] | None = Field(
        None, description="Plan key (id@vN) or plan id of the baseline (default: the first plan)")
    theta: Theta = Field(Decimal("0.2"), description="Bill shock: bill > (1 + theta) × baseline bill")
    cost: CostIn | None = None
    value_metric: Name | None = Field(None, description="Usage key measuring value (fairness = Gini of price/value)")
    demand: DemandIn | None = None
    metrics: Annotated[list[BillableMetric], Field(max_length=100)] = Field(
        [], description="Metric definitions of usage keys (win over the plans' own)")
    example_metrics: bool = Field(
        True, description="Also define the example plans' usage keys (heating_kwh, app_sessions, optimised_cycles) "
                          "where neither `metrics` nor the plans define them")

    @model_validator(mode="after")
    def _unique_metrics(self) -> BacktestIn:
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metric names must be unique, got {names}")
        return self


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

    def run(self, conn: psycopg.Connection) -> BacktestResult:
        """Bill every plan on the recorded usage."""
        with _computed():
            return service.simulate_backtest(
                conn=conn, plans=self.plans, period=self.period, cohort=self.cohort, baseline=self.baseline,
                theta=self.theta, metrics=self.metrics, cost=self.cost, value_metric=self.value_metric,
                demand=self.demand, until=self.until)


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
    _check_text(body.model_dump(mode="json"), ["body"])
    plans = _resolve_plans(conn, body.plans)
    cost = NO_COST if body.cost is None else CostModel(body.cost.per_unit, body.cost.unit_metric,
                                                       body.cost.per_device_month)
    demand = None if body.demand is None else DemandResponse(
        body.demand.elasticity, tuple(body.demand.keys) if body.demand.keys is not None else None)
    return BacktestSpec(plans=tuple(plans), period=body.period.period(), cohort=body.cohort.cohort(),
                        baseline=_baseline(plans, body.baseline), theta=body.theta, metrics=_metrics(body, plans),
                        cost=cost, value_metric=body.value_metric, demand=demand, until=body.period.until())


class QuantilesOut(_Out):
    """p10 / p50 / p90 (each an observed value, so exact)."""

    p10: Decimal
    p50: Decimal
    p90: Decimal


class PlanSummaryOut(_Out):
    """One plan's figures over the cohort and period (changes against the baseline)."""

    plan_key: str
    name: str
    baseline: bool
    revenue: Decimal
    revenue_delta: Decimal
    static_revenue: Decimal = Field(description="Revenue before the demand response (= revenue without one)")
    accounts: int
    customer_periods: int
    arpu: Decimal = Field(description="Per active account over the period, rounded to the quantum")
    arpu_month: Decimal = Field(description="Per active account-month, rounded to the quantum")
    bill: QuantilesOut
    bill_change: QuantilesOut
    volatility_cv: Stat = Field(description="Mean per-account coefficient of variation of monthly bills")
    winners: int
    losers: int
    unchanged: int
    shock_rate: float
    shock_count: int
    fairness_gini: Stat
    cost: Decimal
    margin: Decimal
    below_cost_share: float


class SegmentExperienceOut(_Out):
    """Bill vs experience health in one segment under one plan."""

    plan_key: str
    segment: str
    accounts: int
    mean_bill_month: Decimal
    mean_health: Stat
    spearman: Stat
    low_health_bill_ratio: Stat


class PeriodOut(_Out):
    """The months billed and the data horizon."""

    first_month: date
    months: int
    month_starts: list[date]
    until: datetime | None


class CohortOut(_Out):
    """The cohort backtested."""

    product: str | None
    segment: str | None
    account_ids: list[str] | None


class BacktestReport(_Out):
    """Per-plan figures side by side (baseline first) and bill vs experience health per segment."""

    baseline: str
    plan_keys: list[str]
    currency: str
    quantum: Decimal
    theta: Decimal
    period: PeriodOut
    cohort: CohortOut
    accounts: int
    size: int = Field(description="Account-months × plans billed")
    value_metric: str | None
    elasticity: Stat
    summaries: list[PlanSummaryOut]
    experience: list[SegmentExperienceOut]


def _report(spec: BacktestSpec, res: BacktestResult) -> BacktestReport:
    names = {p.key: p.name for p in spec.plans}
    summaries = []
    for key in res.plan_keys:
        s = res.summaries[key]
        fields = {f: getattr(s, f) for f in PlanSummaryOut.model_fields if hasattr(s, f)}
        summaries.append(PlanSummaryOut.model_validate({**fields, "name": names[key], "baseline": key == res.baseline}))
    cohort = spec.cohort
    return BacktestReport(
        baseline=res.baseline, plan_keys=list(res.plan_keys), currency=res.currency, quantum=res.rule.quantum,
        theta=res.theta,
        period=PeriodOut(first_month=spec.period.first_month, months=spec.period.months,
                         month_starts=list(spec.period.month_starts), until=spec.until),
        cohort=CohortOut(product=cohort.product, segment=cohort.segment,
                         account_ids=list(cohort.account_ids) if cohort.account_ids is not None else None),
        accounts=len(res.cube.account_ids), size=len(res.cube.account_ids) * len(res.cube.months) * len(res.plan_keys),
        value_metric=spec.value_metric, elasticity=res.elasticity, summaries=summaries,
        experience=[SegmentExperienceOut.model_validate(e) for e in res.experience])


class BillRow(_Out):
    """One account-month's bill under one plan."""

    plan: str
    account_id: str
    segment: str | None
    month: date
    bill: Decimal
    currency: str


BILL_COLUMNS = ("plan", "account_id", "segment", "month", "bill", "currency")


def _bill_table(res: BacktestResult) -> dict[str, Any]:
    """The bills as compact JSON for a job's result: integer quanta per plan × account × month."""
    return {
        "currency": res.currency,
        "rule": res.rule.model_dump(mode="json"),
        "plan_keys": list(res.plan_keys),
        "account_ids": list(res.cube.account_ids),
        "segments": list(res.cube.segments),
        "months": [m.isoformat() for m in res.cube.months],
        "active": res.cube.active_mask().astype(np.int8).tolist(),
        "quanta": {k: res.bills[k].tolist() for k in res.plan_keys},
    }


def _bill_rows(table: dict[str, Any], plan: str | None = None) -> list[dict[str, Any]]:
    """Long form of a compact bill table, in `BacktestResult.rows()` order (plan, then account, then month)."""
    rule = RoundingRule.model_validate(table["rule"])
    months = [date.fromisoformat(m) for m in table["months"]]
    active = np.asarray(table["active"], dtype=bool).reshape(len(table["account_ids"]), len(months))
    ii, jj = np.nonzero(active)
    out = []
    for key in table["plan_keys"]:
        if plan is not None and key != plan:
            continue
        quanta = table["quanta"][key]
        for i, j in zip(ii.tolist(), jj.tolist(), strict=True):
            out.append({"plan": key, "account_id": table["account_ids"][i], "segment": table["segments"][i],
                        "month": months[j], "bill": rule.from_quanta(int(quanta[i][j])),
                        "currency": table["currency"]})
    return out


class JobSummary(_Out):
    """A background job's record."""

    job_id: UUID
    kind: str
    status: Literal["queued", "running", "done", "failed"]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    created_by: str | None
    error: str | None
    links: dict[str, str]


class JobOut(JobSummary):
    """A job with its request and, once done, the backtest report (bills: `links.bills`)."""

    request: dict[str, Any]
    result: BacktestReport | None


def _links(job: Job) -> dict[str, str]:
    links = {"self": f"{router.prefix}/jobs/{job.job_id}"}
    if job.status == "done":
        links["bills"] = f"{router.prefix}/jobs/{job.job_id}/bills"
    return links


def _job_summary(job: Job) -> JobSummary:
    return JobSummary(job_id=job.job_id, kind=job.kind, status=job.status, created_at=job.created_at,
                      started_at=job.started_at, finished_at=job.finished_at, created_by=job.created_by,
                      error=job.error, links=_links(job))


def _job_out(job: Job) -> JobOut:
    report = None
    if job.status == "done" and isinstance(job.result, dict) and "report" in job.result:
        report = BacktestReport.model_validate(job.result["report"])
    return JobOut(**_job_summary(job).model_dump(), request=job.request, result=report)


def get_jobs(request: Request) -> JobRunner:
    """The app's job runner."""
    return request.app.state.jobs


JobsDep = Annotated[JobRunner, Depends(get_jobs)]


def _backtest_job(spec: BacktestSpec) -> Callable[[psycopg.Connection], dict[str, Any]]:
    def run(conn: psycopg.Connection) -> dict[str, Any]:
        res = spec.run(conn)
        return {"report": _report(spec, res).model_dump(mode="json"), "bills": _bill_table(res)}

    return run


@router.post(
    "/backtests",
    response_model=BacktestReport,
    summary="Backtest plans on recorded usage (in the request, or as a job when large)",
    responses={**CSV_RESPONSES, 202: {"model": JobOut, "description": "Too large to run now: queued as a job",
                                "headers": {"Location": {"schema": {"type": "string"}, "description": "The job"}}},
               **_ERR_404},
)
def create_backtest(
    key: PricingKey,
    conn: ConnDep,
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
    if size > settings.api.sync_backtest_limit:
        request = {**body.model_dump(mode="json"), "plan_keys": [p.key for p in spec.plans], "size": size}
        job = jobs.submit(kind=JOB_KIND, request=request, fn=_backtest_job(spec), created_by=key.key_id)
        location = f"{router.prefix}/jobs/{job.job_id}"
        return JSONResponse(_job_out(job).model_dump(mode="json"), status_code=202, headers={"Location": location})
    res = spec.run(conn)
    if format == "csv":
        return csv_response(res.rows(), filename="backtest-bills", columns=BILL_COLUMNS)
    return _report(spec, res)


@router.get("/jobs", response_model=Page[JobSummary], summary="Backtest jobs, newest first")
def list_jobs(_: PricingKey, jobs: JobsDep, page: PageDep) -> Page[JobSummary]:
    """Without results: fetch one job for its report."""
    items, total = jobs.list(kind=JOB_KIND, limit=page.limit, offset=page.offset)
    return Page[JobSummary](items=[_job_summary(j) for j in items], total=total, limit=page.limit,
                            offset=page.offset)


def _job(jobs: JobRunner, job_id: UUID) -> Job:
    job = jobs.get(job_id)
    if job is None or job.kind != JOB_KIND:
        raise NotFound(f"no backtest job {job_id}")
    return job


@router.get("/jobs/{job_id}", response_model=JobOut, summary="A backtest job: status, report when done, error",
            responses=_ERR_404)
def get_job(_: PricingKey, jobs: JobsDep, job_id: UUID) -> JobOut:
    """`status` is queued, running, done (with `result`) or failed (with `error`)."""
    return _job_out(_job(jobs, job_id))


@router.get("/jobs/{job_id}/bills", response_model=Page[BillRow], summary="A finished backtest job's bills",
            responses={**CSV_RESPONSES, **_ERR_404, **_ERR_409})
def get_job_bills(
    _: PricingKey,
    jobs: JobsDep,
    page: PageDep,
    job_id: UUID,
    plan: Annotated[str | None, Query(max_length=80, description="Only this plan key")] = None,
    format: FormatQuery = "json",
) -> Page[BillRow] | Response:
    """One row per plan × active account-month; `format=csv` downloads all of them."""
    job = _job(jobs, job_id)
    if job.status != "done" or not isinstance(job.result, dict) or "bills" not in job.result:
        raise Conflict(f"job {job_id} is {job.status}" + (f": {job.error}" if job.error else "; no bills yet"))
    rows = _bill_rows(job.result["bills"], plan)
    if format == "csv":
        return csv_response(rows, filename=f"backtest-{job_id}-bills", columns=BILL_COLUMNS)
    items = [BillRow.model_validate(r) for r in rows[page.offset:page.offset + page.limit]]
    return Page[BillRow](items=items, total=len(rows), limit=page.limit, offset=page.offset)


# ---------------------------------------------------------------------------------------------
# Model comparison


class ComparisonModel(_Out):
    """One example model against the baseline, with its monthly bills counted per histogram bin."""

    plan_key: str
    name: str
    revenue: Decimal
    arpu_month: Decimal
    bill: QuantilesOut
    revenue_delta: Decimal
    shock_rate: float
    shock_count: int
    winners: int
    losers: int
    unchanged: int
    histogram: list[int]


class ModelComparisonOut(_Out):
    """The demo's side-by-side of example models on a product's recorded fleet, with shared histogram bins.

    Bins are [bin_edges[k], bin_edges[k+1]), the last one including its upper edge.
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
    bin_edges: list[Decimal]
    models: list[ComparisonModel]
    reason: str | None


@router.get("/comparison", response_model=ModelComparisonOut,
            summary="Example revenue models side by side on the recorded fleet")
def get_comparison(
    _: PricingKey,
    cached: CachedDep,
    product: Annotated[str, Query(min_length=1, max_length=200, pattern=_NO_NUL)] = "thermo-x1",
    theta: Annotated[Decimal, Query(ge=0, le=100, max_digits=12, decimal_places=6,
                                    json_schema_extra=_decimal_text(6))] = Decimal("0.2"),
    bins: Annotated[int, Query(ge=1, le=100, description="Histogram bins")] = 10,
    baseline: Annotated[Literal[service.COMPARISON_PLANS] | None,  # type: ignore[valid-type]
                        Query(description="Plan id of the baseline (default: the first)")] = None,
) -> ModelComparisonOut:
    """Revenue, ARPU, bill quantiles, Δ revenue, shock, winners/losers and bill histograms per model."""
    with _computed():
        comparison = cached.service(service.get_model_comparison, product=product, theta=theta, bins=bins,
                                    baseline=baseline)
    return ModelComparisonOut.model_validate(comparison)


# ---------------------------------------------------------------------------------------------
# Experiments


class ExperimentRecord(_Out):
    """A stored experiment design."""

    experiment_id: str
    created_at: datetime
    created_by: str | None
    design: ExperimentDesign


def _experiment_record(stored: plan_store.StoredExperiment) -> ExperimentRecord:
    return ExperimentRecord(experiment_id=stored.design.experiment_id, created_at=stored.created_at,
                            created_by=stored.created_by, design=stored.design)


def _stored_experiment(conn: psycopg.Connection, experiment_id: str) -> plan_store.StoredExperiment:
    stored = plan_store.get_experiment(conn, experiment_id=experiment_id)
    if stored is None:
        raise NotFound(f"no experiment {experiment_id!r}")
    return stored


@router.post("/experiments", response_model=ExperimentRecord, status_code=201, summary="Store an experiment design",
             responses=_ERR_409)
def create_experiment(key: PricingKey, conn: ConnDep, body: ExperimentDesign, response: Response) -> ExperimentRecord:
    """Arms bill with stored plan keys (`id@vN`); the first arm is the control. 409 if the id is taken."""
    _check_text(body.model_dump(mode="json"), ["body"])
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
    response.headers["Location"] = f"{router.prefix}/experiments/{body.experiment_id}"
    return _experiment_record(stored)


@router.get("/experiments", response_model=Page[ExperimentRecord], summary="Experiment designs, newest first")
def list_experiments(_: PricingKey, conn: ConnDep, page: PageDep) -> Page[ExperimentRecord]:
    """Newest first."""
    rows, total = plan_store.list_experiments(conn, limit=page.limit, offset=page.offset)
    return Page[ExperimentRecord](items=[_experiment_record(r) for r in rows], total=total, limit=page.limit,
                                  offset=page.offset)


@router.get("/experiments/{experiment_id}", response_model=ExperimentRecord, summary="One experiment design",
            responses=_ERR_404)
def get_experiment(_: PricingKey, conn: ConnDep, experiment_id: ExperimentIdPath) -> ExperimentRecord:
    """The stored design."""
    return _experiment_record(_stored_experiment(conn, experiment_id))


class AssignmentOut(_Out):
    """A unit's arm: a pure function of the salt and the unit id, stable across calls."""

    experiment_id: str
    unit_id: str
    arm: str
    plan_key: str


@router.get("/experiments/{experiment_id}/assignments", response_model=Page[AssignmentOut],
            summary="Every cohort account's arm", responses=_ERR_404)
def list_assignments(
    _: PricingKey,
    conn: ConnDep,
    page: PageDep,
    experiment_id: ExperimentIdPath,
    product: TextQuery = None,
    segment: TextQuery = None,
) -> Page[AssignmentOut]:
    """Accounts with a device activated before the window ends, by account id (account-unit designs)."""
    design = _stored_experiment(conn, experiment_id).design
    rows = service.list_experiment_assignments(conn=conn, design=design,
                                               cohort=Cohort(product=product, segment=segment))
    items = [AssignmentOut(experiment_id=experiment_id, unit_id=a.unit_id, arm=a.arm, plan_key=a.plan_key)
             for a in rows[page.offset:page.offset + page.limit]]
    return Page[AssignmentOut](items=items, total=len(rows), limit=page.limit, offset=page.offset)


@router.get("/experiments/{experiment_id}/assignments/{unit_id}", response_model=AssignmentOut,
            summary="One unit's arm", responses=_ERR_404)
def get_assignment(
    _: PricingKey,
    conn: ConnDep,
    experiment_id: ExperimentIdPath,
    unit_id: Annotated[str, Path(min_length=1, max_length=200, description="Account (or device) id")],
) -> AssignmentOut:
    """Deterministic: the same arm on every call (sha256 of salt and unit id against the arms' weights)."""
    design = _stored_experiment(conn, experiment_id).design
    arm = design.arms[int(assign_arms(design=design, unit_ids=[unit_id])[0])]
    return AssignmentOut(experiment_id=experiment_id, unit_id=unit_id, arm=arm.name, plan_key=arm.plan_key)


class ArmStatsOut(_Out):
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


class DifferenceOut(_Out):
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


class SampleRatioOut(_Out):
    """Chi-square test of the arm sizes against the design's split; `mismatch` at p < 0.001."""

    counts: list[int]
    expected: list[float]
    chi2: float
    p_value: float
    mismatch: bool


class ExperimentResultOut(_Out):
    """Per-arm figures, differences against the control, sample-ratio check and guardrail flags."""

    experiment_id: str
    cohort: CohortOut
    arms: list[ArmStatsOut]
    differences: list[DifferenceOut]
    sample_ratio: SampleRatioOut
    guardrail_flags: list[str] = Field(description="Arms whose experience health fell beyond the tolerated drop")
    guardrail_breached: bool


@router.get("/experiments/{experiment_id}/results", response_model=ExperimentResultOut,
            summary="Per-arm usage, revenue, health, conversion and churn with differences, SRM and guardrail",
            responses=_ERR_404)
def get_experiment_results(
    _: PricingKey,
    conn: ConnDep,
    cached: CachedDep,
    experiment_id: ExperimentIdPath,
    product: TextQuery = None,
    segment: TextQuery = None,
) -> ExperimentResultOut:
    """Analysed on recorded usage in the design's window (proxies: docs/pricing.md, Experiments)."""
    design = _stored_experiment(conn, experiment_id).design
    plans = plan_store.get_plans_by_key(conn, keys=[a.plan_key for a in design.arms])
    cohort = Cohort(product=product, segment=segment)
    metrics = tuple(m for m in example_metrics() if m.name not in {x.name for p in plans.values() for x in p.metrics})
    with _computed():
        res = cached.service(service.get_experiment_results, design=design, plans=tuple(plans.values()),
                             cohort=cohort, metrics=metrics)
        quantum = plans[design.arms[0].plan_key].rounding.quantum

        def estimate(metric: str, value: float | None) -> Decimal | None:
            d = _decimal(value)
            return d.quantize(quantum) if d is not None and metric == "revenue_per_unit" else d

        diffs = [DifferenceOut(metric=d.metric, arm=d.arm, control=d.control, diff=estimate(d.metric, d.diff),
                               low=estimate(d.metric, d.low), high=estimate(d.metric, d.high), p_value=d.p_value,
                               test=d.test, significant=d.significant) for d in res.differences]
    return ExperimentResultOut(
        experiment_id=experiment_id, cohort=CohortOut(product=product, segment=segment, account_ids=None),
        arms=[ArmStatsOut.model_validate(a) for a in res.arms], differences=diffs,
        sample_ratio=SampleRatioOut.model_validate(res.sample_ratio), guardrail_flags=list(res.guardrail_flags),
        guardrail_breached=bool(res.guardrail_flags))


# ---------------------------------------------------------------------------------------------
# Willingness to pay


class VanWestendorpAnswer(_In):
    """One respondent's four price answers."""

    respondent_id: Annotated[str, Field(max_length=200)] | None = None
    too_cheap: Price
    cheap: Price
    expensive: Price
    too_expensive: Price


class VanWestendorpIn(_In):
    """Survey responses (or upload a CSV: respondent_id,too_cheap,cheap,expensive,too_expensive)."""

    responses: Annotated[list[VanWestendorpAnswer], Field(min_length=1, max_length=MAX_SURVEY_ROWS)]


class GaborGrangerAnswerIn(_In):
    """Would the respondent buy at `price`?"""

    respondent_id: Annotated[str, Field(max_length=200)] | None = None
    price: Price
    would_buy: bool


class GaborGrangerIn(_In):
    """Survey answers (or upload a CSV: respondent_id,price,would_buy with yes/no)."""

    answers: Annotated[list[GaborGrangerAnswerIn], Field(min_length=1, max_length=MAX_SURVEY_ROWS)]


class PricePoint(_Out):
    """The four cumulative Van Westendorp curves at one answered price."""

    price: Decimal
    too_cheap: float
    cheap: float
    expensive: float
    too_expensive: float


class PriceRange(_Out):
    """Acceptable price range: marginal cheapness to marginal expensiveness."""

    low: Decimal
    high: Decimal


class VanWestendorpOut(_Out):
    """Curves on the answered-price grid and their intersections (None where two curves do not cross).

    Intersections are interpolated between grid prices, so they are estimates (decimal strings).
    """

    n: int
    dropped_inconsistent: int
    optimal_price: Decimal | None
    indifference_price: Decimal | None
    marginal_cheapness: Decimal | None
    marginal_expensiveness: Decimal | None
    acceptable_range: PriceRange | None
    curves: list[PricePoint]


def _van_westendorp_out(res: wtp.VanWestendorpResult) -> VanWestendorpOut:
    curves = [PricePoint(price=_decimal(p), too_cheap=a, cheap=b, expensive=c, too_expensive=d)
              for p, a, b, c, d in zip(res.prices.tolist(), res.too_cheap.tolist(), res.cheap.tolist(),
                                       res.expensive.tolist(), res.too_expensive.tolist(), strict=True)]
    rng = res.acceptable_range
    return VanWestendorpOut(
        n=res.n, dropped_inconsistent=res.dropped_inconsistent, optimal_price=_decimal(res.optimal_price),
        indifference_price=_decimal(res.indifference_price), marginal_cheapness=_decimal(res.marginal_cheapness),
        marginal_expensiveness=_decimal(res.marginal_expensiveness),
        acceptable_range=PriceRange(low=_decimal(rng[0]), high=_decimal(rng[1])) if rng else None, curves=curves)


class DemandPoint(_Out):
    """Demand share and revenue index (price × share) at one asked price."""

    price: Decimal
    demand: float
    answers: int
    revenue_index: Decimal


class GaborGrangerOut(_Out):
    """The demand curve D(p) and the revenue-maximising price (ties: the lower price)."""

    revenue_maximising_price: Decimal
    points: list[DemandPoint]


def _gabor_granger_out(res: wtp.GaborGrangerResult) -> GaborGrangerOut:
    points = [DemandPoint(price=p, demand=d, answers=n, revenue_index=_decimal(r))
              for p, d, n, r in zip(res.prices, res.demand, res.answers, res.revenue_index, strict=True)]
    return GaborGrangerOut(revenue_maximising_price=res.revenue_maximising_price, points=points)


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its `$defs` inlined (so it can sit in an OpenAPI requestBody as is)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def _survey_body(model: type[BaseModel], columns: str) -> dict[str, Any]:
    csv_text = {"type": "string", "description": f"CSV with a header row: {columns}"}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": _inline_refs(model.model_json_schema())},
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                           "properties": {"file": {"type": "string", "format": "binary",
                                                                   "description": f"CSV: {columns}"}}}},
        "text/csv": {"schema": csv_text},
    }}}


@dataclass(frozen=True)
class SurveyBody:
    """The raw body of a survey upload: JSON, or CSV text."""

    kind: Literal["json", "csv"]
    data: bytes


async def read_survey_body(request: Request) -> SurveyBody:
    """JSON (`application/json`), a multipart upload (field `file`) or a CSV body (`text/csv`), size-capped."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=10)
        except StarletteHTTPException:  # Starlette's own 400 for a malformed multipart body
            raise
        except Exception as exc:  # noqa: BLE001 - any other unreadable multipart body is the caller's problem too
            raise Unprocessable(f"unreadable multipart body: {exc}") from exc
        upload = form.get("file")
        if isinstance(upload, UploadFile):
            data = await upload.read(MAX_UPLOAD_BYTES + 1)
        elif isinstance(upload, str):
            data = upload.encode()
        else:
            raise Unprocessable("send the CSV in the multipart field 'file'",
                                details=[ErrorDetail(loc=["body", "file"], message="missing")])
        kind: Literal["json", "csv"] = "csv"
    elif ctype in ("application/json", "text/csv", "text/plain"):
        data = await request.body()
        kind = "json" if ctype == "application/json" else "csv"
    else:
        raise UnsupportedMediaType(
            f"send application/json, text/csv or multipart/form-data (field 'file'), not {ctype or 'no content type'}")
    if len(data) > MAX_UPLOAD_BYTES:
        raise Unprocessable(f"the body is larger than {MAX_UPLOAD_BYTES} bytes")
    return SurveyBody(kind, data)


SurveyBodyDep = Annotated[SurveyBody, Depends(read_survey_body)]


def _invalid(exc: ValidationError, prefix: list[str | int]) -> Unprocessable:
    details = [ErrorDetail(loc=[*prefix, *(p if isinstance(p, int) else str(p) for p in e["loc"])], message=e["msg"])
               for e in exc.errors(include_url=False)[:50]]
    first = details[0]
    return Unprocessable(f"invalid request: {'.'.join(str(p) for p in first.loc)}: {first.message}", details=details)


def _csv_records(data: bytes, model: type[BaseModel], required: tuple[str, ...]) -> list[dict[str, Any]]:
    """CSV rows validated one by one; problems name the line and column (line 1 is the header)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Unprocessable(f"the CSV is not UTF-8 text (byte {exc.start})") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    problems: list[ErrorDetail] = []
    records: list[dict[str, Any]] = []
    try:
        header = next(reader, None)
        if header is None:
            raise Unprocessable("the CSV is empty: it needs a header row " + ",".join(required))
        names = [h.strip() for h in header]
        missing = [c for c in required if c not in names]
        if missing:
            raise Unprocessable(f"line 1: the header lacks column(s) {missing}; expected {','.join(required)}",
                                details=[ErrorDetail(loc=["file", "line 1", c], message="missing column")
                                         for c in missing])
        wanted = [c for c in ("respondent_id", *required) if c in names]
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank lines carry nothing
            if len(records) >= MAX_SURVEY_ROWS:
                raise Unprocessable(f"at most {MAX_SURVEY_ROWS} rows")
            line = reader.line_num
            cells = {c: row[names.index(c)].strip() for c in wanted if names.index(c) < len(row)}
            try:
                records.append(model.model_validate(cells).model_dump())
            except ValidationError as exc:
                for e in exc.errors(include_url=False):
                    column = str(e["loc"][0]) if e["loc"] else ""
                    shown = cells.get(column)
                    problems.append(ErrorDetail(
                        loc=["file", f"line {line}", column],
                        message=e["msg"] + (f" (got {shown!r})" if shown is not None else "")))
            if len(problems) >= 20:
                break
    except csv.Error as exc:
        raise Unprocessable(f"line {reader.line_num}: unreadable CSV: {exc}") from exc
    if problems:
        first = problems[0]
        raise Unprocessable(f"invalid CSV: {first.loc[1]}, column {first.loc[2]!r}: {first.message}",
                            details=problems)
    if not records:
        raise Unprocessable("the CSV has a header but no rows")
    return records


def _survey_records(body: SurveyBody, model: type[BaseModel], item: type[BaseModel], field: str,
                    required: tuple[str, ...]) -> list[dict[str, Any]]:
    if body.kind == "csv":
        return _csv_records(body.data, item, required)
    try:
        parsed = model.model_validate_json(body.data)
    except ValidationError as exc:
        raise _invalid(exc, ["body"]) from exc
    return [r.model_dump() for r in getattr(parsed, field)]


def _van_westendorp_upload(body: SurveyBody) -> VanWestendorpOut:
    records = _survey_records(body, VanWestendorpIn, VanWestendorpAnswer, "responses", wtp.VW_COLUMNS)
    with _computed():
        res = wtp.van_westendorp(responses=wtp.van_westendorp_from_records(records=records))
    return _van_westendorp_out(res)


def _gabor_granger_upload(body: SurveyBody) -> GaborGrangerOut:
    records = _survey_records(body, GaborGrangerIn, GaborGrangerAnswerIn, "answers", ("price", "would_buy"))
    with _computed():
        res = wtp.gabor_granger(answers=wtp.gabor_granger_from_records(records=records))
    return _gabor_granger_out(res)


@router.post("/wtp/van-westendorp", response_model=VanWestendorpOut, summary="Van Westendorp price sensitivity",
             openapi_extra=_survey_body(VanWestendorpIn, "respondent_id,too_cheap,cheap,expensive,too_expensive"),
             responses={415: {"model": ErrorBody, "description": "Unsupported content type"}})
async def post_van_westendorp(_: PricingKey, body: SurveyBodyDep) -> VanWestendorpOut:
    """JSON responses or a CSV upload; inconsistent respondents (answers out of order) are dropped and counted."""
    return await run_in_threadpool(_van_westendorp_upload, body)


@router.post("/wtp/gabor-granger", response_model=GaborGrangerOut, summary="Gabor–Granger demand and revenue",
             openapi_extra=_survey_body(GaborGrangerIn, "respondent_id,price,would_buy"),
             responses={415: {"model": ErrorBody, "description": "Unsupported content type"}})
async def post_gabor_granger(_: PricingKey, body: SurveyBodyDep) -> GaborGrangerOut:
    """JSON answers or a CSV upload (would_buy: yes/no, true/false or 1/0)."""
    return await run_in_threadpool(_gabor_granger_upload, body)


Survey = Annotated[str | None, Query(min_length=1, max_length=100, pattern=_NO_NUL,
                                     description="The `survey` value in feedback events' detail")]


@contextmanager
def _no_answers(survey: str) -> Iterator[None]:
    """Stored answers too few (or too malformed) to analyse: there is no result to GET."""
    try:
        yield
    except PricingError as exc:
        raise NotFound(f"no analysable answers to survey {survey!r}: {exc}") from exc


@router.get("/wtp/van-westendorp", response_model=VanWestendorpOut, responses=_ERR_404,
            summary="Van Westendorp from survey answers in feedback events")
def get_van_westendorp(_: PricingKey, conn: ConnDep, product: TextQuery = None,
                       survey: Survey = None) -> VanWestendorpOut:
    """Feedback events whose detail holds {"survey": survey} and the four prices; 404 if too few."""
    survey = survey or "van_westendorp"
    with _no_answers(survey), _computed():
        res = service.get_van_westendorp(conn=conn, product=product, survey=survey)
    return _van_westendorp_out(res)


@router.get("/wtp/gabor-granger", response_model=GaborGrangerOut, responses=_ERR_404,
            summary="Gabor–Granger from survey answers in feedback events")
def get_gabor_granger(_: PricingKey, conn: ConnDep, product: TextQuery = None,
                      survey: Survey = None) -> GaborGrangerOut:
    """Feedback events whose detail is {"survey": survey, price, would_buy}; 404 if there are none."""
    survey = survey or "gabor_granger"
    with _no_answers(survey), _computed():
        res = service.get_gabor_granger(conn=conn, product=product, survey=survey)
    return _gabor_granger_out(res)


Positive = Annotated[Decimal, Field(gt=0, le=Decimal("1e15"), max_digits=30, json_schema_extra=_decimal_text(15))]


class ElasticityIn(_In):
    """(price, quantity) pairs, e.g. experiment arms or before/after a price change."""

    prices: Annotated[list[Positive], Field(min_length=2, max_length=100_000)]
    quantities: Annotated[list[Positive], Field(min_length=2, max_length=100_000)]

    @model_validator(mode="after")
    def _paired(self) -> ElasticityIn:
        if len(self.prices) != len(self.quantities):
            raise ValueError(f"{len(self.prices)} prices but {len(self.quantities)} quantities")
        return self


class ElasticityOut(_Out):
    """ln Q = a + ε ln P by least squares: ε with its standard error and 95% CI, n points, R²."""

    elasticity: float
    intercept: float
    std_error: Stat
    low: Stat
    high: Stat
    n: int
    r_squared: Stat


@router.post("/wtp/elasticity", response_model=ElasticityOut, summary="Constant-elasticity (log-log) fit")
def fit_elasticity(_: PricingKey, body: ElasticityIn) -> ElasticityOut:
    """Needs two distinct prices; with exactly two points the fit is exact (no standard error)."""
    with _computed():
        fit = wtp.fit_elasticity(prices=[float(p) for p in body.prices], quantities=[float(q) for q in body.quantities])
    if not (np.isfinite(fit.elasticity) and np.isfinite(fit.intercept)):
        raise Unprocessable("the prices are too close together for a fit")
    return ElasticityOut.model_validate(fit)
