"""Experience Health Score per device, account, product or fleet: the inputs from SQL, the formulas from core.health."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import pandas as pd
import psycopg

from cxp.analytics.core.health import (
    COMPONENTS,
    SUB_SCORES,
    HealthConfig,
    HealthScores,
    aggregate_devices,
    engagement_component,
    health_scores,
    reliability_component,
    score_values,
    voice_component,
)
from cxp.analytics.errors import maps_numeric_errors
from cxp.analytics.lazy_rows import LazyRows
from cxp.analytics.models import Driver, HealthReport, HealthScore, Level, Window
from cxp.analytics.queries._base import Grain, Source, day_start
from cxp.analytics.queries.health import (
    health_period_inputs,
    uptime_exact,
)
from cxp.analytics.queries.health_weekly import count_kept_health_weeks, stale_health_weeks
from cxp.analytics.queries.registry import churn_exits, devices, get_latest_day
from cxp.analytics.query import ALL_DEVICES, AnalyticsQuery
from cxp.analytics.service._common import (
    empty_window,
    partial_period,
    periods,
    resolve_window,
    utc_days,
)
from cxp.analytics.service.health_kept import kept_parts, narrowed_scope

COUNT_COLUMNS = ("uses", "successes", "active_days", "error_free_days", "heartbeats", "touchpoints_used")


def _device_period_frame(
    conn: psycopg.Connection, *, scope: AnalyticsQuery, window: Window, grain: Grain, source: Source,
    components: Sequence[str] = COMPONENTS,
) -> pd.DataFrame:
    """One row per (device, period) the device was a customer in, with the inputs and scores of `components` (the
    others' columns missing values)."""
    period_list = periods(window.start, window.end, grain)
    first_day = period_list[0][0]
    scoped = devices(conn, scope=scope)
    if scoped.empty:
        return pd.DataFrame()
    exits = churn_exits(conn, scope=scope, end=window.end, source=source)
    scoped = scoped.merge(exits, on="device_key", how="left")
    scoped["act_day"] = utc_days(scoped["activated_at"])
    scoped["exit_day"] = utc_days(scoped["exit_at"]) if len(exits) else pd.NaT
    period_frame = pd.DataFrame(
        {
            "period": [pd.Timestamp(first) for first, _ in period_list],
            "period_end": [pd.Timestamp(last) for _, last in period_list],
        }
    )
    base = scoped.merge(period_frame, how="cross")
    alive = (base["act_day"] <= base["period_end"]) & ~(base["exit_day"] < base["period"])
    base = base[alive].reset_index(drop=True)
    if base.empty:
        return base
    # Series.where, not np.maximum / np.minimum: numpy's ufuncs on datetime Series go element by element in Python.
    first_alive = base["act_day"].where(base["act_day"] > base["period"], base["period"])
    last_alive = base["period_end"].where(~(base["exit_day"] < base["period_end"]), base["exit_day"])
    base["days_in_period"] = (last_alive - first_alive).dt.days + 1
    # seconds the device could have been up: from the later of period start and activation to the earlier of
    # period end, exit and the end of the as-of day
    period_from = base["period"].dt.tz_localize("UTC")
    activated = pd.to_datetime(base["activated_at"], utc=True)
    up_from = activated.where(activated > period_from, period_from)
    up_to = (base["period_end"] + pd.Timedelta(days=1)).dt.tz_localize("UTC")
    exit_at = pd.to_datetime(base["exit_at"], utc=True)
    up_to = up_to.where(~(exit_at < up_to), exit_at)
    base["window_s"] = ((up_to - up_from).dt.total_seconds()).clip(lower=0)

    inputs = health_period_inputs(conn, scope=scope, start=first_day, end=window.end, grain=grain, source=source)
    inputs["period"] = pd.to_datetime(inputs["period"])
    base = base.merge(inputs, on=["device_key", "period"], how="left")
    for column in COUNT_COLUMNS:
        base[column] = base[column].fillna(0).astype(float)

    if source == "raw":
        uptime = uptime_exact(
            conn,
            scope=scope,
            start=first_day,
            end=window.end,
            grain=grain,
            as_of_end=day_start(window.end + timedelta(days=1)),
        )
        uptime["period"] = pd.to_datetime(uptime["period"])
        base = base.merge(uptime[["device_key", "period", "up_s"]], on=["device_key", "period"], how="left")
        base["up_s"] = base["up_s"].fillna(0.0)
    else:
        # Rollup uptime: each heartbeat received covers one interval (the 1.5 × rule differs only by half an
        # interval per gap; source="raw" applies the rule exactly).
        base["up_s"] = base["heartbeats"] * base["heartbeat_interval_s"].astype(float)
    base["uptime"] = np.where(
        base["window_s"] > 0, np.clip(base["up_s"] / base["window_s"].where(base["window_s"] > 0), 0, 1), np.nan
    )

    # Components are computed keyed by the device's integer key (string ids make every merge and group slower); the
    # device ids replace the keys at the end.
    keyed = base.assign(entity_id=base["device_key"])
    reliability = reliability_component(
        frame=keyed[["entity_id", "period", "uses", "successes", "active_days", "error_free_days", "uptime"]]
    )

    active = keyed[keyed["active_days"] > 0]
    catalogue_size = (
        active.groupby(["product_id", "period"])["touchpoints_used"]
        .quantile(0.9)
        .apply(np.ceil)
        .rename("catalogue_size")
    )
    keyed = keyed.merge(catalogue_size.reset_index(), on=["product_id", "period"], how="left")
    engagement = engagement_component(
        frame=keyed[
            [
                "entity_id",
                "period",
                "active_days",
                "days_in_period",
                "expected_active_days_per_week",
                "touchpoints_used",
                "catalogue_size",
            ]
        ]
    )

    # Trajectory, voice and efficiency: whole weeks from the kept rows (health_weekly), the others computed here.
    empty = pd.DataFrame()
    trajectory, voice, efficiency = empty, empty, empty
    if {"efficiency", "trajectory", "voice"} & set(components):
        kept = kept_parts(conn, scope=scope, keyed=keyed, first_day=first_day, end=window.end, grain=grain,
                          source=source)
        trajectory, voice, efficiency = kept.trajectory, voice_component(frame=kept.answers), kept.efficiency

    out = keyed[
        [
            "entity_id",
            "device_key",
            "period",
            "period_end",
            "product_id",
            "account_id",
            "segment",
            "activated_at",
            "days_in_period",
            "uses",
            "active_days",
        ]
    ].copy()
    for part, columns in (
        (reliability, ["success_score", "error_free_score", "uptime_score", "reliability"]),
        (efficiency, ["efficiency"]),
        (engagement, ["stickiness_score", "breadth_score", "engagement"]),
        (trajectory, ["slope_score", "recency_score", "trajectory", "days_since_last_use"]),
        (voice, ["nps_score", "csat_score", "ces_score", "voice"]),
    ):
        if len(part):
            out = out.merge(part[["entity_id", "period", *columns]], on=["entity_id", "period"], how="left")
        else:
            for column in columns:
                out[column] = np.nan
    out["entity_id"] = keyed["device_id"].to_numpy()  # left merges on unique keys: the rows are keyed's, in order
    return out


def score_frame(frame: pd.DataFrame, config: HealthConfig, *, drivers: bool = True) -> HealthScores:
    """The pure score (core health) on entity × period component rows, components clipped to 0–100."""
    return health_scores(frame=score_inputs(frame), config=config, drivers=drivers)


def score_inputs(frame: pd.DataFrame) -> pd.DataFrame:
    """The score's inputs of component rows: ids, period, product, segment and the components clipped to 0–100."""
    inputs = frame[["entity_id", "period", "product_id", "segment", *COMPONENTS]].copy()
    for component in COMPONENTS:
        inputs[component] = pd.to_numeric(inputs[component], errors="coerce").astype(float).clip(0, 100)
    return inputs


def device_scores(*, conn: psycopg.Connection, query: AnalyticsQuery, weeks: int) -> pd.DataFrame:
    """device_id, score (float, NaN when not scored) per device × week of the last `weeks` weeks, ordered by device
    then week: the scores of `get_health` for views that need no HealthScore objects or drivers."""
    frame, _ = health_frames(conn=conn, query=query, level="device", weeks=weeks)
    if frame.empty:
        return pd.DataFrame({"device_id": pd.Series(dtype=str), "score": pd.Series(dtype=float)})
    return pd.DataFrame({"device_id": frame["entity_id"].astype(str).to_numpy(),
                         "score": score_values(frame=score_inputs(frame), config=HealthConfig())})


def health_objects(
    level: Level, frame: pd.DataFrame, config: HealthConfig, *, partial: Callable[[date, date], bool] | None = None
) -> Sequence[HealthScore]:
    """Run the pure score on entity × period rows; each row's HealthScore is built when first read.

    `partial(period_start, period_end)` marks periods the window covers only in part."""
    if frame.empty:
        return ()
    scored = score_frame(frame, config, drivers=False)  # each row's drivers built from arrays when it is read
    scores = scored.scores.reset_index(drop=True)
    extra = frame.reset_index(drop=True)
    # Whole columns converted at once, then a row's values picked by index: per-value lookups and conversions cost
    # ~10× the score itself on a fleet (35,000 device-weeks).
    floats = {c: _optional_floats(scores[c]) for c in (*COMPONENTS, "score", "score_uncapped", "previous_score",
                                                         "delta")}
    components = [floats[c] for c in COMPONENTS]
    weights = [_optional_floats(scores[f"weight_{c}"]) for c in COMPONENTS]
    sub_names = [c for c in SUB_SCORES if c in extra.columns]
    subs = [_optional_floats(extra[c]) for c in sub_names]
    top = [scores[f"driver_{k}"].tolist() for k in range(1, config.top_drivers + 1)]
    device_counts = (
        [0 if n is None else int(n) for n in _optional_floats(extra["devices"])]
        if "devices" in extra.columns else [1] * len(extra)
    )
    entity_ids = [str(e) for e in scores["entity_id"].tolist()]
    starts, ends = _days(scores["period"]), _days(extra["period_end"])
    products, segments = scores["product_id"].tolist(), scores["segment"].tolist()
    bands, capped, arrows, reasons = (scores[c].tolist() for c in ("band", "capped", "arrow", "reason"))
    driver_arrays = scored.driver_arrays

    def make(i: int) -> HealthScore:
        product, segment = products[i], segments[i]
        return HealthScore(
            level=level,
            entity_id=entity_ids[i],
            period_start=starts[i],  # type: ignore[arg-type]
            period_end=ends[i],  # type: ignore[arg-type]
            product_id=None if product is None else str(product),
            segment=None if segment is None else str(segment),
            devices=device_counts[i],
            score=floats["score"][i],
            band=bands[i],
            capped=bool(capped[i]),
            score_uncapped=floats["score_uncapped"][i],
            components={c: column[i] for c, column in zip(COMPONENTS, components, strict=True)},
            weights={c: column[i] for c, column in zip(COMPONENTS, weights, strict=True)},
            sub_scores={c: column[i] for c, column in zip(sub_names, subs, strict=True)},
            drivers=tuple(Driver(component=c, score=v, segment_median=m, weight=w, contribution=x)
                          for c, v, m, w, x in driver_arrays.of_row(i)),
            top_negative_drivers=tuple(str(d[i]) for d in top if d[i] is not None),
            previous_score=floats["previous_score"][i],
            delta=floats["delta"][i],
            arrow=arrows[i],
            reason=reasons[i],
            partial=partial is not None and partial(starts[i], ends[i]),  # type: ignore[arg-type]
        )

    return LazyRows(entity_ids, make)


def _optional_floats(column: pd.Series) -> list[float | None]:
    """The column as Python floats, None where missing or not finite (`finite_or_none` on every value)."""
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    out = values.astype(object)
    out[~np.isfinite(values)] = None
    return out.tolist()


def _days(column: pd.Series) -> list[date | None]:
    """Timestamps as UTC dates, None where missing (`as_day` on every value)."""
    stamps = pd.to_datetime(column)
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return np.where(stamps.isna(), None, stamps.dt.date).tolist()


@maps_numeric_errors
def health_frames(
    *,
    conn: psycopg.Connection,
    query: AnalyticsQuery = ALL_DEVICES,
    level: Level = "device",
    grain: Grain = "week",
    weeks: int = 8,
    source: Source = "rollups",
    components: Sequence[str] = COMPONENTS,
) -> tuple[pd.DataFrame, Window | None]:
    """The component frame behind get_health (one row per entity × period), for the fleet report and audits; only
    `components` are computed (a view that reads only some skips the others' reads)."""
    window = resolve_window(conn, query=query, default_days=7 * weeks if grain == "week" else 28)
    if window is None:
        return pd.DataFrame(), None
    rows = _device_period_frame(conn, scope=query, window=window, grain=grain, source=source, components=components)
    if rows.empty:
        return rows, window
    if level == "device":
        return rows.assign(devices=1, segment=rows["product_id"]), window
    return aggregate_devices(device_rows=rows, level=level), window


@maps_numeric_errors
def refresh_kept_health(
    *, conn: psycopg.Connection, query: AnalyticsQuery = ALL_DEVICES, weeks: int = 13, only_stale: bool = False
) -> tuple[int, int]:
    """Compute and keep the scope's device health rows of the `weeks` weeks to `end` (default: the last day with
    data) that are not kept yet or went stale (what the first viewer would otherwise compute); `only_stale`: only the
    devices and weeks marked stale (cheap after a refresh of late data). Returns the (fresh, stale) kept rows."""
    end = query.end if query.end is not None else get_latest_day(conn)
    if end is not None:
        scope = replace(query, end=end)
        if only_stale:
            stale, first_week = stale_health_weeks(conn, since=end - timedelta(days=7 * weeks), until=end)
            scope = narrowed_scope(replace(scope, start=first_week), np.array(stale, dtype=object))
        if not only_stale or stale:
            health_frames(conn=conn, query=scope, level="device", weeks=weeks)
    return count_kept_health_weeks(conn)


@maps_numeric_errors
def get_health(
    *,
    conn: psycopg.Connection,
    query: AnalyticsQuery = ALL_DEVICES,
    level: Level = "device",
    grain: Grain = "week",
    weeks: int = 8,
    config: HealthConfig | None = None,
    source: Source = "rollups",
) -> HealthReport:
    """Experience Health Score per device, account, product or fleet, per day or week, with history.

    Components per docs/experience-score.md (and docs/analytics.md for the inputs chosen); drivers compare
    each entity with its segment's median in the same period: devices with their product, accounts with
    their account segment, products with all products. Default period: the last `weeks` weeks (or 28 days).
    """
    frame, window = health_frames(conn=conn, query=query, level=level, grain=grain, weeks=weeks, source=source)
    if window is None:
        return HealthReport(
            level=level,
            grain=grain,
            window=empty_window(),
            source=source,
            scores=(),
            reason="not enough data: nothing stored yet",
        )
    if frame.empty:
        return HealthReport(
            level=level,
            grain=grain,
            window=window,
            source=source,
            scores=(),
            reason="not enough data: no devices in scope",
        )
    def partial(start: date, end: date) -> bool:
        return partial_period(period_start=start, period_end=end, window_start=window.start, window_end=window.end)

    scores = health_objects(level, frame, config or HealthConfig(), partial=partial if grain == "week" else None)
    return HealthReport(level=level, grain=grain, window=window, source=source, scores=scores)
