"""The planted smart-capability ladder (issue 18): levels unlock for planted shares, no touchpoint of a locked level
is used, planted climbers churn less, and a fleet without the plant is unchanged by it."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from cxp.device_sim import build_fleet, device_events
from cxp.device_sim.fleet import to_ms
from cxp.device_sim.ladder import CLIMBER_CHURN_FACTOR, LEVEL_SHARE, LEVELS, ladder_truth, unlock_days

START = datetime(2025, 3, 3, tzinfo=UTC)


def _uses(fleet, device) -> list[tuple[int, str]]:
    return [(to_ms(e.ts), e.touchpoint) for e in device_events(fleet=fleet, device=device) if e.kind == "usage"]


def test_unlock_days_are_ordered_within_the_climb_window_and_shares_follow_the_plant() -> None:
    draws = [unlock_days(seed=5, device_id=f"d{i}", timeline_days=40.0) for i in range(4000)]
    for d in draws:
        assert d["monitoring"] == d["control"] == 0.0
        assert d["optimisation"] <= d["autonomy"]
        assert all(v == math.inf or 0 <= v <= 0.4 * 40.0 for v in d.values())
    opt = sum(d["optimisation"] < math.inf for d in draws) / len(draws)
    aut = sum(d["autonomy"] < math.inf for d in draws) / len(draws)
    assert opt == pytest.approx(LEVEL_SHARE["optimisation"], abs=0.03)
    assert aut == pytest.approx(LEVEL_SHARE["optimisation"] * LEVEL_SHARE["autonomy"], abs=0.03)


def test_no_touchpoint_of_a_locked_level_is_used() -> None:
    fleet = build_fleet(seed=4, devices=40, start=START, days=21, ladder=True)
    truth = {r["device_id"]: r for r in ladder_truth(fleet)}
    checked = 0
    for device in fleet.devices:
        levels = {t.name: t.capability for t in fleet.product_of(device).touchpoints if t.trigger == "session"}
        t0 = max(to_ms(device.activated_at), to_ms(fleet.start))
        for ts, tp in _uses(fleet, device):
            if tp in levels:
                unlock = truth[device.device_id][f"unlock_{levels[tp]}"]
                assert unlock < math.inf and ts >= t0 + unlock * 86_400_000, (device.device_id, tp)
                checked += 1
    assert checked > 1000


def test_thermostats_use_autonomy_once_unlocked() -> None:
    fleet = build_fleet(seed=4, devices=60, start=START, days=21, ladder=True)
    for row in ladder_truth(fleet):
        if row["product_id"] != "thermo-x1":
            continue
        device = fleet.device(row["device_id"])
        heating = [ts for ts, tp in _uses(fleet, device) if tp == "heating_cycle"]
        assert bool(heating) == (row["unlock_autonomy"] < math.inf and row["unlock_autonomy"] < row["timeline_days"])


def test_planted_climbers_churn_less() -> None:
    with_plant = build_fleet(seed=9, devices=3000, start=START, days=42, ladder=True)
    rows = ladder_truth(with_plant)
    rate = {}
    for flag in (True, False):
        picked = [with_plant.profiles[i].churns for i, r in enumerate(rows) if r["planted_climber"] == flag]
        rate[flag] = sum(picked) / len(picked)
    assert rate[True] < rate[False]
    assert rate[True] / rate[False] == pytest.approx(CLIMBER_CHURN_FACTOR, abs=0.15)


def test_the_plant_leaves_the_registry_and_personas_alone() -> None:
    plain = build_fleet(seed=4, devices=200, start=START, days=28)
    planted = build_fleet(seed=4, devices=200, start=START, days=28, ladder=True)
    assert (plain.params()["ladder"], planted.params()["ladder"]) == (False, True)
    assert plain.device_rows() == planted.device_rows() and plain.account_rows() == planted.account_rows()
    assert [p.persona for p in plain.profiles] == [p.persona for p in planted.profiles]
    # only planted climbers' churn can change, and only towards staying
    for a, b, row in zip(plain.profiles, planted.profiles, ladder_truth(planted), strict=True):
        if not row["planted_climber"]:
            assert (a.churns, a.churn_at) == (b.churns, b.churn_at)
        else:
            assert b.churns <= a.churns
    assert LEVELS[-1] == "autonomy"
