"""Journey: lifecycle funnel of the devices that came online in the window, cohorts and time to first value."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pandas as pd
import psycopg

from cxp.analytics.core import journey as core_journey
from cxp.analytics.core._frames import finite_or_none
from cxp.analytics.errors import maps_numeric_errors
from cxp.analytics.models import Cohort, JourneyReport, StageCount, TimeToValueStats, Window
from cxp.analytics.queries._base import CHURN_STAGES, day_start
from cxp.analytics.queries.registry import devices, lifecycle
from cxp.analytics.queries.touchpoints import first_core_success
from cxp.analytics.queries.usage import daily_usage
from cxp.analytics.query import ALL_DEVICES, AnalyticsQuery
from cxp.analytics.service._common import (
    CHURN_INACTIVE_DAYS,
    count_or_zero,
    empty_window,
    resolve_window,
    utc_days,
)

TIMESTAMP_COLUMNS = (
    "activated_at",
    "first_core_use_at",
    "habitual_at",
    "last_use_at",
    "cancelled_at",
    "registered_at",
)


def _not_enough_data(window: Window, reason: str) -> JourneyReport:
    return JourneyReport(
        window=window,
        stages=(),
        churned=None,
        churn_rate=None,
        cohorts=(),
        time_to_value=(),
        definitions={},
        reason=reason,
    )


def _device_milestones(
    conn: psycopg.Connection,
    *,
    query: AnalyticsQuery,
    window: Window,
    onboarded: pd.DataFrame,
    habitual_days: int,
    habitual_window_days: int,
) -> pd.DataFrame:
    """Per onboarded device: registered, activated, first core use, habitual, last use and cancellation times."""
    keys = set(onboarded["device_key"])
    # Only the onboarded devices' rows are read: the scope narrowed to them (a subset of it, its other filters kept).
    only = replace(query, devices=frozenset(onboarded["device_id"].astype(str)))
    events = lifecycle(conn, scope=only, start=window.start, end=window.end, stages=["activated", *CHURN_STAGES])
    first_event = events.sort_values("ts").groupby(["device_key", "stage"])["ts"].first().unstack()
    core = first_core_success(conn, scope=only, start=window.start, end=window.end, device_keys=sorted(keys))
    daily = daily_usage(conn, scope=only, start=window.start, end=window.end, uses_only=True)
    habitual = core_journey.habitual_dates(
        daily=daily.rename(columns={"device_key": "entity_id"}), k=habitual_days, window_days=habitual_window_days
    )
    # as datetimes: the maximum of a column of date objects is a Python comparison per row
    last_active_day = pd.to_datetime(daily["day"]).groupby(daily["device_key"].to_numpy()).max()
    frame = onboarded[["device_key", "device_id", "product_id", "activated_at"]].rename(
        columns={"activated_at": "registered_at"}
    )
    frame = frame.set_index("device_key")
    frame["activated_at"] = first_event["activated"] if "activated" in first_event.columns else pd.NaT
    frame["first_core_use_at"] = core.set_index("device_key")["first_core_use_at"]
    frame["habitual_at"] = pd.to_datetime(habitual.set_index("entity_id")["habitual_on"]).dt.tz_localize("UTC")
    # the end of the last active day: inactivity counts from then
    frame["last_use_at"] = (pd.to_datetime(last_active_day) + pd.Timedelta(days=1)).dt.tz_localize("UTC")
    exit_stages = [s for s in CHURN_STAGES if s in first_event.columns]
    frame["cancelled_at"] = first_event[exit_stages].min(axis=1) if exit_stages else pd.NaT
    frame = frame.reset_index()
    for column in TIMESTAMP_COLUMNS:
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _time_to_value(milestones: pd.DataFrame) -> tuple[TimeToValueStats, ...]:
    """Hours from activation (else coming online) to the first successful core use, overall and per product."""
    frame = milestones.assign(activated_at=milestones["activated_at"].fillna(milestones["registered_at"]))
    overall = core_journey.time_to_value(devices=frame, unit="hours")
    stats = [
        TimeToValueStats(
            product_id="all",
            n_activated=overall.n_activated,
            n_reached=overall.n_reached,
            share_reached=overall.share_reached,
            median_h=overall.distribution.median,
            p90_h=overall.distribution.p90,
            mean_h=overall.distribution.mean,
            reason=overall.distribution.reason,
        )
    ]
    by_product = core_journey.time_to_value_by_group(devices=frame, group_cols=["product_id"], unit="hours")
    for row in by_product.itertuples(index=False):
        stats.append(
            TimeToValueStats(
                product_id=str(row.product_id),
                n_activated=count_or_zero(row.n_activated),
                n_reached=count_or_zero(row.n_reached),
                share_reached=finite_or_none(row.share_reached),
                median_h=finite_or_none(row.median),
                p90_h=finite_or_none(row.p90),
                mean_h=None,
                reason=row.reason,
            )
        )
    return tuple(stats)


@maps_numeric_errors
def get_journey(
    *,
    conn: psycopg.Connection,
    query: AnalyticsQuery = ALL_DEVICES,
    days: int = 90,
    habitual_days: int = 4,
    habitual_window_days: int = 14,
) -> JourneyReport:
    """Lifecycle funnel (registered → activated → first core use → habitual; churned as the exit) of the devices
    that came online in the window, per weekly activation cohort, with time to first value per product.

    Devices that came online before the window are left out: their early journey was not observed.
    """
    window = resolve_window(conn, query=query, default_days=days)
    if window is None:
        return _not_enough_data(empty_window(), "not enough data: nothing stored yet")
    scoped = devices(conn, scope=query)
    came_online = utc_days(scoped["activated_at"])
    onboarded = scoped[(came_online >= pd.Timestamp(window.start)) & (came_online <= pd.Timestamp(window.end))]
    if onboarded.empty:
        return _not_enough_data(window, "not enough data: no device came online in the window")
    milestones = _device_milestones(
        conn,
        query=query,
        window=window,
        onboarded=onboarded,
        habitual_days=habitual_days,
        habitual_window_days=habitual_window_days,
    )
    funnel = core_journey.lifecycle_funnel(
        devices=milestones,
        as_of=day_start(window.end + timedelta(days=1)),
        churn_inactive_days=CHURN_INACTIVE_DAYS,
        cohort="week",
    )
    stages = tuple(
        StageCount(
            stage=s.stage,
            devices=s.count,
            conversion_from_previous=s.conversion_from_previous,
            conversion_from_start=s.conversion_from_start,
        )
        for s in funnel.stages
    )
    cohorts = tuple(
        Cohort(
            cohort=str(r.cohort),
            age_days=count_or_zero(r.age_days),
            mature=bool(r.mature),
            registered=count_or_zero(r.registered),
            activated=count_or_zero(r.activated),
            first_core_use=count_or_zero(r.first_core_use),
            habitual=count_or_zero(r.habitual),
            churned=None if pd.isna(r.churned) else int(r.churned),
            conv_activated=finite_or_none(r.conv_activated),
            conv_first_core_use=finite_or_none(r.conv_first_core_use),
            conv_habitual=finite_or_none(r.conv_habitual),
            churn_rate=finite_or_none(r.churn_rate),
        )
        for r in funnel.by_cohort.itertuples(index=False)
    )
    definitions = {
        **funnel.definitions,
        "registered": "came online (registry activated_at) inside the window",
        "activated": "the 'activated' lifecycle event (pairing completed) was received",
        "first_core_use": "first successful use of a core touchpoint (its exact time, kept in rollup_touchpoint_daily)",
        "habitual": f"{habitual_days} active days within {habitual_window_days} days",
        "time_to_value": "hours from the activated event (else coming online) to the first successful core use",
    }
    return JourneyReport(
        window=window,
        stages=stages,
        churned=funnel.churned,
        churn_rate=funnel.churn_rate,
        cohorts=cohorts,
        time_to_value=_time_to_value(milestones),
        definitions=definitions,
        reason=funnel.reason,
    )
