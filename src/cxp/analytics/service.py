"""Analytics services: keyword-only functions that read aggregated frames (analytics.queries) and apply the pure core.

Every function takes a psycopg connection `conn` plus filters — `product`, `segment` (account segment),
`account`, and the period `start`/`end` (UTC days, inclusive; `end` defaults to the last day with data) —
and returns a typed result from analytics.models. No printing, no NaN: missing values are None with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd
import psycopg
from scipy import stats as sps
from sklearn.cluster import KMeans
from sklearn.metrics import calinski_harabasz_score

from cxp.analytics import queries as Q
from cxp.analytics.core import disruptions as core_disruptions
from cxp.analytics.core import journey as core_journey
from cxp.analytics.core import segments as core_segments
from cxp.analytics.core import touchpoints as core_touchpoints
from cxp.analytics.core import voice as core_voice
from cxp.analytics.core._frames import finite_or_none
from cxp.analytics.core.health import (
    COMPONENTS,
    HealthConfig,
    efficiency_component,
    engagement_component,
    health_scores,
    reliability_component,
    trajectory_component,
    voice_component,
)
from cxp.analytics.core.stats import distribution, proportion_ci
from cxp.analytics.errors import AnalyticsError
from cxp.analytics.models import (
    ChurnRiskEntry,
    ChurnRiskList,
    Cohort,
    Concern,
    Disruption,
    DisruptionReport,
    Driver,
    EffectComparison,
    EffectGroup,
    FleetReport,
    HealthReport,
    HealthScore,
    JourneyReport,
    Level,
    Measure,
    OutcomeModel,
    PersonaSegment,
    ProductHealthLine,
    RecoveryTimes,
    SegmentReport,
    Spike,
    StageCount,
    TimeToValueStats,
    TouchpointInsight,
    TouchpointReport,
    VoiceGroup,
    VoiceReport,
    Window,
)

Grain = Literal["day", "week"]
Source = Literal["rollups", "raw"]

TRAJECTORY_WINDOW_DAYS = 28  # the Theil–Sen usage trend and the voice lookback both use the trailing 28 days
VOICE_LOOKBACK_DAYS = 28
CHURN_INACTIVE_DAYS = 28  # no use for this long (or a cancellation/return) = churned
SUB_SCORES = (
    "success_score",
    "error_free_score",
    "uptime_score",
    "efficiency",
    "stickiness_score",
    "breadth_score",
    "slope_score",
    "recency_score",
    "nps_score",
    "csat_score",
    "ces_score",
)


# ---------------------------------------------------------------- shared helpers


def _f(x: object) -> float | None:
    """A finite float or None (pd.NA, NaN and inf become None)."""
    return finite_or_none(x)


def _i(x: object) -> int:
    """An int, 0 for missing."""
    v = finite_or_none(x)
    return 0 if v is None else int(v)


def _day(x: object) -> date | None:
    """A date from a date/timestamp-like value, None when missing."""
    if x is None or x is pd.NaT or (isinstance(x, float) and math.isnan(x)):
        return None
    try:
        if pd.isna(x):  # type: ignore[arg-type]
            return None
    except (TypeError, ValueError):
        pass
    ts = pd.Timestamp(x)  # type: ignore[arg-type]
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.date()


def _text(value: object) -> str | None:
    """A string, or None for any missing marker (None, NaN, pd.NA)."""
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def _scope(product: str | None, segment: str | None, account: str | None, device: str | None = None) -> Q.Scope:
    return Q.Scope(product=product, segment=segment, account=account, device=device)


def _window(conn: psycopg.Connection, *, start: date | None, end: date | None, default_days: int) -> Window | None:
    """Resolve the period: `end` defaults to the last day with data, `start` to `default_days` before it."""
    latest = Q.get_latest_day(conn)
    if end is None:
        end = latest
    if end is None:
        return None
    if start is None:
        first = Q.get_first_day(conn) or end
        # An `end` before the first data day gives an empty window (a "not enough data" answer), not an error.
        try:
            earliest = end - timedelta(days=default_days - 1)
        except OverflowError:  # an `end` near year 1
            earliest = date.min
        start = min(max(first, earliest), end)
    if start > end:
        raise AnalyticsError(f"start ({start}) must be on or before end ({end})")
    return Window(start=start, end=end, as_of=end)


def _empty_window() -> Window:
    today = date.today()
    return Window(start=today, end=today, as_of=today)


def _utc_days(values: pd.Series) -> pd.Series:
    """Timestamps/dates → naive midnight datetime64 (UTC days)."""
    s = pd.to_datetime(values, utc=True)
    return s.dt.tz_localize(None).dt.normalize()


def _periods(start: date, end: date, grain: Grain) -> list[tuple[date, date]]:
    """(first day, last day) of each day/week period overlapping [start, end], the last one cut at `end`."""
    if grain == "day":
        return [(start + timedelta(days=k), start + timedelta(days=k)) for k in range((end - start).days + 1)]
    out = []
    p = Q.week_start(start)
    while p <= end:
        out.append((p, min(p + timedelta(days=6), end)))
        p += timedelta(days=7)
    return out


# ---------------------------------------------------------------- health


def _device_period_frame(
    conn: psycopg.Connection, *, scope: Q.Scope, window: Window, grain: Grain, source: Source
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per (device, period) the device was a customer in, with every component's inputs and scores."""
    periods = _periods(window.start, window.end, grain)
    first_day = periods[0][0]
    devs = Q.devices(conn, scope=scope)
    if devs.empty:
        return pd.DataFrame(), devs
    exits = Q.churn_exits(conn, scope=scope, end=window.end)
    devs = devs.merge(exits, on="device_key", how="left")
    devs["act_day"] = _utc_days(devs["activated_at"])
    devs["exit_day"] = _utc_days(devs["exit_at"]) if len(exits) else pd.NaT
    per = pd.DataFrame(
        {"period": [pd.Timestamp(p) for p, _ in periods], "period_end": [pd.Timestamp(e) for _, e in periods]}
    )
    base = devs.merge(per, how="cross")
    alive = (base["act_day"] <= base["period_end"]) & ~(base["exit_day"] < base["period"])
    base = base[alive].reset_index(drop=True)
    if base.empty:
        return base, devs
    first = np.maximum(base["period"], base["act_day"])
    last = base["period_end"].where(~(base["exit_day"] < base["period_end"]), base["exit_day"])
    base["days_in_period"] = (last - first).dt.days + 1
    # seconds the device could have been up: from the later of period start and activation to the earlier of
    # period end, exit and the end of the as-of day
    w0 = np.maximum(base["period"].dt.tz_localize("UTC"), pd.to_datetime(base["activated_at"], utc=True))
    w1 = (base["period_end"] + pd.Timedelta(days=1)).dt.tz_localize("UTC")
    w1 = w1.where(base["exit_at"].isna(), np.minimum(w1, pd.to_datetime(base["exit_at"], utc=True)))
    base["window_s"] = ((w1 - w0).dt.total_seconds()).clip(lower=0)

    inp = Q.health_period_inputs(conn, scope=scope, start=first_day, end=window.end, grain=grain, source=source)
    inp["period"] = pd.to_datetime(inp["period"])
    base = base.merge(inp, on=["device_key", "period"], how="left")
    for col in ("uses", "successes", "active_days", "error_free_days", "heartbeats", "touchpoints_used"):
        base[col] = base[col].fillna(0).astype(float)

    if source == "raw":
        up = Q.uptime_exact(
            conn,
            scope=scope,
            start=first_day,
            end=window.end,
            grain=grain,
            as_of_end=Q.day_start(window.end + timedelta(days=1)),
        )
        up["period"] = pd.to_datetime(up["period"])
        base = base.merge(up[["device_key", "period", "up_s"]], on=["device_key", "period"], how="left")
        base["up_s"] = base["up_s"].fillna(0.0)
    else:
        # Rollup uptime: each heartbeat received covers one interval (the 1.5 × rule differs only by half an
        # interval per gap; source="raw" applies the rule exactly).
        base["up_s"] = base["heartbeats"] * base["heartbeat_interval_s"].astype(float)
    base["uptime"] = np.where(
        base["window_s"] > 0, np.clip(base["up_s"] / base["window_s"].where(base["window_s"] > 0), 0, 1), np.nan
    )

    keyed = base.rename(columns={"device_id": "entity_id"})
    rel = reliability_component(
        frame=keyed[["entity_id", "period", "uses", "successes", "active_days", "error_free_days", "uptime"]]
    )

    lat = Q.latency_by_touchpoint(conn, scope=scope, start=first_day, end=window.end, grain=grain, source=source)
    lat["period"] = pd.to_datetime(lat["period"])
    lat = lat.merge(devs[["device_key", "device_id"]], on="device_key").rename(columns={"device_id": "entity_id"})
    eff = efficiency_component(frame=lat[["entity_id", "period", "touchpoint", "uses", "observed_mean", "target"]])

    active = keyed[keyed["active_days"] > 0]
    cat = (
        active.groupby(["product_id", "period"])["touchpoints_used"]
        .quantile(0.9)
        .apply(np.ceil)
        .rename("catalogue_size")
    )
    keyed = keyed.merge(cat.reset_index(), on=["product_id", "period"], how="left")
    eng = engagement_component(
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

    traj = _trajectory(conn, scope=scope, keyed=keyed, periods=periods)

    fb = Q.feedback_counts_trailing(
        conn, scope=scope, period_ends=[e for _, e in periods], lookback_days=VOICE_LOOKBACK_DAYS
    )
    fb["period_end"] = pd.to_datetime(fb["period_end"])
    fb = fb.merge(devs[["device_key", "device_id"]], on="device_key").rename(columns={"device_id": "entity_id"})
    fb = fb.merge(per, on="period_end")
    voice = voice_component(frame=fb.drop(columns=["device_key", "period_end"]))

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
    for part, cols in (
        (rel, ["success_score", "error_free_score", "uptime_score", "reliability"]),
        (eff, ["efficiency"]),
        (eng, ["stickiness_score", "breadth_score", "engagement"]),
        (traj, ["slope_score", "recency_score", "trajectory", "days_since_last_use"]),
        (voice, ["nps_score", "csat_score", "ces_score", "voice"]),
    ):
        if len(part):
            out = out.merge(part[["entity_id", "period", *cols]], on=["entity_id", "period"], how="left")
        else:
            for c in cols:
                out[c] = np.nan
    return out, devs


def _trajectory(
    conn: psycopg.Connection, *, scope: Q.Scope, keyed: pd.DataFrame, periods: list[tuple[date, date]]
) -> pd.DataFrame:
    """Trajectory component per device × period: usage trend over the trailing 28 days and recency, at each period end."""
    frame_start = periods[0][1] - timedelta(days=TRAJECTORY_WINDOW_DAYS - 1)
    usage = Q.daily_usage(conn, scope=scope, start=frame_start, end=periods[-1][1])
    before = Q.last_use_before(conn, scope=scope, end=frame_start - timedelta(days=1))
    ids = keyed[["device_key", "entity_id"]].drop_duplicates()
    usage = usage.merge(ids, on="device_key")
    usage["day"] = pd.to_datetime(usage["day"])
    before = before.merge(ids, on="device_key").set_index("entity_id")["last_use_on"]
    before = pd.to_datetime(before)
    parts = []
    for p0, p1 in periods:
        pe = pd.Timestamp(p1)
        ent = keyed[keyed["period"] == pd.Timestamp(p0)]
        if ent.empty:
            continue
        u = usage[(usage["day"] <= pe) & (usage["day"] > pe - pd.Timedelta(days=TRAJECTORY_WINDOW_DAYS))]
        seen = usage[usage["day"] <= pe].groupby("entity_id")["day"].max()
        last = seen.reindex(ent["entity_id"]).fillna(before.reindex(ent["entity_id"]))
        entities = pd.DataFrame(
            {
                "entity_id": ent["entity_id"].to_numpy(),
                "activated_on": _utc_days(ent["activated_at"]).to_numpy(),
                "expected_active_days_per_week": ent["expected_active_days_per_week"].astype(float).to_numpy(),
                "last_use_on": last.to_numpy(),
            }
        )
        weekly = entities["expected_active_days_per_week"] < 3  # sparse daily series hide a decline: weekly buckets
        for bucket, mask in ((1, ~weekly), (7, weekly)):
            if not mask.any():
                continue
            sub = entities[mask.to_numpy()]
            t = trajectory_component(
                usage=u[u["entity_id"].isin(sub["entity_id"])][["entity_id", "day", "uses"]],
                entities=sub,
                as_of=p1,
                window_days=TRAJECTORY_WINDOW_DAYS,
                bucket_days=bucket,
                period=pd.Timestamp(p0),
            )
            parts.append(t)
    if not parts:
        return pd.DataFrame(
            columns=["entity_id", "period", "slope_score", "recency_score", "trajectory", "days_since_last_use"]
        )
    return pd.concat(parts, ignore_index=True)


def _aggregate(device_rows: pd.DataFrame, level: Level) -> pd.DataFrame:
    """Mean component and sub-scores of the member devices per (account | product | fleet) × period."""
    cols = list(dict.fromkeys([*COMPONENTS, *SUB_SCORES]))
    d = device_rows.copy()
    for c in cols:
        d[c] = pd.to_numeric(d[c], errors="coerce").astype(float)
    if level == "account":
        key = d["account_id"].fillna("(no account)")
    elif level == "product":
        key = d["product_id"]
    else:
        key = pd.Series("fleet", index=d.index)
    d["entity_id"] = key.to_numpy()
    g = d.groupby(["entity_id", "period"], sort=True)
    out = g[cols].mean().reset_index()
    out["devices"] = g.size().to_numpy()
    out["period_end"] = g["period_end"].first().to_numpy()
    if level == "account":
        prods = g["product_id"].agg(lambda s: s.iloc[0] if s.nunique() == 1 else None)
        out["product_id"] = prods.to_numpy()
        out["segment"] = g["segment"].first().fillna("(none)").to_numpy()
    elif level == "product":
        out["product_id"] = out["entity_id"]
        out["segment"] = "all products"
    else:
        out["product_id"] = None
        out["segment"] = "fleet"
    return out


def _health_objects(level: Level, frame: pd.DataFrame, config: HealthConfig) -> tuple[HealthScore, ...]:
    """Run the pure score and turn its frames into HealthScore objects."""
    if frame.empty:
        return ()
    inp = frame[["entity_id", "period", "product_id", "segment", *COMPONENTS]].copy()
    for c in COMPONENTS:
        inp[c] = pd.to_numeric(inp[c], errors="coerce").astype(float).clip(0, 100)
    hs = health_scores(frame=inp, config=config)
    sc = hs.scores.reset_index(drop=True)
    extra = frame.reset_index(drop=True)
    drivers: dict[tuple[str, object], list[Driver]] = {}
    dr = hs.drivers
    if len(dr):
        for ent, per, comp, score, med, wt, contrib in zip(
            dr["entity_id"],
            dr["period"],
            dr["component"],
            dr["score"],
            dr["segment_median"],
            dr["weight"],
            dr["contribution"],
            strict=True,
        ):
            drivers.setdefault((ent, per), []).append(
                Driver(str(comp), float(score), float(med), float(wt), float(contrib))
            )
    out = []
    subs_present = [c for c in SUB_SCORES if c in extra.columns]
    for i, row in enumerate(sc.itertuples(index=False)):
        key = (row.entity_id, row.period)
        tops = tuple(
            str(getattr(row, f"driver_{k}"))
            for k in range(1, config.top_drivers + 1)
            if getattr(row, f"driver_{k}") is not None
        )
        out.append(
            HealthScore(
                level=level,
                entity_id=str(row.entity_id),
                period_start=_day(row.period),  # type: ignore[arg-type]
                period_end=_day(extra.at[i, "period_end"]),  # type: ignore[arg-type]
                product_id=None if row.product_id is None else str(row.product_id),
                segment=None if row.segment is None else str(row.segment),
                devices=_i(extra.at[i, "devices"]) if "devices" in extra.columns else 1,
                score=_f(row.score),
                band=row.band,
                capped=bool(row.capped),
                score_uncapped=_f(row.score_uncapped),
                components={c: _f(getattr(row, c)) for c in COMPONENTS},
                weights={c: _f(getattr(row, f"weight_{c}")) for c in COMPONENTS},
                sub_scores={c: _f(extra.at[i, c]) for c in subs_present},
                drivers=tuple(drivers.get(key, ())),
                top_negative_drivers=tops,
                previous_score=_f(row.previous_score),
                delta=_f(row.delta),
                arrow=row.arrow,
                reason=row.reason,
            )
        )
    return tuple(out)


def health_frames(
    conn: psycopg.Connection,
    *,
    level: Level = "device",
    grain: Grain = "week",
    product: str | None = None,
    segment: str | None = None,
    account: str | None = None,
    device: str | None = None,
    start: date | None = None,
    end: date | None = None,
    weeks: int = 8,
    source: Source = "rollups",
) -> tuple[pd.DataFrame, Window | None]:
    """The component frame behind get_health (one row per entity × period), for the benchmark and audits."""
    window = _window(conn, start=start, end=end, default_days=7 * weeks if grain == "week" else 28)
    if window is None:
        return pd.DataFrame(), None
    rows, _ = _device_period_frame(
        conn, scope=_scope(product, segment, account, device), window=window, grain=grain, source=source
    )
    if rows.empty:
        return rows, window
    if level == "device":
        rows = rows.assign(devices=1, segment=rows["product_id"])
        return rows, window
    return _aggregate(rows, level), window


def get_health(
    *,
    conn: psycopg.Connection,
    level: Level = "device",
    grain: Grain = "week",
    product: str | None = None,
    segment: str | None = None,
    account: str | None = None,
    device: str | None = None,
    start: date | None = None,
    end: date | None = None,
    weeks: int = 8,
    config: HealthConfig | None = None,
    source: Source = "rollups",
) -> HealthReport:
    """Experience Health Score per device, account, product or fleet, per day or week, with history.

    Components per docs/experience-score.md (and docs/analytics.md for the inputs chosen); drivers compare
    each entity with its segment's median in the same period: devices with their product, accounts with
    their account segment, products with all products. Default period: the last `weeks` weeks (or 28 days).
    """
    frame, window = health_frames(
        conn,
        level=level,
        grain=grain,
        product=product,
        segment=segment,
        account=account,
        device=device,
        start=start,
        end=end,
        weeks=weeks,
        source=source,
    )
    if window is None:
        return HealthReport(level, grain, _empty_window(), source, (), reason="not enough data: nothing stored yet")
    if frame.empty:
        return HealthReport(level, grain, window, source, (), reason="not enough data: no devices in scope")
    return HealthReport(level, grain, window, source, _health_objects(level, frame, config or HealthConfig()))


# ---------------------------------------------------------------- voice of the customer


def _measure(row: pd.Series) -> Measure:
    return Measure(
        measure=str(row["measure"]),  # type: ignore[arg-type]
        scale=str(row["scale"]),
        n=_i(row["n"]),
        value=_f(row["value"]),
        margin=_f(row["margin"]),
        ci_low=_f(row["ci_low"]),
        ci_high=_f(row["ci_high"]),
        promoters_pct=_f(row.get("promoters_pct")),
        detractors_pct=_f(row.get("detractors_pct")),
        reason=row.get("reason"),
    )


def _voice_groups(hist: pd.DataFrame, by: Sequence[str], min_n: int) -> list[VoiceGroup]:
    if hist.empty:
        return []
    res = core_voice.voice_by_group(histogram=hist, group_cols=list(by), min_n=min_n)
    groups: dict[tuple, dict[str, Measure]] = {}
    for _, row in res.iterrows():
        key = tuple(str(row[c]) for c in by)
        groups.setdefault(key, {})[str(row["measure"])] = _measure(row)
    return [
        VoiceGroup(dict(zip(by, key, strict=True)), m.get("nps"), m.get("csat"), m.get("ces"))
        for key, m in groups.items()
    ]


def get_voice(
    *,
    conn: psycopg.Connection,
    by: Sequence[str] = ("product",),
    product: str | None = None,
    segment: str | None = None,
    account: str | None = None,
    start: date | None = None,
    end: date | None = None,
    days: int = 90,
    min_n: int = 2,
) -> VoiceReport:
    """NPS (with n and 95% margin), CSAT top-2-box and CES per group and overall, from the stored feedback.

    `by`: any of product, touchpoint (relationship NPS answers are '(relationship)'), segment, week, month, day.
    Counting happens in SQL (a histogram per group × measure × score); the formulas are analytics.core.voice.
    """
    window = _window(conn, start=start, end=end, default_days=days)
    if window is None:
        empty = VoiceGroup({}, None, None, None)
        return VoiceReport(_empty_window(), tuple(by), empty, ())
    scope = _scope(product, segment, account)
    hist = Q.feedback_histogram(conn, scope=scope, start=window.start, end=window.end, by=list(by))
    overall_hist = hist.groupby(["measure", "score"], as_index=False)["responses"].sum() if len(hist) else hist
    overall = _voice_groups(overall_hist, (), min_n)
    return VoiceReport(
        window,
        tuple(by),
        overall[0] if overall else VoiceGroup({}, None, None, None),
        tuple(_voice_groups(hist, by, min_n)),
    )


# ---------------------------------------------------------------- touchpoints


def _satisfaction_index(conn: psycopg.Connection, *, scope: Q.Scope, window: Window) -> pd.DataFrame:
    """Per device: mean standardised feedback answer (each measure z-scored over the fleet in the window) and n."""
    fb = Q.device_feedback(conn, scope=scope, start=window.start, end=window.end)
    hist = Q.feedback_histogram(conn, scope=scope, start=window.start, end=window.end, by=[])
    if fb.empty or hist.empty:
        return pd.DataFrame(columns=["device_key", "satisfaction", "answers"])
    num = np.zeros(len(fb))
    den = np.zeros(len(fb))
    for m in ("nps", "csat", "ces"):
        h = hist[hist["measure"] == m]
        n = float(h["responses"].sum())
        if n < 2:
            continue
        mu = float((h["score"] * h["responses"]).sum() / n)
        sd = math.sqrt(float((h["responses"] * (h["score"] - mu) ** 2).sum() / (n - 1)))
        if sd <= 0:
            continue
        cnt = fb[f"{m}_n"].to_numpy(dtype=float)
        mean = fb[f"{m}_mean"].to_numpy(dtype=float, na_value=np.nan)
        ok = cnt > 0
        num[ok] += cnt[ok] * (mean[ok] - mu) / sd
        den[ok] += cnt[ok]
    out = pd.DataFrame(
        {
            "device_key": fb["device_key"],
            "satisfaction": np.where(den > 0, num / np.where(den > 0, den, 1), np.nan),
            "answers": den,
        }
    )
    return out[out["answers"] > 0]


def _retention(conn: psycopg.Connection, *, scope: Q.Scope, window: Window, devs: pd.DataFrame) -> pd.DataFrame:
    """Per device: status at the end of the window (active / inactive ≥ 28 days / cancelled / returned) and retained 0/1."""
    last = Q.last_use_before(conn, scope=scope, end=window.end)
    exits = Q.lifecycle(conn, scope=scope, start=date(1970, 1, 1), end=window.end, stages=list(Q.CHURN_STAGES))
    exits = exits.sort_values("ts").drop_duplicates("device_key")
    d = devs[["device_key", "device_id", "product_id", "account_id", "activated_at"]].merge(
        last, on="device_key", how="left"
    )
    d = d.merge(exits[["device_key", "stage", "ts"]].rename(columns={"ts": "exit_at"}), on="device_key", how="left")
    ref = pd.to_datetime(d["last_use_on"]).fillna(_utc_days(d["activated_at"]))
    idle = (pd.Timestamp(window.end) - ref).dt.days
    status = np.where(
        d["stage"].notna(), d["stage"].astype(object), np.where(idle >= CHURN_INACTIVE_DAYS, "inactive", "active")
    )
    d["status"] = status
    d["days_idle"] = idle
    d["retained"] = (status == "active").astype(float)
    return d


def _f_test_p(r2: float | None, n: int, k: int) -> float | None:
    """p-value of the overall F test of a linear model with k predictors explaining R² of n observations."""
    if r2 is None or k < 1 or n - k - 1 < 1 or r2 >= 1:
        return None
    f = (r2 / k) / ((1 - r2) / (n - k - 1))
    return _f(sps.f.sf(f, k, n - k - 1))


def get_touchpoints(
    *,
    conn: psycopg.Connection,
    product: str | None = None,
    segment: str | None = None,
    account: str | None = None,
    start: date | None = None,
    end: date | None = None,
    days: int = 56,
    min_device_uses: int = 3,
    alpha: float = 0.05,
) -> TouchpointReport:
    """Per touchpoint: reach, usage share, success rate (Wilson CI), latency vs target, journey stage and owner,
    derived importance vs retention and feedback, IPA quadrant and satisfier/dissatisfier class with the n behind it.

    IPA importance = mean of the usage share (% of the product's uses) and the derived importances (% of the
    explained R², core Shapley) of the outcomes whose model is significant at `alpha`: derived importance counts
    only where the data supports it (see docs/analytics.md). IPA crosshairs: means within each product.
    """
    window = _window(conn, start=start, end=end, default_days=days)
    if window is None:
        return TouchpointReport(_empty_window(), (), (), {})
    scope = _scope(product, segment, account)
    cat = Q.touchpoint_catalogue(conn, product=product)
    tot = Q.touchpoint_totals(conn, scope=scope, start=window.start, end=window.end)
    if tot.empty:
        return TouchpointReport(window, (), (), {})
    tot = tot.merge(cat, on=["product_id", "touchpoint"], how="left")
    summ = core_touchpoints.touchpoint_summary(frame=tot, group_cols=["product_id"])
    summ = summ.merge(
        tot[["product_id", "touchpoint", "errors", "successes", "journey_stage", "owner", "is_core"]],
        on=["product_id", "touchpoint"],
    )

    devs = Q.devices(conn, scope=scope)
    dtp = Q.device_touchpoints(conn, scope=scope, start=window.start, end=window.end)
    dtp = dtp.merge(devs[["device_key", "device_id", "product_id"]], on="device_key")
    dtp = dtp.merge(cat[["product_id", "touchpoint", "target_latency_ms"]], on=["product_id", "touchpoint"], how="left")
    dtp = dtp[dtp["uses"] >= min_device_uses]
    sr = 100.0 * dtp["successes"] / dtp["uses"]
    lat = core_touchpoints.latency_score(
        ratio=(
            dtp["latency_sum"] / dtp["latency_count"].where(dtp["latency_count"] > 0) / dtp["target_latency_ms"]
        ).to_numpy(dtype=float)
    )
    dtp["performance"] = np.nanmean(np.column_stack([sr.to_numpy(dtype=float), lat]), axis=1)

    ret = _retention(conn, scope=scope, window=window, devs=devs)
    sat = _satisfaction_index(conn, scope=scope, window=window).merge(
        devs[["device_key", "device_id"]], on="device_key"
    )
    used = set(dtp["device_id"])
    outcomes = {
        "retention": ret[ret["device_id"].isin(used)][["device_id", "retained"]].rename(
            columns={"retained": "outcome"}
        ),
        "feedback": sat[["device_id", "satisfaction"]].rename(columns={"satisfaction": "outcome"}),
    }

    models: list[OutcomeModel] = []
    derived: dict[tuple[str, str, str], tuple[float | None, float | None, int]] = {}
    pr_rows: dict[tuple[str, str], dict[str, object]] = {}
    for pid in sorted(summ["product_id"].unique()):
        perf = dtp[dtp["product_id"] == pid][["device_id", "touchpoint", "performance"]]
        ids = set(devs.loc[devs["product_id"] == pid, "device_id"])
        for oname, ofr in outcomes.items():
            o = ofr[ofr["device_id"].isin(ids)]
            di = core_touchpoints.derived_importance(performance=perf, outcomes=o)
            k = int(di.table["r2_share"].notna().sum())
            p_value = _f_test_p(di.r2, di.n_devices, k)
            sig = p_value is not None and p_value < alpha
            models.append(OutcomeModel(pid, oname, di.n_devices, _f(di.r2), p_value, sig, di.method, di.reason))
            for row in di.table.itertuples(index=False):
                derived[(pid, str(row.touchpoint), oname)] = (
                    _f(row.importance) if sig else None,
                    _f(row.spearman_rho),
                    _i(row.n),
                )
            if oname == "feedback":
                pr = core_touchpoints.penalty_reward(performance=perf, outcomes=o)
                for row in pr.table.itertuples(index=False):
                    pr_rows[(pid, str(row.touchpoint))] = {
                        "classification": _text(row.classification),
                        "penalty": _f(row.penalty),
                        "reward": _f(row.reward),
                        "n_low": _i(row.n_low),
                        "n_high": _i(row.n_high),
                        "reason": _text(row.reason),
                    }

    summ["importance_usage"] = 100.0 * summ["usage_share"].astype(float)
    for oname in outcomes:
        summ[f"importance_{oname}"] = [
            derived.get((p, t, oname), (None, None, 0))[0]
            for p, t in zip(summ["product_id"], summ["touchpoint"], strict=True)
        ]
    imp_cols = ["importance_usage", "importance_retention", "importance_feedback"]
    summ["importance"] = summ[imp_cols].apply(pd.to_numeric, errors="coerce").astype(float).mean(axis=1, skipna=True)
    summ["basis"] = summ[imp_cols].apply(
        lambda r: " + ".join(c.removeprefix("importance_") for c in imp_cols if pd.notna(r[c])), axis=1
    )

    quadrants: dict[tuple[str, str], str | None] = {}
    crosshairs: dict[str, tuple[float | None, float | None]] = {}
    for pid, grp in summ.groupby("product_id"):
        ipa = core_touchpoints.ipa_quadrants(frame=grp[["touchpoint", "importance", "performance"]])
        crosshairs[str(pid)] = (_f(ipa.importance_crosshair), _f(ipa.performance_crosshair))
        for row in ipa.table.itertuples(index=False):
            quadrants[(str(pid), str(row.touchpoint))] = row.quadrant

    items = []
    for row in summ.itertuples(index=False):
        key = (str(row.product_id), str(row.touchpoint))
        uses, succ = _i(row.uses), _i(row.successes)
        ci = proportion_ci(successes=succ, n=uses) if uses > 0 else None
        pr = pr_rows.get(key, {})
        dr, df_ = derived.get((*key, "retention"), (None, None, 0)), derived.get((*key, "feedback"), (None, None, 0))
        items.append(
            TouchpointInsight(
                product_id=key[0],
                touchpoint=key[1],
                journey_stage=str(row.journey_stage),
                owner=str(row.owner),
                is_core=bool(row.is_core),
                devices=_i(row.devices),
                reach=_f(row.reach),
                uses=uses,
                usage_share=_f(row.usage_share),
                success_rate=_f(row.success_rate),
                success_ci_low=ci.low if ci else None,
                success_ci_high=ci.high if ci else None,
                errors=_i(row.errors),
                mean_latency_ms=_f(row.mean_latency_ms),
                target_latency_ms=_f(row.target_latency_ms),
                latency_vs_target=_f(row.latency_vs_target),
                performance=_f(row.performance),
                importance_usage=_f(row.importance_usage),
                importance_retention=dr[0],
                importance_feedback=df_[0],
                rho_retention=dr[1],
                rho_feedback=df_[1],
                n_retention=dr[2],
                n_feedback=df_[2],
                importance=_f(row.importance),
                importance_basis=str(row.basis),
                quadrant=quadrants.get(key),
                classification=pr.get("classification"),
                penalty=pr.get("penalty"),
                reward=pr.get("reward"),  # type: ignore[arg-type]
                n_low=pr.get("n_low"),
                n_high=pr.get("n_high"),
                reason=pr.get("reason") or row.reason,  # type: ignore[arg-type]
            )
        )
    definitions = {
        "performance": "mean of success rate ×100 and latency_score(mean latency / target) (core touchpoint_summary)",
        "importance_usage": "share of the product's uses going through the touchpoint, %",
        "importance_retention": "Shapley share of R² of retained (0/1: not cancelled/returned, used in the last 28 days)"
        " on per-device touchpoint performance; None unless the model's F test has p < alpha",
        "importance_feedback": "same for the device's satisfaction index (mean z-score of its NPS, CSAT and CES answers)",
        "importance": "mean of the available importance measures (IPA x-axis); crosshairs at the product's means",
        "classification": "penalty–reward contrast on the satisfaction index (core penalty_reward), n per group",
    }
    return TouchpointReport(window, tuple(items), tuple(models), crosshairs, definitions)


# ---------------------------------------------------------------- journey


def get_journey(
    *,
    conn: psycopg.Connection,
    product: str | None = None,
    segment: str | None = None,
    account: str | None = None,
    start: date | None = None,
    end: date | None = None,
    days: int = 90,
    habitual_days: int = 4,
    habitual_window_days: int = 14,
) -> JourneyReport:
    """Lifecycle funnel (registered → activated → first core use → habitual; churned as the exit) of the devices
    that came online in the window, per weekly activation cohort, with time to first value per product.

    Devices that came online before the window are left out: their early journey was not observed.
    """
    window = _window(conn, start=start, end=end, default_days=days)
    if window is None:
        return JourneyReport(_empty_window(), (), None, None, (), (), {}, reason="not enough data: nothing stored yet")
    scope = _scope(product, segment, account)
    devs = Q.devices(conn, scope=scope)
    act_day = _utc_days(devs["activated_at"])
    devs = devs[(act_day >= pd.Timestamp(window.start)) & (act_day <= pd.Timestamp(window.end))]
    if devs.empty:
        return JourneyReport(
            window, (), None, None, (), (), {}, reason="not enough data: no device came online in the window"
        )
    keys = set(devs["device_key"])
    life = Q.lifecycle(conn, scope=scope, start=window.start, end=window.end, stages=["activated", *Q.CHURN_STAGES])
    life = life[life["device_key"].isin(keys)]
    first = life.sort_values("ts").groupby(["device_key", "stage"])["ts"].first().unstack()
    core = Q.first_core_success(conn, scope=scope, start=window.start, end=window.end)
    daily = Q.daily_usage(conn, scope=scope, start=window.start, end=window.end)
    daily = daily[daily["device_key"].isin(keys)]
    hab = core_journey.habitual_dates(
        daily=daily.rename(columns={"device_key": "entity_id"}), k=habitual_days, window_days=habitual_window_days
    )
    last = daily.groupby("device_key")["day"].max()
    frame = devs[["device_key", "device_id", "product_id", "activated_at"]].rename(
        columns={"activated_at": "registered_at"}
    )
    frame = frame.set_index("device_key")
    frame["activated_at"] = first["activated"] if "activated" in first.columns else pd.NaT
    frame["first_core_use_at"] = core.set_index("device_key")["first_core_use_at"]
    frame["habitual_at"] = pd.to_datetime(hab.set_index("entity_id")["habitual_on"]).dt.tz_localize("UTC")
    # the end of the last active day: inactivity counts from then
    frame["last_use_at"] = (pd.to_datetime(last) + pd.Timedelta(days=1)).dt.tz_localize("UTC")
    cancel = [s for s in Q.CHURN_STAGES if s in first.columns]
    frame["cancelled_at"] = first[cancel].min(axis=1) if cancel else pd.NaT
    frame = frame.reset_index()
    for col in ("activated_at", "first_core_use_at", "habitual_at", "last_use_at", "cancelled_at", "registered_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    as_of = Q.day_start(window.end + timedelta(days=1))
    fun = core_journey.lifecycle_funnel(
        devices=frame, as_of=as_of, churn_inactive_days=CHURN_INACTIVE_DAYS, cohort="week"
    )
    stages = tuple(
        StageCount(s.stage, s.count, s.conversion_from_previous, s.conversion_from_start) for s in fun.stages
    )
    cohorts = tuple(
        Cohort(
            cohort=str(r.cohort),
            age_days=_i(r.age_days),
            mature=bool(r.mature),
            registered=_i(r.registered),
            activated=_i(r.activated),
            first_core_use=_i(r.first_core_use),
            habitual=_i(r.habitual),
            churned=None if pd.isna(r.churned) else int(r.churned),
            conv_activated=_f(r.conv_activated),
            conv_first_core_use=_f(r.conv_first_core_use),
            conv_habitual=_f(r.conv_habitual),
            churn_rate=_f(r.churn_rate),
        )
        for r in fun.by_cohort.itertuples(index=False)
    )
    ttv_frame = frame.assign(activated_at=frame["activated_at"].fillna(frame["registered_at"]))
    ttv: list[TimeToValueStats] = []
    overall = core_journey.time_to_value(devices=ttv_frame, unit="hours")
    ttv.append(
        TimeToValueStats(
            "all",
            overall.n_activated,
            overall.n_reached,
            overall.share_reached,
            overall.distribution.median,
            overall.distribution.p90,
            overall.distribution.mean,
            overall.distribution.reason,
        )
    )
    by = core_journey.time_to_value_by_group(devices=ttv_frame, group_cols=["product_id"], unit="hours")
    for r in by.itertuples(index=False):
        ttv.append(
            TimeToValueStats(
                str(r.product_id),
                _i(r.n_activated),
                _i(r.n_reached),
                _f(r.share_reached),
                _f(r.median),
                _f(r.p90),
                None,
                r.reason,
            )
        )
    definitions = {
        **fun.definitions,
        "registered": "came online (registry activated_at) inside the window",
        "activated": "the 'activated' lifecycle event (pairing completed) was received",
        "first_core_use": "first successful use of a core touchpoint (hour found in rollup_hourly, time in raw events)",
        "habitual": f"{habitual_days} active days within {habitual_window_days} days",
        "time_to_value": "hours from the activated event (else coming online) to the first successful core use",
    }
    return JourneyReport(window, stages, fun.churned, fun.churn_rate, cohorts, tuple(ttv), definitions, fun.reason)


# ---------------------------------------------------------------- disruptions


def get_disruptions(
    *,
    conn: psycopg.Connection,
    product: str | None = None,
    segment: str | None = None,
    account: str | None = None,
    start: date | None = None,
    end: date | None = None,
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
    window = _window(conn, start=start, end=end, default_days=days)
    empty_defs: dict[str, str] = {}
    if window is None:
        return DisruptionReport(
            _empty_window(),
            (),
            (),
            (),
            None,
            (),
            (),
            "not enough data",
            empty_defs,
            reason="not enough data: nothing stored yet",
        )
    scope = _scope(product, segment, account)
    devs = Q.devices(conn, scope=scope)
    per_product = devs.groupby("product_id").size()
    stream = Q.error_stream(conn, scope=scope, start=window.start, end=window.end)
    as_of = Q.day_start(window.end + timedelta(days=1))
    eps = core_disruptions.error_episodes(events=stream, as_of=as_of)
    recovery: list[RecoveryTimes] = []

    def rec(name: str, frame: pd.DataFrame) -> RecoveryTimes:
        r = core_disruptions.time_to_recovery(episodes=frame)
        return RecoveryTimes(
            name, r.n_episodes, r.n_recovered, r.n_not_recovered, r.seconds.median, r.seconds.p90, r.seconds.mean
        )

    recovery.append(rec("all episodes", eps))
    for pid, grp in eps.groupby("product_id"):
        recovery.append(rec(str(pid), grp))

    found: list[Disruption] = []
    member_rows: list[pd.DataFrame] = []
    for inc in _incident_windows(conn, scope=scope, window=window, k=spike_k):
        m = eps[
            (eps["product_id"] == inc["product_id"])
            & (eps["touchpoint"] == inc["touchpoint"])
            & (eps["code"] == inc["code"])
            & (eps["start"] >= inc["start"])
            & (eps["start"] < inc["end"])
        ]
        n_dev = int(m["device_id"].nunique())
        share = n_dev / float(per_product.get(inc["product_id"], 0) or 1)
        if n_dev < min_devices or share < min_share:
            continue
        member_rows.append(m)
        dist = distribution(values=m["duration_s"])
        ends = pd.to_datetime(m["end"], utc=True)
        found.append(
            Disruption(
                product_id=str(inc["product_id"]),
                touchpoint=str(inc["touchpoint"]),
                code=str(inc["code"]),
                start=_pydt(m["start"].min()),
                end=_pydt(max(inc["end"], ends.max()) if ends.notna().any() else inc["end"]),
                open=bool((m["status"] == "open").any()),
                devices_affected=n_dev,
                share_of_product=share,
                episodes=len(m),
                errors=_i(m["errors"].sum()),
                recovered_episodes=int(m["recovered"].sum()),
                median_recovery_s=dist.median,
                p90_recovery_s=dist.p90,
            )
        )
    if member_rows:
        recovery.append(rec("incident episodes", pd.concat(member_rows)))

    daily = Q.daily_errors_by_product(conn, scope=scope, start=window.start, end=window.end)
    spikes: list[Spike] = []
    if len(daily):
        sp = core_disruptions.detect_spikes(
            series=daily.rename(columns={"errors": "value"})[["product_id", "day", "value"]], group_cols=("product_id",)
        )
        for r in sp[sp["spike"].fillna(False).astype(bool)].itertuples(index=False):
            spikes.append(
                Spike(
                    str(r.product_id),
                    _day(r.day),
                    _i(r.value),
                    float(r.baseline),  # type: ignore[arg-type]
                    float(r.threshold),
                    float(r.excess),
                )
            )

    effects = _disruption_effects(
        conn,
        scope=scope,
        window=window,
        devs=devs,
        members=member_rows,
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
        window,
        tuple(found),
        tuple(recovery),
        tuple(spikes),
        effects[0],
        effects[1],
        effects[2],
        effects[3],
        definitions,
        None if len(stream) else "not enough data: no errors in window",
    )


def _pydt(value: object) -> datetime:
    """A tz-aware UTC datetime from a timestamp-like value (microsecond precision)."""
    ts = pd.Timestamp(value)  # type: ignore[arg-type]
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.floor("us").to_pydatetime()


def _incident_windows(conn: psycopg.Connection, *, scope: Q.Scope, window: Window, k: float) -> list[dict[str, object]]:
    """Runs of spike hours per product × touchpoint × error code; each hour of day is compared with the same hour
    on the previous 28 days (core detect_spikes on distinct devices with that error)."""
    first = max(window.start - timedelta(days=28), Q.get_first_day(conn) or window.start)
    hourly = Q.hourly_errors(conn, scope=scope, start=first, end=window.end)
    if hourly.empty:
        return []
    keys = ["product_id", "touchpoint", "code"]
    b = pd.to_datetime(hourly["bucket"], utc=True).dt.tz_localize(None)
    series = hourly[keys].assign(hour=b.dt.hour, day=b.dt.normalize(), value=hourly["devices"].astype(float))
    # every hour of day gets a calendar from the first day with data, so quiet days count as zeros
    pad = series[keys].drop_duplicates().merge(pd.DataFrame({"hour": range(24)}), how="cross")
    series = pd.concat(
        [pad.assign(day=pd.Timestamp(first), value=0.0), series, pad.assign(day=pd.Timestamp(window.end), value=0.0)],
        ignore_index=True,
    )
    series = series.groupby([*keys, "hour", "day"], as_index=False)["value"].sum()
    sp = core_disruptions.detect_spikes(series=series, group_cols=(*keys, "hour"), window=28, k=k, min_history=7)
    hit = sp[sp["spike"].fillna(False).astype(bool)]
    hit = hit[hit["day"] >= pd.Timestamp(window.start)]
    if hit.empty:
        return []
    t = (hit["day"] + pd.to_timedelta(hit["hour"].astype(int), unit="h")).dt.tz_localize("UTC")
    hit = hit.assign(t=t).sort_values([*keys, "t"])
    out: list[dict[str, object]] = []
    for (pid, tp, code), grp in hit.groupby(keys, sort=True):
        run_start = prev = None
        for ts in grp["t"]:
            if prev is not None and ts - prev <= pd.Timedelta(hours=1):
                prev = ts
                continue
            if run_start is not None:
                out.append(
                    {
                        "product_id": pid,
                        "touchpoint": tp,
                        "code": code,
                        "start": run_start,
                        "end": prev + pd.Timedelta(hours=1),
                    }
                )
            run_start = prev = ts
        out.append(
            {"product_id": pid, "touchpoint": tp, "code": code, "start": run_start, "end": prev + pd.Timedelta(hours=1)}
        )
    return out


def _disruption_effects(
    conn: psycopg.Connection,
    *,
    scope: Q.Scope,
    window: Window,
    devs: pd.DataFrame,
    members: list[pd.DataFrame],
    effect_days: int,
    horizon_days: int,
) -> tuple[float | None, tuple[EffectGroup, ...], tuple[EffectComparison, ...], str]:
    """Fast / slow / no recovery groups compared on later usage change, NPS and CSAT (core disruption_effects)."""
    if not members:
        return None, (), (), "not enough data"
    latest_ref = pd.Timestamp(Q.day_start(window.end - timedelta(days=effect_days)))
    hit = pd.concat(members).sort_values("start")
    hit = hit[pd.to_datetime(hit["start"], utc=True) <= latest_ref].drop_duplicates("device_id")
    if hit.empty:
        return None, (), (), "not enough data"
    ref_by_product = hit.groupby("product_id")["start"].min()
    ids = devs.set_index("device_id")["device_key"]
    rows = pd.DataFrame(
        {
            "device_key": hit["device_id"].map(ids).to_numpy(),
            "ref_ts": hit["start"].to_numpy(),
            "disrupted": True,
            "recovery_s": hit["duration_s"].to_numpy(dtype=float, na_value=np.nan),
        }
    )
    others = devs[devs["product_id"].isin(ref_by_product.index) & ~devs["device_id"].isin(hit["device_id"])]
    others = others[pd.to_datetime(others["activated_at"], utc=True) < others["product_id"].map(ref_by_product)]
    rows = pd.concat(
        [
            rows,
            pd.DataFrame(
                {
                    "device_key": others["device_key"].to_numpy(),
                    "ref_ts": others["product_id"].map(ref_by_product).to_numpy(),
                    "disrupted": False,
                    "recovery_s": np.nan,
                }
            ),
        ],
        ignore_index=True,
    )
    rows["ref_ts"] = pd.to_datetime(rows["ref_ts"], utc=True)
    rows["ref_day"] = rows["ref_ts"].dt.tz_localize(None).dt.date
    usage = Q.usage_around(conn, scope=scope, refs=rows[["device_key", "ref_day"]], days=effect_days)
    fb = Q.feedback_after(
        conn, scope=scope, refs=rows[["device_key", "ref_ts"]], horizon_days=horizon_days, end=window.end
    )
    d = rows.merge(usage, on="device_key", how="left").merge(fb, on="device_key", how="left")
    d["device_id"] = d["device_key"]
    for c in ("nps_after", "csat_after"):
        d[c] = pd.to_numeric(d[c], errors="coerce").astype(float)
    eff = core_disruptions.disruption_effects(
        devices=d[["device_id", "disrupted", "recovery_s", "usage_before", "usage_after", "nps_after", "csat_after"]]
    )
    groups = tuple(
        EffectGroup(
            str(r.group),
            _i(r.devices),
            _i(r.usage_n),
            _f(r.usage_mean),
            _i(r.nps_n),
            _f(r.nps),
            _f(r.nps_margin),
            _i(r.csat_n),
            _f(r.csat),
            _f(r.csat_margin),
        )
        for r in eff.groups.itertuples(index=False)
    )
    comps = tuple(
        EffectComparison(
            str(r.metric),
            str(r.a),
            str(r.b),
            _f(r.difference),
            _f(r.ci_low),
            _f(r.ci_high),
            _i(r.n_a),
            _i(r.n_b),
            r.reason,
        )
        for r in eff.comparisons.itertuples(index=False)
    )
    return _f(eff.fast_recovery_s), groups, comps, eff.paradox


# ---------------------------------------------------------------- segments and personas

SEGMENT_FEATURES: dict[str, str] = {
    "active_days_per_week": "active days per week ÷ the product's median (days since activation, up to the last use)",
    "uses_per_active_day": "uses per active day ÷ the product's median",
    "extra_feature_share": "share of uses on non-core touchpoints ÷ the product's median",
    "satisfaction": "mean z-score of the device's NPS/CSAT/CES answers minus its product's mean, shrunk towards 0"
    " by n/(n+2) (0 without answers)",
}


def segment_features(
    conn: psycopg.Connection, *, scope: Q.Scope, window: Window, min_history_days: int = 21
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per device: the standardisable usage features (log ratios to the product median) and why others are left out."""
    devs = Q.devices(conn, scope=scope)
    if devs.empty:
        return pd.DataFrame(columns=["entity_id", *SEGMENT_FEATURES, "product_id"]), {}
    f = Q.usage_features(conn, scope=scope, start=window.start, end=window.end)
    last = Q.last_use_before(conn, scope=scope, end=window.end)
    d = devs.merge(f, on="device_key", how="left").merge(last, on="device_key", how="left")
    act = _utc_days(d["activated_at"])
    w0, w1 = pd.Timestamp(window.start), pd.Timestamp(window.end)
    history = (w1 - np.maximum(act, w0)).dt.days + 1
    # observed life: from the day after coming online (a partial day) to the last use
    first = np.maximum(act + pd.Timedelta(days=1), w0)
    lastday = pd.to_datetime(d["last_use_on"]).clip(upper=w1)
    obs = ((lastday - first).dt.days + 1).clip(lower=1)
    active = (d["active_days"].fillna(0) - (act >= w0).astype(int)).clip(lower=0)
    excluded: dict[str, str] = {}
    too_new = history < min_history_days
    unused = d["uses"].fillna(0) <= 0
    for dev_id, h in zip(d.loc[too_new, "device_id"], history[too_new], strict=True):
        excluded[str(dev_id)] = f"too new to segment: {max(int(h), 0)} days of history < {min_history_days}"
    for dev_id in d.loc[unused & ~too_new, "device_id"]:
        excluded[str(dev_id)] = "no use in the window"
    keep = ~too_new & ~unused
    d = d[keep].copy()
    d["adw"] = (active[keep] / obs[keep] * 7.0).astype(float)
    d["upad"] = d["uses"] / d["active_days"].where(d["active_days"] > 0)
    d["extra"] = 1.0 - d["core_uses"] / d["uses"]
    sat = _satisfaction_index(conn, scope=scope, window=window)
    d = d.merge(sat, on="device_key", how="left")
    d["sat_c"] = d["satisfaction"] - d.groupby("product_id")["satisfaction"].transform("mean")
    d["sat_s"] = (d["sat_c"] * d["answers"] / (d["answers"] + 2.0)).fillna(0.0)

    def log_rel(col: str) -> pd.Series:
        med = d.groupby("product_id")[col].transform("median")
        return np.log(np.clip(d[col] / med.where(med > 0), 0.05, None))

    feats = pd.DataFrame(
        {
            "entity_id": d["device_id"].to_numpy(),
            "active_days_per_week": log_rel("adw").to_numpy(dtype=float),
            "uses_per_active_day": log_rel("upad").to_numpy(dtype=float),
            "extra_feature_share": log_rel("extra").to_numpy(dtype=float),
            "satisfaction": d["sat_s"].to_numpy(dtype=float),
            "product_id": d["product_id"].to_numpy(),
        }
    )
    return feats, excluded


K_METHOD = "Calinski–Harabasz (variance ratio) maximum over k; silhouette reported alongside"


def _choose_k(features: pd.DataFrame, k_range: Sequence[int]) -> tuple[int | None, dict[int, float]]:
    """k with the highest Calinski–Harabasz index on the median-imputed, standardised features.

    Silhouette favours k = 2 whenever one group stands far apart (here: power users), hiding the rest; the
    variance ratio does not have that bias. Returns (k, {k: CH index}).
    """
    x = features.to_numpy(dtype=float, na_value=np.nan).copy()
    for j in range(x.shape[1]):
        col = x[:, j]
        col[~np.isfinite(col)] = np.nanmedian(col) if np.isfinite(col).any() else 0.0
    sd = x.std(axis=0)
    x = x[:, sd > 1e-12]
    ks = [k for k in sorted(set(k_range)) if 2 <= k < len(x)]
    if x.shape[1] == 0 or not ks:
        return None, {}
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    scores: dict[int, float] = {}
    for k in ks:
        labels = KMeans(n_clusters=k, n_init=4, random_state=0).fit_predict(z)
        if len(np.unique(labels)) > 1:
            scores[k] = float(calinski_harabasz_score(z, labels))
    if not scores:
        return None, {}
    return max(scores, key=lambda k: (scores[k], -k)), scores


def _persona_name(z: dict[str, float]) -> str:
    """Product-manager name: the core's usage-based name, with satisfaction as a qualifier."""
    roles = {
        "active_days_per_week": z.get("active_days_per_week", 0.0),
        "uses_per_active_day": z.get("uses_per_active_day", 0.0),
        "touchpoints_used": z.get("extra_feature_share", 0.0),
    }
    name = core_segments.name_cluster(centroid_z=roles)
    sat = z.get("satisfaction", 0.0)
    if sat <= -core_segments.HIGH_Z:
        return f"Unhappy {name[0].lower()}{name[1:]}" if name != "Typical users" else "Unhappy, drifting users"
    if sat >= core_segments.HIGH_Z and name == "Typical users":
        return "Satisfied typical users"
    return name


def get_segments(
    *,
    conn: psycopg.Connection,
    product: str | None = None,
    segment: str | None = None,
    account: str | None = None,
    start: date | None = None,
    end: date | None = None,
    days: int = 56,
    k_range: Sequence[int] = range(2, 9),
    min_history_days: int = 21,
    with_health: bool = True,
) -> SegmentReport:
    """Personas: k-means on standardised per-device features relative to each product's norm, k by the highest
    Calinski–Harabasz index over `k_range` (silhouette reported alongside), each named and described with its
    size and health.

    Devices with fewer than `min_history_days` days in the window, or no use, are not segmented (listed with why).
    """
    window = _window(conn, start=start, end=end, default_days=days)
    if window is None:
        return SegmentReport(_empty_window(), None, "silhouette", {}, (), (), {}, {}, "not enough data: nothing stored")
    scope = _scope(product, segment, account)
    feats, excluded = segment_features(conn, scope=scope, window=window, min_history_days=min_history_days)
    cols = list(SEGMENT_FEATURES)
    k, scores = _choose_k(feats[cols], k_range)
    seg = core_segments.segment_entities(features=feats[["entity_id", *cols]], k_range=[k] if k else k_range)
    if seg.k is None:
        return SegmentReport(window, None, K_METHOD, scores, tuple(seg.features), (), {}, excluded, seg.reason)
    labels = seg.labels.assign(product_id=feats["product_id"].to_numpy())
    health: pd.Series | None = None
    if with_health:
        rep = get_health(
            conn=conn, level="device", product=product, segment=segment, account=account, end=window.end, weeks=1
        )
        health = pd.Series({s.entity_id: s.score for s in rep.latest()}, dtype=object)
    segments = []
    names: dict[int, str] = {}
    for c in seg.clusters:
        z = {k: float(v) for k, v in c.centroid_z.items()}
        names[c.cluster] = _persona_name(z)
    # two clusters with one name get their most distinctive feature appended
    dup = {n for n in names.values() if list(names.values()).count(n) > 1}
    for c in seg.clusters:
        if names[c.cluster] in dup:
            f, v = max(c.centroid_z.items(), key=lambda kv: abs(kv[1]))
            names[c.cluster] = f"{names[c.cluster]} ({'high' if v > 0 else 'low'} {f.replace('_', ' ')})"
    assignments = {str(e): names[int(k)] for e, k in zip(labels["entity_id"], labels["cluster"], strict=True)}
    for c in seg.clusters:
        members = labels[labels["cluster"] == c.cluster]
        profile = {k: float(math.exp(v)) if k != "satisfaction" else float(v) for k, v in c.centroid.items()}
        member_scores = (
            []
            if health is None
            else [float(v) for v in health.reindex(members["entity_id"]).tolist() if _f(v) is not None]
        )
        desc = ", ".join(
            f"{k.replace('_', ' ')} ×{profile[k]:.2f} of the product norm"
            if k != "satisfaction"
            else f"satisfaction {profile[k]:+.2f} SD"
            for k in cols
        )
        segments.append(
            PersonaSegment(
                cluster=int(c.cluster),
                name=names[c.cluster],
                description=desc,
                devices=int(c.size),
                share=float(c.share),
                profile=profile,
                profile_z={k: float(v) for k, v in c.centroid_z.items()},
                mean_health=float(np.mean(member_scores)) if member_scores else None,
                red_share=float(np.mean([v < HealthConfig().red_below for v in member_scores]))
                if member_scores
                else None,
                products={str(k): int(v) for k, v in members["product_id"].value_counts().items()},
            )
        )
    segments.sort(key=lambda s: -s.devices)
    return SegmentReport(window, seg.k, K_METHOD, scores, tuple(cols), tuple(segments), assignments, excluded)


# ---------------------------------------------------------------- churn risk


def list_churn_risk(
    *,
    conn: psycopg.Connection,
    level: Literal["device", "account"] = "device",
    product: str | None = None,
    segment: str | None = None,
    account: str | None = None,
    end: date | None = None,
    window_days: int = 28,
    bucket_days: int = 7,
    rhythm: Literal["own", "product"] = "own",
    disruptions: Literal["unrecovered", "error_days", "none"] = "unrecovered",
    limit: int | None = None,
    include_churned: bool = False,
) -> ChurnRiskList:
    """Devices or accounts ranked by churn risk with reasons (core churn_risk): Theil–Sen slope of core uses in
    `bucket_days` buckets over the last `window_days`, days since the last core use against the rhythm, and recent
    disruptions (error episodes of the last 14 days that did not recover, or days with errors, or none).

    rhythm="own": expected active days per week = the entity's own over the `window_days` before the trend window
    (the product's when that history is shorter than 14 days). Weekly buckets by default: daily series of
    occasional users are mostly zeros and hide a decline. Cancelled/returned devices are left out unless
    `include_churned` (then they rank first, status says why).
    """
    window = _window(conn, start=None, end=end, default_days=window_days)
    if window is None:
        return ChurnRiskList(level, _empty_window(), {}, (), "not enough data: nothing stored yet")
    as_of = window.end
    trend_start = as_of - timedelta(days=window_days - 1)
    base_start = trend_start - timedelta(days=window_days)
    window = Window(start=trend_start, end=as_of, as_of=as_of)
    scope = _scope(product, segment, account)
    devs = Q.devices(conn, scope=scope)
    if devs.empty:
        return ChurnRiskList(level, window, {}, (), "not enough data: no devices in scope")
    ret = _retention(conn, scope=scope, window=window, devs=devs)
    core_use = Q.daily_usage(conn, scope=scope, start=base_start, end=as_of, core_only=True)
    last_core = Q.last_use_before(conn, scope=scope, end=as_of, core_only=True)
    if disruptions == "error_days":
        errs = Q.daily_usage(conn, scope=scope, start=as_of - timedelta(days=13), end=as_of)
        err_days = errs[errs["errors"] > 0].groupby("device_key").size()
    elif disruptions == "unrecovered":
        stream = Q.error_stream(conn, scope=scope, start=as_of - timedelta(days=13), end=as_of)
        eps = core_disruptions.error_episodes(events=stream, as_of=Q.day_start(as_of + timedelta(days=1)))
        bad = eps[eps["status"] != "recovered"].merge(devs[["device_id", "device_key"]], on="device_id")
        err_days = bad.groupby("device_key").size()
    else:
        err_days = pd.Series(np.nan, index=devs["device_key"])

    act = _utc_days(devs["activated_at"])
    base_days = (pd.Timestamp(trend_start) - np.maximum(act, pd.Timestamp(base_start))).dt.days
    base_used = core_use[pd.to_datetime(core_use["day"]) < pd.Timestamp(trend_start)].groupby("device_key").size()
    own = base_used.reindex(devs["device_key"]).fillna(0).to_numpy() / np.clip(base_days.to_numpy(), 1, None) * 7
    rhythm = np.where(
        (base_days.to_numpy() >= 14) & (rhythm == "own"),
        np.clip(own, 0.5, 7.0),
        devs["expected_active_days_per_week"].astype(float),
    )
    d = pd.DataFrame(
        {
            "device_key": devs["device_key"],
            "device_id": devs["device_id"],
            "product_id": devs["product_id"],
            "account_id": devs["account_id"],
            "activated_on": act,
            "rhythm": rhythm,
            "last_core_use_on": pd.to_datetime(
                last_core.set_index("device_key")["last_use_on"].reindex(devs["device_key"])
            ).to_numpy(),
            "recent_disruptions": err_days.reindex(devs["device_key"])
            .fillna(0 if disruptions != "none" else np.nan)
            .to_numpy(dtype=float),
            "status": ret.set_index("device_key")["status"].reindex(devs["device_key"]).to_numpy(),
        }
    )
    usage = core_use.merge(d[["device_key", "device_id", "account_id"]], on="device_key")
    if level == "account":
        d["account_id"] = d["account_id"].fillna("(no account)")
        usage["account_id"] = usage["account_id"].fillna("(no account)")
        ent = (
            d.groupby("account_id")
            .agg(
                activated_on=("activated_on", "min"),
                rhythm=("rhythm", "max"),
                last_core_use_on=("last_core_use_on", "max"),
                recent_disruptions=("recent_disruptions", "sum"),
                status=(
                    "status",
                    lambda s: (
                        "active" if (s == "active").any() else ("inactive" if (s == "inactive").any() else s.iloc[0])
                    ),
                ),
                product_id=("product_id", lambda s: s.iloc[0] if s.nunique() == 1 else None),
            )
            .reset_index()
        )
        ent["entity_id"] = ent["account_id"]
        u = (
            usage.groupby(["account_id", "day"], as_index=False)["uses"]
            .sum()
            .rename(columns={"account_id": "entity_id"})
        )
    else:
        ent = d.rename(columns={"device_id": "entity_id"})
        u = usage[["device_id", "day", "uses"]].rename(columns={"device_id": "entity_id"})
    if not include_churned:
        ent = ent[~ent["status"].isin(Q.CHURN_STAGES)]
    entities = pd.DataFrame(
        {
            "entity_id": ent["entity_id"].to_numpy(),
            "activated_on": ent["activated_on"].to_numpy(),
            "last_core_use_on": ent["last_core_use_on"].to_numpy(),
            "expected_active_days_per_week": ent["rhythm"].to_numpy(dtype=float),
            "recent_disruptions": ent["recent_disruptions"].to_numpy(dtype=float),
        }
    )
    u = u[u["entity_id"].isin(entities["entity_id"])]
    u["day"] = pd.to_datetime(u["day"])
    risk = core_segments.churn_risk(
        usage=u, entities=entities, as_of=as_of, window_days=window_days, bucket_days=bucket_days
    )
    table = risk.table
    info = ent.set_index("entity_id")
    churned = table["entity_id"].map(info["status"]).isin(Q.CHURN_STAGES).to_numpy()
    score = table["risk_score"].to_numpy(dtype=float, na_value=np.nan)
    # a known cancellation/return is certain churn: it outranks every estimate
    order = np.lexsort((table["entity_id"].astype(str).to_numpy(), -np.nan_to_num(score, nan=-1.0), ~churned))
    entries = []
    for rank, i in enumerate(order, start=1):
        r = table.iloc[i]
        eid = str(r["entity_id"])
        status = str(info.at[eid, "status"])
        reasons = str(r["reasons"])
        if status in Q.CHURN_STAGES:
            reasons = f"{status}; " + reasons
        entries.append(
            ChurnRiskEntry(
                rank=rank,
                entity_id=eid,
                product_id=None if pd.isna(info.at[eid, "product_id"]) else str(info.at[eid, "product_id"]),
                account_id=str(info.at[eid, "account_id"])
                if "account_id" in info.columns and not pd.isna(info.at[eid, "account_id"])
                else None,
                status=status,
                risk_score=100.0 if status in Q.CHURN_STAGES else _f(r["risk_score"]),
                slope_risk=_f(r["slope_risk"]),
                recency_risk=_f(r["recency_risk"]),
                disruption_risk=_f(r["disruption_risk"]),
                weekly_change=_f(r["weekly_change"]),
                days_since_last_core_use=_f(r["days_since_last_core_use"]),
                recent_disruptions=_f(r["recent_disruptions"]),
                reasons=reasons,
            )
        )
        if limit is not None and rank >= limit:
            break
    return ChurnRiskList(level, window, dict(risk.weights), tuple(entries), risk.reason)


# ---------------------------------------------------------------- fleet report


def get_fleet_report(
    *,
    conn: psycopg.Connection,
    product: str | None = None,
    segment: str | None = None,
    account: str | None = None,
    end: date | None = None,
    weeks: int = 4,
    config: HealthConfig | None = None,
    max_concerns: int = 6,
) -> FleetReport:
    """A short fleet health summary: fleet and product scores with trend and drags, NPS, and the top concerns
    (low or falling health, failing touchpoints to concentrate on, incidents and spikes, churn risk)."""
    cfg = config or HealthConfig()
    window = _window(conn, start=None, end=end, default_days=7 * weeks)
    if window is None:
        return FleetReport(
            _empty_window(),
            0,
            None,
            None,
            None,
            None,
            (),
            {},
            None,
            (Concern("high", "data", "nothing stored yet"),),
            0,
        )
    kw = {"product": product, "segment": segment, "account": account}
    frame, hwin = health_frames(conn, level="device", end=window.end, weeks=weeks, **kw)
    if frame.empty or hwin is None:
        return FleetReport(
            window, 0, None, None, None, None, (), {}, None, (Concern("high", "data", "no devices in scope"),), 0
        )
    fleet = _health_objects("fleet", _aggregate(frame, "fleet"), cfg)
    products = _health_objects("product", _aggregate(frame, "product"), cfg)
    devices_latest = _health_objects(
        "device", frame.assign(devices=1, segment=frame["product_id"])[frame["period"] == frame["period"].max()], cfg
    )
    bands = [s.band for s in devices_latest if s.band]
    band_shares = {b: bands.count(b) / len(bands) for b in ("green", "amber", "red")} if bands else {}
    fl = fleet[-1] if fleet else None
    voice = get_voice(conn=conn, by=("product",), days=max(28, 7 * weeks), end=window.end, **kw)
    nps_by_product = {g.key["product"]: g.nps for g in voice.groups}
    latest_products = [s for s in products if s.period_start == max(p.period_start for p in products)]
    lines = tuple(
        ProductHealthLine(
            p.entity_id,
            p.devices,
            p.score,
            p.band,
            p.arrow,
            p.delta,
            p.components,
            p.top_negative_drivers,
            nps_by_product.get(p.entity_id),
        )
        for p in sorted(latest_products, key=lambda p: p.score if p.score is not None else -1)
    )

    concerns: list[tuple[int, Concern]] = []
    for p in lines:
        if p.band in ("red", "amber"):
            drags = f", dragged down by {', '.join(p.top_negative_drivers)}" if p.top_negative_drivers else ""
            sev = "high" if p.band == "red" else "medium"
            concerns.append(
                (
                    0 if sev == "high" else 2,
                    Concern(sev, f"health {p.product_id}", f"score {p.score:.0f} ({p.band}){drags}"),
                )
            )
        if p.arrow == "down" and p.delta is not None:
            concerns.append(
                (
                    2,
                    Concern(
                        "medium", f"health {p.product_id}", f"score fell {p.delta:+.1f} points vs the previous week"
                    ),
                )
            )
        if p.top_negative_drivers and p.band == "green":
            d0 = p.top_negative_drivers[0]
            comp = p.components.get(d0)
            concerns.append(
                (
                    4,
                    Concern(
                        "low",
                        f"health {p.product_id}",
                        f"{d0} is its weakest component vs other products ({comp:.0f})"
                        if comp is not None
                        else f"{d0} is its weakest component vs other products",
                    ),
                )
            )
    tp = get_touchpoints(conn=conn, days=max(28, 7 * weeks), end=window.end, **kw)
    ranked = sorted(
        (t for t in tp.touchpoints if t.success_ci_high is not None and t.uses >= 30),
        key=lambda t: t.success_ci_high or 1.0,
    )
    for t in ranked[:3]:
        if t.quadrant == "concentrate here" or (t.success_rate is not None and t.success_rate < 0.9):
            concerns.append(
                (
                    1,
                    Concern(
                        "high" if t.quadrant == "concentrate here" else "medium",
                        f"touchpoint {t.product_id}/{t.touchpoint}",
                        f"success {t.success_rate:.0%} on {t.uses:,} uses, latency ×"
                        f"{(t.latency_vs_target or 0):.1f} of target; IPA: {t.quadrant}",
                    ),
                )
            )
    dis = get_disruptions(conn=conn, days=min(14, 7 * weeks), end=window.end, **kw)
    for inc in sorted(dis.incidents, key=lambda i: -i.devices_affected)[:2]:
        med = f", median recovery {inc.median_recovery_s / 60:.0f} min" if inc.median_recovery_s is not None else ""
        concerns.append(
            (
                3,
                Concern(
                    "medium",
                    f"incident {inc.product_id}/{inc.touchpoint}",
                    f"{inc.code} on {inc.start:%Y-%m-%d %H:%M}, {inc.devices_affected} devices"
                    f" ({(inc.share_of_product or 0):.0%}){med}",
                ),
            )
        )
    risk = list_churn_risk(conn=conn, end=window.end, **kw)
    at_risk = [e for e in risk.entries if e.risk_score is not None and e.risk_score >= 50]
    if at_risk:
        share = len(at_risk) / max(len(risk.entries), 1)
        concerns.append(
            (
                2 if share >= 0.05 else 4,
                Concern(
                    "medium" if share >= 0.05 else "low",
                    "churn risk",
                    f"{len(at_risk)} devices ({share:.0%}) at risk ≥ 50, e.g."
                    f" {at_risk[0].entity_id}: {at_risk[0].reasons}",
                ),
            )
        )
    ordered = tuple(c for _, c in sorted(concerns, key=lambda kv: kv[0]))[:max_concerns]
    return FleetReport(
        window=Window(hwin.start, hwin.end, hwin.as_of),
        devices=len(devices_latest),
        fleet_score=fl.score if fl else None,
        fleet_band=fl.band if fl else None,
        fleet_arrow=fl.arrow if fl else None,
        fleet_delta=fl.delta if fl else None,
        products=lines,
        band_shares=band_shares,
        nps=voice.overall.nps,
        concerns=ordered,
        at_risk_devices=len(at_risk),
    )
