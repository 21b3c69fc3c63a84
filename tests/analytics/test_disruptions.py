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
