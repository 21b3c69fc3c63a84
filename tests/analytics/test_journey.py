"""Lifecycle funnel, habitual definition, cohorts, time to first value."""

from __future__ import annotations

import pandas as pd
import pytest

from cxp.analytics.core import journey
from tests.analytics.helpers import assert_no_nan

T = pd.Timestamp


def _devices() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "device_id": ["a", "b", "c", "d", "e", "f"],
            "registered_at": [T("2026-01-01")] * 6,
            "activated_at": [T("2026-01-05"), T("2026-01-05"), T("2026-01-06"), T("2026-01-13"), None, T("2026-01-13")],
            "first_core_use_at": [
                T("2026-01-05 02:00"),
                T("2026-01-06"),
                None,
                T("2026-01-13 12:00"),
                None,
                T("2026-01-12"),
            ],
            "habitual_at": [T("2026-01-10"), None, None, T("2026-01-20"), None, None],
            "last_use_at": [T("2026-03-01"), T("2026-01-10"), None, T("2026-03-01"), None, T("2026-03-01")],
            "cancelled_at": [None, None, None, T("2026-02-01"), None, None],
        }
    )


def test_funnel_conversions() -> None:
    r = journey.lifecycle_funnel(devices=_devices(), as_of="2026-03-02")
    counts = {s.stage: s.count for s in r.stages}
    assert counts == {"registered": 6, "activated": 5, "first_core_use": 4, "habitual": 2}
    conv = {s.stage: s.conversion_from_previous for s in r.stages}
    assert conv["registered"] is None and conv["activated"] == pytest.approx(5 / 6)
    assert conv["first_core_use"] == pytest.approx(4 / 5) and conv["habitual"] == pytest.approx(2 / 4)
    # churned: b (inactive since 01-10), c (never used, activated 01-06), d (cancelled)
    assert r.churned == 3 and r.churn_rate == pytest.approx(3 / 5)


def test_funnel_cohorts_by_week() -> None:
    r = journey.lifecycle_funnel(devices=_devices(), as_of="2026-03-02", cohort="week")
    c = r.by_cohort.set_index("cohort")
    assert list(c.index) == ["2025-12-29", "2026-01-05", "2026-01-12"]  # e: never activated → registration week
    assert c.loc["2026-01-05", "activated"] == 3 and c.loc["2026-01-05", "first_core_use"] == 2
    assert c.loc["2026-01-05", "conv_habitual"] == 0.5
    assert pd.isna(c.loc["2025-12-29", "conv_first_core_use"])  # no activated device: no division by zero
    assert bool(c.loc["2026-01-05", "mature"])
    assert_no_nan(r.by_cohort)
    monthly = journey.lifecycle_funnel(devices=_devices(), as_of="2026-03-02", cohort="month").by_cohort
    assert list(monthly["cohort"]) == ["2026-01"]


def test_funnel_empty_and_without_churn_columns() -> None:
    r = journey.lifecycle_funnel(devices=pd.DataFrame({"device_id": []}), as_of="2026-03-02")
    assert r.reason and all(s.count == 0 for s in r.stages) and r.stages[1].conversion_from_previous is None
    r2 = journey.lifecycle_funnel(devices=_devices().drop(columns=["last_use_at", "cancelled_at"]), as_of="2026-03-02")
    assert r2.churned is None and r2.churn_rate is None


def test_habitual_dates() -> None:
    d = pd.DataFrame(
        {
            "entity_id": ["a"] * 5 + ["b"] * 4 + ["c"] * 2,
            "day": [
                "2026-01-01",
                "2026-01-05",
                "2026-01-09",
                "2026-01-14",
                "2026-01-15",
                "2026-01-01",
                "2026-01-08",
                "2026-01-15",
                "2026-01-22",
                "2026-01-01",
                "2026-01-02",
            ],
            "uses": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0],
        }
    )
    h = journey.habitual_dates(daily=d, k=4, window_days=14).set_index("entity_id")["habitual_on"]
    assert h["a"] == T("2026-01-14")  # 01, 05, 09, 14 fall within 14 days
    assert "b" not in h.index and "c" not in h.index  # weekly only; c has one active day


def test_time_to_value() -> None:
    r = journey.time_to_value(devices=_devices(), unit="hours")
    # a: 2h, b: 24h, d: 12h; f used before activation → invalid; c not reached
    assert r.n_activated == 5 and r.n_reached == 3 and r.n_invalid == 1
    assert r.distribution.median == 12 and r.distribution.p90 == pytest.approx(21.6)
    assert r.share_reached == pytest.approx(3 / 5)
    none = journey.time_to_value(devices=_devices().iloc[4:5])
    assert none.distribution.median is None and none.share_reached is None
    assert_no_nan(none)


def test_time_to_value_by_group() -> None:
    d = _devices().assign(plan=["x", "x", "y", "y", "y", "y"])
    g = journey.time_to_value_by_group(devices=d, group_cols=["plan"], min_n=2).set_index("plan")
    assert g.loc["x", "median"] == 13 and g.loc["x", "n_reached"] == 2
    assert pd.isna(g.loc["y", "median"]) and g.loc["y", "reason"]
    assert_no_nan(g.reset_index())
