"""The built-in example plans: read them, or store those whose plan ids are free."""

from __future__ import annotations

from fastapi import APIRouter

from cxp.api.deps import ConnDep, PricingKey
from cxp.api.routers.pricing.common import OutputModel
from cxp.pricing import repository as plan_store
from cxp.pricing import service
from cxp.pricing.core.plans import BillableMetric, Plan
from cxp.pricing.examples import example_metrics, example_plans

router = APIRouter()


class Examples(OutputModel):
    """The built-in example plans (one per IoT revenue model) and the metrics their usage keys read."""

    plans: list[Plan]
    metrics: list[BillableMetric]
    comparison_plans: list[str]


class ExamplesInstalled(OutputModel):
    """Which example plans were stored now and which plan ids existed already (left untouched)."""

    created: list[str]
    existing: list[str]


@router.get("/examples", response_model=Examples, summary="Built-in example plans and metrics to start from")
def get_examples(_: PricingKey) -> Examples:
    """Copy one, change it, `POST /plans` it; the metrics are what backtests use by default."""
    return Examples(plans=list(example_plans()), metrics=list(example_metrics()),
                    comparison_plans=list(service.COMPARISON_PLANS))


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
