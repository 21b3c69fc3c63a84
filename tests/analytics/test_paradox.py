"""The recovery paradox measured on satisfaction changes, and survey IPA crosshairs (pure core)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxp.analytics.core.paradox import recovery_paradox
from cxp.analytics.core.priorities import survey_quadrants
from cxp.analytics.errors import InvalidParameter


def _devices(seed: int, *, lift: float, n: int = 60) -> pd.DataFrame:
    """Devices of two products with their own levels; excellent-recovery devices answer `lift` higher afterwards."""
    rng = np.random.default_rng(seed)
    rows = []
    for product, offset in (("a", 0.0), ("b", 0.6)):  # products differ in level: compared within a product only
        for group, shift, count in (("excellent", lift, n), ("other", -0.2, n), ("none", 0.0, 2 * n)):
            level = rng.normal(3.8 + offset + (0.5 if group == "excellent" else 0.0), 0.4, count)  # who got hit differs
            rows += [
                {
                    "device_id": f"{product}{group}{i}",
                    "product_id": product,
                    "group": group,
                    "csat_before": lv + rng.normal(0, 0.3),
                    "csat_after": lv + shift + rng.normal(0, 0.3),
                    "nps_before": 2 * lv + rng.normal(0, 0.8),
                    "nps_after": 2 * (lv + shift) + rng.normal(0, 0.8),
                }
                for i, lv in enumerate(level)
            ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_present_where_planted_absent_where_not(seed: int) -> None:
    planted = recovery_paradox(devices=_devices(seed, lift=0.6))
    csat = planted.table.set_index("metric").loc["csat"]
    assert planted.verdict == "present" and csat["ci_low"] <= 0.6 <= csat["ci_high"]
    plain = recovery_paradox(devices=_devices(seed, lift=0.0))
    assert plain.verdict == "absent"
    assert plain.table.set_index("metric").loc["csat", "ci_high"] < 0.25


def test_too_few_devices_is_not_enough_data() -> None:
    few = recovery_paradox(devices=_devices(4, lift=0.6, n=3))
    assert few.verdict == "not enough data"
    assert few.table["reason"].str.startswith("not enough data").all()
    with pytest.raises(InvalidParameter):
        recovery_paradox(devices=_devices(4, lift=0.6), min_n=1)


def test_survey_crosshairs_at_the_means_or_the_scale_midpoint() -> None:
    survey = pd.DataFrame(
        {
            "product_id": "p",
            "touchpoint": ["a", "b", "c"],
            "importance": [4.5, 4.2, 3.6],
            "quality": [4.4, 3.5, 4.8],
            "scale_min": 1.0,
            "scale_max": 5.0,
        }
    )
    by_mean, lines = survey_quadrants(survey=survey, crosshairs="data")
    assert lines["p"] == pytest.approx((4.1, 4.2333), abs=1e-3)
    assert by_mean.set_index("touchpoint")["quadrant"].to_dict() == {
        "a": "keep up the good work",
        "b": "concentrate here",
        "c": "possible overkill",
    }
    by_mid, lines = survey_quadrants(survey=survey, crosshairs="midpoint")
    assert lines["p"] == (3.0, 3.0)
    assert set(by_mid["quadrant"]) == {"keep up the good work"}  # on a 1–5 scale all are above the midpoint
    with pytest.raises(InvalidParameter):
        survey_quadrants(survey=survey, crosshairs="median")
