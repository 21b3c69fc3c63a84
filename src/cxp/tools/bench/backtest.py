"""Backtest throughput: 7 models × N accounts × P months in one vectorised pass vs a per-account Decimal loop.

The vectorised side is the whole `pricing.backtest.backtest` (bills, revenue, quantiles, shock,
winners/losers, volatility, fairness, margin, experience link). The loop side bills each sampled
account month by month with `charges.bill_period` and computes the same per-account figures in
plain Python; its time is scaled up to N. Both must agree on the sample's revenue.

    .venv/bin/python -m cxp.tools.bench.backtest [--accounts 100000] [--periods 12] [--sample 1000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import date
from decimal import Decimal

import numpy as np

from cxp.pricing.core.backtest import CostModel, UsageCube, backtest
from cxp.pricing.core.charges import bill_period
from cxp.pricing.core.plans import Plan
from cxp.pricing.core.vectorised import FixedArray, to_fixed
from cxp.pricing.examples import example_plans
from cxp.tools.bench.pricing_core import FEATURES, synthetic_inputs


def synthetic_cube(*, accounts: int, periods: int, seed: int) -> UsageCube:
    """A cohort's usage like the rollups give it, with staggered starts, segments, devices and health."""
    raw = synthetic_inputs(accounts=accounts, periods=periods, seed=seed)
    rng = np.random.default_rng(seed + 1)
    # Every account active all year (the headline size); a twelfth start in the first month (device sale in-window).
    first = rng.integers(-11, 1, size=accounts)
    pidx = np.arange(periods)[None, :] - first[:, None]
    return UsageCube(
        account_ids=tuple(raw["account_ids"]),
        segments=tuple(np.where(rng.random(accounts) < 0.15, "smb", "consumer").tolist()),
        months=tuple(date(2025 + (m // 12), m % 12 + 1, 1) for m in range(periods)),
        usage={
            "heating_kwh": to_fixed(values=raw["heating_kwh"], decimals=3),
            "app_sessions": FixedArray(raw["app_sessions"].astype(np.int64), 0),
            **{f: FixedArray(raw[f].astype(np.int64), 0) for f in FEATURES},
        },
        outcomes={"optimised_cycles": FixedArray(raw["optimised_cycles"].astype(np.int64), 0)},
        uptime_pct=to_fixed(values=raw["uptime_pct"], decimals=3),
        active=pidx >= 0,
        period_index=pidx,
        devices=rng.integers(1, 4, size=accounts),
        health=np.clip(rng.normal(70, 15, size=(accounts, periods)), 0, 100),
    )


def loop_backtest(*, cube: UsageCube, plans: list[Plan], rows: list, n: int, theta: Decimal) -> dict[str, Decimal]:
    """The straightforward way: per account, per plan, per month a Decimal bill, then per-account figures."""
    base = plans[0].key
    revenue = {p.key: Decimal(0) for p in plans}
    shocks = {p.key: 0 for p in plans}
    winners = {p.key: 0 for p in plans}
    losers = {p.key: 0 for p in plans}
    cvs: dict[str, list[float]] = {p.key: [] for p in plans}
    fair: dict[str, list[float]] = {p.key: [] for p in plans}
    for i in range(n):
        acc = cube.account_ids[i]
        base_bills: list[Decimal] = []
        for plan in plans:
            bills = [
                bill_period(plan=plan, usage=u, outcomes=o, uptime_pct=up, period_index=k, account_id=acc).total
                for (u, o, up, k) in rows[i]
            ]
            if plan.key == base:
                base_bills = bills
            total = sum(bills, Decimal(0))
            revenue[plan.key] += total
            old_total = sum(base_bills, Decimal(0))
            winners[plan.key] += total < old_total
            losers[plan.key] += total > old_total
            shocks[plan.key] += sum(
                1
                for new, old in zip(bills, base_bills, strict=True)
                if (new > old * (1 + theta) if old > 0 else new > 0)
            )
            if len(bills) >= 2 and total > 0:
                fl = [float(b) for b in bills]
                cvs[plan.key].append(statistics.stdev(fl) / statistics.fmean(fl))
            kwh = sum((u["heating_kwh"] for (u, _, _, _) in rows[i]), Decimal(0))
            if kwh > 0:
                fair[plan.key].append(float(total / kwh))
    return revenue


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print both times and their ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--periods", type=int, default=12)
    ap.add_argument("--sample", type=int, default=1_000, help="accounts run through the per-account loop")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    plans = list(example_plans())
    theta = Decimal("0.2")
    cost = CostModel(per_unit=Decimal("0.002"), unit_metric="heating_kwh", per_device_month=Decimal("0.40"))
    cube = synthetic_cube(accounts=args.accounts, periods=args.periods, seed=args.seed)

    t0 = time.perf_counter()
    res = backtest(cube=cube, plans=plans, theta=theta, cost=cost, value_metric="heating_kwh")
    vec_s = time.perf_counter() - t0

    n = min(args.sample, args.accounts)
    act = cube.active_mask()
    # Inputs as Decimals per active account-month, prepared outside the timing: only the backtest is compared.
    rows = [
        [
            (
                {k: v.decimal_at((i, j)) for k, v in cube.usage.items()},
                {k: v.decimal_at((i, j)) for k, v in cube.outcomes.items()},
                cube.uptime_pct.decimal_at((i, j)),
                int(cube.period_index[i, j]),
            )
            for j in range(args.periods)
            if act[i, j]
        ]
        for i in range(n)
    ]
    t0 = time.perf_counter()
    loop_rev = loop_backtest(cube=cube, plans=plans, rows=rows, n=n, theta=theta)
    loop_s = time.perf_counter() - t0
    scaled = loop_s * args.accounts / n

    agree = all(loop_rev[p.key] == res.rule.from_quanta(int(res.bills[p.key][:n].sum())) for p in plans)
    cells = int(act.sum())
    print(
        f"backtest: {len(plans)} models × {args.accounts:,} accounts × {args.periods} months "
        f"({cells:,} active account-months, {len(plans) * cells:,} bills)"
    )
    print(f"vectorised backtest (bills + all figures): {vec_s:.2f} s")
    print(f"per-account Decimal loop on {n:,} accounts: {loop_s:.2f} s → scaled to {args.accounts:,}: {scaled:,.0f} s")
    print(f"speed-up: {scaled / vec_s:,.0f}×   loop == vectorised on the sample: {'yes' if agree else 'NO'}")
    base = res.summaries[res.baseline]
    for key in res.plan_keys:
        s = res.summaries[key]
        print(
            f"  {key:<18} revenue {s.revenue:>16,} {res.currency}  Δ {s.revenue - base.revenue:>+16,}  "
            f"shock {s.shock_rate:6.1%}"
        )


if __name__ == "__main__":
    main()
