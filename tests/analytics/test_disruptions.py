"""Error episodes and incidents, time to recovery, spike detection, effect of recovery speed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxp.analytics.core import disruptions as dis
from tests.analytics.helpers import assert_no_nan

T0 = pd.Timestamp("2026-03-01", tz="UTC")


def h(hours: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(hours=hours)


def _stream() -> pd.DataFrame:
    rows = [
        ("d1", "brew", "E1", "recovery", h(0)),  # orphan recovery: ignored
        ("d1", "brew", "E1", "error", h(1)),
        ("d1", "brew", "E1", "error", h(1.5)),  # joins the open episode
        ("d1", "brew", "E1", "recovery", h(2)),
        ("d1", "brew", "E1", "recovery", h(2.5)),  # nothing open: ignored
        ("d2", "brew", "E1", "error", h(1.25)),
        ("d2", "brew", "E1", "usage", h(1.3)),  # other kinds ignored
        ("d2", "brew", "E1", "recovery", h(3)),
        ("d1", "brew", "E1", "error", h(10)),  # never recovered
        ("d3", None, "E9", "error", h(0)),
        ("d3", None, "E9", "error", h(50)),  # > 24 h later: the first is stale, a new episode starts
        ("d3", None, "E9", "recovery", h(50.5)),
    ]
    df = pd.DataFrame(rows, columns=["device_id", "touchpoint", "code", "kind", "ts"])
    return df.assign(product_id="brewer").sample(frac=1.0, random_state=3)  # order must not matter


def test_error_episodes_from_stream() -> None:
    ep = dis.error_episodes(events=_stream(), as_of=h(60))
    assert len(ep) == 5
    d1 = ep[(ep["device_id"] == "d1")].sort_values("start").reset_index(drop=True)
    assert d1.loc[0, "start"] == h(1) and d1.loc[0, "end"] == h(2) and d1.loc[0, "errors"] == 2
    assert d1.loc[0, "duration_s"] == 3600 and d1.loc[0, "status"] == "recovered"
    assert d1.loc[1, "status"] == "unrecovered" and pd.isna(d1.loc[1, "duration_s"])
    d3 = ep[ep["device_id"] == "d3"].sort_values("start")
    assert list(d3["status"]) == ["unrecovered", "recovered"] and d3["duration_s"].iloc[1] == 1800
    assert_no_nan(ep.drop(columns=["start", "end", "last_error"]))


def test_open_episode_is_censored_at_as_of() -> None:
    ep = dis.error_episodes(events=_stream(), as_of=h(12))
    last = ep[(ep["device_id"] == "d1") & (ep["start"] == h(10))].iloc[0]
    assert last["status"] == "open" and last["open_duration_s"] == 2 * 3600


def test_incidents_merge_overlapping_devices() -> None:
    ep = dis.error_episodes(events=_stream(), as_of=h(60))
    inc = dis.incidents(episodes=ep, as_of=h(60))
    brew = inc[inc["touchpoint"] == "brew"].sort_values("start").reset_index(drop=True)
    assert brew.loc[0, "start"] == h(1) and brew.loc[0, "end"] == h(3)
    assert brew.loc[0, "devices_affected"] == 2 and brew.loc[0, "episodes"] == 2
    assert brew.loc[1, "devices_affected"] == 1
    assert len(inc[inc["code"] == "E9"]) == 2


def test_time_to_recovery() -> None:
    ep = dis.error_episodes(events=_stream(), as_of=h(60))
    r = dis.time_to_recovery(episodes=ep)
    assert (r.n_episodes, r.n_recovered, r.n_not_recovered) == (5, 3, 2)
    assert r.seconds.median == 3600 and r.seconds.p90 == pytest.approx(3600 + 0.8 * 2700)
    empty = dis.time_to_recovery(episodes=dis.error_episodes(events=_stream().iloc[:0]))
    assert empty.n_episodes == 0 and empty.seconds.median is None and empty.seconds.reason
    assert_no_nan(empty)


def test_spike_detection_finds_the_one_spike() -> None:
    rng = np.random.default_rng(7)
    days = pd.date_range("2026-01-01", periods=90)
    values = rng.poisson(20, 90).astype(float)
    values[70] = 75
    s = pd.DataFrame({"product_id": "brewer", "day": days, "value": values})
    r = dis.detect_spikes(series=s, window=28, k=3.5)
    flagged = r[r["spike"].fillna(False).astype(bool)]
    assert list(flagged["day"]) == [days[70]]
    assert r["spike"].isna().sum() == 7  # the first 7 days lack history
    b = r.loc[70, "baseline"]
    assert r.loc[70, "threshold"] == pytest.approx(b + 3.5 * max(1.4826 * r.loc[70, "mad"], 1.0, np.sqrt(b)))
    # without the Poisson floor a small-sample MAD flags ordinary Poisson noise too (day 27 here)
    raw = dis.detect_spikes(series=s, window=28, k=3.5, poisson_floor=False)
    assert raw["spike"].fillna(False).astype(bool).sum() > 1
    assert_no_nan(r.drop(columns=["day"]))


def test_spike_detection_gaps_groups_and_constant_series() -> None:
    days = pd.date_range("2026-01-01", periods=20)
    s = pd.concat(
        [
            pd.DataFrame({"product_id": "a", "day": days, "value": 5.0}),
            pd.DataFrame({"product_id": "b", "day": days[[0, 19]], "value": [1.0, 9.0]}),
        ]
    )
    r = dis.detect_spikes(series=s, min_history=5, poisson_floor=False)
    assert not r[r["product_id"] == "a"]["spike"].fillna(False).any()  # constant: MAD 0, floor keeps it quiet
    b = r[r["product_id"] == "b"].reset_index(drop=True)
    assert len(b) == 20 and b.loc[10, "value"] == 0  # gap filled with 0
    assert bool(b.loc[19, "spike"])
    assert len(dis.detect_spikes(series=s.iloc[:0])) == 0


def test_disruption_effects_reports_what_the_data_shows() -> None:
    rng = np.random.default_rng(11)
    n = 900
    group = np.repeat(["none", "fast", "slow"], n // 3)
    disrupted = group != "none"
    rec = np.where(
        group == "fast", rng.uniform(60, 600, n), np.where(group == "slow", rng.uniform(7200, 20000, n), np.nan)
    )
    usage = np.where(group == "slow", 3.0, 5.0) + rng.normal(0, 0.5, n)
    # satisfaction: fast recovery scores higher than no disruption (a planted paradox)
    nps = np.where(
        group == "fast",
        rng.choice([9, 10], n),
        np.where(group == "none", rng.choice([6, 7, 8, 9], n), rng.choice([0, 3, 6], n)),
    )
    d = pd.DataFrame(
        {"device_id": range(n), "disrupted": disrupted, "recovery_s": rec, "usage_after": usage, "nps_after": nps}
    )
    r = dis.disruption_effects(devices=d, fast_recovery_s=3600)
    c = r.comparisons.set_index(["metric", "a", "b"])
    assert c.loc[("usage", "slow", "none"), "ci_high"] < 0
    assert c.loc[("usage", "fast", "none"), "ci_low"] < 0 < c.loc[("usage", "fast", "none"), "ci_high"]
    assert c.loc[("nps", "fast", "none"), "ci_low"] > 0
    assert r.paradox == "supported"
    assert pd.isna(c.loc[("csat", "fast", "none"), "difference"])  # no CSAT answers: not enough data
    assert list(r.groups["devices"]) == [300, 300, 300]
    assert_no_nan(r.comparisons)
    # no planted paradox: fast recovery equals no disruption
    d2 = d.assign(nps_after=rng.choice([6, 7, 8, 9], n))
    assert dis.disruption_effects(devices=d2, fast_recovery_s=3600).paradox == "not shown"


def test_disruption_effects_small_and_default_threshold() -> None:
    d = pd.DataFrame(
        {
            "device_id": [1, 2, 3],
            "disrupted": [True, True, False],
            "recovery_s": [10, 100, None],
            "usage_before": [4, 4, 4],
            "usage_after": [5, 3, 4],
            "nps_after": [10, None, 9],
        }
    )
    r = dis.disruption_effects(devices=d)
    assert r.fast_recovery_s == 55 and r.usage_metric.startswith("usage_after − usage_before")
    assert r.paradox == "not enough data" and r.comparisons["difference"].isna().all()
    assert_no_nan(r.groups)


def _plain_episodes(events: pd.DataFrame, *, as_of: pd.Timestamp, stale: float, give_up: float,
                    confirm_by_use: bool) -> list[dict]:
    """Episodes one event at a time, per key in time order (errors first at the same instant): the specification."""
    now = as_of.timestamp()
    rows = []
    for i, r in enumerate(events.itertuples(index=False)):
        kind = str(r.kind).lower()
        if kind in ("error", "recovery", "success") and not pd.isna(r.ts):
            touchpoint, code, product = ("" if pd.isna(r.touchpoint) else r.touchpoint,
                                         None if pd.isna(r.code) else r.code,
                                         None if pd.isna(r.product_id) else r.product_id)
            rows.append((r.device_id, touchpoint, code, product, r.ts.timestamp(), kind, i))
    rows.sort(key=lambda r: (r[0], r[1], r[2] is None, r[2] or "", r[4], r[5] != "error", r[6]))
    episodes: list[dict] = []
    previous: dict[tuple, tuple[float, bool]] = {}
    current: dict[tuple, dict] = {}
    for device, touchpoint, code, product, t, kind, _ in rows:
        key, is_error = (device, touchpoint, code), kind == "error"
        prev_t, prev_error = previous.get(key, (None, False))
        near = prev_t is not None and t - prev_t <= stale
        if is_error:
            if prev_error and near:
                episode = current[key]
                episode.update(last=t, errors=episode["errors"] + 1)
            else:
                episode = {"device_id": device, "product_id": None, "touchpoint": touchpoint, "code": code,
                           "start": t, "last": t, "errors": 1, "end": None, "by_use": None}
                episodes.append(episode)
                current[key] = episode
            if episode["product_id"] is None and product is not None:
                episode["product_id"] = product
        elif prev_error and near:
            current[key].update(end=t, by_use=kind == "success")
        previous[key] = (t, is_error)
    for e in episodes:
        recovered = e["end"] is not None
        status = "recovered" if recovered else "unrecovered" if now - e["last"] > give_up else "open"
        if confirm_by_use and not recovered and e["touchpoint"] == "":
            status = "unconfirmed"
        e.update(status=status, recovered_by=("use" if e["by_use"] else "recovery") if recovered else None,
                 duration_s=e["end"] - e["start"] if recovered else None,
                 open_duration_s=max(now - e["start"], 0.0) if status == "open" else None)
    return sorted(episodes, key=lambda e: (e["start"], e["device_id"]))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
@pytest.mark.parametrize("confirm_by_use", [False, True])
def test_episodes_equal_the_plain_event_by_event_walk(seed: int, confirm_by_use: bool) -> None:
    """Ties at one instant, missing codes, touchpoints, products and times, recoveries before any error, stale gaps,
    kinds in capitals and kinds that are not errors: the episodes equal a walk over the events one at a time."""
    rng = np.random.default_rng(seed)
    n = 600
    base = pd.Timestamp("2025-03-01", tz="UTC")
    ts = base + pd.to_timedelta(rng.integers(0, 48 * 60, n) * 5, unit="min")
    events = pd.DataFrame({
        "device_id": rng.choice(["d2", "d10", "d1"], n),
        "product_id": rng.choice(np.array(["p", "q", None], dtype=object), n, p=[0.6, 0.2, 0.2]),
        "ts": pd.Series(ts).where(rng.random(n) > 0.02),
        "kind": rng.choice(["error", "recovery", "success", "usage", "ERROR"], n, p=[0.4, 0.2, 0.2, 0.1, 0.1]),
        "code": rng.choice(np.array(["E2", "E1", None], dtype=object), n),
        "touchpoint": rng.choice(np.array(["b", "a", None], dtype=object), n),
    })
    as_of = base + pd.Timedelta(days=10)
    got = dis.error_episodes(events=events, as_of=as_of, stale_after_s=6 * 3600.0, unrecovered_after_s=8 * 3600.0,
                         confirm_by_use=confirm_by_use)
    expected = _plain_episodes(events, as_of=as_of, stale=6 * 3600.0, give_up=8 * 3600.0,
                               confirm_by_use=confirm_by_use)
    assert len(got) == len(expected) > 50
    assert {"recovered", "open", "unrecovered"} <= set(got["status"])
    for row, e in zip(got.to_dict("records"), expected, strict=True):
        for name in ("device_id", "product_id", "touchpoint", "code", "errors", "status", "recovered_by"):
            assert row[name] == e[name] or (row[name] is None and e[name] is None), (name, row, e)
        assert row["start"].timestamp() == e["start"] and row["last_error"].timestamp() == e["last"]
        assert (pd.isna(row["end"]) and e["end"] is None) or row["end"].timestamp() == e["end"]
        for name in ("duration_s", "open_duration_s"):
            assert (pd.isna(row[name]) and e[name] is None) or row[name] == pytest.approx(e[name]), (name, row, e)
