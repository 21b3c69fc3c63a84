"""Plans: validate a definition, store versions (idempotent re-posts), read the latest or any version."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from cxp.api.deps import ConnDep, PageDep, PricingKey
from cxp.api.errors import Conflict, NotFound
from cxp.api.routers.pricing.common import (
    ERR_404,
    ERR_409,
    PREFIX,
    OutputModel,
    PlanIdPath,
    VersionField,
    VersionPath,
    check_text,
)
from cxp.api.schemas import Page
from cxp.pricing import repository as plan_store
from cxp.pricing.core.charges import volume_drops
from cxp.pricing.core.plans import Hybrid, Plan, UsageCharge, VolumeCharge
from cxp.pricing.errors import PricingError

router = APIRouter()


class PlanIn(Plan):
    """A plan definition to store or validate; leave `version` out to store the next version."""

    version: VersionField | None = None  # type: ignore[assignment]


class PlanRecord(OutputModel):
    """A stored plan version."""

    plan_id: str
    version: int
    key: str
    created_at: datetime
    created_by: str | None
    definition: Plan


class PlanInputsOut(OutputModel):
    """What billing the plan reads: usage keys, outcome keys, uptime, freemium and bundle components."""

    usage_keys: list[str]
    outcome_keys: list[str]
    needs_uptime: bool
    freemium_components: list[str]
    bundle_components: list[str]


class PlanValidation(OutputModel):
    """A valid plan, normalised, with what it reads and warnings worth a look (e.g. volume-tier drops)."""

    valid: bool = True
    key: str | None
    plan: PlanIn
    inputs: PlanInputsOut
    warnings: list[str]


def plan_record(stored: plan_store.StoredPlan) -> PlanRecord:
    """A stored plan as the API shows it."""
    plan = stored.plan
    return PlanRecord(plan_id=plan.plan_id, version=plan.version, key=plan.key, created_at=stored.created_at,
                      created_by=stored.created_by, definition=plan)


def _warnings(plan: Plan) -> list[str]:
    out = []
    defined = {m.name for m in plan.metrics}
    for component in plan.components:
        charge = (component.charge if isinstance(component, UsageCharge)
                  else component.overage if isinstance(component, Hybrid) else None)
        if isinstance(charge, VolumeCharge):
            try:
                drops = volume_drops(tiers=charge.tiers)
            except (PricingError, ArithmeticError):
                drops = []
            for drop in drops:
                recovers = f", back at q = {drop.recovers_at}" if drop.recovers_at is not None else ""
                out.append(f"{component.id}: the volume-tier total drops by {drop.drop} just above "
                           f"q = {drop.boundary}{recovers}")
    for key in sorted(plan.required_inputs().usage_keys - defined):
        out.append(f"usage key {key!r} has no metric in the plan: backtests use the request's metrics "
                   f"(the examples' by default) or count usage events of touchpoint {key!r}")
    return out


def _plan_from_body(body: PlanIn) -> Plan:
    check_text(body.model_dump(mode="json"), ["body"])
    return Plan.model_validate({**body.model_dump(exclude={"version"}), "version": body.version or 1})


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
                                                                   "nothing stored"}, **ERR_409})
def create_plan(key: PricingKey, conn: ConnDep, body: PlanIn, response: Response) -> PlanRecord:
    """Store the next version of `plan_id` (or version 1); idempotent for a re-post of the same definition."""
    plan = _plan_from_body(body)
    try:
        saved = plan_store.save_plan(conn, plan=plan, version=body.version, created_by=key.key_id)
    except plan_store.PlanVersionConflict as exc:
        raise Conflict(str(exc)) from exc
    record = plan_record(saved.stored)
    response.headers["Location"] = f"{PREFIX}/plans/{record.plan_id}/versions/{record.version}"
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
    return Page[PlanRecord](items=[plan_record(r) for r in rows], total=total, limit=page.limit, offset=page.offset)


@router.get("/plans/{plan_id}", response_model=PlanRecord, summary="A plan's latest version", responses=ERR_404)
def get_plan(_: PricingKey, conn: ConnDep, plan_id: PlanIdPath) -> PlanRecord:
    """The latest version."""
    stored = plan_store.get_plan(conn, plan_id=plan_id)
    if stored is None:
        raise NotFound(f"no plan {plan_id!r}")
    return plan_record(stored)


@router.get("/plans/{plan_id}/versions", response_model=Page[PlanRecord], summary="Every version of a plan",
            responses=ERR_404)
def list_plan_versions(_: PricingKey, conn: ConnDep, page: PageDep, plan_id: PlanIdPath) -> Page[PlanRecord]:
    """Oldest first."""
    rows, total = plan_store.list_plan_versions(conn, plan_id=plan_id, limit=page.limit, offset=page.offset)
    if total == 0:
        raise NotFound(f"no plan {plan_id!r}")
    return Page[PlanRecord](items=[plan_record(r) for r in rows], total=total, limit=page.limit, offset=page.offset)


@router.get("/plans/{plan_id}/versions/{version}", response_model=PlanRecord, summary="One version of a plan",
            responses=ERR_404)
def get_plan_version(_: PricingKey, conn: ConnDep, plan_id: PlanIdPath, version: VersionPath) -> PlanRecord:
    """One stored version."""
    stored = plan_store.get_plan(conn, plan_id=plan_id, version=version)
    if stored is None:
        raise NotFound(f"no version {version} of plan {plan_id!r}")
    return plan_record(stored)
