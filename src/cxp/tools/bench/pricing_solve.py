"""Price solving speed: a revenue-neutral unit price and a 2-parameter constrained optimum on N accounts × P months.

Both run over the vectorised billing (`pricing.core.solve`); the baseline is the example catalogue's
device sale + connectivity plan, and both solved plans keep its device sale (so only the recurring
price moves). Prints wall time, distinct plans billed (evaluations), the answer,
its achieved figures and whether the Decimal re-bill of the first accounts agrees.

    .venv/bin/python -m cxp.tools.bench.pricing_solve [--accounts 10000] [--periods 12] [--seed 1]
"""

from __future__ import annotations

import argparse
import time
from decimal import Decimal

from cxp.pricing.core.plans import Plan
from cxp.pricing.core.solve import FreeParameter, MaximiseRevenue, RevenueTarget, SolveResult, solve
from cxp.pricing.examples import example_plans
from cxp.tools.bench.backtest import synthetic_cube

UNIT = Plan(
    plan_id="ppu-unit",
    version=1,
    name="Device sale + pay per kWh (unit)",
    currency="EUR",
    components=[
        {"kind": "one_time_sale", "id": "device", "price": "149.00"},
        {"kind": "usage", "id": "energy", "metric": "heating_kwh", "charge": {"model": "unit", "unit_price": "0.01"}},
    ],
)
HYBRID = Plan(
    plan_id="hybrid-solve",
    version=1,
    name="Device sale + base fee + 100 kWh + per kWh",
    currency="EUR",
    components=[
        {"kind": "one_time_sale", "id": "device", "price": "149.00"},
        {
            "kind": "hybrid",
            "id": "energy",
            "metric": "heating_kwh",
            "base_fee": "2.00",
            "included": 100,
            "overage": {"model": "unit", "unit_price": "0.01"},
        },
    ],
)
GOAL = MaximiseRevenue(max_shock_share=0.20, max_losers_share=0.50, max_p90_increase=0.30)


def _report(label: str, res: SolveResult, seconds: float) -> None:
    m = res.metrics
    params = ", ".join(f"{k} = {v}" for k, v in res.parameters.items())
    t = res.timings
    print(
        f"{label}: {seconds:.2f} s = search {t['search']:.2f} s ({res.evaluations} evaluations, "
        f"{1000 * t['search'] / max(res.evaluations, 1):.1f} ms each) + re-bill {t['rebill']:.2f} s "
        f"+ Decimal check {t['decimal_check']:.2f} s"
    )
    print(f"  {params}; revenue {m.revenue:,} vs baseline {res.baseline_revenue:,} ({m.revenue_change:+.3%})")
    p90 = "n/a" if m.p90_increase is None else f"{m.p90_increase:.1%}"
    print(f"  shock {m.shock_share:.1%}, losers {m.losers_share:.1%}, p90 increase {p90}; feasible {res.feasible}")
    n, ok = res.decimal_check
    print(f"  stop: {res.stop_reason}; Decimal re-bill of {n} accounts equal: {'yes' if ok else 'NO'}")


def main(argv: list[str] | None = None) -> None:
    """Run both solves and print their times and evaluations."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--periods", type=int, default=12)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    # Load SciPy's optimiser and statistics before timing: a first import is not solving time.
    import scipy.optimize
    import scipy.stats  # noqa: F401

    baseline = next(p for p in example_plans() if p.plan_id == "hw-connect")
    t0 = time.perf_counter()
    cube = synthetic_cube(accounts=args.accounts, periods=args.periods, seed=args.seed)
    built = time.perf_counter() - t0
    size = f"{args.accounts:,} accounts × {args.periods} months"
    print(f"pricing-solve: {size} (cube {built:.2f} s), baseline {baseline.key}")
    price = FreeParameter("energy", "charge.unit_price", Decimal("0.0001"), Decimal("0.2000"), step=Decimal("0.0001"))
    t0 = time.perf_counter()
    neutral = solve(cube=cube, baseline=baseline, plan=UNIT, parameters=[price], goal=RevenueTarget())
    _report("revenue-neutral unit price (brentq, ±0.5%)", neutral, time.perf_counter() - t0)
    params = [
        FreeParameter("energy", "base_fee", Decimal("0"), Decimal("5"), step=Decimal("0.01")),
        FreeParameter("energy", "overage.unit_price", Decimal("0"), Decimal("0.02"), step=Decimal("0.0001")),
    ]
    t0 = time.perf_counter()
    best = solve(cube=cube, baseline=baseline, plan=HYBRID, parameters=params, goal=GOAL)
    _report("2-parameter max revenue s.t. shock ≤ 20%, losers ≤ 50%, p90 ≤ 30%", best, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
