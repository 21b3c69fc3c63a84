"""Incident runs against a pooled baseline rate, and episodes ended by a later successful use (pure core)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxp.analytics.core.disruptions import error_episodes
from cxp.analytics.core.incidents import closing_successes, incident_runs
from cxp.analytics.errors import InvalidParameter

T0 = pd.Timestamp("2025-03-03", tz="UTC")


def _fleet_hours(days: int, *, rng: np.random.Generator, users: int = 20, p: float = 0.01) -> tuple[pd.DataFrame, ...]:
    """Hourly users of one touchpoint and the devices with error code X drawn at rate p."""
    buckets = pd.date_range(T0, periods=24 * days, freq="h")
    n = rng.poisson(users, size=len(buckets))
    k = rng.binomial(n, p)
    exposure = pd.DataFrame({"product_id": "p", "touchpoint": "t", "bucket": buckets, "users": n})
    errors = pd.DataFrame({"product_id": "p", "touchpoint": "t", "code": "X", "bucket": buckets, "devices": k})
    return errors[errors["devices"] > 0], exposure


def _plant(errors: pd.DataFrame, exposure: pd.DataFrame, *, start_h: int, hours: int, rate: float, rng) -> pd.DataFrame:
    """Errors of an incident at `rate` of the users in hours [start_h, start_h + hours)."""
    rows = []
    for h in range(start_h, start_h + hours):
        n = int(exposure["users"].iloc[h])
        rows.append(
            {
                "product_id": "p",
                "touchpoint": "t",
                "code": "X",
                "bucket": T0 + pd.Timedelta(hours=h),
                "devices": int(rng.binomial(n, rate)),
            }
        )
    planted = pd.DataFrame(rows)
    out = pd.concat([errors, planted]).groupby(["product_id", "touchpoint", "code", "bucket"], as_index=False)
    return out["devices"].max()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_incident_in_the_first_hours_is_found_without_history(seed: int) -> None:
    rng = np.random.default_rng(seed)
    errors, exposure = _fleet_hours(21, rng=rng)
    errors = _plant(errors, exposure, start_h=3, hours=4, rate=0.5, rng=rng)
    runs = incident_runs(errors=errors, exposure=exposure)
    assert len(runs) == 1, runs
    run = runs.iloc[0]
    # a chance error in the hour next to it may join the run: its edges are right within an hour
    assert abs(run["start"] - (T0 + pd.Timedelta(hours=3))) <= pd.Timedelta(hours=1)
    assert abs(run["end"] - (T0 + pd.Timedelta(hours=7))) <= pd.Timedelta(hours=1)
    assert run["p0"] < 0.03 and run["p_value"] < 1e-5 and run["k"] >= 20


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_everyday_errors_even_many_are_no_incident(seed: int) -> None:
    rng = np.random.default_rng(seed)
    errors, exposure = _fleet_hours(56, rng=rng, p=0.25)  # a touchpoint failing a quarter of the time
    assert incident_runs(errors=errors, exposure=exposure).empty


def test_a_sparse_long_incident_adds_up_across_quiet_hours() -> None:
    # one or two failing devices an hour out of a few users, with a quiet and an unused hour in between
    hours = [(8, 7, 1), (9, 3, 2), (10, 0, 0), (11, 2, 0), (12, 3, 1), (14, 2, 1), (15, 1, 1)]
    base_rng = np.random.default_rng(9)
    errors, exposure = _fleet_hours(14, rng=base_rng, users=5, p=0.008)
    day = 7 * 24
    for h, n, k in hours:
        exposure.loc[day + h, "users"] = n
        errors = errors[errors["bucket"] != T0 + pd.Timedelta(hours=day + h)]
        if k:
            errors = pd.concat(
                [
                    errors,
                    pd.DataFrame(
                        [
                            {
                                "product_id": "p",
                                "touchpoint": "t",
                                "code": "X",
                                "bucket": T0 + pd.Timedelta(hours=day + h),
                                "devices": k,
                            }
                        ]
                    ),
                ]
            )
    runs = incident_runs(errors=errors, exposure=exposure)
    assert len(runs) == 1
    assert abs(runs.iloc[0]["start"] - (T0 + pd.Timedelta(hours=day + 8))) <= pd.Timedelta(hours=1)
    assert abs(runs.iloc[0]["end"] - (T0 + pd.Timedelta(hours=day + 16))) <= pd.Timedelta(hours=1)
    assert runs.iloc[0]["k"] >= 6
    # without bridging the quiet hour the run falls apart into pieces that hold fewer of its errors
    pieces = incident_runs(errors=errors, exposure=exposure, gap_hours=0)
    assert pieces.empty or pieces["k"].max() < runs.iloc[0]["k"]


def test_incident_runs_refuses_bad_parameters() -> None:
    errors, exposure = _fleet_hours(1, rng=np.random.default_rng(0))
    with pytest.raises(InvalidParameter):
        incident_runs(errors=errors, exposure=exposure, alpha=0)
    with pytest.raises(InvalidParameter):
        incident_runs(errors=errors, exposure=exposure, gap_hours=-1)


def test_a_later_successful_use_ends_a_failure_that_no_recovery_reported() -> None:
    ts = pd.to_datetime(["2025-03-03 10:05", "2025-03-03 10:40", "2025-03-04 09:00"], utc=True)
    errors = pd.DataFrame(
        {
            "device_key": [1, 1, 2],
            "ts": ts,
            "touchpoint": ["brew", "brew", "lock"],
            "code": ["A", "B", "C"],
        }
    )
    # device 1 brewed fine at 10:20 (after A, before B) and at 12:30; device 2 never used its lock again
    successes = pd.DataFrame(
        {
            "device_key": [1, 1],
            "touchpoint": ["brew", "brew"],
            "ts": pd.to_datetime(["2025-03-03 10:20", "2025-03-03 12:30"], utc=True),
        }
    )
    closing = closing_successes(errors=errors, successes=successes).set_index("code")["ts"]
    assert closing["A"] == pd.Timestamp("2025-03-03 10:20", tz="UTC")
    assert closing["B"] == pd.Timestamp("2025-03-03 12:30", tz="UTC") and "C" not in closing.index
    stream = pd.concat(
        [
            pd.DataFrame(
                {
                    "device_id": ["d1", "d1", "d2"],
                    "ts": ts,
                    "kind": "error",
                    "code": ["A", "B", "C"],
                    "touchpoint": ["brew", "brew", "lock"],
                }
            ),
            closing.reset_index().assign(device_id="d1", kind="success", touchpoint="brew"),
        ]
    )
    episodes = error_episodes(
        events=stream, as_of="2025-03-10", stale_after_s=None, unrecovered_after_s=86400, confirm_by_use=True
    ).set_index("code")
    assert episodes.loc["A", "recovered_by"] == "use" and episodes.loc["A", "duration_s"] == 15 * 60
    assert episodes.loc["C", "status"] == "unrecovered" and episodes.loc["C", "recovered_by"] is None


def test_a_device_level_fault_nothing_closed_is_unconfirmed_not_never_recovered() -> None:
    stream = pd.DataFrame(
        {"device_id": ["d"], "ts": [T0], "kind": ["error"], "code": ["POWER_LOSS"], "touchpoint": [None]}
    )
    episodes = error_episodes(
        events=stream,
        as_of=T0 + pd.Timedelta(days=3),
        stale_after_s=None,
        unrecovered_after_s=86400,
        confirm_by_use=True,
    )
    assert episodes["status"].tolist() == ["unconfirmed"]
    assert error_episodes(events=stream, as_of=T0 + pd.Timedelta(days=3))["status"].tolist() == ["unrecovered"]


@pytest.mark.parametrize("seed", [7, 8])
def test_hour_matrices_equal_a_plain_count_per_key_and_hour(seed: int) -> None:
    """Keys in tuple order, k per key × hour and n per product × touchpoint shared by its codes (n ≥ k), as counted
    one row at a time; exposure of pairs without errors and unknown products is ignored."""
    from cxp.analytics.core.incidents import _hour_matrices

    rng = np.random.default_rng(seed)
    products, touchpoints, codes = ["b", "a", "c10", "c2"], ["t2", "t1", "t10"], ["E2", "E1", "E10"]
    rows = 400
    errors = pd.DataFrame({
        "product_id": rng.choice(products[:3], rows), "touchpoint": rng.choice(touchpoints, rows),
        "code": rng.choice(codes, rows), "bucket": T0 + pd.to_timedelta(rng.integers(0, 72, rows), unit="h"),
        "devices": rng.integers(1, 4, rows),
    })
    exposure = pd.DataFrame({
        "product_id": rng.choice(products, rows), "touchpoint": rng.choice(touchpoints, rows),
        "bucket": T0 + pd.to_timedelta(rng.integers(0, 80, rows), unit="h"), "users": rng.integers(1, 9, rows),
    })
    keys, t0, k_mat, n_mat = _hour_matrices(errors, exposure)
    expected_keys = sorted({(p, t, c) for p, t, c in zip(errors["product_id"], errors["touchpoint"], errors["code"],
                                                          strict=True)})
    assert list(keys) == expected_keys
    hour = {b: int((b - pd.Timestamp(t0, unit="s", tz="UTC")) / pd.Timedelta(hours=1))
            for b in pd.concat([errors["bucket"], exposure["bucket"]])}
    k_plain, n_plain = np.zeros_like(k_mat), np.zeros((len(products), len(touchpoints), k_mat.shape[1]))
    for r in errors.itertuples():
        k_plain[expected_keys.index((r.product_id, r.touchpoint, r.code)), hour[r.bucket]] += r.devices
    for r in exposure.itertuples():
        n_plain[products.index(r.product_id), touchpoints.index(r.touchpoint), hour[r.bucket]] += r.users
    assert np.array_equal(k_mat, k_plain)
    for i, (p, t, _) in enumerate(expected_keys):
        assert np.array_equal(n_mat[i], np.fmax(n_plain[products.index(p), touchpoints.index(t)], k_plain[i]))
