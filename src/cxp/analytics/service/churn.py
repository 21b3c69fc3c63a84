"""Churn risk: devices or accounts ranked by usage trend, days since the last core use and recent disruptions."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

import numpy as np
import pandas as pd
import psycopg

from cxp.analytics.core import churn_model as core_model
from cxp.analytics.core import disruptions as core_disruptions
from cxp.analytics.core import early_warning as core_warning
from cxp.analytics.core import segments as core_segments
from cxp.analytics.core._frames import finite_or_none, member_of
from cxp.analytics.errors import maps_numeric_errors
from cxp.analytics.models import ChurnRiskEntry, ChurnRiskList, ChurnRiskSummary, Window
from cxp.analytics.queries._base import CHURN_STAGES, concurrently, day_start, shared_reads
from cxp.analytics.queries.disruptions import error_stream
from cxp.analytics.queries.registry import devices, lifecycle
from cxp.analytics.queries.touchpoints import failure_counts
from cxp.analytics.queries.usage import churn_usage_sums, daily_usage, last_use_before
from cxp.analytics.query import ALL_DEVICES, AnalyticsQuery
from cxp.analytics.service._common import empty_window, resolve_window, utc_days
from cxp.analytics.service.disruptions import incident_errors
from cxp.analytics.service.outcomes import device_retention, device_satisfaction
from cxp.analytics.service.touchpoints import touchpoint_classes

DISRUPTION_LOOKBACK_DAYS = 14
EXPERIENCE_WINDOW_DAYS = 14  # failures, incidents and support contacts of the last two weeks
CLASS_WINDOW_DAYS = 56  # the answers a touchpoint's failure cost (its penalty) is estimated from
MIN_OWN_RHYTHM_DAYS = 14  # shorter history: the product's expected rhythm instead of the entity's own
DROP_WINDOWS = (2, 3, 4, 7)  # the recent windows a usage drop is looked for in (days)
DROP_BASE_DAYS = 28  # the days before them the entity's own rate comes from
FAILURE_DAYS = 28  # the failure rate's window


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
        # episodes keyed by the device key itself: counted per key, no ids to map back
        episodes = core_disruptions.error_episodes(events=stream.assign(device_id=stream["device_key"]),
                                                   as_of=day_start(as_of + timedelta(days=1)))
        return episodes[episodes["status"] != "recovered"].groupby("device_id").size().rename_axis("device_key")
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
    weights: dict[str, float] | None = None,
    score: Literal["fitted", "weighted"] = "fitted",
    model: core_model.ChurnModel = core_model.DEFAULT_MODEL,
) -> ChurnRiskList:
    """Devices or accounts ranked by churn risk with reasons (core churn_risk): Theil–Sen slope of core uses in
    `bucket_days` buckets over the last `window_days` up to `query.end` (`query.start` is not used), days since
    the last core use against the rhythm, and recent disruptions (error episodes of the last 14 days that did not
    recover, or days with errors, or none).

    rhythm="own": expected active days per week = the entity's own over the `window_days` before the trend window
    (the product's when that history is shorter than 14 days). Weekly buckets by default: daily series of
    occasional users are mostly zeros and hide a decline. Cancelled/returned devices are left out unless
    `include_churned` (then they rank first, status says why).

    Early warning (core early_warning), what a ranking made before the churners left needs: a drop of the last
    week's use against the entity's own rate, and the experience of the last 14 days — failures weighted by what a
    failure of that touchpoint costs in satisfaction (its penalty, `touchpoint_classes` over the 56 days up to
    `query.end`), errors in detected incidents and support contacts — each named in the reasons. risk_score = the
    weighted mean of the parts (`weights`, default core early_warning.DEFAULT_WEIGHTS) with score="weighted";
    with score="fitted" (default) risk_score = 100 × the fitted model's probability of churn within its lead time
    (core churn_model, `model`: DEFAULT_MODEL, 14 days); `weights` apply to score="weighted" only, and the
    answer's weights are then the model's coefficients per standard deviation of each input.
    """
    with shared_reads():  # the disruptions and the experience of the last 14 days read the same errors
        built = _risk_table(
            conn,
            query=query,
            level=level,
            window_days=window_days,
            bucket_days=bucket_days,
            rhythm=rhythm,
            disruptions=disruptions,
            include_churned=include_churned,
            weights=weights,
        )
    if isinstance(built, ChurnRiskList):
        return built
    table, used, ranked, window, reason = built
    if score == "fitted":
        _score_fitted(table, model)
        used = model.as_dict()
    entries = _ranked_entries(table, info=ranked.set_index("entity_id"), limit=limit, window=window)
    return ChurnRiskList(level=level, window=window, weights=used, entries=entries, reason=reason)


@maps_numeric_errors
def get_churn_risk_summary(
    *, conn: psycopg.Connection, query: AnalyticsQuery = ALL_DEVICES, threshold: float = 50.0
) -> ChurnRiskSummary:
    """The devices `list_churn_risk` ranks (its defaults), counted at or above `threshold`, with the riskiest one:
    what the fleet report shows, without an entry per device."""
    built = _default_risk_table(conn, query=query, level="device")
    if isinstance(built, ChurnRiskList):
        return ChurnRiskSummary(ranked=0, at_risk=0, threshold=threshold, top=None)
    table, _, ranked, window, _ = built
    score = _score_fitted(table, core_model.DEFAULT_MODEL)
    at_risk = int(np.count_nonzero(score >= threshold))
    top = _ranked_entries(table, info=ranked.set_index("entity_id"), limit=1, window=window) if at_risk else ()
    return ChurnRiskSummary(ranked=len(table), at_risk=at_risk, threshold=threshold, top=top[0] if top else None)


@maps_numeric_errors
def get_churn_model_inputs(
    *, conn: psycopg.Connection, query: AnalyticsQuery = ALL_DEVICES, level: Literal["device", "account"] = "device"
) -> pd.DataFrame:
    """The fitted churn model's inputs (core churn_model.model_inputs) per device or account as of `query.end`,
    churned ones left out: what `list_churn_risk` scores, for fitting a model on a fleet's own history."""
    built = _default_risk_table(conn, query=query, level=level)
    if isinstance(built, ChurnRiskList):
        return pd.DataFrame(columns=["entity_id", *core_model.MODEL_FEATURES])
    return core_model.model_inputs(built[0])


def _score_fitted(table: pd.DataFrame, model: core_model.ChurnModel) -> np.ndarray:
    """Set the table's risk_score to 100 × the fitted model's churn probability; return it as floats."""
    table["risk_score"] = 100.0 * core_model.churn_probability(inputs=core_model.model_inputs(table), model=model)
    return table["risk_score"].to_numpy(dtype=float, na_value=np.nan)


@shared_reads()
def _default_risk_table(
    conn: psycopg.Connection, *, query: AnalyticsQuery, level: Literal["device", "account"]
) -> ChurnRiskList | tuple[pd.DataFrame, dict[str, float], pd.DataFrame, Window, str | None]:
    """`_risk_table` with `list_churn_risk`'s defaults (what the fitted model was fitted on)."""
    return _risk_table(conn, query=query, level=level, window_days=28, bucket_days=7, rhythm="own",
                       disruptions="unrecovered", include_churned=False, weights=None)


def _risk_table(
    conn: psycopg.Connection,
    *,
    query: AnalyticsQuery,
    level: Literal["device", "account"],
    window_days: int,
    bucket_days: int,
    rhythm: Literal["own", "product"],
    disruptions: Literal["unrecovered", "error_days", "none"],
    include_churned: bool,
    weights: dict[str, float] | None,
) -> ChurnRiskList | tuple[pd.DataFrame, dict[str, float], pd.DataFrame, Window, str | None]:
    """The risk table with every part (weighted score), the weights used, the ranked entities' info, the window
    and the reason; or the empty answer when there is nothing to rank."""
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
    buckets = window_days // bucket_days if 1 <= bucket_days <= window_days else 0
    window_8w = Window(start=as_of - timedelta(days=CLASS_WINDOW_DAYS - 1), end=as_of, as_of=as_of)
    read = concurrently(
        retention=lambda: device_retention(conn, scope=query, window=window, devices=scoped),
        # One aggregate over the daily rollup: per device the sums each part reads, not nine weeks of device-days.
        sums=lambda: churn_usage_sums(conn, scope=query, as_of=as_of, buckets=buckets,
                                      bucket_days=max(bucket_days, 1), baseline=(baseline_start, trend_start),
                                      recent_days=max(DROP_WINDOWS), base_days=DROP_BASE_DAYS,
                                      failure_days=FAILURE_DAYS),
        last_core=lambda: last_use_before(conn, scope=query, end=as_of, core_only=True),
        recent=lambda: _recent_disruptions(conn, scope=query, as_of=as_of, scoped=scoped, disruptions=disruptions),
        answers=lambda: device_satisfaction(conn, scope=query, window=window_8w),
        lived=lambda: _experience_events(conn, scope=query, as_of=as_of, scoped=scoped),
    )
    retention, sums, last_core, recent = read["retention"], read["sums"], read["last_core"], read["recent"]
    # Each trend bucket's core uses as one row on its last day: the trend sums a bucket's days, so it fits the same.
    core_use = _on_days(sums, as_of=as_of, key="device_key",
                        columns={f"core_{k}": k * bucket_days for k in range(buckets)})

    activated_on = utc_days(scoped["activated_at"])
    # Series.where, not np.maximum: numpy's ufuncs on a datetime Series go element by element in Python
    baseline_from = pd.Timestamp(baseline_start)
    later = activated_on.where(~(activated_on <= baseline_from), baseline_from)
    baseline_days = (pd.Timestamp(trend_start) - later).dt.days
    baseline_used = sums.set_index("device_key")["baseline_core_days"]
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
        ranked = ranked[~member_of(ranked["status"], CHURN_STAGES)]
    entities = pd.DataFrame(
        {
            "entity_id": ranked["entity_id"].to_numpy(),
            "activated_on": ranked["activated_on"].to_numpy(),
            "last_core_use_on": ranked["last_core_use_on"].to_numpy(),
            "expected_active_days_per_week": ranked["rhythm"].to_numpy(dtype=float),
            "recent_disruptions": ranked["recent_disruptions"].to_numpy(dtype=float),
        }
    )
    entity_usage = entity_usage[member_of(entity_usage["entity_id"], entities["entity_id"])]
    entity_usage["day"] = pd.to_datetime(entity_usage["day"])
    # explained later, only the rows an answer shows (`_ranked_entries`): text for 10,000 devices costs ~0.1 s
    risk = core_segments.churn_risk(
        usage=entity_usage, entities=entities, as_of=as_of, window_days=window_days, bucket_days=bucket_days,
        disruption_window_days=DISRUPTION_LOOKBACK_DAYS, explain=False,
    )
    key = "account_id" if level == "account" else "device_id"
    by_entity = sums.merge(per_device[["device_key", "device_id", "account_id"]], on="device_key")
    by_entity["entity_id"] = by_entity[key].to_numpy()
    # The recent days' uses one row each, the base period's as one row on its first day back (all the drop sums).
    recent_days = max(DROP_WINDOWS)
    drop_use = _on_days(by_entity, as_of=as_of, key="entity_id",
                        columns={**{f"uses_{j}": j for j in range(recent_days)}, "uses_base": recent_days})
    drop_use = drop_use.groupby(["entity_id", "day"], as_index=False)["uses"].sum()
    drop = core_warning.usage_drop(usage=drop_use, entities=entities["entity_id"], as_of=as_of, windows=DROP_WINDOWS,
                                   base_days=DROP_BASE_DAYS)
    recent = by_entity.groupby("entity_id")[["errors_recent", "uses_recent"]].sum()
    group = ranked.set_index("entity_id")["product_id"].astype(object).fillna("(mixed)")
    failures = core_warning.failure_rate_risk(
        failures=recent["errors_recent"],
        uses=recent["uses_recent"],
        group=group,
        entities=entities["entity_id"],
    )
    answers = read["answers"].merge(
        per_device[["device_key", "device_id", "account_id"]], on="device_key"
    )
    answers = answers.rename(columns={key: "entity_id"}).assign(weighted=lambda f: f["satisfaction"] * f["answers"])
    answers = answers.groupby("entity_id", as_index=False)[["weighted", "answers"]].sum()
    answers["satisfaction"] = answers["weighted"] / answers["answers"].where(answers["answers"] > 0)
    satisfaction = core_warning.satisfaction_risk(satisfaction=answers, entities=entities["entity_id"])
    lived = read["lived"].merge(per_device[["device_key", key]], on="device_key").rename(columns={key: "entity_id"})
    experience = core_warning.experience_load(
        events=lived[["entity_id", "day", "driver", "count", "weight"]],
        weights={},
        entities=entities["entity_id"],
        as_of=as_of,
        window_days=EXPERIENCE_WINDOW_DAYS,
    )
    table, used = core_warning.combine_risk(
        risk=risk.table, parts=[drop, failures, satisfaction, experience], weights=weights, explain=False
    )
    return table, used, ranked, window, risk.reason


def _on_days(frame: pd.DataFrame, *, as_of: date, key: str, columns: dict[str, int]) -> pd.DataFrame:
    """Wide per-key sums as long rows (key → entity_id or device_key, day = `as_of` − the column's days back, uses),
    rows of no use left out."""
    parts = [pd.DataFrame({key: frame[key].to_numpy(), "day": as_of - timedelta(days=back),
                           "uses": frame[column].to_numpy(dtype=np.int64)}) for column, back in columns.items()]
    if not parts:
        return pd.DataFrame({key: pd.Series(dtype=object), "day": pd.Series(dtype=object),
                             "uses": pd.Series(dtype=np.int64)})
    rows = pd.concat(parts, ignore_index=True)
    return rows[rows["uses"].to_numpy() > 0].reset_index(drop=True)


def _experience_events(
    conn: psycopg.Connection, *, scope: AnalyticsQuery, as_of: date, scoped: pd.DataFrame
) -> pd.DataFrame:
    """What each device lived in the last 14 days up to `as_of`: device_key, day, driver (touchpoint name,
    "incident", "support contact"), count and weight (satisfaction points one occurrence costs: a touchpoint's
    penalty from its answers, else its product's median penalty, else 1)."""
    since = as_of - timedelta(days=EXPERIENCE_WINDOW_DAYS - 1)
    classes = touchpoint_classes(
        conn, scope=scope, window=Window(start=as_of - timedelta(days=CLASS_WINDOW_DAYS - 1), end=as_of, as_of=as_of)
    ).table
    penalty = classes.assign(cost=pd.to_numeric(classes["penalty"], errors="coerce"))
    penalty = penalty[["product_id", "touchpoint", "cost"]]
    product_cost = penalty.groupby("product_id")["cost"].median()
    failures = failure_counts(conn, scope=scope, start=since, end=as_of).merge(
        scoped[["device_key", "product_id"]], on="device_key"
    )
    failures = failures.merge(penalty, on=["product_id", "touchpoint"], how="left")
    failures["cost"] = failures["cost"].fillna(failures["product_id"].map(product_cost)).fillna(1.0).clip(lower=0.0)
    parts = [failures.rename(columns={"touchpoint": "driver", "failures": "count", "cost": "weight"})]
    hits = incident_errors(conn, scope=scope, start=since, end=as_of)
    if len(hits):
        parts.append(hits.assign(driver=core_warning.INCIDENT, weight=1.0))
    support = lifecycle(conn, scope=scope, start=since, end=as_of, stages=["support_contacted"])
    if len(support):
        day = pd.to_datetime(support["ts"], utc=True).dt.tz_localize(None).dt.normalize()
        contacts = support.assign(day=day).groupby(["device_key", "day"], as_index=False).size()
        parts.append(contacts.rename(columns={"size": "count"}).assign(driver=core_warning.SUPPORT, weight=1.0))
    columns = ["device_key", "day", "driver", "count", "weight"]
    return pd.concat([p[columns] for p in parts], ignore_index=True)


def _ranked_entries(
    table: pd.DataFrame, *, info: pd.DataFrame, limit: int | None, window: Window
) -> tuple[ChurnRiskEntry, ...]:
    """Risk rows as entries, known cancellations/returns first, then by score, then by id; the entries' rows
    explained (reasons) here; `window`: the trend's."""
    churned = member_of(table["entity_id"].map(info["status"]), CHURN_STAGES)
    score = table["risk_score"].to_numpy(dtype=float, na_value=np.nan)
    # a known cancellation/return is certain churn: it outranks every estimate
    order = np.lexsort((table["entity_id"].astype(str).to_numpy(), -np.nan_to_num(score, nan=-1.0), ~churned))
    if limit is not None:
        order = order[:limit]
    picked = table.iloc[order].reset_index(drop=True)
    picked["reasons"] = core_segments.churn_reasons(picked, window_days=(window.end - window.start).days + 1,
                                                    disruption_window_days=DISRUPTION_LOOKBACK_DAYS)
    picked["reasons"] = core_warning.warning_reasons(picked)
    ids = picked["entity_id"].astype(str).tolist()
    about = info.reindex(ids)
    # Whole columns as lists: per-row frame lookups cost more than building the entries.
    col = {c: picked[c].tolist() if c in picked.columns else [None] * len(picked) for c in _ENTRY_COLUMNS}
    statuses = about["status"].astype(str).tolist()
    products = about["product_id"].tolist()
    accounts = about["account_id"].tolist() if "account_id" in about.columns else [None] * len(ids)
    entries = []
    for i, entity_id in enumerate(ids):
        status = statuses[i]
        reasons = str(col["reasons"][i])
        if status in CHURN_STAGES:
            reasons = f"{status}; " + reasons
        product_id, account_id = products[i], accounts[i]
        drivers, top_driver = col["drivers"][i], col["top_driver"][i]
        entries.append(
            ChurnRiskEntry(
                rank=i + 1,
                entity_id=entity_id,
                product_id=None if pd.isna(product_id) else str(product_id),
                account_id=None if account_id is None or pd.isna(account_id) else str(account_id),
                status=status,
                risk_score=100.0 if status in CHURN_STAGES else finite_or_none(col["risk_score"][i]),
                slope_risk=finite_or_none(col["slope_risk"][i]),
                recency_risk=finite_or_none(col["recency_risk"][i]),
                disruption_risk=finite_or_none(col["disruption_risk"][i]),
                weekly_change=finite_or_none(col["weekly_change"][i]),
                days_since_last_core_use=finite_or_none(col["days_since_last_core_use"][i]),
                recent_disruptions=finite_or_none(col["recent_disruptions"][i]),
                reasons=reasons,
                drop_risk=finite_or_none(col["drop_risk"][i]),
                experience_risk=finite_or_none(col["experience_risk"][i]),
                drivers=drivers if isinstance(drivers, str) else None,
                top_driver=top_driver if isinstance(top_driver, str) else None,
            )
        )
    return tuple(entries)


_ENTRY_COLUMNS = (
    "reasons", "risk_score", "slope_risk", "recency_risk", "disruption_risk", "weekly_change",
    "days_since_last_core_use", "recent_disruptions", "drop_risk", "experience_risk", "drivers", "top_driver",
)
