"""Experience-aware flag: a plan charging the unhappiest accounts most is flagged, a neutral one is not."""

from __future__ import annotations

import numpy as np

from cxp.pricing.core.backtest import UsageCube, backtest
from cxp.pricing.core.experience import experience_risk
from cxp.pricing.core.vectorised import to_fixed
from tests.pricing.test_backtest import FLAT, MONTHS, UNIT


def _cube(kwh: list[float]) -> UsageCube:
    n = len(kwh)
    return UsageCube(
        account_ids=tuple(f"a{i}" for i in range(n)),
        segments=("consumer",) * n,
        months=MONTHS,
        usage={"kwh": to_fixed(values=np.array([[k, k] for k in kwh], dtype=np.float64), decimals=3)},
    )


def test_plan_charging_the_unhappy_most_is_flagged():
    # 20 accounts: the lower the health, the more kWh (a heating system that runs badly), so per-kWh bills rise there.
    health = {f"a{i}": 40.0 + 3 * i for i in range(20)}
    kwh = [200.0 - 8 * i for i in range(20)]
    res = backtest(cube=_cube(kwh), plans=[FLAT, UNIT])
    (risk,) = experience_risk(result=res, health=health)
    assert risk.plan_key == "unit@v1" and risk.accounts == 20
    assert risk.spearman == -1.0 and risk.p_value < 0.05
    # Hand: flat 20.00 over two months; unit 0.10 × 2 × kWh. Bottom quartile (health ≤ 54.25: a0..a4).
    change = [0.2 * k / 20 - 1 for k in kwh]
    assert np.isclose(risk.low_health_change, np.mean(change[:5]))
    assert np.isclose(risk.rest_change, np.mean(change[5:]))
    assert risk.flagged


def test_unrelated_or_unknown_health_is_not_flagged():
    rng = np.random.default_rng(0)
    kwh = list(rng.uniform(50, 150, size=40))
    health = {f"a{i}": float(h) for i, h in enumerate(rng.uniform(40, 90, size=40))}
    res = backtest(cube=_cube(kwh), plans=[FLAT, UNIT])
    (risk,) = experience_risk(result=res, health=health)
    assert not risk.flagged and risk.accounts == 40
    # The reverse (the happiest pay most) is not this flag either.
    rev = backtest(cube=_cube([200.0 - 8 * i for i in range(20)]), plans=[FLAT, UNIT])
    (r2,) = experience_risk(result=rev, health={f"a{i}": 100.0 - 3 * i for i in range(20)})
    assert r2.spearman == 1.0 and not r2.flagged
    (none,) = experience_risk(result=rev, health={})
    assert none.accounts == 0 and none.spearman is None and not none.flagged
