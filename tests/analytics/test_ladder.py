"""Capability-ladder formulas on hand-made inputs: levels reached, days to each, climbers, shares, contrasts."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from cxp.analytics.core.ladder import climber_contrast, device_ladder, level_shares

T0 = datetime(2025, 3, 3, tzinfo=UTC)


def _ladder() -> tuple[pd.DataFrame, pd.DataFrame]:
    devices = pd.DataFrame({"device_key": [1, 2, 3], "product_id": ["p", "p", "q"], "activated_at": [T0, T0, T0]})
    first_uses = pd.DataFrame(
        {
            "device_key": [1, 1, 1, 2, 3],
            "capability": ["monitoring", "control", "optimisation", "control", "control"],
            "first_at": [T0, T0 + pd.Timedelta(days=2), T0 + pd.Timedelta(days=10), T0 + pd.Timedelta(days=4), T0],
        }
    )
    offered = pd.DataFrame(
        {"product_id": ["p", "p", "p", "q"], "capability": ["monitoring", "control", "optimisation", "control"]}
    )
    return device_ladder(devices=devices, first_uses=first_uses, offered=offered), offered


def test_levels_days_and_climbers() -> None:
    ladder, _ = _ladder()
    one, two, three = (ladder[ladder.device_key == k].iloc[0] for k in (1, 2, 3))
    assert (one.days_to_control, one.days_to_optimisation, one.levels_reached) == (2.0, 10.0, 3)
    assert bool(one.climber) and not bool(two.climber)
    assert pd.isna(two.days_to_monitoring) and two.days_to_control == 4.0
    assert bool(three.climber) and three.levels_offered == 1  # q offers only control


def test_shares_per_level_only_for_offered_levels() -> None:
    ladder, offered = _ladder()
    shares = {(s.group, s.level): s for s in level_shares(ladder=ladder, by=["product_id"], offered=offered)}
    assert set(shares) == {(("p",), "monitoring"), (("p",), "control"), (("p",), "optimisation"), (("q",), "control")}
    control = shares[(("p",), "control")]
    assert (control.devices, control.reached, control.share, control.median_days) == (2, 2, 1.0, 3.0)
    assert shares[(("p",), "optimisation")].share == pytest.approx(0.5)


def test_climber_contrast_with_cis_and_small_groups() -> None:
    frame = pd.DataFrame(
        {
            "climber": [True] * 20 + [False] * 20,
            "health": [80.0 + (i % 5) for i in range(20)] + [60.0 + (i % 5) for i in range(20)],
            "churned": [i < 2 for i in range(20)] + [i < 8 for i in range(20)],
        }
    )
    health, churn = climber_contrast(ladder=frame, min_n=10)
    assert health.estimate == pytest.approx(20.0) and health.low < 20 < health.high
    assert churn.estimate == pytest.approx(0.1 - 0.4) and churn.low < -0.3 < churn.high
    small_health, small_churn = climber_contrast(ladder=frame.iloc[15:30], min_n=10)
    assert small_health.estimate is None and "not enough data" in small_health.reason
    assert small_churn.estimate is None and "not enough data" in small_churn.reason
