"""Lifecycle funnel (registered → activated → first core use → habitual; churn as the exit) and time to first value."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np
import pandas as pd

from cxp.analytics.core._frames import (
    epoch_seconds,
    epoch_seconds_scalar,
    float_column,
    require_columns,
    to_day,
    to_nullable,
    to_utc,
    to_utc_scalar,
)
from cxp.analytics.core.stats import Distribution, distribution, ratio_array, safe_div
from cxp.analytics.errors import InvalidParameter

STAGES: tuple[str, ...] = ("registered", "activated", "first_core_use", "habitual")
UNIT_SECONDS = {"seconds": 1.0, "minutes": 60.0, "hours": 3600.0, "days": 86400.0}


def habitual_dates(*, daily: pd.DataFrame, k: int = 4, window_days: int = 14) -> pd.DataFrame:
    """First day each entity became habitual: the k-th active day within a rolling `window_days`-day window.

    `daily`: entity_id, day [, uses | active] — a row counts as active when uses > 0 (or active is true, or
    neither column exists). Returns entity_id, habitual_on (only entities that became habitual).
    """
    require_columns(daily, ["entity_id", "day"], what="habitual_dates")
    if k < 1 or window_days < 1:
        raise InvalidParameter("k and window_days must be ≥ 1")
    active = np.ones(len(daily), dtype=bool)
    if "uses" in daily.columns:
        active = float_column(daily, "uses") > 0
    elif "active" in daily.columns:
        active = daily["active"].fillna(False).astype(bool).to_numpy()
    d = pd.DataFrame(
        {"entity_id": daily["entity_id"].to_numpy()[active], "day": to_day(daily["day"]).to_numpy()[active]}
    )
    d = d.dropna().drop_duplicates().sort_values(["entity_id", "day"], kind="stable")
    earlier = d.groupby("entity_id", sort=False)["day"].shift(k - 1)
    hit = d[(d["day"] - earlier).dt.days <= window_days - 1] if k > 1 else d
    return hit.groupby("entity_id", sort=True)["day"].min().rename("habitual_on").reset_index()


@dataclass(frozen=True)
class FunnelStage:
    """Devices that reached a stage (and all stages before it), with conversions (None when the base is 0)."""

    stage: str
    count: int
    conversion_from_previous: float | None
    conversion_from_start: float | None


@dataclass(frozen=True)
class FunnelResult:
    """Overall stages, churn among activated devices, the per-cohort table and the definitions used."""

    stages: list[FunnelStage]
    churned: int | None
    churn_rate: float | None
    by_cohort: pd.DataFrame
    definitions: dict[str, str] = field(default_factory=dict)
    reason: str | None = None


def _ts(frame: pd.DataFrame, col: str) -> np.ndarray:
    return epoch_seconds(frame[col]) if col in frame.columns else np.full(len(frame), np.nan)


def lifecycle_funnel(
    *, devices: pd.DataFrame, as_of: datetime | date | str, churn_inactive_days: int = 28, cohort: str = "week"
) -> FunnelResult:
    """Funnel and per-cohort conversions; stages are monotone (a stage counts only if all earlier ones were reached).

    `devices`, one row per registered device: device_id, activated_at, first_core_use_at, habitual_at
    (see habitual_dates), last_use_at, cancelled_at (cancelled/returned) — all nullable, all optional except
    device_id. Churned = activated and (cancelled by as_of, or no use for ≥ churn_inactive_days: last use,
    else activation, is at least that old); unknown (None) when neither last_use_at nor cancelled_at is given.
    Cohort = calendar week (Monday) or month of activation (registration when never activated).
    """
    require_columns(devices, ["device_id"], what="lifecycle_funnel")
    if cohort not in ("week", "month"):
        raise InvalidParameter("cohort must be 'week' or 'month'")
    now = epoch_seconds_scalar(as_of)
    act = _ts(devices, "activated_at")
    core = _ts(devices, "first_core_use_at")
    hab = _ts(devices, "habitual_at") if "habitual_at" in devices.columns else _ts(devices, "habitual_on")
    reached = np.column_stack([np.ones(len(devices), dtype=bool), act <= now, core <= now, hab <= now])
    reached = np.logical_and.accumulate(reached, axis=1) if len(devices) else reached.reshape(0, len(STAGES))
    churn_known = "last_use_at" in devices.columns or "cancelled_at" in devices.columns
    if churn_known:
        cancelled = _ts(devices, "cancelled_at") <= now
        last = _ts(devices, "last_use_at")
        ref = np.where(np.isfinite(last), last, act)
        inactive = ("last_use_at" in devices.columns) & (now - ref >= churn_inactive_days * 86400.0)
        churned = reached[:, 1] & (cancelled | inactive)
    else:
        churned = np.zeros(len(devices), dtype=bool)

    counts = reached.sum(axis=0).astype(int) if len(devices) else np.zeros(len(STAGES), dtype=int)
    stages = [
        FunnelStage(
            name,
            int(counts[i]),
            safe_div(num=counts[i], den=counts[i - 1]) if i else None,
            safe_div(num=counts[i], den=counts[0]),
        )
        for i, name in enumerate(STAGES)
    ]
    n_churn = int(churned.sum()) if churn_known else None
    churn_rate = safe_div(num=n_churn, den=counts[1]) if churn_known else None

    base = (
        to_utc(devices["activated_at"]) if "activated_at" in devices.columns else pd.Series(pd.NaT, index=devices.index)
    )
    if "registered_at" in devices.columns:
        base = base.where(base.notna(), to_utc(devices["registered_at"]))
    days = to_day(base)
    if cohort == "week":
        start = days - pd.to_timedelta(days.dt.day_of_week, unit="D")
        end = start + pd.Timedelta(days=7)
    else:
        start = days - pd.to_timedelta(days.dt.day - 1, unit="D")
        end = start + pd.offsets.MonthBegin(1)
    tab = pd.DataFrame(
        {
            "cohort_start": start.to_numpy(),
            "cohort_end": end.to_numpy(),
            **{s: reached[:, i] for i, s in enumerate(STAGES)},
            "churned": churned,
        }
    )
    tab = tab[tab["cohort_start"].notna()]
    g = (
        tab.groupby("cohort_start", sort=True)
        .agg(cohort_end=("cohort_end", "first"), **{s: (s, "sum") for s in (*STAGES, "churned")})
        .reset_index()
    )
    out = pd.DataFrame({"cohort": g["cohort_start"].dt.strftime("%Y-%m-%d" if cohort == "week" else "%Y-%m")})
    out["cohort_start"] = g["cohort_start"]
    asof_day = to_utc_scalar(as_of).tz_localize(None)
    out["age_days"] = (asof_day - g["cohort_start"]).dt.days.astype(int)
    for s in (*STAGES, "churned"):
        out[s] = g[s].astype(int)
    if not churn_known:
        out["churned"] = pd.array([None] * len(out), dtype="Int64")
    out["conv_activated"] = ratio_array(num=g["activated"], den=g["registered"])
    out["conv_first_core_use"] = ratio_array(num=g["first_core_use"], den=g["activated"])
    out["conv_habitual"] = ratio_array(num=g["habitual"], den=g["first_core_use"])
    out["churn_rate"] = ratio_array(num=g["churned"], den=g["activated"]) if churn_known else np.nan
    # mature: every device of the cohort has had ≥ churn_inactive_days since activation (habitual and churn observable)
    out["mature"] = ((asof_day - g["cohort_end"]).dt.days >= churn_inactive_days).to_numpy()
    definitions = {
        "registered": "a row in the registry",
        "activated": "activated_at ≤ as_of",
        "first_core_use": "first use of a core touchpoint (is_core) ≤ as_of",
        "habitual": "habitual_at ≤ as_of (default: 4 active days within 14 days, see habitual_dates)",
        "churned": (
            f"activated and (cancelled/returned, or no use for ≥ {churn_inactive_days} days)"
            if churn_known
            else "unknown: no last_use_at/cancelled_at given"
        ),
        "cohort": f"calendar {cohort} of activation (registration when never activated)",
    }
    reason = "not enough data: no devices" if len(devices) == 0 else None
    return FunnelResult(stages, n_churn, churn_rate, to_nullable(out), definitions, reason)


@dataclass(frozen=True)
class TimeToValue:
    """Time from activation to the first core-value event: distribution over devices that reached it."""

    unit: str
    n_activated: int
    n_reached: int
    n_invalid: int
    share_reached: float | None
    distribution: Distribution


def _durations(devices: pd.DataFrame, unit: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    require_columns(devices, ["activated_at", "first_core_use_at"], what="time_to_value")
    if unit not in UNIT_SECONDS:
        raise InvalidParameter(f"unit must be one of {sorted(UNIT_SECONDS)}")
    act, core = _ts(devices, "activated_at"), _ts(devices, "first_core_use_at")
    dur = (core - act) / UNIT_SECONDS[unit]
    activated = np.isfinite(act)
    valid = activated & np.isfinite(dur) & (dur >= 0)
    invalid = activated & np.isfinite(dur) & (dur < 0)
    return np.where(valid, dur, np.nan), activated, invalid


def time_to_value(*, devices: pd.DataFrame, unit: str = "hours") -> TimeToValue:
    """Median, p90 and n of (first_core_use_at − activated_at); a first use before activation is counted as invalid."""
    dur, activated, invalid = _durations(devices, unit)
    n_act = int(activated.sum())
    n_reached = int(np.isfinite(dur).sum())
    return TimeToValue(
        unit, n_act, n_reached, int(invalid.sum()), safe_div(num=n_reached, den=n_act), distribution(values=dur)
    )


def time_to_value_by_group(
    *, devices: pd.DataFrame, group_cols: Sequence[str], unit: str = "hours", min_n: int = 1
) -> pd.DataFrame:
    """Per group: n_activated, n_reached, share_reached, median, p90 of time to value (<NA> when n_reached < min_n)."""
    require_columns(devices, group_cols, what="time_to_value_by_group")
    dur, activated, _ = _durations(devices, unit)
    t = devices[list(group_cols)].copy()
    t["_d"], t["_a"] = dur, activated.astype(int)
    g = t.groupby(list(group_cols), dropna=False, sort=True)["_d"]
    out = pd.DataFrame(
        {
            "n_activated": t.groupby(list(group_cols), dropna=False, sort=True)["_a"].sum(),
            "n_reached": g.count(),
            "median": g.median(),
            "p90": g.quantile(0.9),
        }
    ).reset_index()
    out["share_reached"] = ratio_array(num=out["n_reached"], den=out["n_activated"])
    few = out["n_reached"].to_numpy() < max(min_n, 1)
    out.loc[few, ["median", "p90"]] = np.nan
    out["unit"] = unit
    out["reason"] = np.where(few, f"not enough data: fewer than {max(min_n, 1)} devices reached first value", None)
    return to_nullable(out)
