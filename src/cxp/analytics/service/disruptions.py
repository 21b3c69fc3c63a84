"""Disruptions: error episodes merged into incidents, time to recovery, daily spikes and the recovery paradox."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd
import psycopg

from cxp.analytics.core import disruptions as core_disruptions
from cxp.analytics.core._frames import finite_or_none
from cxp.analytics.core.stats import distribution
from cxp.analytics.errors import maps_numeric_errors
from cxp.analytics.models import (
    Disruption,
    DisruptionReport,
    EffectComparison,
    EffectGroup,
    RecoveryTimes,
    Spike,
    Window,
)
from cxp.analytics.queries._base import day_start
from cxp.analytics.queries.disruptions import daily_errors_by_product, error_stream, hourly_errors
from cxp.analytics.queries.feedback import feedback_after
from cxp.analytics.queries.registry import devices, get_first_day
from cxp.analytics.queries.usage import usage_around
from cxp.analytics.query import ALL_DEVICES, AnalyticsQuery
from cxp.analytics.service._common import as_day, as_utc_datetime, count_or_zero, empty_window, resolve_window

BASELINE_DAYS = 28  # an hour of day is compared with the same hour on the previous 28 days


def _recovery_times(name: str, episodes: pd.DataFrame) -> RecoveryTimes:
    recovery = core_disruptions.time_to_recovery(episodes=episodes)
    return RecoveryTimes(
        scope=name,
        episodes=recovery.n_episodes,
        recovered=recovery.n_recovered,
        not_recovered=recovery.n_not_recovered,
        median_s=recovery.seconds.median,
        p90_s=recovery.seconds.p90,
        mean_s=recovery.seconds.mean,
    )


@maps_numeric_errors
def get_disruptions(
    *,
    conn: psycopg.Connection,
    query: AnalyticsQuery = ALL_DEVICES,
    days: int = 56,
    min_devices: int = 5,
    min_share: float = 0.02,
    spike_k: float = 5.0,
    effect_days: int = 14,
    feedback_horizon_days: int = 28,
) -> DisruptionReport:
    """Error episodes merged into incidents, time to recovery, daily error spikes against each product's baseline,
    and the effect of a disruption and of fast vs slow recovery on later usage and feedback (recovery paradox).

    An incident = a run of hours in which the number of devices with one error code on one product's touchpoint
    exceeds that hour of day's trailing 28-day baseline by `spike_k` spreads (core detect_spikes; stricter than the
    daily rule's 3.5 because every product × touchpoint × code × hour is tested each day), hitting at least
    `min_devices` devices and `min_share` of the product; the episodes starting in it give devices, codes and
    recovery times. Everyday errors, even many of them, are not incidents.
    """
    window = resolve_window(conn, query=query, default_days=days)
    if window is None:
        return DisruptionReport(
            window=empty_window(),
            incidents=(),
            recovery=(),
            spikes=(),
            fast_recovery_s=None,
            effect_groups=(),
            effect_comparisons=(),
            recovery_paradox="not enough data",
            definitions={},
            reason="not enough data: nothing stored yet",
        )
    scoped = devices(conn, scope=query)
    devices_per_product = scoped.groupby("product_id").size()
    stream = error_stream(conn, scope=query, start=window.start, end=window.end)
    episodes = core_disruptions.error_episodes(events=stream, as_of=day_start(window.end + timedelta(days=1)))
    recovery = [_recovery_times("all episodes", episodes)]
    for product_id, product_episodes in episodes.groupby("product_id"):
        recovery.append(_recovery_times(str(product_id), product_episodes))

    incidents: list[Disruption] = []
    incident_episodes: list[pd.DataFrame] = []
    for run in _incident_runs(conn, scope=query, window=window, k=spike_k):
        members = episodes[
            (episodes["product_id"] == run["product_id"])
            & (episodes["touchpoint"] == run["touchpoint"])
            & (episodes["code"] == run["code"])
            & (episodes["start"] >= run["start"])
            & (episodes["start"] < run["end"])
        ]
        devices_hit = int(members["device_id"].nunique())
        share = devices_hit / float(devices_per_product.get(run["product_id"], 0) or 1)
        if devices_hit < min_devices or share < min_share:
            continue
        incident_episodes.append(members)
        durations = distribution(values=members["duration_s"])
        ends = pd.to_datetime(members["end"], utc=True)
        incidents.append(
            Disruption(
                product_id=str(run["product_id"]),
                touchpoint=str(run["touchpoint"]),
                code=str(run["code"]),
                start=as_utc_datetime(members["start"].min()),
                end=as_utc_datetime(max(run["end"], ends.max()) if ends.notna().any() else run["end"]),
                open=bool((members["status"] == "open").any()),
                devices_affected=devices_hit,
                share_of_product=share,
                episodes=len(members),
                errors=count_or_zero(members["errors"].sum()),
                recovered_episodes=int(members["recovered"].sum()),
                median_recovery_s=durations.median,
                p90_recovery_s=durations.p90,
            )
        )
    if incident_episodes:
        recovery.append(_recovery_times("incident episodes", pd.concat(incident_episodes)))

    daily = daily_errors_by_product(conn, scope=query, start=window.start, end=window.end)
    spikes: list[Spike] = []
    if len(daily):
        tested = core_disruptions.detect_spikes(
            series=daily.rename(columns={"errors": "value"})[["product_id", "day", "value"]], group_cols=("product_id",)
        )
        for r in tested[tested["spike"].fillna(False).astype(bool)].itertuples(index=False):
            spikes.append(
                Spike(
                    product_id=str(r.product_id),
                    day=as_day(r.day),  # type: ignore[arg-type]
                    errors=count_or_zero(r.value),
                    baseline=float(r.baseline),
                    threshold=float(r.threshold),
                    excess=float(r.excess),
                )
            )

    effects = _disruption_effects(
        conn,
        scope=query,
        window=window,
        scoped=scoped,
        members=incident_episodes,
        effect_days=effect_days,
        horizon_days=feedback_horizon_days,
    )
    definitions = {
        "episode": "per device, touchpoint and error code: from an error to the next recovery (unrecovered after 24 h)",
        "incident": "consecutive hours whose count of devices with one error code on a product's touchpoint exceeds the"
        f" same hour of day's trailing 28-day median + {spike_k} · max(1.4826·MAD, 1, √median), hitting ≥"
        f" {min_devices} devices and ≥ {min_share:.0%} of the product",
        "spike": "a day's error count above the trailing 28-day median + 3.5 · max(1.4826·MAD, 1, √median)",
        "effect groups": f"devices hit by an incident (its first incident in the window, starting ≥ {effect_days} days"
        f" before the end), split at the median recovery time into fast and slow; 'none' = devices"
        f" of the same product not hit, referenced to that product's first such incident",
        "usage change": f"mean uses per day in the {effect_days} days after minus before the reference day",
        "feedback after": f"the device's first NPS and CSAT answers within {feedback_horizon_days} days after",
    }
    return DisruptionReport(
        window=window,
        incidents=tuple(incidents),
        recovery=tuple(recovery),
        spikes=tuple(spikes),
        fast_recovery_s=effects.fast_recovery_s,
        effect_groups=effects.groups,
        effect_comparisons=effects.comparisons,
        recovery_paradox=effects.paradox,
        definitions=definitions,
        reason=None if len(stream) else "not enough data: no errors in window",
    )


def _incident_runs(
    conn: psycopg.Connection, *, scope: AnalyticsQuery, window: Window, k: float
) -> list[dict[str, object]]:
    """Runs of spike hours per product × touchpoint × error code; each hour of day is compared with the same hour
    on the previous 28 days (core detect_spikes on distinct devices with that error)."""
    first = max(window.start - timedelta(days=BASELINE_DAYS), get_first_day(conn) or window.start)
    hourly = hourly_errors(conn, scope=scope, start=first, end=window.end)
    if hourly.empty:
        return []
    keys = ["product_id", "touchpoint", "code"]
    bucket = pd.to_datetime(hourly["bucket"], utc=True).dt.tz_localize(None)
    series = hourly[keys].assign(hour=bucket.dt.hour, day=bucket.dt.normalize(), value=hourly["devices"].astype(float))
    # every hour of day gets a calendar from the first day with data, so quiet days count as zeros
    calendar = series[keys].drop_duplicates().merge(pd.DataFrame({"hour": range(24)}), how="cross")
    series = pd.concat(
        [
            calendar.assign(day=pd.Timestamp(first), value=0.0),
            series,
            calendar.assign(day=pd.Timestamp(window.end), value=0.0),
        ],
        ignore_index=True,
    )
    series = series.groupby([*keys, "hour", "day"], as_index=False)["value"].sum()
    # Only a (code, hour of day) series with a device in error inside the window can spike there: test those only
    # (the same incidents; a short window, as the alert rules ask for, then tests a few series instead of all).
    recent = series[(series["day"] >= pd.Timestamp(window.start)) & (series["value"] > 0)]
    series = series.merge(recent[[*keys, "hour"]].drop_duplicates(), on=[*keys, "hour"])
    tested = core_disruptions.detect_spikes(
        series=series, group_cols=(*keys, "hour"), window=BASELINE_DAYS, k=k, min_history=7
    )
    hit = tested[tested["spike"].fillna(False).astype(bool)]
    hit = hit[hit["day"] >= pd.Timestamp(window.start)]
    if hit.empty:
        return []
    hour_start = (hit["day"] + pd.to_timedelta(hit["hour"].astype(int), unit="h")).dt.tz_localize("UTC")
    hit = hit.assign(t=hour_start).sort_values([*keys, "t"])
    runs: list[dict[str, object]] = []
    for (product_id, touchpoint, code), group in hit.groupby(keys, sort=True):
        run_start = previous = None
        for hour in group["t"]:
            if previous is not None and hour - previous <= pd.Timedelta(hours=1):
                previous = hour
                continue
            if run_start is not None:
                runs.append(
                    {
                        "product_id": product_id,
                        "touchpoint": touchpoint,
                        "code": code,
                        "start": run_start,
                        "end": previous + pd.Timedelta(hours=1),
                    }
                )
            run_start = previous = hour
        runs.append(
            {
                "product_id": product_id,
                "touchpoint": touchpoint,
                "code": code,
                "start": run_start,
                "end": previous + pd.Timedelta(hours=1),
            }
        )
    return runs


@dataclass(frozen=True)
class _Effects:
    """The recovery-paradox part of the report."""

    fast_recovery_s: float | None = None
    groups: tuple[EffectGroup, ...] = ()
    comparisons: tuple[EffectComparison, ...] = ()
    paradox: str = "not enough data"


def _disruption_effects(
    conn: psycopg.Connection,
    *,
    scope: AnalyticsQuery,
    window: Window,
    scoped: pd.DataFrame,
    members: list[pd.DataFrame],
    effect_days: int,
    horizon_days: int,
) -> _Effects:
    """Fast / slow / no recovery groups compared on later usage change, NPS and CSAT (core disruption_effects)."""
    if not members:
        return _Effects()
    latest_reference = pd.Timestamp(day_start(window.end - timedelta(days=effect_days)))
    hit = pd.concat(members).sort_values("start")
    hit = hit[pd.to_datetime(hit["start"], utc=True) <= latest_reference].drop_duplicates("device_id")
    if hit.empty:
        return _Effects()
    reference_by_product = hit.groupby("product_id")["start"].min()
    device_keys = scoped.set_index("device_id")["device_key"]
    rows = pd.DataFrame(
        {
            "device_key": hit["device_id"].map(device_keys).to_numpy(),
            "ref_ts": hit["start"].to_numpy(),
            "disrupted": True,
            "recovery_s": hit["duration_s"].to_numpy(dtype=float, na_value=np.nan),
        }
    )
    others = scoped[scoped["product_id"].isin(reference_by_product.index) & ~scoped["device_id"].isin(hit["device_id"])]
    others = others[pd.to_datetime(others["activated_at"], utc=True) < others["product_id"].map(reference_by_product)]
    rows = pd.concat(
        [
            rows,
            pd.DataFrame(
                {
                    "device_key": others["device_key"].to_numpy(),
                    "ref_ts": others["product_id"].map(reference_by_product).to_numpy(),
                    "disrupted": False,
                    "recovery_s": np.nan,
                }
            ),
        ],
        ignore_index=True,
    )
    rows["ref_ts"] = pd.to_datetime(rows["ref_ts"], utc=True)
    rows["ref_day"] = rows["ref_ts"].dt.tz_localize(None).dt.date
    usage = usage_around(conn, scope=scope, refs=rows[["device_key", "ref_day"]], days=effect_days)
    feedback = feedback_after(
        conn, scope=scope, refs=rows[["device_key", "ref_ts"]], horizon_days=horizon_days, end=window.end
    )
    compared = rows.merge(usage, on="device_key", how="left").merge(feedback, on="device_key", how="left")
    compared["device_id"] = compared["device_key"]
    for column in ("nps_after", "csat_after"):
        compared[column] = pd.to_numeric(compared[column], errors="coerce").astype(float)
    effects = core_disruptions.disruption_effects(
        devices=compared[
            ["device_id", "disrupted", "recovery_s", "usage_before", "usage_after", "nps_after", "csat_after"]
        ]
    )
    groups = tuple(
        EffectGroup(
            group=str(r.group),
            devices=count_or_zero(r.devices),
            usage_n=count_or_zero(r.usage_n),
            usage_change_mean=finite_or_none(r.usage_mean),
            nps_n=count_or_zero(r.nps_n),
            nps=finite_or_none(r.nps),
            nps_margin=finite_or_none(r.nps_margin),
            csat_n=count_or_zero(r.csat_n),
            csat=finite_or_none(r.csat),
            csat_margin=finite_or_none(r.csat_margin),
        )
        for r in effects.groups.itertuples(index=False)
    )
    comparisons = tuple(
        EffectComparison(
            metric=str(r.metric),
            a=str(r.a),
            b=str(r.b),
            difference=finite_or_none(r.difference),
            ci_low=finite_or_none(r.ci_low),
            ci_high=finite_or_none(r.ci_high),
            n_a=count_or_zero(r.n_a),
            n_b=count_or_zero(r.n_b),
            reason=r.reason,
        )
        for r in effects.comparisons.itertuples(index=False)
    )
    return _Effects(
        fast_recovery_s=finite_or_none(effects.fast_recovery_s),
        groups=groups,
        comparisons=comparisons,
        paradox=effects.paradox,
    )
