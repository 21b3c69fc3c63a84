"""Bill coverage in the backtest: low-coverage periods flagged, revenue at risk and shortfall by hand, exclusion."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from cxp.pricing.core.backtest import backtest
from cxp.pricing.errors import PricingError
from tests.pricing.test_backtest import FLAT, UNIT, _cube


def _covered(cube, coverage):
    return type(cube)(**{**cube.__dict__, "coverage": np.array(coverage, dtype=float)})


def test_half_month_offline_is_flagged_light_user_is_not():
    # a0: offline half of month 2 (coverage 0.5) reporting 60 kWh; a1: a light user, fully covered, 5 kWh.
    cube = _covered(_cube([["100", "60"], ["5", "5"]]), [[1.0, 0.5], [1.0, 0.98]])
    res = backtest(cube=cube, plans=[FLAT, UNIT], baseline="flat@v1")
    assert res.low_coverage.tolist() == [[False, True], [False, False]]
    unit, flat = res.summaries["unit@v1"], res.summaries["flat@v1"]
    assert unit.low_coverage_periods == flat.low_coverage_periods == 1
    assert unit.low_coverage_revenue == Decimal("6.00")  # 60 kWh × 0.10
    assert unit.coverage_shortfall == Decimal("6.00")  # 120 kWh extrapolated → 12.00, minus 6.00 billed
    assert (flat.low_coverage_revenue, flat.coverage_shortfall) == (Decimal("10.00"), Decimal("0.00"))
    rows = {(r["plan"], r["account_id"], r["month"].month): r for r in res.rows()}
    assert rows["unit@v1", "a0", 2]["coverage"] == 0.5 and rows["unit@v1", "a0", 2]["low_coverage"]
    assert rows["unit@v1", "a1", 2]["coverage"] == 0.98 and not rows["unit@v1", "a1", 2]["low_coverage"]
    assert {"low_coverage_periods", "coverage_shortfall"} <= set(res.summary_rows()[1])
    # Excluded: the flagged period leaves every figure; the flag stays for the record.
    ex = backtest(cube=cube, plans=[FLAT, UNIT], baseline="flat@v1", exclude_low_coverage=True)
    assert ex.excluded_low_coverage and ex.summaries["unit@v1"].customer_periods == 3
    assert ex.summaries["unit@v1"].revenue == Decimal("11.00")  # 10.00 + 0.50 + 0.50
    assert ex.low_coverage[0, 1]


def test_coverage_thresholds_and_unknowns():
    cube = _covered(_cube([["100", "60"], ["5", "5"]]), [[np.nan, 0.05], [0.9, 0.89]])
    res = backtest(cube=cube, plans=[FLAT, UNIT], coverage_threshold=0.9)
    assert res.low_coverage.tolist() == [[False, True], [False, True]]  # unknown is not flagged; 0.9 is not below
    # Coverage 0.05 is too little to extrapolate: no shortfall estimated there; 0.89 scales 5 kWh by 1/0.89.
    assert res.summaries["unit@v1"].coverage_shortfall == Decimal("0.06")  # 5.618 kWh → 0.56, billed 0.50
    assert backtest(cube=cube, plans=[UNIT], coverage_threshold=None).low_coverage is None
    with pytest.raises(PricingError, match="coverage_threshold"):
        backtest(cube=cube, plans=[UNIT], coverage_threshold=1.5)
