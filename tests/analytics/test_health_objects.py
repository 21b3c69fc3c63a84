"""health_objects: every value converted as the per-value helpers convert it (NaN/inf/NA → None, UTC days); each
object built when first read."""

from __future__ import annotations

import pickle
from datetime import date

import numpy as np
import pandas as pd
import pytest

from cxp.analytics.core._frames import finite_or_none
from cxp.analytics.core.health import COMPONENTS, SUB_SCORES, HealthConfig
from cxp.analytics.models import HealthReport, Window
from cxp.analytics.service._common import as_day
from cxp.analytics.service.health import health_objects, score_frame


def _frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(40):
        for w in range(4):
            period = pd.Timestamp("2026-03-02") + pd.Timedelta(weeks=w)
            row = {"entity_id": f"dev-{d:02d}", "period": period, "period_end": period + pd.Timedelta(days=6),
                   "product_id": None if d == 7 else f"p{d % 3}", "segment": f"p{d % 3}", "devices": 1}
            for c in (*COMPONENTS, *SUB_SCORES[:4]):
                row[c] = rng.choice([rng.uniform(0, 100), np.nan, np.inf, 55.0])
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame["voice"] = frame["voice"].astype("Float64")  # nullable, with NA where NaN
    frame.loc[3, "voice"] = pd.NA
    frame["period_end"] = frame["period_end"].dt.tz_localize("Europe/Berlin")  # tz-aware: days taken in UTC
    return frame


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_objects_hold_the_scored_values_converted_value_by_value(seed):
    frame, config = _frame(seed), HealthConfig()
    objects = health_objects("device", frame, config)
    scores = score_frame(frame, config).scores.reset_index(drop=True)
    drivers = score_frame(frame, config).drivers
    assert len(objects) == len(scores) == len(frame)
    for i, obj in enumerate(objects):
        row = scores.iloc[i]
        assert obj.entity_id == row["entity_id"] and obj.period_start == as_day(row["period"])
        assert obj.period_end == as_day(frame["period_end"].iloc[i])
        assert obj.product_id == (None if row["product_id"] is None else row["product_id"])
        for c in COMPONENTS:
            assert obj.components[c] == finite_or_none(row[c])
            assert obj.weights[c] == finite_or_none(row[f"weight_{c}"])
        assert obj.sub_scores == {c: finite_or_none(frame[c].iloc[i]) for c in SUB_SCORES if c in frame.columns}
        for name in ("score", "score_uncapped", "previous_score", "delta"):
            expected = finite_or_none(row[name])
            assert getattr(obj, name) == expected or (expected is None and getattr(obj, name) is None)
        mine = drivers[(drivers["entity_id"] == row["entity_id"]) & (drivers["period"] == row["period"])]
        assert [d.component for d in obj.drivers] == mine["component"].tolist()
        assert [(d.score, d.segment_median, d.weight, d.contribution) for d in obj.drivers] == list(
            mine[["score", "segment_median", "weight", "contribution"]].itertuples(index=False, name=None))
        assert obj.top_negative_drivers == tuple(
            str(row[f"driver_{k}"]) for k in range(1, config.top_drivers + 1) if row[f"driver_{k}"] is not None)
    assert any(o.components["voice"] is None for o in objects)  # the NA and the infinities became None
    assert any(o.drivers for o in objects)


def test_scores_are_built_on_access_and_found_by_entity_without_building_the_others():
    frame, config = _frame(4), HealthConfig()
    objects = health_objects("device", frame, config)
    assert objects._built.count(None) == len(objects)  # nothing built yet
    report = HealthReport(level="device", grain="week", window=Window(date(2026, 3, 2), date(2026, 3, 29),
                                                                      date(2026, 3, 29)),
                          source="rollups", scores=objects)
    latest = report.latest()
    assert [s.entity_id for s in latest] == sorted({f"dev-{d:02d}" for d in range(40)})
    assert all(s.period_start == date(2026, 3, 23) for s in latest)
    assert len(report.history("dev-05")) == 4 and report.get("dev-05") == latest[5]
    assert sum(b is not None for b in objects._built) == 40 + 3  # the latest of each, and dev-05's other weeks
    page = HealthReport(level="device", grain="week", window=report.window, source="rollups",
                        scores=health_objects("device", frame, config)).latest()[:10]
    assert page == latest[:10]
    eager = tuple(objects[i] for i in range(len(objects)))
    assert objects == eager and objects[-1] is eager[-1] and objects[2:5] == eager[2:5]
    assert repr(objects) == repr(eager)
    assert pickle.loads(pickle.dumps(report)).scores == eager
    with pytest.raises(IndexError):
        objects[len(objects)]


def test_partial_periods_are_marked_as_the_window_says():
    frame = _frame(5)
    last = pd.Timestamp("2026-03-23")
    objects = health_objects("device", frame, HealthConfig(), partial=lambda start, end: start == last.date())
    assert {o.partial for o in objects if o.period_start == last.date()} == {True}
    assert {o.partial for o in objects if o.period_start != last.date()} == {False}
