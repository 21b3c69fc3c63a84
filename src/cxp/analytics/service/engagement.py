"""Engagement rate per product × segment × period from the health score's device-period rows (rollups)."""

from __future__ import annotations

import pandas as pd
import psycopg

from cxp.analytics.core._frames import finite_or_none
from cxp.analytics.core.engagement import (
    EngagementRule,
    direction_agreement,
    engagement_rates,
    rank_agreement,
    rate_trend,
)
from cxp.analytics.errors import maps_numeric_errors
from cxp.analytics.models import Window
from cxp.analytics.models_measures import EngagementRate, EngagementReport, EngagementTrend
from cxp.analytics.queries._base import Grain
from cxp.analytics.queries.registry import devices
from cxp.analytics.query import ALL_DEVICES, AnalyticsQuery
from cxp.analytics.service._common import as_day, as_text, empty_window, partial_period
from cxp.analytics.service.health import health_frames

ALL_SEGMENTS = "__all__"


def _definitions(rows: pd.DataFrame, rule: EngagementRule) -> dict[str, str]:
    """The definition of "engaged" per product, in the product's own rhythm."""
    out = {}
    for product, expected in rows.groupby("product_id")["expected_active_days_per_week"].first().items():
        days = rule.min_stickiness * float(expected)
        out[str(product)] = (
            f"active on ≥ {rule.min_stickiness:.0%} of the expected {float(expected):g} days/week"
            f" (≥ {days:.1f} days in a full week) and using ≥ {rule.min_breadth:.0%} of the touchpoints a"
            " typical active device of the product uses in the period (90th percentile)"
        )
    return out


def _as_rates(table: pd.DataFrame, *, grain: Grain, window: Window) -> list[EngagementRate]:
    out = []
    for row in table.itertuples(index=False):
        start, end = as_day(row.period), as_day(row.period_end)
        out.append(
            EngagementRate(
                product_id=str(row.product_id),
                segment=None if row.segment == ALL_SEGMENTS else as_text(row.segment),
                period_start=start,
                period_end=end,
                reached=int(row.reached),
                engaged=int(row.engaged),
                rate=finite_or_none(row.rate),
                ci_low=finite_or_none(row.ci_low),
                ci_high=finite_or_none(row.ci_high),
                engagement_component=finite_or_none(row.engagement_component),
                partial=grain == "week"
                and partial_period(
                    period_start=start, period_end=end, window_start=window.start, window_end=window.end
                ),
                reason=as_text(row.reason),
            )
        )
    return out


def _trends(rates: list[EngagementRate]) -> list[EngagementTrend]:
    series: dict[tuple[str, str | None], list[EngagementRate]] = {}
    for r in rates:
        if not r.partial:
            series.setdefault((r.product_id, r.segment), []).append(r)
    out = []
    for (product, segment), items in sorted(series.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        items.sort(key=lambda r: r.period_start)
        values = [r.rate for r in items]
        components = [r.engagement_component if r.rate is not None else None for r in items]
        known = [v for v in values if v is not None]
        out.append(
            EngagementTrend(
                product_id=product,
                segment=segment,
                periods=len(items),
                first_rate=known[0] if known else None,
                last_rate=known[-1] if known else None,
                slope_pp_per_period=rate_trend(rates=values),
                component_slope_per_period=rate_trend(rates=components),
                direction_agreement=direction_agreement(rates=values, components=components),
            )
        )
    return out


@maps_numeric_errors
def engagement_device_rows(
    *, conn: psycopg.Connection, query: AnalyticsQuery = ALL_DEVICES, grain: Grain = "week", weeks: int = 8
) -> tuple[pd.DataFrame, Window | None]:
    """One row per reached device × period: the health frame's engagement inputs and component with the account
    segment and the product's expected active days per week (what `get_engagement_rate` groups)."""
    # Only the engagement component: the kept trajectory, voice and efficiency parts are not read.
    frame, window = health_frames(conn=conn, query=query, level="device", grain=grain, weeks=weeks,
                                  components=("engagement",))
    if frame.empty:
        return frame, window
    registry = devices(conn, scope=query)[["device_key", "segment", "expected_active_days_per_week"]]
    rows = frame.drop(columns=["segment"]).merge(registry, on="device_key", how="left")
    rows["segment"] = rows["segment"].fillna("unknown").astype(str)
    return rows, window


@maps_numeric_errors
def get_engagement_rate(
    *,
    conn: psycopg.Connection,
    query: AnalyticsQuery = ALL_DEVICES,
    grain: Grain = "week",
    weeks: int = 8,
    rule: EngagementRule | None = None,
    min_n: int = 5,
) -> EngagementReport:
    """Engaged ÷ reached customers per product × account segment × period (and per product over all segments),
    with the 95% Wilson interval, the trend, and the health engagement component of the same devices beside it.

    Reached = a customer for at least one day of the period; engaged = the rule's thresholds on the health
    score's stickiness (active days vs the product's expected rhythm) and breadth (touchpoints used).
    """
    rule = rule or EngagementRule()
    rows, window = engagement_device_rows(conn=conn, query=query, grain=grain, weeks=weeks)
    if window is None:
        return EngagementReport(grain, empty_window(), (), (), None, reason="not enough data: nothing stored yet")
    if rows.empty:
        return EngagementReport(grain, window, (), (), None, reason="not enough data: no devices in scope")
    by = ["product_id", "segment", "period", "period_end"]
    per_segment = engagement_rates(frame=rows, by=by, rule=rule, min_n=min_n)
    per_product = engagement_rates(frame=rows.assign(segment=ALL_SEGMENTS), by=by, rule=rule, min_n=min_n)
    table = pd.concat([per_product, per_segment], ignore_index=True)
    rates = _as_rates(table, grain=grain, window=window)
    full = [r for r in rates if not r.partial and r.segment is not None]
    return EngagementReport(
        grain=grain,
        window=window,
        rates=tuple(rates),
        trends=tuple(_trends(rates)),
        rank_agreement=rank_agreement(rates=[r.rate for r in full], components=[r.engagement_component for r in full]),
        definitions=_definitions(rows, rule),
    )
