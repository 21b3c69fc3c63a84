"""Experience endpoints (role `product`): health, voice, touchpoints, journey, disruptions, personas, churn risk."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from cxp.analytics import service
from cxp.analytics.models import (
    ChurnRiskEntry,
    DisruptionReport,
    FleetReport,
    HealthScore,
    JourneyReport,
    SegmentReport,
    TouchpointReport,
    VoiceReport,
    Window,
)
from cxp.analytics.query import AnalyticsQuery
from cxp.api.deps import CachedDep, PageDep, ProductKey
from cxp.api.errors import NotFound
from cxp.api.schemas import CSV_RESPONSES, FormatQuery, Page, csv_response, day_type, paged

router = APIRouter(prefix="/v1/experience", tags=["experience"])

Id = Annotated[str, Query(min_length=1, max_length=200)]
# Telemetry has UTC timestamps from 1970 on; bounds keep window arithmetic inside the calendar.
Day = Annotated[day_type(date(1970, 1, 1), date(2200, 12, 31)), Query()]


def get_query(
    product: Annotated[str | None, Query(max_length=200, description="Product model id")] = None,
    segment: Annotated[str | None, Query(max_length=200, description="Account segment")] = None,
    account: Annotated[str | None, Query(max_length=200, description="Account id")] = None,
    start: Annotated[Day | None, Query(description="First UTC day (default: from `days`/`weeks` before end)")] = None,
    end: Annotated[Day | None, Query(description="Last UTC day, inclusive (default: the last day with data)")] = None,
) -> AnalyticsQuery:
    """The question every experience endpoint asks, built once (a start after the end is a 422)."""
    return AnalyticsQuery(product=product, segment=segment, account=account, start=start, end=end)


QueryDep = Annotated[AnalyticsQuery, Depends(get_query)]
Days = Annotated[int, Query(ge=1, le=3660, description="Window length in days when start is not given")]


class HealthPage(Page[HealthScore]):
    """Health scores (one per entity × period) with the window they cover."""

    level: str
    grain: str
    window: Window
    reason: str | None


_HEALTH_COLUMNS = ("level", "entity_id", "period_start", "period_end", "product_id", "segment", "devices", "score",
                   "band", "capped", "components", "top_negative_drivers", "previous_score", "delta", "arrow", "reason",
                   "partial")


@router.get("/health", response_model=HealthPage, responses=CSV_RESPONSES,
            summary="Experience Health Score with components and drivers")
def list_health(
    _: ProductKey,
    cached: CachedDep,
    query: QueryDep,
    page: PageDep,
    level: Literal["device", "account", "product", "fleet"] = "product",
    grain: Literal["day", "week"] = "week",
    device: Annotated[str | None, Query(max_length=200)] = None,
    weeks: Annotated[int, Query(ge=1, le=104, description="Weekly periods when start is not given")] = 8,
    latest: Annotated[bool, Query(description="Only each entity's last period")] = False,
    format: FormatQuery = "json",
) -> HealthPage | Response:
    """Scores per entity and period, newest period last; `latest=true` keeps each entity's last period."""
    report = cached.service(service.get_health, query=replace(query, device=device), level=level, grain=grain,
                            weeks=weeks)
    scores = report.latest() if latest else report.scores
    if format == "csv":
        return csv_response(scores, filename=f"health-{level}", columns=_HEALTH_COLUMNS)
    return HealthPage(level=level, grain=grain, window=report.window, reason=report.reason,
                      **paged(scores, limit=page.limit, offset=page.offset))


@router.get("/health/{level}/{entity_id}", response_model=list[HealthScore],
            summary="One entity's health history", responses={404: {"description": "No such entity in scope"}})
def get_health_history(
    _: ProductKey,
    cached: CachedDep,
    level: Literal["device", "account", "product", "fleet"],
    entity_id: str,
    grain: Literal["day", "week"] = "week",
    weeks: Annotated[int, Query(ge=1, le=104)] = 12,
    end: Day | None = None,
) -> list[HealthScore]:
    """Every period's score of one device, account, product (or `fleet/fleet`), oldest first."""
    query = {"device": AnalyticsQuery(device=entity_id, end=end), "account": AnalyticsQuery(account=entity_id, end=end),
             "product": AnalyticsQuery(product=entity_id, end=end), "fleet": AnalyticsQuery(end=end)}[level]
    report = cached.service(service.get_health, query=query, level=level, grain=grain, weeks=weeks)
    history = report.history(entity_id if level != "fleet" else next(
        (s.entity_id for s in report.scores), entity_id))
    if not history:
        raise NotFound(f"no {level} {entity_id!r} with health data" + (f": {report.reason}" if report.reason else ""))
    return list(history)


@router.get("/voice", response_model=VoiceReport, summary="NPS, CSAT and CES per group")
def get_voice(
    _: ProductKey,
    cached: CachedDep,
    query: QueryDep,
    by: Annotated[list[Literal["product", "touchpoint", "segment", "week", "month", "day"]],
                  Query(description="Group by these (repeat the parameter)")] = ["product"],  # noqa: B006
    days: Days = 90,
    min_n: Annotated[int, Query(ge=1, le=10_000, description="Answers below which a value is withheld")] = 2,
) -> VoiceReport:
    """NPS with n and 95% margin, CSAT top-2-box, CES mean — never mixed across scales."""
    return cached.service(service.get_voice, query=query, by=tuple(dict.fromkeys(by)), days=days, min_n=min_n)


@router.get("/touchpoints", response_model=TouchpointReport, responses=CSV_RESPONSES,
            summary="Touchpoints: reach, success, latency, importance–performance quadrant, satisfier class")
def get_touchpoints(
    _: ProductKey,
    cached: CachedDep,
    query: QueryDep,
    days: Days = 56,
    format: FormatQuery = "json",
    survey_crosshairs: Annotated[
        Literal["data", "midpoint"],
        Query(description="Crosshairs of the stated survey: its means (data) or the scale midpoint"),
    ] = "data",
) -> TouchpointReport | Response:
    """Per product × touchpoint, with the outcome models behind derived importance and the stored stated
    importance × quality survey placed with the chosen crosshairs."""
    report = cached.service(service.get_touchpoints, query=query, days=days, survey_crosshairs=survey_crosshairs)
    if format == "csv":
        return csv_response(report.touchpoints, filename="touchpoints")
    return report


@router.get("/journey", response_model=JourneyReport, summary="Lifecycle funnel, cohorts and time to first value")
def get_journey(_: ProductKey, cached: CachedDep, query: QueryDep, days: Days = 90) -> JourneyReport:
    """Registered → activated → first core use → habitual, churned as the exit, per weekly cohort."""
    return cached.service(service.get_journey, query=query, days=days)


@router.get("/disruptions", response_model=DisruptionReport,
            summary="Incidents, recovery times, error spikes and the effect of recovery")
def get_disruptions(_: ProductKey, cached: CachedDep, query: QueryDep, days: Days = 56) -> DisruptionReport:
    """Error episodes merged into incidents, time to recovery, spikes, and the recovery-paradox test."""
    return cached.service(service.get_disruptions, query=query, days=days)


@router.get("/personas", response_model=SegmentReport, summary="Usage personas with size and health")
def get_personas(_: ProductKey, cached: CachedDep, query: QueryDep, days: Days = 56) -> SegmentReport:
    """k-means personas on standardised usage features, named in product-manager words."""
    return cached.service(service.get_segments, query=query, days=days)


class ChurnRiskPage(Page[ChurnRiskEntry]):
    """Devices or accounts ranked by churn risk."""

    level: str
    window: Window
    reason: str | None
    weights: dict[str, float]


@router.get("/churn-risk", response_model=ChurnRiskPage, responses=CSV_RESPONSES,
            summary="Ranked churn risk with reasons")
def list_churn_risk(
    _: ProductKey,
    cached: CachedDep,
    query: QueryDep,
    page: PageDep,
    level: Literal["device", "account"] = "device",
    include_churned: bool = False,
    format: FormatQuery = "json",
) -> ChurnRiskPage | Response:
    """Highest risk first; reasons in words (usage slope, days since last core use, recent disruptions)."""
    # the risk window is the 28 days up to `end`: a start would not change the answer, so it does not key the cache
    result = cached.service(service.list_churn_risk, query=query.ending(query.end), level=level,
                            include_churned=include_churned)
    if format == "csv":
        return csv_response(result.entries, filename=f"churn-risk-{level}")
    return ChurnRiskPage(level=level, window=result.window, reason=result.reason, weights=result.weights,
                         **paged(result.entries, limit=page.limit, offset=page.offset))


@router.get("/report", response_model=FleetReport, summary="Fleet health summary with the top concerns")
def get_report(
    _: ProductKey,
    cached: CachedDep,
    product: Annotated[str | None, Query(max_length=200)] = None,
    segment: Annotated[str | None, Query(max_length=200)] = None,
    end: Day | None = None,
    weeks: Annotated[int, Query(ge=1, le=52)] = 4,
) -> FleetReport:
    """What the demo prints: fleet and product scores, NPS, band shares, churn risk and ranked concerns."""
    query = AnalyticsQuery(product=product, segment=segment, end=end)
    return cached.service(service.get_fleet_report, query=query, weeks=weeks)
