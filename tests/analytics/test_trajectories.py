"""The trajectory of many entities at many period ends at once equals `trajectory_component` run period by period."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxp.analytics.core import trajectories
from cxp.analytics.core.health import trajectory_component
from cxp.analytics.core.trajectories import trajectories_at
from cxp.analytics.errors import InvalidInput, InvalidParameter

COLUMNS = ["slope_score", "recency_score", "trajectory", "days_since_last_use"]


def _fleet(seed: int, entities: int = 60, weeks: int = 9) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random daily usage (declining, steady, sparse, silent, late-activated) and one row per entity × week end."""
    rng = np.random.default_rng(seed)
    last_end = pd.Timestamp("2026-03-01")  # a Sunday
    ends = [last_end - pd.Timedelta(days=7 * k) for k in range(weeks)][::-1]
    first_day = ends[0] - pd.Timedelta(days=27)
    days = pd.date_range(first_day, last_end, freq="D")
    usage, rows = [], []
    for e in range(entities):
        kind = e % 5
        activated = first_day + pd.Timedelta(days=int(rng.integers(-30, 60)))
        expected = [7.0, 5.0, 2.0, 1.0, np.nan][int(rng.integers(0, 5))]
        rate = rng.uniform(0.5, 6)
        for i, day in enumerate(days):
            if day < activated or kind == 3:
                continue
            p = {0: 0.9 - i / len(days), 1: 0.8, 2: 0.15, 4: 0.5}[kind]
            if rng.random() < max(p, 0.0):
                usage.append((e, day, int(rng.poisson(rate)) if rng.random() > 0.05 else 0))
        before = None if rng.random() < 0.4 else first_day - pd.Timedelta(days=int(rng.integers(1, 40)))
        for end in ends:
            if activated <= end:
                rows.append((e, end, activated, expected, before))
    return (pd.DataFrame(usage, columns=["entity_id", "day", "uses"]),
            pd.DataFrame(rows, columns=["entity_id", "period_end", "activated_on", "expected_active_days_per_week",
                                        "last_use_before"]))


def _period_by_period(usage: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The service's former loop: per period end, the trailing 28 days and the last active day so far."""
    parts = []
    for end, in_period in rows.groupby("period_end", sort=True):
        seen = usage[usage["day"] <= end].groupby("entity_id")["day"].max()
        before = in_period.set_index("entity_id")["last_use_before"]
        last = seen.reindex(in_period["entity_id"]).fillna(before.reindex(in_period["entity_id"]))
        entities = in_period.assign(last_use_on=last.to_numpy())
        trailing = usage[(usage["day"] <= end) & (usage["day"] > end - pd.Timedelta(days=28))]
        weekly = entities["expected_active_days_per_week"] < 3
        for bucket_days, mask in ((1, ~weekly), (7, weekly)):
            subset = entities[mask.to_numpy()]
            if subset.empty:
                continue
            part = trajectory_component(usage=trailing[trailing["entity_id"].isin(subset["entity_id"])],
                                        entities=subset, as_of=end, bucket_days=bucket_days)
            parts.append(part.assign(period_end=end))
    out = pd.concat(parts, ignore_index=True)
    return out.set_index(["entity_id", "period_end"])


@pytest.mark.parametrize(("seed", "chunk"), [(1, None), (2, None), (3, None), (4, 7)])
def test_all_periods_at_once_equal_period_by_period(seed: int, chunk: int | None, monkeypatch) -> None:
    if chunk is not None:  # rows taken a few at a time give the same numbers
        monkeypatch.setattr(trajectories, "_ROWS_PER_CHUNK", chunk)
    usage, rows = _fleet(seed)
    expected = _period_by_period(usage, rows)
    got = trajectories_at(usage=usage, rows=rows)
    got.index = pd.MultiIndex.from_frame(rows[["entity_id", "period_end"]])
    assert len(got) == len(rows) == len(expected)
    assert got["slope_score"].notna().sum() > len(got) // 3 and got["slope_score"].isna().any()
    assert (got["recency_score"] < 100).any() and (got["days_since_last_use"] > 0).any()
    for column in COLUMNS:
        np.testing.assert_array_equal(got[column].to_numpy(dtype=float),
                                      expected.loc[got.index, column].to_numpy(dtype=float, na_value=np.nan),
                                      err_msg=column)


def test_rows_keep_their_order_and_index() -> None:
    usage, rows = _fleet(5, entities=10, weeks=3)
    shuffled = rows.sample(frac=1.0, random_state=0)
    got = trajectories_at(usage=usage, rows=shuffled)
    assert got.index.equals(shuffled.index)
    pd.testing.assert_frame_equal(got.sort_index(), trajectories_at(usage=usage, rows=rows).sort_index())


def test_no_rows_and_bad_parameters() -> None:
    usage, rows = _fleet(6, entities=3, weeks=2)
    assert trajectories_at(usage=usage, rows=rows.iloc[:0]).empty
    with pytest.raises(InvalidParameter):
        trajectories_at(usage=usage, rows=rows, window_days=10)
    with pytest.raises(InvalidParameter):
        trajectories_at(usage=usage, rows=rows, slope_weight=1.5)
    with pytest.raises(InvalidInput, match="period_end"):
        trajectories_at(usage=usage, rows=rows.assign(period_end=pd.NaT))


def test_days_since_the_last_use_count_from_the_first_day_of_usage_on() -> None:
    first = pd.Timestamp("2026-02-02")
    usage = pd.DataFrame({"entity_id": [7], "day": [first], "uses": [3]})
    ends = [first + pd.Timedelta(days=27), first + pd.Timedelta(days=34)]
    rows = pd.DataFrame({"entity_id": [7, 7], "period_end": ends,
                         "activated_on": [first - pd.Timedelta(days=100)] * 2,
                         "expected_active_days_per_week": [7.0, 7.0],
                         "last_use_before": [first - pd.Timedelta(days=50)] * 2})
    got = trajectories_at(usage=usage, rows=rows)
    assert got["days_since_last_use"].tolist() == [27.0, 34.0]
    assert got["recency_score"].tolist() == [0.0, 0.0]  # past the 1-day grace and 21 days of fading
