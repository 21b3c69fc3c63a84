"""Churn risk: devices or accounts ranked by usage trend, days since the last core use and recent disruptions."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

import numpy as np
import pandas as pd
import psycopg

from cxp.analytics.core import disruptions as core_disruptions
from cxp.analytics.core import segments as core_segments
from cxp.analytics.core._frames import finite_or_none
from cxp.analytics.errors import maps_numeric_errors
from cxp.analytics.models import ChurnRiskEntry, ChurnRiskList, Window
from cxp.analytics.queries._base import CHURN_STAGES, day_start
from cxp.analytics.queries.disruptions import error_stream
from cxp.analytics.queries.registry import devices
from cxp.analytics.queries.usage import daily_usage, last_use_before
from cxp.analytics.query import ALL_DEVICES, AnalyticsQuery
from cxp.analytics.service._common import empty_window, resolve_window, utc_days
from cxp.analytics.service.outcomes import device_retention

DISRUPTION_LOOKBACK_DAYS = 14
MIN_OWN_RHYTHM_DAYS = 14  # shorter history: the product's expected rhythm instead of the entity's own


def _account_status(statuses: pd.Series) -> str:
    """An account is active while any device is, else inactive while any device is, else how its devices left."""
    if (statuses == "active").any():
        return "active"
    return "inactive" if (statuses == "inactive").any() else statuses.iloc[0]


def _recent_disruptions(
    conn: psycopg.Connection,
    *,
    scope: AnalyticsQuery,
    as_of: date,
    scoped: pd.DataFrame,
    disruptions: Literal["unrecovered", "error_days", "none"],
) -> pd.Series:
    """Per device_key: unrecovered error episodes or days with errors in the last 14 days (NaN for "none")."""
    since = as_of - timedelta(days=DISRUPTION_LOOKBACK_DAYS - 1)
    if disruptions == "error_days":
        usage = daily_usage(conn, scope=scope, start=since, end=as_of)
        return usage[usage["errors"] > 0].groupby("device_key").size()
    if disruptions == "unrecovered":
        stream = error_stream(conn, scope=scope, start=since, end=as_of)
        episodes = core_disruptions.error_episodes(events=stream, as_of=day_start(as_of + timedelta(days=1)))
        unrecovered = episodes[episodes["status"] != "recovered"].merge(
            scoped[["device_id", "device_key"]], on="device_id"
        )
        return unrecovered.groupby("device_key").size()
    return pd.Series(np.nan, index=scoped["device_key"])


@maps_numeric_errors
def list_churn_risk(
    *,
    conn: psycopg.Connection,
    query: AnalyticsQuery = ALL_DEVICES,
    level: Literal["device", "account"] = "device",
    window_days: int = 28,
    bucket_days: int = 7,
    rhythm: Literal["own", "product"] = "own",
    disruptions: Literal["unrecovered", "error_days", "none"] = "unrecovered",
    limit: int | None = None,
    include_churned: bool = False,
) -> ChurnRiskList:
    """Devices or accounts ranked by churn risk with reasons (core churn_risk): Theil–Sen slope of core uses in
    `bucket_days` buckets over the last `window_days` up to `query.end` (`query.start` is not used), days since
    the last core use against the rhythm, and recent disruptions (error episodes of the last 14 days that did not
    recover, or days with errors, or none).

    rhythm="own": expected active days per week = the entity's own over the `window_days` before the trend window
    (the product's when that history is shorter than 14 days). Weekly buckets by default: daily series of
    occasional users are mostly zeros and hide a decline. Cancelled/returned devices are left out unless
    `include_churned` (then they rank first, status says why).
    """
    resolved = resolve_window(conn, query=query.ending(query.end), default_days=window_days)
    if resolved is None:
        return ChurnRiskList(
            level=level, window=empty_window(), weights={}, entries=(), reason="not enough data: nothing stored yet"
        )
    as_of = resolved.end
    trend_start = as_of - timedelta(days=window_days - 1)
    baseline_start = trend_start - timedelta(days=window_days)
    window = Window(start=trend_start, end=as_of, as_of=as_of)
    scoped = devices(conn, scope=query)
    if scoped.empty:
        return ChurnRiskList(
            level=level, window=window, weights={}, entries=(), reason="not enough data: no devices in scope"
        )
    retention = device_retention(conn, scope=query, window=window, devices=scoped)
    core_use = daily_usage(conn, scope=query, start=baseline_start, end=as_of, core_only=True)
    last_core = last_use_before(conn, scope=query, end=as_of, core_only=True)
    recent = _recent_disruptions(conn, scope=query, as_of=as_of, scoped=scoped, disruptions=disruptions)

    activated_on = utc_days(scoped["activated_at"])
    baseline_days = (pd.Timestamp(trend_start) - np.maximum(activated_on, pd.Timestamp(baseline_start))).dt.days
    baseline_used = core_use[pd.to_datetime(core_use["day"]) < pd.Timestamp(trend_start)].groupby("device_key").size()
    own_rhythm = (
        baseline_used.reindex(scoped["device_key"]).fillna(0).to_numpy()
        / np.clip(baseline_days.to_numpy(), 1, None)
        * 7
    )
    expected_rhythm = np.where(
        (baseline_days.to_numpy() >= MIN_OWN_RHYTHM_DAYS) & (rhythm == "own"),
        np.clip(own_rhythm, 0.5, 7.0),
        scoped["expected_active_days_per_week"].astype(float),
    )
    per_device = pd.DataFrame(
        {
            "device_key": scoped["device_key"],
            "device_id": scoped["device_id"],
            "product_id": scoped["product_id"],
            "account_id": scoped["account_id"],
            "activated_on": activated_on,
            "rhythm": expected_rhythm,
            "last_core_use_on": pd.to_datetime(
                last_core.set_index("device_key")["last_use_on"].reindex(scoped["device_key"])
            ).to_numpy(),
            "recent_disruptions": recent.reindex(scoped["device_key"])
            .fillna(0 if disruptions != "none" else np.nan)
            .to_numpy(dtype=float),
            "status": retention.set_index("device_key")["status"].reindex(scoped["device_key"]).to_numpy(),
        }
    )
    usage = core_use.merge(per_device[["device_key", "device_id", "account_id"]], on="device_key")
    if level == "account":
        per_device["account_id"] = per_device["account_id"].fillna("(no account)")
        usage["account_id"] = usage["account_id"].fillna("(no account)")
        ranked = (
            per_device.groupby("account_id")
            .agg(
                activated_on=("activated_on", "min"),
                rhythm=("rhythm", "max"),
                last_core_use_on=("last_core_use_on", "max"),
                recent_disruptions=("recent_disruptions", "sum"),
                status=("status", _account_status),
                product_id=("product_id", lambda s: s.iloc[0] if s.nunique() == 1 else None),
            )
            .reset_index()
        )
        ranked["entity_id"] = ranked["account_id"]
        entity_usage = (
            usage.groupby(["account_id", "day"], as_index=False)["uses"]
            .sum()
            .rename(columns={"account_id": "entity_id"})
        )
    else:
        ranked = per_device.rename(columns={"device_id": "entity_id"})
        entity_usage = usage[["device_id", "day", "uses"]].rename(columns={"device_id": "entity_id"})
    if not include_churned:
        ranked = ranked[~ranked["status"].isin(CHURN_STAGES)]
    entities = pd.DataFrame(
        {
            "entity_id": ranked["entity_id"].to_numpy(),
            "activated_on": ranked["activated_on"].to_numpy(),
            "last_core_use_on": ranked["last_core_use_on"].to_numpy(),
            "expected_active_days_per_week": ranked["rhythm"].to_numpy(dtype=float),
            "recent_disruptions": ranked["recent_disruptions"].to_numpy(dtype=float),
        }
    )
    entity_usage = entity_usage[entity_usage["entity_id"].isin(entities["entity_id"])]
    entity_usage["day"] = pd.to_datetime(entity_usage["day"])
    risk = core_segments.churn_risk(
        usage=entity_usage, entities=entities, as_of=as_of, window_days=window_days, bucket_days=bucket_days
    )
    entries = _ranked_entries(risk.table, info=ranked.set_index("entity_id"), limit=limit)
    return ChurnRiskList(level=level, window=window, weights=dict(risk.weights), entries=entries, reason=risk.reason)


def _ranked_entries(table: pd.DataFrame, *, info: pd.DataFrame, limit: int | None) -> tuple[ChurnRiskEntry, ...]:
    """Risk rows as entries, known cancellations/returns first, then by score, then by id."""
    churned = table["entity_id"].map(info["status"]).isin(CHURN_STAGES).to_numpy()
    score = table["risk_score"].to_numpy(dtype=float, na_value=np.nan)
    # a known cancellation/return is certain churn: it outranks every estimate
    order = np.lexsort((table["entity_id"].astype(str).to_numpy(), -np.nan_to_num(score, nan=-1.0), ~churned))
    entries = []
    for rank, position in enumerate(order, start=1):
        row = table.iloc[position]
        entity_id = str(row["entity_id"])
        status = str(info.at[entity_id, "status"])
        reasons = str(row["reasons"])
        if status in CHURN_STAGES:
            reasons = f"{status}; " + reasons
        product_id = info.at[entity_id, "product_id"]
        account_id = info.at[entity_id, "account_id"] if "account_id" in info.columns else None
        entries.append(
            ChurnRiskEntry(
                rank=rank,
                entity_id=entity_id,
                product_id=None if pd.isna(product_id) else str(product_id),
                account_id=None if account_id is None or pd.isna(account_id) else str(account_id),
                status=status,
                risk_score=100.0 if status in CHURN_STAGES else finite_or_none(row["risk_score"]),
                slope_risk=finite_or_none(row["slope_risk"]),
                recency_risk=finite_or_none(row["recency_risk"]),
                disruption_risk=finite_or_none(row["disruption_risk"]),
                weekly_change=finite_or_none(row["weekly_change"]),
                days_since_last_core_use=finite_or_none(row["days_since_last_core_use"]),
                recent_disruptions=finite_or_none(row["recent_disruptions"]),
                reasons=reasons,
            )
        )
        if limit is not None and rank >= limit:
            break
    return tuple(entries)
