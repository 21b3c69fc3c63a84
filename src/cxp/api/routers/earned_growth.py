"""Earned growth beside NPS (role `product`, issue 18): the pricing lab's bills give each group's net revenue
retention and earned-new revenue (pricing.earned), analytics give the same group's NPS (analytics.service), and
this resource joins them and asks whether the NPS predicts the earned growth across groups (analytics ⟂ pricing,
so the composition lives here)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from cxp.analytics import service as analytics
from cxp.analytics.models_measures import ReferralGroup
from cxp.analytics.query import AnalyticsQuery
from cxp.api.deps import Cached, CachedDep, ProductKey
from cxp.api.errors import NotFound
from cxp.api.routers.pricing.common import OutputModel
from cxp.api.schemas import CSV_RESPONSES, FormatQuery, csv_response
from cxp.pricing import repository as plan_store
from cxp.pricing.core.growth import rank_correlation
from cxp.pricing.core.plans import Plan
from cxp.pricing.earned import GrowthGroup, get_earned_growth
from cxp.pricing.examples import example_plans
from cxp.pricing.metrics import add_months

router = APIRouter(prefix="/v1/experience", tags=["experience"])

PLACES = Decimal("0.01")


class GrowthGroupOut(OutputModel):
    """One group: its customers, revenue (minor units, exact), the growth figures (percent) and its NPS."""

    key: dict[str, str]
    base_customers: int
    kept_customers: int
    earned_new_customers: int
    other_new_customers: int
    base_revenue_minor: int | None = None
    retained_revenue_minor: int | None = None
    earned_new_revenue_minor: int | None = None
    other_new_revenue_minor: int | None = None
    nrr_pct: Decimal | None = None
    earned_new_pct: Decimal | None = None
    earned_growth_pct: Decimal | None = None
    revenue_growth_pct: Decimal | None = None
    earned_growth_ratio: Decimal | None = None
    nps: float | None = None
    nps_n: int = 0
    reason: str | None = None


class EarnedGrowthOut(OutputModel):
    """Earned growth of `month` against `base_month` per group and in total, NPS beside each group, and the rank
    correlation of NPS and earned growth across groups with enough customers and answers."""

    plan_key: str
    currency: str
    base_month: date | None
    month: date | None
    partial: bool
    by: list[str]
    groups: list[GrowthGroupOut]
    total: GrowthGroupOut | None
    nps_growth_correlation: float | None
    correlation_groups: int
    definitions: dict[str, str]
    reason: str | None


_COLUMNS = [c for c in GrowthGroupOut.model_fields if c not in ("key", "reason")] + ["reason"]


def resolve_plan(cached: Cached, ref: str) -> Plan:
    """A stored plan (`id` = latest version, `id@vN`) or an example plan by id; NotFound otherwise."""
    plan_id, _, version = ref.partition("@v")
    with cached.pool.connection() as conn:  # never cached: a new version of the plan is in force at once
        stored = plan_store.get_plan(conn, plan_id=plan_id, version=int(version) if version else None)
    if stored is not None:
        return stored.plan
    example = next((p for p in example_plans() if p.plan_id == plan_id and not version), None)
    if example is None:
        raise NotFound(f"no plan {ref!r}: store it with POST /v1/pricing/plans, or name an example plan")
    return example


def _out(group: GrowthGroup, nps: ReferralGroup | None = None) -> GrowthGroupOut:
    g = group.growth
    figures = {}
    if g is not None:
        figures = {
            "base_revenue_minor": g.base_revenue_minor,
            "retained_revenue_minor": g.retained_revenue_minor,
            "earned_new_revenue_minor": g.earned_new_revenue_minor,
            "other_new_revenue_minor": g.other_new_revenue_minor,
            **{
                k: None if getattr(g, k) is None else getattr(g, k).quantize(PLACES)
                for k in ("nrr_pct", "earned_new_pct", "earned_growth_pct", "revenue_growth_pct", "earned_growth_ratio")
            },
        }
    voice = {} if nps is None else {"nps": nps.nps, "nps_n": nps.nps_n}
    return GrowthGroupOut(
        key=group.key,
        base_customers=group.base_customers,
        kept_customers=group.kept_customers,
        earned_new_customers=group.earned_new_customers,
        other_new_customers=group.other_new_customers,
        reason=group.reason,
        **figures,
        **voice,
    )


def compose_earned_growth(
    cached: Cached, *, plan: Plan, by: Sequence[str], month: date | None, product: str | None, min_n: int
) -> EarnedGrowthOut:
    """Earned growth per group from pricing, the same group's NPS from analytics over the compared month, and the
    rank correlation of the two across groups with enough customers and answers."""
    by = list(dict.fromkeys(by))
    report = cached.service(get_earned_growth, plan=plan, by=tuple(by), month=month, product=product, min_n=min_n)
    voice = {}
    if report.month is not None:
        last = add_months(report.month, 1) - timedelta(days=1)
        referrals = cached.service(
            analytics.get_referrals,
            query=AnalyticsQuery(product=product, start=report.month, end=last),
            by=tuple(by),
            min_n=min_n,
        )
        voice = {tuple(g.key[k] for k in by): g for g in referrals.groups}
    groups = [_out(g, voice.get(tuple(g.key[k] for k in by))) for g in report.groups]
    usable = [
        (float(g.nps), float(g.earned_growth_pct))
        for g in groups
        if g.reason is None and g.earned_growth_pct is not None and g.nps is not None and g.nps_n >= min_n
    ]
    return EarnedGrowthOut(
        plan_key=report.plan_key,
        currency=report.currency,
        base_month=report.base_month,
        month=report.month,
        partial=report.partial,
        by=by,
        groups=groups,
        total=None if report.total is None else _out(report.total),
        nps_growth_correlation=rank_correlation(usable),
        correlation_groups=len(usable),
        definitions={
            **report.definitions,
            "nps": "NPS of the group's devices' answers in the compared month (n beside it; cohort = device"
            " activation month there)",
            "nps_growth_correlation": "Spearman rank correlation of NPS and earned growth across groups with"
            " ≥ min_n base customers and ≥ min_n answers (None below three groups)",
        },
        reason=report.reason,
    )


@router.get(
    "/earned-growth",
    response_model=EarnedGrowthOut,
    responses={**CSV_RESPONSES, 404: {"description": "No such plan"}},
    summary="Earned growth (NRR + earned-new revenue − 100 %) per product, segment or cohort, beside its NPS",
)
def get_earned_growth_report(
    _: ProductKey,
    cached: CachedDep,
    plan: Annotated[
        str,
        Query(
            min_length=1,
            max_length=80,
            pattern=r"^[A-Za-z0-9_.-]+(@v[0-9]{1,9})?$",
            description="The plan in force: a stored plan id (latest version, or id@vN) or an example plan id",
        ),
    ],
    by: Annotated[list[Literal["product", "segment", "cohort"]], Query(max_length=3)] = ["product"],  # noqa: B006
    month: Annotated[
        date | None,
        Query(description="The 1st of the month compared with the month before (default: the last whole month)"),
    ] = None,
    product: Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = None,
    min_n: Annotated[int, Query(ge=2, le=10_000, description="Fewest base customers and NPS answers per group")] = 10,
    format: FormatQuery = "json",
) -> EarnedGrowthOut | Response:
    """Revenue is each account's bill under `plan` for the month; an account silent all month pays nothing. NPS is
    the group's over the compared month. CSV: one row per group."""
    out = compose_earned_growth(
        cached, plan=resolve_plan(cached, plan), by=by, month=month, product=product, min_n=min_n
    )
    if format == "csv":
        rows = [{**g.key, **g.model_dump(include=set(_COLUMNS))} for g in out.groups]
        return csv_response(rows, filename="earned-growth", columns=[*out.by, *_COLUMNS])
    return out
