"""The health score's costly parts per device × period (trajectory, voice answers, efficiency): whole weeks from the
kept rows (`health_weekly`), the others computed from the rollups and kept for next time."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, timedelta
from typing import NamedTuple

import numpy as np
import pandas as pd
import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from cxp.analytics.core._frames import lookup
from cxp.analytics.core.health import efficiency_component
from cxp.analytics.core.trajectories import (
    WEEKLY_BELOW_DAYS,
    day_numbers,
    days_since_last_use,
    trajectories_at,
    trajectory_scores,
)
from cxp.analytics.queries._base import Grain, Source, concurrently, in_concurrent_part
from cxp.analytics.queries.health import FEEDBACK_COUNT_COLUMNS, feedback_counts_trailing, latency_by_touchpoint
from cxp.analytics.queries.health_weekly import (
    KEEP_AFTER_DAYS,
    KEPT_COLUMNS,
    database_today,
    kept_health_weeks,
    last_use_before_periods,
    write_health_weeks,
)
from cxp.analytics.queries.registry import touchpoint_catalogue
from cxp.analytics.queries.usage import daily_usage
from cxp.analytics.query import AnalyticsQuery

TRAJECTORY_WINDOW_DAYS = 28  # the Theil–Sen usage trend and the voice lookback both use the trailing 28 days
VOICE_LOOKBACK_DAYS = 28
_NARROW_AT_MOST = 2_000  # devices
# A write that lost a race with the rollup refresh, or a connection that may not write (a standby, a read-only
# role): the kept rows are then simply not written; the answer was computed all the same.
_WRITE_REFUSED = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected, pg_errors.ReadOnlySqlTransaction,
                  pg_errors.InsufficientPrivilege, pg_errors.LockNotAvailable)


@contextmanager
def _snapshot(conn: psycopg.Connection) -> Iterator[bool]:
    """One repeatable-read snapshot for the reads and the write-back; yields whether writing back is safe. Not in a
    part of `concurrently`: the other parts' statements would run inside its transaction."""
    if in_concurrent_part():
        yield False
        return
    if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield True
        return
    level = conn.execute("SHOW transaction_isolation").fetchone()[0]
    yield level in ("repeatable read", "serializable")


class KeptParts(NamedTuple):
    """The parts of the health score per device × period that the kept rows hold."""

    trajectory: pd.DataFrame  # entity_id (device key), period, slope_score, recency_score, trajectory, days_since…
    answers: pd.DataFrame  # entity_id, period, the trailing answer counts (rows with an answer)
    efficiency: pd.DataFrame  # entity_id, period, efficiency (rows with a score)


def kept_parts(
    conn: psycopg.Connection,
    *,
    scope: AnalyticsQuery,
    keyed: pd.DataFrame,
    first_day: date,
    end: date,
    grain: Grain,
    source: Source,
) -> KeptParts:
    """Trajectory, trailing answers and efficiency for the rows of `keyed` (device_key, device_id, product_id, period,
    period_end, activated_at, expected_active_days_per_week: one row per device × period it was a customer in, in
    the window [first_day, end])."""
    rows = pd.DataFrame({
        "device_key": keyed["device_key"].to_numpy(dtype=np.int64),
        "period": pd.to_datetime(keyed["period"]).to_numpy(),
        "period_end": pd.to_datetime(keyed["period_end"]).to_numpy(),
        "activated_on": pd.to_datetime(keyed["activated_at"], utc=True).dt.tz_localize(None).dt.normalize(),
        "expected": keyed["expected_active_days_per_week"].astype(float).to_numpy(),
    })
    rows["bucket_days"] = np.where(rows["expected"] < WEEKLY_BELOW_DAYS, 7, 1)
    with _snapshot(conn) as writable:
        keepable = _keepable(conn, rows=rows, grain=grain, source=source)
        rows["targets_key"] = (lookup(keyed["product_id"], _targets_keys(conn), default=0, dtype=np.int64)
                               if keepable.any() else 0)
        rows = _with_kept(conn, scope=scope, rows=rows, keepable=keepable)
        live = ~rows["kept"].to_numpy()
        latest = (rows["period"] == rows["period"].max()).to_numpy()
        # The window's last period (usually the week under way) for every device; older rows not kept (weeks gone
        # stale after late data, facts changed) separately, from the reads of their devices only when they are few.
        for part in (live & latest, live & ~latest):
            if part.any():
                rows = _with_live(conn, scope=narrowed_scope(scope, keyed["device_id"].to_numpy()[part]), rows=rows,
                                  live=part, end=end, grain=grain, source=source)
        seed = last_use_before_periods(conn, scope=scope, first_day=first_day, grain=grain)
        if writable and (keepable & live).any():
            _write_back(conn, rows=rows[keepable & live])
    answers = rows.loc[rows[["nps_n", "csat_n", "ces_n"]].sum(axis=1).to_numpy() > 0,
                       ["device_key", "period", *FEEDBACK_COUNT_COLUMNS]]
    efficiency = rows.loc[rows["efficiency"].notna().to_numpy(), ["device_key", "period", "efficiency"]]
    return KeptParts(
        trajectory=_trajectory(rows, seed),
        answers=answers.rename(columns={"device_key": "entity_id"}).reset_index(drop=True),
        efficiency=efficiency.rename(columns={"device_key": "entity_id"}).astype({"efficiency": float})
        .reset_index(drop=True),
    )


def narrowed_scope(scope: AnalyticsQuery, device_ids: np.ndarray) -> AnalyticsQuery:
    """The scope cut to these devices when they are few (a short id list joins cheaply; a long one costs more than the
    scan it saves)."""
    ids = frozenset(device_ids.tolist())
    if scope.devices is not None:
        return replace(scope, devices=scope.devices & ids)
    if scope.device is not None or len(ids) > _NARROW_AT_MOST:
        return scope
    return replace(scope, devices=ids)


def _targets_keys(conn: psycopg.Connection) -> dict[str, int]:
    """Per product, a 63-bit fingerprint of its latency targets (what a kept efficiency was scored against)."""
    catalogue = touchpoint_catalogue(conn)
    catalogue = catalogue[catalogue["target_latency_ms"].notna()]
    out: dict[str, int] = {}
    for product, group in catalogue.groupby("product_id", sort=True):
        text = repr((product, sorted(zip(group["touchpoint"], group["target_latency_ms"].astype(float), strict=True))))
        out[str(product)] = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1
    return out


def _keepable(conn: psycopg.Connection, *, rows: pd.DataFrame, grain: Grain, source: Source) -> np.ndarray:
    """Rows of whole Monday–Sunday weeks over long enough to be kept (weekly rollup reads only)."""
    if grain != "week" or source != "rollups" or rows.empty:
        return np.zeros(len(rows), dtype=bool)
    over_by = pd.Timestamp(database_today(conn) - timedelta(days=1 + KEEP_AFTER_DAYS))
    whole = (rows["period_end"] - rows["period"]).dt.days == 6
    return (whole & (rows["period_end"] <= over_by)).to_numpy()


def _with_kept(conn: psycopg.Connection, *, scope: AnalyticsQuery, rows: pd.DataFrame,
               keepable: np.ndarray) -> pd.DataFrame:
    """The rows with the kept columns where a fresh kept row fitted with the registry's current facts exists
    (`kept` True), missing elsewhere."""
    if keepable.any():
        weeks = rows.loc[keepable, "period"]
        kept = kept_health_weeks(conn, scope=scope, first_week=weeks.min().date(), last_week=weeks.max().date())
    else:
        kept = pd.DataFrame(columns=["device_key", "week", *KEPT_COLUMNS])
    kept = kept.rename(columns={"week": "period", "activated_on": "kept_activated_on",
                                "bucket_days": "kept_bucket_days", "targets_key": "kept_targets_key"})
    kept["period"] = pd.to_datetime(kept["period"])
    kept["device_key"] = kept["device_key"].astype(np.int64)
    rows = rows.merge(kept, on=["device_key", "period"], how="left")
    rows["kept"] = (
        keepable
        & (pd.to_datetime(rows["kept_activated_on"]) == rows["activated_on"]).to_numpy()
        & (rows["kept_bucket_days"] == rows["bucket_days"]).to_numpy()
        & (rows["kept_targets_key"] == rows["targets_key"]).to_numpy()
    )
    rows["last_active_on"] = pd.to_datetime(rows["last_active_on"])
    return rows.drop(columns=["kept_activated_on", "kept_bucket_days", "kept_targets_key"])


def _with_live(conn: psycopg.Connection, *, scope: AnalyticsQuery, rows: pd.DataFrame, live: np.ndarray, end: date,
               grain: Grain, source: Source) -> pd.DataFrame:
    """Compute the kept columns of the `live` rows from the rollups: the trend fit, the period's last active day,
    the trailing answer counts and the efficiency."""
    todo = rows[live]
    ends = todo["period_end"]
    # the distinct ends first: a date object per row of the fleet cost more than the read
    period_ends = sorted(d.date() for d in pd.DatetimeIndex(ends.unique()))
    read = concurrently(  # in the caller's snapshot, if it holds one: the parts share its connection
        usage=lambda: daily_usage(conn, scope=scope, start=(ends.min() - pd.Timedelta(
            days=TRAJECTORY_WINDOW_DAYS - 1)).date(), end=ends.max().date(), uses_only=True),
        answers=lambda: feedback_counts_trailing(conn, scope=scope, period_ends=period_ends,
                                                 lookback_days=VOICE_LOOKBACK_DAYS),
        latency=lambda: latency_by_touchpoint(conn, scope=scope, start=todo["period"].min().date(), end=end,
                                              grain=grain, source=source),
    )
    usage = read["usage"].rename(columns={"device_key": "entity_id"})
    fitted = trajectories_at(
        usage=usage,
        rows=pd.DataFrame({
            "entity_id": todo["device_key"].to_numpy(),
            "period_end": ends.to_numpy(),
            "activated_on": todo["activated_on"].to_numpy(),
            "expected_active_days_per_week": todo["expected"].to_numpy(),
            "last_use_before": pd.NaT,
        }),
        window_days=TRAJECTORY_WINDOW_DAYS,
    )
    rows.loc[live, "points"] = fitted["points"].to_numpy()
    rows.loc[live, "slope_per_day"] = fitted["slope_per_day"].to_numpy()

    # The period's last active day: usage days mapped to the live row whose period holds them.
    days = pd.to_datetime(usage["day"])
    in_period = pd.DataFrame({"device_key": usage["entity_id"].to_numpy(), "day": days.to_numpy()})
    spans = todo[["device_key", "period", "period_end"]].reset_index(names="_row")
    hits = in_period.merge(spans, on="device_key")
    hits = hits[(hits["day"] >= hits["period"]) & (hits["day"] <= hits["period_end"])]
    last = hits.groupby("_row")["day"].max()
    rows.loc[live, "last_active_on"] = pd.NaT
    rows.loc[last.index, "last_active_on"] = last.to_numpy()

    answers = read["answers"]
    answers["period_end"] = pd.to_datetime(answers["period_end"])
    answers = spans.merge(answers, on=["device_key", "period_end"], how="left").set_index("_row")
    for column in FEEDBACK_COUNT_COLUMNS:
        rows.loc[live, column] = answers[column].fillna(0).to_numpy(dtype=float)

    latency = read["latency"]
    latency["period"] = pd.to_datetime(latency["period"])
    latency = latency.merge(spans[["_row", "device_key", "period"]], on=["device_key", "period"])
    scored = efficiency_component(frame=latency.rename(columns={"_row": "entity_id"})[
        ["entity_id", "touchpoint", "uses", "observed_mean", "target"]])
    rows.loc[live, "efficiency"] = np.nan
    rows.loc[scored["entity_id"].to_numpy(), "efficiency"] = scored["efficiency"].astype(float).to_numpy()
    return rows


def _trajectory(rows: pd.DataFrame, seed: pd.DataFrame) -> pd.DataFrame:
    """Trajectory per row: the kept or live trend fit, the days since the last use up to the period's end (the
    running last active day over the device's periods, after its last use before them)."""
    order = np.lexsort((rows["period"].to_numpy(), rows["device_key"].to_numpy()))
    sorted_rows = rows.iloc[order]
    last = day_numbers(sorted_rows["last_active_on"])
    before = seed.set_index("device_key")["last_use_on"].reindex(sorted_rows["device_key"])
    running = pd.Series(np.where(np.isfinite(last), last, -np.inf))
    running = running.groupby(sorted_rows["device_key"].to_numpy()).cummax()
    running = np.fmax(running.to_numpy(), day_numbers(before.reset_index(drop=True)))
    last_use = np.empty(len(rows))
    last_use[order] = np.where(np.isfinite(running), running, np.nan)
    out = trajectory_scores(
        slope_per_day=rows["slope_per_day"].astype(float).to_numpy(),
        points=rows["points"].astype(float).to_numpy(),
        days_since=days_since_last_use(end=day_numbers(rows["period_end"]), last_use=last_use,
                                       activated=day_numbers(rows["activated_on"]), window_days=TRAJECTORY_WINDOW_DAYS),
        expected=rows["expected"].to_numpy(),
    )
    out["entity_id"] = rows["device_key"].to_numpy()
    out["period"] = rows["period"].to_numpy()
    return out[["entity_id", "period", "slope_score", "recency_score", "trajectory", "days_since_last_use"]]


def _write_back(conn: psycopg.Connection, *, rows: pd.DataFrame) -> None:
    """Keep the computed whole-week rows; a refused write leaves them to be computed again."""
    out = pd.DataFrame({
        "device_key": rows["device_key"].astype(int),
        "week": rows["period"].dt.date,
        "activated_on": rows["activated_on"].dt.date,
        "bucket_days": rows["bucket_days"].astype(int),
        "points": rows["points"].astype(int),
        "slope_per_day": rows["slope_per_day"].astype(float),
        "last_active_on": rows["last_active_on"].dt.date.where(rows["last_active_on"].notna(), None),
        **{c: rows[c].astype(float if c == "ces_sum" else int) for c in FEEDBACK_COUNT_COLUMNS},
        "efficiency": rows["efficiency"].astype(float),
        "targets_key": rows["targets_key"].astype(np.int64),
    })
    try:
        with conn.transaction():
            write_health_weeks(conn, rows=out)
    except _WRITE_REFUSED:
        pass
