"""CX measures endpoints (role `product`, issue 18): engagement rate, smart-capability ladder, journey map,
referrals beside NPS (the analytics half of earned growth)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from cxp.analytics import service
from cxp.analytics.core.engagement import EngagementRule
from cxp.analytics.models_measures import EngagementReport, JourneyMap, LadderReport, ReferralReport
from cxp.api.deps import CachedDep, ProductKey
from cxp.api.routers.experience import QueryDep
from cxp.api.schemas import CSV_RESPONSES, FormatQuery, csv_response

router = APIRouter(prefix="/v1/experience", tags=["experience"])

Share = Annotated[float, Query(ge=0.0, le=1.0)]


@router.get(
    "/engagement-rate",
    response_model=EngagementReport,
    responses=CSV_RESPONSES,
    summary="Engagement rate: engaged ÷ reached customers per product, segment and period, with trend",
)
def get_engagement_rate(
    _: ProductKey,
    cached: CachedDep,
    query: QueryDep,
    grain: Literal["day", "week"] = "week",
    weeks: Annotated[int, Query(ge=1, le=104, description="Weekly periods when start is not given")] = 8,
    min_stickiness: Share = 0.6,
    min_breadth: Share = 0.5,
    min_n: Annotated[int, Query(ge=1, le=10_000, description="Fewest reached devices for a rate")] = 5,
    format: FormatQuery = "json",
) -> EngagementReport | Response:
    """Rates with 95% Wilson intervals beside the health engagement component; the definition per product.

    CSV: one row per product × segment (empty = all segments) × period.
    """
    report = cached.service(
        service.get_engagement_rate,
        query=query,
        grain=grain,
        weeks=weeks,
        rule=EngagementRule(min_stickiness=min_stickiness, min_breadth=min_breadth),
        min_n=min_n,
    )
    if format == "csv":
        return csv_response(report.rates, filename="engagement-rate")
    return report


@router.get(
    "/capability-ladder",
    response_model=LadderReport,
    responses=CSV_RESPONSES,
    summary="Smart-capability ladder: share of devices at each level, days to reach it, climbers vs others",
)
def get_capability_ladder(
    _: ProductKey,
    cached: CachedDep,
    query: QueryDep,
    weeks: Annotated[int, Query(ge=1, le=104, description="Weeks of history when start is not given")] = 8,
    min_n: Annotated[int, Query(ge=2, le=10_000, description="Fewest devices per group for a comparison")] = 10,
    format: FormatQuery = "json",
) -> LadderReport | Response:
    """Monitoring → control → optimisation → autonomy per product and segment; climbers' health and churn with
    95% CIs. CSV: one row per product × segment (empty = all segments) × level."""
    report = cached.service(service.get_capability_ladder, query=query, weeks=weeks, min_n=min_n)
    if format == "csv":
        return csv_response(report.levels, filename="capability-ladder")
    return report


@router.get(
    "/journey-map",
    response_model=JourneyMap,
    responses=CSV_RESPONSES,
    summary="Journey map: stages × touchpoints with reach, performance, satisfaction, pain points, drop-off",
)
def get_journey_map(
    _: ProductKey,
    cached: CachedDep,
    query: QueryDep,
    days: Annotated[int, Query(ge=1, le=3660, description="Window length in days when start is not given")] = 56,
    persona: Annotated[
        str | None, Query(max_length=200, description="Persona name (from /v1/experience/segments) to narrow to")
    ] = None,
    format: FormatQuery = "json",
) -> JourneyMap | Response:
    """For a product, a segment (scope filters) or a persona. CSV: one row per stage × touchpoint cell. The map as
    a standalone SVG for a wall: /dashboard/journey-map/svg with the same filters."""
    report = cached.service(service.get_journey_map, query=query, days=days, persona=persona)
    if format == "csv":
        return csv_response(report.cells, filename="journey-map")
    return report


_REFERRAL_COLUMNS = (
    "devices",
    "customer_weeks",
    "referrals",
    "rate_per_100_weeks",
    "ci_low",
    "ci_high",
    "new_devices",
    "earned_new_devices",
    "nps",
    "nps_n",
)


@router.get(
    "/referrals",
    response_model=ReferralReport,
    responses=CSV_RESPONSES,
    summary="Referrals per product, segment or activation cohort beside the group NPS (earned growth, analytics half)",
)
def get_referrals(
    _: ProductKey,
    cached: CachedDep,
    query: QueryDep,
    by: Annotated[list[Literal["product", "segment", "cohort"]], Query(max_length=3)] = ["product"],  # noqa: B006
    weeks: Annotated[int, Query(ge=1, le=104, description="Weeks of history when start is not given")] = 6,
    min_n: Annotated[
        int, Query(ge=2, le=10_000, description="Fewest devices and NPS answers per group for the correlation")
    ] = 10,
    format: FormatQuery = "json",
) -> ReferralReport | Response:
    """Referrals per 100 customer-weeks (exact 95 % Poisson CI), earned (referred) new devices, NPS with n per
    group, and the Spearman correlation of NPS and referral rate across groups. CSV: one row per group."""
    report = cached.service(service.get_referrals, query=query, by=tuple(dict.fromkeys(by)), weeks=weeks, min_n=min_n)
    if format == "csv":
        keys = list(report.by)
        rows = [{**g.key, **{c: getattr(g, c) for c in _REFERRAL_COLUMNS}} for g in report.groups]
        return csv_response(rows, filename="referrals", columns=[*keys, *_REFERRAL_COLUMNS])
    return report
