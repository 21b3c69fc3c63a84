"""Disruptions: error episodes merged into incidents, time to recovery, daily spikes and the recovery paradox."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
import psycopg

from cxp.analytics.core import disruptions as core_disruptions
from cxp.analytics.core import incidents as core_incidents
from cxp.analytics.core import paradox as core_paradox
from cxp.analytics.core._frames import finite_or_none, member_of
from cxp.analytics.core.stats import distribution
from cxp.analytics.errors import maps_numeric_errors
from cxp.analytics.models import (
    Disruption,
    DisruptionReport,
    EffectComparison,
    EffectGroup,
    ParadoxEstimate,
    RecoveryTimes,
    Spike,
    Window,
)
from cxp.analytics.queries._base import concurrently, day_start, shared_reads, shared_value
from cxp.analytics.queries.disruptions import (
    daily_errors_by_product,
    error_stream,
    hourly_errors,
    hourly_users,
    successes_after_errors,
)
from cxp.analytics.queries.feedback import feedback_after, feedback_around
from cxp.analytics.queries.registry import devices, get_first_day, with_device_ids
from cxp.analytics.queries.usage import usage_around
from cxp.analytics.query import ALL_DEVICES, AnalyticsQuery
from cxp.analytics.service._common import as_day, as_utc_datetime, count_or_zero, empty_window, resolve_window

BASELINE_DAYS = 28  # the history before the window that the incident baseline rate is pooled over too
UNRECOVERED_AFTER_S = 86400.0  # an episode nothing closed is "never recovered" once its last error is a day old


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
        never_recovered=recovery.n_never_recovered,
        unconfirmed=recovery.n_unconfirmed,
    )


def episodes_in_window(
    conn: psycopg.Connection, *, scope: AnalyticsQuery, window: Window, scoped: pd.DataFrame,
    keys: Sequence[tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """Error episodes of the window (core error_episodes): closed by the next recovery of their code or the next
    successful use of their touchpoint, whichever comes first; "never recovered" only when neither came.

    With `keys`, only the episodes of these (touchpoint, code) pairs: each device × touchpoint × code's episodes
    depend on its own events only, so they are the same as among all episodes."""
    stream = error_stream(conn, scope=scope, start=window.start, end=window.end, keys=keys)
    # the touchpoint errors are part of the stream: taken from it, not read again
    on_touchpoint = (stream["kind"] == "error") & stream["touchpoint"].notna()
    errors = stream.loc[on_touchpoint, ["device_key", "ts", "touchpoint", "code"]]
    successes = successes_after_errors(conn, scope=scope, start=window.start, end=window.end,
                                       touchpoints=None if keys is None else sorted({t for t, _ in keys}))
    closing = core_incidents.closing_successes(errors=errors, successes=successes)
    stream["ts"] = pd.to_datetime(stream["ts"], utc=True)
    if len(closing):
        closing = with_device_ids(closing, scoped=scoped)
        stream = pd.concat([stream, closing.assign(kind="success")[list(stream.columns)]], ignore_index=True)
    return core_disruptions.error_episodes(
        events=stream,
        as_of=day_start(window.end + timedelta(days=1)),
        stale_after_s=None,
        unrecovered_after_s=UNRECOVERED_AFTER_S,
        confirm_by_use=True,
    )


@maps_numeric_errors
@shared_reads()  # the episodes' events get their devices' ids from the view's own read of them
def get_disruptions(
    *,
    conn: psycopg.Connection,
    query: AnalyticsQuery = ALL_DEVICES,
    days: int = 56,
    min_devices: int = 3,
    min_share: float = 0.02,
    alpha: float = 1e-5,
    effect_days: int = 14,
    feedback_horizon_days: int = 28,
    excellent_recovery_s: float = 4 * 3600.0,
    mild_failures: int = 2,
) -> DisruptionReport:
    """Error episodes merged into incidents, time to recovery, daily error spikes against each product's baseline,
    and the effect of a disruption and of fast vs slow recovery on later usage and feedback (recovery paradox).

    An incident = a run of hours in which far more of a product touchpoint's users hit one error code than the
    key's baseline rate (core incidents: binomial test at `alpha` against the rate pooled over the window and the
    28 days before it, so an incident on the first day is found too), whose episodes hit at least `min_devices`
    devices and `min_share` of the product. Everyday errors, even many of them, are not incidents. Episodes end at
    the next recovery of their code or the next successful use of their touchpoint.
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
    read = concurrently(
        episodes=lambda: episodes_in_window(conn, scope=query, window=window, scoped=scoped),
        runs=lambda: _incident_runs(conn, scope=query, window=window, alpha=alpha),
        daily=lambda: daily_errors_by_product(conn, scope=query, start=window.start, end=window.end),
    )
    episodes, runs, daily = read["episodes"], read["runs"], read["daily"]
    recovery = [_recovery_times("all episodes", episodes)]
    for product_id, product_episodes in episodes.groupby("product_id"):
        recovery.append(_recovery_times(str(product_id), product_episodes))

    incidents, incident_episodes = _incidents(runs, episodes, devices_per_product, min_devices=min_devices,
                                              min_share=min_share)
    if incident_episodes:
        recovery.append(_recovery_times("incident episodes", pd.concat(incident_episodes)))

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
    paradox = _paradox(
        conn,
        scope=query,
        window=window,
        scoped=scoped,
        members=incident_episodes,
        horizon_days=feedback_horizon_days,
        min_after_days=effect_days,
        excellent_s=excellent_recovery_s,
        mild=mild_failures,
    )
    definitions = {
        "episode": "per device, touchpoint and error code: from an error to the next recovery report of the code or"
        " the next successful use of the touchpoint; never recovered when neither came and the last error is more"
        " than 24 h old; device-level faults (no touchpoint) that no recovery closed are unconfirmed",
        "incident": "a run of windows of 1–12 hours in which the devices with one error code on a product's"
        " touchpoint, out of the devices using it, exceed the code's pooled rate (window and 28 days before) with"
        f" binomial p < {alpha:g} and ≥ 3× the rate, hitting ≥ {min_devices} devices and ≥ {min_share:.0%} of"
        " the product; recovered when its affected devices recovered",
        "spike": "a day's error count above the trailing 28-day median + 3.5 · max(1.4826·MAD, 1, √median)",
        "effect groups": f"devices hit by an incident (its first incident in the window, starting ≥ {effect_days} days"
        f" before the end), split at the median recovery time into fast and slow; 'none' = devices"
        f" of the same product not hit, referenced to that product's first such incident",
        "usage change": f"mean uses per day in the {effect_days} days after minus before the reference day",
        "recovery paradox": f"per device, mean CSAT and NPS answers in the {feedback_horizon_days} days after its"
        f" recovery minus the {feedback_horizon_days} days before; excellent = own outage ≤"
        f" {excellent_recovery_s / 3600:g} h after ≤ {mild_failures} failed uses; difference excellent − undisrupted"
        " devices of the same product (referred to the incident's recovery), pooled over products, 95 % CI; on CSAT:"
        " present when the CI lies above 0, absent when it lies below a material lift of 0.25 points (NPS beside)",
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
        recovery_paradox=paradox[0],
        definitions=definitions,
        reason=None if len(episodes) else "not enough data: no errors in window",
        paradox=paradox[1],
    )


@maps_numeric_errors
@shared_reads()
def list_incidents(
    *,
    conn: psycopg.Connection,
    query: AnalyticsQuery = ALL_DEVICES,
    days: int = 56,
    min_devices: int = 3,
    min_share: float = 0.02,
    alpha: float = 1e-5,
) -> tuple[Disruption, ...]:
    """The incidents of `get_disruptions` with the same arguments, for views that show only them (the fleet report,
    the journey map): the episodes are found for the error codes and touchpoints of the anomalous runs only, not
    for every error of the window."""
    window = resolve_window(conn, query=query, default_days=days)
    if window is None:
        return ()
    runs = _incident_runs(conn, scope=query, window=window, alpha=alpha)
    if runs.empty:
        return ()
    scoped = devices(conn, scope=query)
    episodes = episodes_in_window(conn, scope=query, window=window, scoped=scoped, keys=_run_pairs(runs))
    return tuple(_incidents(runs, episodes, scoped.groupby("product_id").size(), min_devices=min_devices,
                            min_share=min_share)[0])


def _run_pairs(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """The (touchpoint, code) pairs of incident runs."""
    return sorted({(str(t), str(c)) for t, c in zip(runs["touchpoint"], runs["code"], strict=True)})


def _incidents(
    runs: pd.DataFrame, episodes: pd.DataFrame, devices_per_product: pd.Series, *, min_devices: int, min_share: float
) -> tuple[list[Disruption], list[pd.DataFrame]]:
    """The runs whose episodes hit at least `min_devices` devices and `min_share` of the product, as incidents, with
    those episodes."""
    incidents: list[Disruption] = []
    incident_episodes: list[pd.DataFrame] = []
    for run in runs.itertuples(index=False):
        members = episodes[
            (episodes["product_id"] == run.product_id)
            & (episodes["touchpoint"] == run.touchpoint)
            & (episodes["code"] == run.code)
            & (episodes["start"] >= run.start)
            & (episodes["start"] < run.end)
        ]
        devices_hit = int(members["device_id"].nunique())
        share = devices_hit / float(devices_per_product.get(run.product_id, 0) or 1)
        if devices_hit < min_devices or share < min_share:
            continue
        incident_episodes.append(members)
        incidents.append(_incident(run, members, share))
    return incidents, incident_episodes


def _incident_runs(conn: psycopg.Connection, *, scope: AnalyticsQuery, window: Window, alpha: float) -> pd.DataFrame:
    """Runs of anomalous hours per product × touchpoint × error code reaching into the window (core incidents), the
    baseline rate pooled over the window and up to 28 days before it (once per `shared_reads` block: the fleet
    report's incidents and its churn risk's experience ask for the same)."""
    return shared_value(("incident_runs", scope, window.start, window.end, alpha),
                        lambda: _find_incident_runs(conn, scope=scope, window=window, alpha=alpha))


def _find_incident_runs(
    conn: psycopg.Connection, *, scope: AnalyticsQuery, window: Window, alpha: float
) -> pd.DataFrame:
    first = max(window.start - timedelta(days=BASELINE_DAYS), get_first_day(conn) or window.start)
    errors = hourly_errors(conn, scope=scope, start=first, end=window.end)
    if errors.empty:
        return pd.DataFrame(columns=core_incidents.RUN_COLUMNS)
    exposure = hourly_users(conn, scope=scope, start=first, end=window.end)
    runs = core_incidents.incident_runs(errors=errors, exposure=exposure, alpha=alpha)
    return runs[pd.to_datetime(runs["end"], utc=True) > pd.Timestamp(day_start(window.start))]


def incident_errors(
    conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date, alpha: float = 1e-5
) -> pd.DataFrame:
    """Errors devices saw in detected incident runs between `start` and `end` (days): device_key, day, count."""
    window = Window(start=start, end=end, as_of=end)
    runs = _incident_runs(conn, scope=scope, window=window, alpha=alpha)
    columns = ["device_key", "day", "count"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    # only the errors of the runs' (touchpoint, code) pairs, as list_incidents reads them
    stream = error_stream(conn, scope=scope, start=start, end=end, keys=_run_pairs(runs))
    stream = stream[stream["kind"] == "error"].assign(ts=lambda f: pd.to_datetime(f["ts"], utc=True))
    keys = ["product_id", "touchpoint", "code"]
    hit = stream.merge(runs[[*keys, "start", "end"]], on=keys)
    hit = hit[(hit["ts"] >= hit["start"]) & (hit["ts"] < hit["end"])]
    if hit.empty:
        return pd.DataFrame(columns=columns)
    hit = hit.assign(day=hit["ts"].dt.tz_localize(None).dt.normalize())
    return hit.groupby(["device_key", "day"], as_index=False).size().rename(columns={"size": "count"})[columns]


def _incident(run: object, members: pd.DataFrame, share: float) -> Disruption:
    """One incident from its run of anomalous hours and the episodes that started in it."""
    durations = distribution(values=members["duration_s"])
    ends = pd.to_datetime(members["end"], utc=True)
    start = members["start"].min()
    still_open = bool((members["status"] == "open").any())
    all_recovered = bool(members["recovered"].all())
    # most affected devices recover together when the incident ends; ordinary errors of the same code that
    # started in the run end earlier or later, so the median end is the incident's recovery
    recovered_at = ends.median() if all_recovered and len(members) else None
    end = recovered_at if recovered_at is not None else run.end  # type: ignore[attr-defined]
    users = count_or_zero(run.n)  # type: ignore[attr-defined]
    return Disruption(
        product_id=str(run.product_id),  # type: ignore[attr-defined]
        touchpoint=str(run.touchpoint),  # type: ignore[attr-defined]
        code=str(run.code),  # type: ignore[attr-defined]
        start=as_utc_datetime(start),
        end=as_utc_datetime(end),
        open=still_open,
        devices_affected=int(members["device_id"].nunique()),
        share_of_product=share,
        episodes=len(members),
        errors=count_or_zero(members["errors"].sum()),
        recovered_episodes=int(members["recovered"].sum()),
        median_recovery_s=durations.median,
        p90_recovery_s=durations.p90,
        time_to_recovery_s=None if recovered_at is None else (recovered_at - start).total_seconds(),
        never_recovered_episodes=int((members["status"] == "unrecovered").sum()),
        users=users,
        error_rate=finite_or_none(run.k / users) if users else None,  # type: ignore[attr-defined]
        baseline_rate=finite_or_none(run.p0),  # type: ignore[attr-defined]
    )


def _paradox(
    conn: psycopg.Connection,
    *,
    scope: AnalyticsQuery,
    window: Window,
    scoped: pd.DataFrame,
    members: list[pd.DataFrame],
    horizon_days: int,
    min_after_days: int,
    excellent_s: float,
    mild: int,
) -> tuple[str, tuple[ParadoxEstimate, ...]]:
    """The recovery paradox verdict and estimates (core paradox) from the devices the window's incidents hit."""
    if not members:
        return "not enough data", ()
    hit = pd.concat(members).sort_values("start")
    hit = hit[hit["recovered"].astype(bool)].drop_duplicates("device_id")
    latest = pd.Timestamp(day_start(window.end - timedelta(days=min_after_days)))
    hit = hit[pd.to_datetime(hit["end"], utc=True) <= latest]
    if hit.empty:
        return "not enough data", ()
    excellent = (hit["duration_s"].astype(float) <= excellent_s) & (hit["errors"].astype(float) <= mild)
    recovered_at = hit.groupby("product_id")["end"].median()
    device_keys = scoped.set_index("device_id")["device_key"]
    others = scoped[
        member_of(scoped["product_id"], recovered_at.index) & ~member_of(scoped["device_id"],
                                                                         pd.concat(members)["device_id"])
    ]
    rows = pd.concat(
        [
            pd.DataFrame(
                {
                    "device_id": hit["device_id"].to_numpy(),
                    "product_id": hit["product_id"].to_numpy(),
                    "group": np.where(excellent, "excellent", "other"),
                    "ref_ts": pd.to_datetime(hit["end"], utc=True).array,
                }
            ),
            pd.DataFrame(
                {
                    "device_id": others["device_id"].to_numpy(),
                    "product_id": others["product_id"].to_numpy(),
                    "group": "none",
                    "ref_ts": pd.to_datetime(others["product_id"].map(recovered_at), utc=True).array,
                }
            ),
        ],
        ignore_index=True,
    )
    rows["device_key"] = rows["device_id"].map(device_keys)
    answers = feedback_around(conn, scope=scope, refs=rows[["device_key", "ref_ts"]], days=horizon_days, end=window.end)
    result = core_paradox.recovery_paradox(devices=rows.merge(answers, on="device_key", how="left"))
    estimates = tuple(
        ParadoxEstimate(
            metric=str(r.metric),
            difference=finite_or_none(r.difference),
            ci_low=finite_or_none(r.ci_low),
            ci_high=finite_or_none(r.ci_high),
            n_excellent=count_or_zero(r.n_excellent),
            n_none=count_or_zero(r.n_none),
            products=str(r.products),
            reason=r.reason,
        )
        for r in result.table.itertuples(index=False)
    )
    return result.verdict, estimates


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
    others = scoped[member_of(scoped["product_id"], reference_by_product.index)
                    & ~member_of(scoped["device_id"], hit["device_id"])]
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
