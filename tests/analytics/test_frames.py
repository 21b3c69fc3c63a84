"""Pure frame helpers of the analytics core: trailing sums, membership."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from cxp.analytics.core._frames import lookup, member_of, trailing_sums

START = date(2025, 1, 1)


def _by_filtering(daily: pd.DataFrame, ends: list[date], lookback: int) -> pd.DataFrame:
    parts = []
    for end in sorted(set(ends)):
        inside = daily[(daily["day"] <= end) & (daily["day"] > end - timedelta(days=lookback))]
        sums = inside.groupby("k")[["n", "x"]].sum().reset_index()
        sums.insert(1, "period_end", end)
        parts.append(sums)
    return pd.concat(parts).sort_values(["k", "period_end"]).reset_index(drop=True)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_trailing_sums_equal_filtering_each_window(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = 2000
    daily = pd.DataFrame({
        "k": rng.integers(1, 80, size),
        "day": [START + timedelta(days=int(d)) for d in rng.integers(0, 150, size)],
        "n": rng.integers(0, 4, size),
        "x": rng.random(size),
    })
    # Unsorted, repeated and out-of-range ends (before the first row and after the last).
    ends = [START + timedelta(days=int(d)) for d in (40, 12, 19, 40, 149, 160, -3, 75)]
    got = trailing_sums(daily, key="k", day="day", ends=ends, lookback_days=28, columns=["n", "x"])
    got = got.sort_values(["k", "period_end"]).reset_index(drop=True)
    want = _by_filtering(daily, ends, 28)
    assert len(got) == len(want) > 0
    assert (got["k"].to_numpy() == want["k"].to_numpy()).all()
    assert list(got["period_end"]) == list(want["period_end"])
    assert np.allclose(got[["n", "x"]].to_numpy(float), want[["n", "x"]].to_numpy(float))


def test_a_row_on_the_window_edge_counts_only_on_its_inner_side() -> None:
    daily = pd.DataFrame({"k": [7, 7], "day": [START, START + timedelta(days=28)], "n": [1, 10], "x": [0.0, 0.0]})
    got = trailing_sums(daily, key="k", day="day", ends=[START + timedelta(days=27), START + timedelta(days=28)],
                        lookback_days=28, columns=["n"])
    assert list(got["n"]) == [1, 10]  # day 0 is in (−1, 27] but not in (0, 28]


def test_no_rows_or_no_ends_give_an_empty_frame_with_the_columns() -> None:
    empty = pd.DataFrame({"k": [], "day": [], "n": []})
    assert list(trailing_sums(empty, key="k", day="day", ends=[START], lookback_days=7, columns=["n"]).columns) == [
        "k", "period_end", "n"]
    one = pd.DataFrame({"k": [1], "day": [START], "n": [1]})
    assert trailing_sums(one, key="k", day="day", ends=[], lookback_days=7, columns=["n"]).empty


@pytest.mark.parametrize("allowed", [
    pd.Index(["a", "c", None]), {"b", "zz"}, pd.Series(["c"], dtype=object), [], ["a", 5], ("d",),
    pd.Series(["a", "b"], dtype="str"),
])
@pytest.mark.parametrize("dtype", ["str", object])
def test_member_of_is_isin_as_a_boolean_array(allowed, dtype) -> None:
    column = pd.Series(["a", "b", None, "c", "a", "d"], dtype=dtype)
    expected = column.isin(list(allowed) if isinstance(allowed, set) else allowed).to_numpy(dtype=bool)
    got = member_of(column, allowed)
    assert got.dtype == bool and got.tolist() == expected.tolist()


def test_member_of_takes_integer_keys_too() -> None:
    assert member_of(pd.Series([1, 2, 3, 2]), [2, 9]).tolist() == [False, True, False, True]


def test_lookup_is_map_with_a_default_and_keeps_63_bit_integers_exact() -> None:
    big = (1 << 62) + 12345  # a fingerprint: float64 would round it
    column = pd.Series(["p1", "p2", None, "p1", "p3"], dtype="str")
    got = lookup(column, {"p1": big, "p3": 7}, default=0, dtype=np.int64)
    assert got.dtype == np.int64 and got.tolist() == [big, 0, 0, big, 7]
    # what Series.map did: floats as soon as a key is missing, the fingerprint rounded
    assert int(column.map({"p1": big, "p3": 7}).fillna(0).to_numpy(dtype=np.int64)[0]) != big
    assert lookup(pd.Series([], dtype="str"), {"a": 1}, default=None).tolist() == []
    assert lookup(pd.Series([2, 1]), {1: "one"}, default="?").tolist() == ["?", "one"]
