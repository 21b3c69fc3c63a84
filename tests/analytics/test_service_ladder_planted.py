"""The smart-capability ladder measure recovers the ladder planted in the simulator (issue 18), on two seeds: which
levels devices reach and how many, the days from activation to a level, and the planted climbers' lower churn
(device_sim/ladder.py: optimisation and autonomy unlock for planted shares; planted climbers' churn hazards × 0.3)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from cxp.analytics import service
from cxp.analytics.models_measures import LadderReport
from cxp.analytics.query import AnalyticsQuery
from cxp.device_sim import build_fleet
from cxp.device_sim.ladder import ladder_truth
from cxp.store.db import connect
from tests.fixtures.fleet import FLEET_START, LADDER_SEEDS, TruthFleet, ladder_fleet_params

pytestmark = pytest.mark.integration

WEEKS = 6  # the fleets' whole span


def _truth(lf: TruthFleet) -> pd.DataFrame:
    fleet = build_fleet(**ladder_fleet_params(lf.seed))
    truth = pd.DataFrame(ladder_truth(fleet)).set_index("device_id")
    truth["churns"] = lf.fleet.truth["churns"].reindex(truth.index).astype(bool)
    activated = {d.device_id: d.activated_at for d in fleet.devices}
    truth["in_window"] = [activated[d] >= FLEET_START for d in truth.index]
    return truth


@pytest.fixture(scope="module")
def recovered(ladder_fleets: dict[int, TruthFleet]) -> dict[int, tuple[LadderReport, LadderReport, pd.DataFrame]]:
    """Per seed: the ladder of the whole fleet, the ladder of the devices activated in the window, the truth."""
    out = {}
    for seed, lf in ladder_fleets.items():
        truth = _truth(lf)
        new = frozenset(truth.index[truth["in_window"]])
        with connect(lf.settings.db, autocommit=True) as conn:
            whole = service.get_capability_ladder(conn=conn, weeks=WEEKS)
            fresh = service.get_capability_ladder(conn=conn, query=AnalyticsQuery(devices=new), weeks=WEEKS)
        out[seed] = (whole, fresh, truth)
    return out


def _levels(report: LadderReport) -> dict[tuple[str, str], object]:
    return {(lv.product_id, lv.level): lv for lv in report.levels if lv.segment is None}


def _planted_share(truth: pd.DataFrame, product: str, level: str) -> float:
    rows = truth[truth["product_id"] == product]
    return float((rows[f"unlock_{level}"] < math.inf).mean())


def test_shares_reaching_each_level_follow_the_plant(recovered) -> None:
    assert sorted(recovered) == list(LADDER_SEEDS)
    for seed, (whole, _, truth) in recovered.items():
        levels = _levels(whole)
        for (product, level), lv in sorted(levels.items()):
            planted = 1.0 if level in ("monitoring", "control") else _planted_share(truth, product, level)
            print(f"seed {seed} {product} {level}: reached {lv.share:.3f} planted {planted:.3f}")
            # no device reaches a level before it is unlocked
            assert lv.share <= planted + 0.02, (seed, product, level)
        # autonomy is the thermostat's heating cycle, used every day once unlocked: all unlocked devices show it
        assert abs(levels[("thermo-x1", "autonomy")].share - _planted_share(truth, "thermo-x1", "autonomy")) <= 0.05
        for product in ("thermo-x1", "ebike-s2"):  # optimisation features used weekly or more
            assert levels[(product, "optimisation")].share >= 0.6 * _planted_share(truth, product, "optimisation")
        assert levels[("thermo-x1", "control")].share == 1.0


def test_days_from_activation_to_a_level_follow_the_plant(recovered) -> None:
    for seed, (_, fresh, truth) in recovered.items():
        new = truth[truth["in_window"] & (truth["product_id"] == "thermo-x1")]
        levels = _levels(fresh)
        for level in ("optimisation", "autonomy"):
            planted = new[f"unlock_{level}"][new[f"unlock_{level}"] < math.inf]
            got = levels[("thermo-x1", level)]
            print(
                f"seed {seed} thermo-x1 {level}: median days {got.median_days_to_reach:.1f} (n {got.reached}),"
                f" planted unlock median {planted.median():.1f} (n {len(planted)})"
            )
            assert got.reached <= len(planted)
            # reached at the first use after the unlock: never before it, and soon after for daily features
            assert got.median_days_to_reach >= planted.min()
        autonomy = levels[("thermo-x1", "autonomy")]
        planted = new["unlock_autonomy"][new["unlock_autonomy"] < math.inf]
        assert autonomy.reached == len(planted) >= 5
        assert planted.median() - 0.5 <= autonomy.median_days_to_reach <= planted.median() + 2.0


def test_planted_climbers_churn_less_and_are_healthier(recovered) -> None:
    for seed, (whole, _, truth) in recovered.items():
        contrasts = {c.product_id: c for c in whole.contrasts}
        for c in whole.contrasts:
            rows = truth[truth["product_id"] == c.product_id]
            planted = rows.groupby("planted_climber")["churns"].mean()
            print(
                f"seed {seed} {c.product_id}: climbers {c.climbers} / others {c.others}; churn "
                f"{c.churn.difference:+.3f} ({c.churn.ci_low:+.3f} … {c.churn.ci_high:+.3f}); planted "
                f"{planted[True] - planted[False]:+.3f}; health {c.health.difference:+.1f} "
                f"({c.health.ci_low:+.1f} … {c.health.ci_high:+.1f})"
            )
            assert c.health.difference > 0 and c.health.ci_low > 0, (seed, c)
        # The thermostat's top level is used daily, so its measured climbers are the planted ones: the churn
        # difference is negative and its 95 % CI holds the planted difference (lived churn, climbers − others).
        thermo = contrasts["thermo-x1"]
        rows = truth[truth["product_id"] == "thermo-x1"]
        planted = rows.groupby("planted_climber")["churns"].mean()
        planted_diff = planted[True] - planted[False]
        assert planted_diff < -0.05
        assert thermo.churn.ci_high < 0
        assert thermo.churn.ci_low <= planted_diff <= thermo.churn.ci_high, (seed, thermo.churn, planted_diff)


def test_small_groups_say_not_enough_data(ladder_fleets) -> None:
    lf = ladder_fleets[LADDER_SEEDS[0]]
    with connect(lf.settings.db, autocommit=True) as conn:
        few = sorted(_truth(lf).query("product_id == 'ebike-s2'").index)[:12]
        report = service.get_capability_ladder(conn=conn, query=AnalyticsQuery(devices=frozenset(few)), weeks=WEEKS)
    (c,) = report.contrasts
    assert c.climbers + c.others == 12
    assert c.health.difference is None and "not enough data" in c.health.reason
    assert c.churn.difference is None and "not enough data" in c.churn.reason
