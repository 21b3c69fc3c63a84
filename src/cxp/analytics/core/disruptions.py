"""Disruptions: error episodes and incidents, time to recovery, robust spike detection, effect of recovery speed.

Spike rule: value > trailing median + k · max(1.4826 · MAD, mad_floor, √median for counts) over the previous
`window` periods (the current period excluded), k = 3.5 by default.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from cxp.analytics.core._frames import (
    epoch_seconds,
    epoch_seconds_scalar,
    float_column,
    none_for_missing,
    require_columns,
    to_day,
    to_nullable,
)
from cxp.analytics.core.stats import Difference, Distribution, diff_means_ci, diff_with_variances, distribution
from cxp.analytics.core.voice import csat_from_counts, nps_from_counts
from cxp.analytics.errors import InvalidParameter

MAD_SCALE = 1.4826  # MAD → σ for normal data
EPISODE_KEYS: tuple[str, ...] = ("device_id", "touchpoint", "code")


# ---------------------------------------------------------------- episodes and incidents


def error_episodes(
    *,
    events: pd.DataFrame,
    as_of: datetime | date | str | None = None,
    stale_after_s: float | None = 86400.0,
    unrecovered_after_s: float | None = None,
    confirm_by_use: bool = False,
) -> pd.DataFrame:
    """Per-device error episodes from an error/recovery stream: open at an error, close at the next recovery.

    `events`: device_id, ts, kind ('error'|'recovery'|'success'; other kinds ignored), code [, touchpoint,
    product_id]. A 'success' is a later successful use of the episode's touchpoint (the failure ended without a
    recovery report) and closes an episode like a recovery. Episodes are keyed by (device_id, touchpoint, code);
    repeated errors while open join the episode; a recovery with nothing open is ignored. An episode with no
    event for more than `stale_after_s` (None = never) is closed as "unrecovered": a later error starts a new
    episode and a later recovery is ignored. An episode still without a closing event at `as_of` is
    "unrecovered" when its last error is more than
    `unrecovered_after_s` (default: `stale_after_s`) before `as_of`, else "open". With `confirm_by_use` (the
    stream holds 'success' events) an episode without a touchpoint that no recovery closed is "unconfirmed":
    no later use can show that a device-level fault (a power loss) persisted or ended.
    Returns device_id, product_id, touchpoint, code, start, end (<NA> unless recovered), last_error, errors,
    status ('recovered' | 'open' | 'unrecovered'), recovered, recovered_by ('recovery' | 'use' | None),
    duration_s (recovered only), open_duration_s (open only, censored at `as_of`).
    """
    require_columns(events, ["device_id", "ts", "kind", "code"], what="error_episodes")
    if stale_after_s is not None and stale_after_s <= 0:
        raise InvalidParameter("stale_after_s must be > 0 or None")
    stale = np.inf if stale_after_s is None else float(stale_after_s)
    if unrecovered_after_s is not None and unrecovered_after_s <= 0:
        raise InvalidParameter("unrecovered_after_s must be > 0 or None")
    give_up = stale if unrecovered_after_s is None else float(unrecovered_after_s)
    # Kinds, keys and products as integer codes (each distinct text handled once), every step on arrays in key × time
    # order: grouped pandas operations and a Python object per row of three text columns were most of this.
    kind_codes, kinds = pd.factorize(events["kind"])
    kind_names = np.array([str(k).lower() for k in kinds] + [""], dtype=object)  # "" for a missing kind (code -1)
    kind = kind_names[kind_codes]
    t_all = epoch_seconds(events["ts"])
    keep = np.isin(kind, ["error", "recovery", "success"]) & np.isfinite(t_all)
    t, is_err, by_use = t_all[keep], kind[keep] == "error", kind[keep] == "success"
    # no touchpoint is the empty one, which sorts first
    touchpoints = (events["touchpoint"].astype(object).where(events["touchpoint"].notna(), "")
                   if "touchpoint" in events.columns else pd.Series("", index=events.index, dtype=object))
    codes, key_values = [], {}
    for name, column in (("device_id", events["device_id"]), ("touchpoint", touchpoints), ("code", events["code"])):
        column_codes, uniques = _sorted_codes(column[keep])
        codes.append(column_codes)
        key_values[name] = uniques
    if "product_id" in events.columns:
        product_codes, products = pd.factorize(events["product_id"][keep])  # missing: -1
        products = np.asarray(products, dtype=object)
    else:
        product_codes, products = np.full(int(keep.sum()), -1), np.empty(0, dtype=object)
    # errors sort before recoveries at the same instant, so a simultaneous pair opens and closes an episode
    order = np.lexsort((~is_err, t, *codes[::-1]))
    codes = [c[order] for c in codes]
    t, is_err, by_use, product_codes = t[order], is_err[order], by_use[order], np.asarray(product_codes)[order]
    same_key = np.zeros(len(t), dtype=bool)
    if len(t):
        same_key[1:] = np.logical_and.reduce([c[1:] == c[:-1] for c in codes])
    prev_err = same_key & np.concatenate([[False], is_err[:-1]])
    gap = np.full(len(t), np.inf)
    gap[1:] = np.where(same_key[1:], t[1:] - t[:-1], np.inf)
    ep = np.cumsum(is_err & ~(prev_err & (gap <= stale)))
    # errors so far within the key: rows before a key's first error (recoveries) belong to no episode
    errors_so_far = np.cumsum(is_err)
    errors_so_far = errors_so_far - np.maximum.accumulate(np.where(~same_key, errors_so_far - is_err, 0))
    closes = ~is_err & prev_err & (gap <= stale) & (errors_so_far > 0)
    # per episode (numbered in key × time order): its errors' first and last row and their count
    err_rows = np.flatnonzero(is_err)
    episode_ids, first_of, n_errors = np.unique(ep[err_rows], return_index=True, return_counts=True)
    first_row, last_row = err_rows[first_of], err_rows[first_of + n_errors - 1]
    # the first known product among the episode's errors
    known = np.flatnonzero(product_codes[err_rows] >= 0)
    pos = np.searchsorted(known, first_of)
    candidate = known[np.minimum(pos, len(known) - 1)] if len(known) else np.zeros(len(first_of), dtype=np.int64)
    has_product = (pos < len(known)) & (candidate < first_of + n_errors)
    product = np.full(len(first_of), None, dtype=object)
    product[has_product] = products[product_codes[err_rows[candidate[has_product]]]]
    # its closing event: the first recovery or use right after an error of it (the recovery first at the same instant)
    closing = np.flatnonzero(closes)
    closing = closing[np.lexsort((by_use[closing], t[closing], ep[closing]))]
    closing_ep, first_close = np.unique(ep[closing], return_index=True)
    closing = closing[first_close]
    slot = np.minimum(np.searchsorted(closing_ep, episode_ids), max(len(closing_ep) - 1, 0))
    recovered = closing_ep[slot] == episode_ids if len(closing_ep) else np.zeros(len(episode_ids), dtype=bool)
    start_t, last_t = t[first_row], t[last_row]
    end_t = np.full(len(episode_ids), np.nan)
    end_t[recovered] = t[closing[slot[recovered]]]
    closed_by_use = np.zeros(len(episode_ids), dtype=bool)
    closed_by_use[recovered] = by_use[closing[slot[recovered]]]
    now = epoch_seconds_scalar(as_of) if as_of is not None else np.nan
    gone_stale = np.isfinite(now) & (now - last_t > give_up)
    status = np.where(recovered, "recovered", np.where(gone_stale, "unrecovered", "open")).astype(object)
    key_of = [c[first_row] for c in codes]
    if confirm_by_use:
        status = np.where(~recovered & (key_values["touchpoint"][key_of[1]] == ""), "unconfirmed", status)
    # by start, then device id (its codes are in id order), else in key × time order
    by_start = np.lexsort((key_of[0], start_t))
    out = pd.DataFrame({
        "device_id": none_for_missing(key_values["device_id"][key_of[0]]),
        "product_id": none_for_missing(product),
        "touchpoint": none_for_missing(key_values["touchpoint"][key_of[1]]),
        "code": none_for_missing(key_values["code"][key_of[2]]),
        "start": pd.to_datetime(start_t, unit="s", utc=True),
        "end": pd.to_datetime(end_t, unit="s", utc=True),
        "last_error": pd.to_datetime(last_t, unit="s", utc=True),
        "errors": n_errors.astype(int),
        "status": none_for_missing(status),
        "recovered": recovered,
        "recovered_by": none_for_missing(np.where(recovered, np.where(closed_by_use, "use", "recovery"), None)),
        "duration_s": pd.array(np.where(recovered, end_t - start_t, np.nan), dtype="Float64"),
        "open_duration_s": pd.array(np.where(status == "open", np.clip(now - start_t, 0, None), np.nan),
                                    dtype="Float64"),
    })
    return out.iloc[by_start].reset_index(drop=True)


def _sorted_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of `values` in the sort order of the distinct values, missing last (its own code), and the
    values of the codes (factorized first, then only the distinct values sorted)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    rank, ordered = pd.factorize(uniques, sort=True)
    values_of = np.empty(len(ordered) + 1, dtype=object)
    values_of[: len(ordered)] = np.asarray(ordered, dtype=object)
    values_of[-1] = None
    return np.where(codes >= 0, np.append(rank, 0)[codes], len(ordered)), values_of


def incidents(
    *,
    episodes: pd.DataFrame,
    group_cols: Sequence[str] = ("product_id", "touchpoint", "code"),
    as_of: datetime | date | str | None = None,
    gap_s: float = 0.0,
) -> pd.DataFrame:
    """Merge overlapping device episodes (within `gap_s`) per group into incidents: start, end, devices affected.

    `episodes`: as from error_episodes (group cols, device_id, start, end [, last_error, status, errors]).
    For merging, an unrecovered episode ends at its last error; an open one at `as_of` (else its last error).
    Returns group cols, incident (1, 2, … per group), start, end, open, devices_affected, episodes, errors.
    """
    require_columns(episodes, [*group_cols, "device_id", "start", "end"], what="incidents")
    st = epoch_seconds(episodes["start"])
    en = epoch_seconds(episodes["end"])
    last = epoch_seconds(episodes["last_error"]) if "last_error" in episodes.columns else st
    status = (
        episodes["status"].astype(object).to_numpy()
        if "status" in episodes.columns
        else np.where(np.isfinite(en), "recovered", "open")
    )
    is_open = status == "open"
    now = epoch_seconds_scalar(as_of) if as_of is not None else np.nan
    en = np.where(np.isfinite(en), en, np.where(is_open & np.isfinite(now), np.fmax(now, last), last))
    df = episodes[list(group_cols)].astype(object).where(episodes[list(group_cols)].notna(), "").copy()
    df["device_id"], df["s"], df["e"], df["open"] = episodes["device_id"].to_numpy(), st, en, is_open
    df["errors"] = float_column(episodes, "errors") if "errors" in episodes.columns else 1.0
    df = df[np.isfinite(df["s"].to_numpy())].sort_values([*group_cols, "s"], kind="stable")
    keys = [df[c] for c in group_cols]
    run_end = df.groupby(keys, sort=False)["e"].cummax()
    prev_end = run_end.groupby(keys).shift(1)
    new = (prev_end.isna() | (df["s"] > prev_end + gap_s)).to_numpy()
    df["incident"] = pd.Series(new.astype(int), index=df.index).groupby(keys).cumsum()
    agg = (
        df.groupby([*group_cols, "incident"], sort=True)
        .agg(
            s=("s", "min"),
            e=("e", "max"),
            open=("open", "any"),
            devices_affected=("device_id", "nunique"),
            episodes=("s", "size"),
            errors=("errors", "sum"),
        )
        .reset_index()
    )
    out = agg[[*group_cols, "incident"]].copy()
    out["start"] = pd.to_datetime(agg["s"].to_numpy(dtype=float), unit="s", utc=True)
    out["end"] = pd.to_datetime(agg["e"].to_numpy(dtype=float), unit="s", utc=True)
    out["open"] = agg["open"].astype(bool)
    out["devices_affected"] = agg["devices_affected"].astype(int)
    out["episodes"] = agg["episodes"].astype(int)
    out["errors"] = agg["errors"].astype(float)
    return to_nullable(out)


@dataclass(frozen=True)
class RecoveryStats:
    """Time to recovery over recovered episodes (seconds); the others are counted, not timed: `n_not_recovered`
    = open + never recovered (`n_never_recovered`), `n_unconfirmed` = device-level faults nothing closed."""

    n_episodes: int
    n_recovered: int
    n_not_recovered: int
    seconds: Distribution
    n_never_recovered: int = 0
    n_unconfirmed: int = 0


def time_to_recovery(*, episodes: pd.DataFrame) -> RecoveryStats:
    """Median, p90 and n of episode duration (recovered episodes), with the counts not recovered by status."""
    require_columns(episodes, ["duration_s"], what="time_to_recovery")
    dur = float_column(episodes, "duration_s")
    ok = np.isfinite(dur)
    status = (
        episodes["status"].astype(object).to_numpy()
        if "status" in episodes.columns
        else np.full(len(episodes), None, dtype=object)
    )
    unconfirmed = status == "unconfirmed"
    return RecoveryStats(
        len(episodes),
        int(ok.sum()),
        int((~ok & ~unconfirmed).sum()),
        distribution(values=dur[ok]),
        int((status == "unrecovered").sum()),
        int(unconfirmed.sum()),
    )


# ---------------------------------------------------------------- spikes


def detect_spikes(
    *,
    series: pd.DataFrame,
    group_cols: Sequence[str] = ("product_id",),
    window: int = 28,
    k: float = 3.5,
    min_history: int = 7,
    mad_floor: float = 1.0,
    poisson_floor: bool = True,
    fill_value: float | None = 0.0,
    freq: str = "D",
) -> pd.DataFrame:
    """Flag periods whose value exceeds trailing median + k · spread over the previous `window` periods.

    spread = max(1.4826 · MAD, mad_floor, √median if poisson_floor): the Poisson floor keeps small-sample MADs
    of count series from flagging ordinary noise; set poisson_floor=False for rates/ratios.

    `series`: group cols, day, value (e.g. error count or errors per 1000 uses). Each group is reindexed to
    a regular `freq` calendar, gaps filled with `fill_value` (0 for counts; None keeps them missing). A period
    with fewer than `min_history` finite values in its trailing window gets spike <NA> and a reason.
    Returns group cols, day, value, baseline, mad, threshold, history, spike, excess, reason.
    """
    require_columns(series, [*group_cols, "day", "value"], what="detect_spikes")
    if window < 2 or min_history < 2 or k <= 0 or mad_floor < 0:
        raise InvalidParameter("need window ≥ 2, min_history ≥ 2, k > 0, mad_floor ≥ 0")
    cols = [*group_cols, "day", "value", "baseline", "mad", "history"]
    s = series[list(group_cols)].copy()
    s["day"], s["value"] = to_day(series["day"]).to_numpy(), float_column(series, "value")
    s = s.dropna(subset=["day"]).groupby([*group_cols, "day"], sort=True, dropna=False)["value"].sum(min_count=1)
    if s.empty:
        out = pd.DataFrame(columns=cols)
    else:
        out = _trailing_stats(s.reset_index(), group_cols=list(group_cols), window=window, freq=freq, fill=fill_value)
    spread = np.maximum(MAD_SCALE * out["mad"].to_numpy(dtype=float), mad_floor)
    if poisson_floor:
        spread = np.fmax(spread, np.sqrt(np.clip(out["baseline"].to_numpy(dtype=float), 0, None)))
    out["threshold"] = out["baseline"].to_numpy(dtype=float) + k * spread
    enough = (out["history"].to_numpy() >= min_history) & np.isfinite(out["value"].to_numpy(dtype=float))
    spike = out["value"].to_numpy(dtype=float) > out["threshold"].to_numpy(dtype=float)
    out["spike"] = pd.array(np.where(enough, spike, None), dtype="boolean")
    out["excess"] = np.where(enough, out["value"].to_numpy(dtype=float) - out["baseline"].to_numpy(dtype=float), np.nan)
    out["reason"] = np.where(enough, None, f"not enough data: fewer than {min_history} periods of history or no value")
    out["history"] = out["history"].astype(int)
    return to_nullable(out)


def _trailing_stats(
    frame: pd.DataFrame, *, group_cols: list[str], window: int, freq: str, fill: float | None
) -> pd.DataFrame:
    """Every group on one regular calendar at once (a groups × periods matrix, each group's own first..last period
    kept): trailing median, MAD and history count over the previous `window` periods, as whole-array statistics."""
    if group_cols:
        gid, keys = pd.factorize(pd.MultiIndex.from_frame(frame[group_cols]), sort=True)
    else:
        gid, keys = np.zeros(len(frame), dtype=int), pd.Index([0])
    days = pd.DatetimeIndex(frame["day"])
    origin = days.min()
    step = pd.tseries.frequencies.to_offset(freq)
    calendar = pd.date_range(origin, days.max(), freq=step)
    col = calendar.get_indexer(days)
    if (col < 0).any():
        raise InvalidParameter(f"days do not fall on the {freq!r} calendar")
    groups, periods = len(keys), len(calendar)
    first = np.full(groups, periods)
    last = np.full(groups, -1)
    np.minimum.at(first, gid, col)
    np.maximum.at(last, gid, col)
    inside = (np.arange(periods)[None, :] >= first[:, None]) & (np.arange(periods)[None, :] <= last[:, None])
    x = np.full((groups, periods), np.nan)
    x[gid, col] = frame["value"].to_numpy(dtype=float)
    if fill is not None:
        x[inside & np.isnan(x)] = fill
    # the `window` values before each period: pad with NaN on the left, drop the period itself
    padded = np.concatenate([np.full((groups, window), np.nan), x[:, :-1]], axis=1)
    win = sliding_window_view(padded, window, axis=1)[:, :periods]  # groups × periods × window
    hist = np.isfinite(win).sum(axis=2)
    base = np.full((groups, periods), np.nan)
    mad = np.full((groups, periods), np.nan)
    okr = hist >= 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows are excluded by okr
        rows = win[okr]
        base[okr] = np.nanmedian(rows, axis=1)
        mad[okr] = np.nanmedian(np.abs(rows - base[okr][:, None]), axis=1)
    g_idx, p_idx = np.nonzero(inside)
    out = pd.DataFrame(
        {
            "day": calendar[p_idx],
            "value": x[g_idx, p_idx],
            "baseline": base[g_idx, p_idx],
            "mad": mad[g_idx, p_idx],
            "history": hist[g_idx, p_idx],
        }
    )
    if group_cols:
        key_frame = keys.to_frame(index=False).iloc[g_idx].reset_index(drop=True)
        key_frame.columns = group_cols
        out = pd.concat([key_frame, out], axis=1)
    return out


# ---------------------------------------------------------------- effect of disruption and recovery


@dataclass(frozen=True)
class DisruptionEffects:
    """Later usage and satisfaction by group (none / fast recovery / slow recovery) and the paradox verdict."""

    fast_recovery_s: float | None
    usage_metric: str
    groups: pd.DataFrame
    comparisons: pd.DataFrame
    paradox: str
    reason: str | None = None


def _group_stats(name: str, sub: pd.DataFrame, usage: np.ndarray) -> dict[str, object]:
    nps_v = float_column(sub, "nps_after")
    nps_v = nps_v[np.isfinite(nps_v)]
    csat_v = float_column(sub, "csat_after")
    csat_v = csat_v[np.isfinite(csat_v)]
    npr = nps_from_counts(n=int(nps_v.size), promoters=int((nps_v >= 9).sum()), detractors=int((nps_v <= 6).sum()))
    cr = csat_from_counts(n=int(csat_v.size), top2=int((csat_v >= 4).sum()))
    u = usage[np.isfinite(usage)]
    return {
        "group": name,
        "devices": len(sub),
        "usage_n": int(u.size),
        "usage_mean": float(u.mean()) if u.size else np.nan,
        "nps_n": npr.n,
        "nps": npr.nps if npr.nps is not None else np.nan,
        "nps_margin": npr.margin if npr.margin is not None else np.nan,
        "csat_n": cr.n,
        "csat": cr.csat if cr.csat is not None else np.nan,
        "csat_margin": cr.margin if cr.margin is not None else np.nan,
        "_nps": npr,
        "_csat": cr,
        "_usage": u,
    }


def _diff_row(metric: str, a: dict[str, object], b: dict[str, object], min_n: int) -> dict[str, object]:
    if metric == "usage":
        d: Difference = diff_means_ci(a=a["_usage"], b=b["_usage"], min_n=min_n)  # type: ignore[arg-type]
    elif metric == "nps":
        ra, rb = a["_nps"], b["_nps"]
        d = diff_with_variances(
            est_a=ra.nps if ra.n >= min_n else None,
            var_a=ra.variance,
            n_a=ra.n,  # type: ignore[attr-defined]
            est_b=rb.nps if rb.n >= min_n else None,
            var_b=rb.variance,
            n_b=rb.n,
        )  # type: ignore[attr-defined]
    else:
        ra, rb = a["_csat"], b["_csat"]

        def var(r: object) -> float | None:
            c = r.csat  # type: ignore[attr-defined]
            return None if c is None else c * (100.0 - c) / r.n  # type: ignore[attr-defined]

        d = diff_with_variances(
            est_a=ra.csat if ra.n >= min_n else None,
            var_a=var(ra),
            n_a=ra.n,  # type: ignore[attr-defined]
            est_b=rb.csat if rb.n >= min_n else None,
            var_b=var(rb),
            n_b=rb.n,
        )  # type: ignore[attr-defined]
    return {
        "metric": metric,
        "a": a["group"],
        "b": b["group"],
        "difference": d.estimate,
        "ci_low": d.low,
        "ci_high": d.high,
        "n_a": d.n_a,
        "n_b": d.n_b,
        "reason": d.reason,
    }


def disruption_effects(
    *, devices: pd.DataFrame, fast_recovery_s: float | None = None, min_n: int = 10
) -> DisruptionEffects:
    """Compare fast-recovery vs slow-recovery vs undisrupted devices on later usage, NPS and CSAT (95% CIs).

    `devices`, one row per device: device_id, disrupted (bool), recovery_s (time to recovery of its
    disruption; <NA> = not recovered → slow), usage_after (e.g. uses per day in the N days after the
    disruption or a matched reference date) [, usage_before (same measure before: the usage metric is then
    the change after − before)], nps_after (0–10) [, csat_after (1–5)]: the device's later answer.
    fast = recovered within `fast_recovery_s` (default: the median recovery time of disrupted devices).
    Paradox verdict (satisfaction only): "supported" when fast-recovery NPS or CSAT exceeds the no-disruption
    level with a 95% CI above 0, "contradicted" when below with a CI below 0, else "not shown" / "not enough data".
    """
    require_columns(devices, ["device_id", "disrupted", "usage_after"], what="disruption_effects")
    disrupted = devices["disrupted"].fillna(False).astype(bool).to_numpy()
    rec = float_column(devices, "recovery_s")
    thr = fast_recovery_s
    if thr is None:
        r = rec[disrupted & np.isfinite(rec)]
        thr = float(np.median(r)) if r.size else None
    fast = disrupted & np.isfinite(rec) & (rec <= thr) if thr is not None else np.zeros(len(devices), dtype=bool)
    slow = disrupted & ~fast
    after = float_column(devices, "usage_after")
    if "usage_before" in devices.columns:
        usage, metric = after - float_column(devices, "usage_before"), "usage_after − usage_before"
    else:
        usage, metric = after, "usage_after"
    groups = {
        name: _group_stats(name, devices[mask], usage[mask])
        for name, mask in (("none", ~disrupted), ("fast", fast), ("slow", slow))
    }
    table = pd.DataFrame([{k: v for k, v in g.items() if not k.startswith("_")} for g in groups.values()])
    comps = [
        _diff_row(m, groups[a], groups[b], min_n)
        for m in ("usage", "nps", "csat")
        for a, b in (("fast", "none"), ("slow", "none"), ("fast", "slow"))
    ]
    comparisons = pd.DataFrame(comps)
    sat = comparisons[
        (comparisons["metric"].isin(["nps", "csat"])) & (comparisons["a"] == "fast") & (comparisons["b"] == "none")
    ]
    lows, highs = (
        sat["ci_low"].to_numpy(dtype=float, na_value=np.nan),
        sat["ci_high"].to_numpy(dtype=float, na_value=np.nan),
    )
    if not np.isfinite(lows).any():
        paradox = "not enough data"
    elif np.any(lows > 0):
        paradox = "supported"
    elif np.any(highs < 0):
        paradox = "contradicted"
    else:
        paradox = "not shown"
    reason = (
        None if disrupted.any() and (~disrupted).any() else "not enough data: need disrupted and undisrupted devices"
    )
    return DisruptionEffects(thr, metric, to_nullable(table), to_nullable(comparisons), paradox, reason)
