"""Throughput of the pricing core: vectorised integer path vs a plain per-account Decimal loop.

Bills the seven example plans for N accounts × P months on synthetic usage with
`vectorised.bill_arrays`, and the same plans with `charges.bill_period` one account-period at
a time on a sample of accounts, scaled up to N. Checks both give the same totals on the sample.

    .venv/bin/python -m cxp.tools.bench.pricing_core [--accounts 100000] [--periods 12] [--sample 1000]
"""

from __future__ import annotations

import argparse
import time
from decimal import Decimal
from typing import Any

import numpy as np

from cxp.pricing.core.charges import bill_period
from cxp.pricing.core.vectorised import bill_arrays, to_fixed
from cxp.pricing.examples import example_plans

FEATURES = ("set_schedule", "voice_command", "demand_response")


def synthetic_inputs(*, accounts: int, periods: int, seed: int) -> dict[str, Any]:
    """Raw usage like the rollups would give: float kWh and uptime, integer counts."""
    rng = np.random.default_rng(seed)
    shape = (accounts, periods)
    level = rng.lognormal(5.3, 0.8, size=(accounts, 1))  # per-account level, monthly noise around it
    return {
        "heating_kwh": level * rng.lognormal(0.0, 0.3, size=shape) * (rng.random(shape) > 0.05),
        "app_sessions": rng.poisson(25, size=shape),
        **{f: rng.poisson(0.4, size=shape) for f in FEATURES},
        "optimised_cycles": rng.poisson(90, size=shape),
        "uptime_pct": np.minimum(100.0, 100.0 - rng.exponential(0.5, size=shape)),
        "account_ids": [f"acct-{i:06d}" for i in range(accounts)],
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print both times and their ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--periods", type=int, default=12)
    ap.add_argument("--sample", type=int, default=1_000, help="accounts billed by the Decimal loop")
    ap.add_argument("--repeat", type=int, default=3, help="vectorised runs; the best is reported")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    plans = example_plans()
    raw = synthetic_inputs(accounts=args.accounts, periods=args.periods, seed=args.seed)
    ids = raw["account_ids"]

    t0 = time.perf_counter()
    kwh = to_fixed(values=raw["heating_kwh"], decimals=3)
    uptime = to_fixed(values=raw["uptime_pct"], decimals=3)
    convert_s = time.perf_counter() - t0
    usage: dict[str, Any] = {"heating_kwh": kwh, "app_sessions": raw["app_sessions"], **{f: raw[f] for f in FEATURES}}
    outcomes = {"optimised_cycles": raw["optimised_cycles"]}

    best = float("inf")
    per_plan: dict[str, float] = {}
    results = {}
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        for plan in plans:
            t1 = time.perf_counter()
            results[plan.key] = bill_arrays(
                plan=plan, usage=usage, outcomes=outcomes, uptime_pct=uptime, account_ids=ids
            )
            per_plan[plan.key] = min(per_plan.get(plan.key, float("inf")), time.perf_counter() - t1)
        best = min(best, time.perf_counter() - t0)

    # The Decimal loop's inputs are prepared outside the timing: only billing is compared.
    n = min(args.sample, args.accounts)
    rows = [
        [
            (
                {
                    "heating_kwh": kwh.decimal_at((i, j)),
                    "app_sessions": Decimal(int(raw["app_sessions"][i, j])),
                    **{f: Decimal(int(raw[f][i, j])) for f in FEATURES},
                },
                {"optimised_cycles": Decimal(int(raw["optimised_cycles"][i, j]))},
                uptime.decimal_at((i, j)),
            )
            for j in range(args.periods)
        ]
        for i in range(n)
    ]
    t0 = time.perf_counter()
    scalar_totals = {}
    for plan in plans:
        totals = scalar_totals[plan.key] = []
        for i in range(n):
            for j, (u, o, up) in enumerate(rows[i]):
                totals.append(
                    bill_period(plan=plan, usage=u, outcomes=o, uptime_pct=up, period_index=j, account_id=ids[i]).total
                )
    loop_s = time.perf_counter() - t0

    mismatches = 0
    for plan in plans:
        rule = results[plan.key].rule
        vec = results[plan.key].total[:n].reshape(-1).tolist()
        mismatches += sum(rule.to_quanta(s) != v for s, v in zip(scalar_totals[plan.key], vec, strict=True))

    cells = args.accounts * args.periods
    scaled = loop_s * args.accounts / n
    print(f"{len(plans)} models × {args.accounts:,} accounts × {args.periods} months = {len(plans) * cells:,} bills")
    print(f"float → fixed-point conversion (kWh, uptime): {convert_s:.3f} s")
    print(
        f"vectorised, all models (best of {args.repeat}): {best:.3f} s "
        f"({len(plans) * cells / best / 1e6:.1f} M bills/s)"
    )
    for key, s in per_plan.items():
        revenue = results[key].rule.from_quanta(int(results[key].total.sum()))
        print(f"  {key:<18} {s * 1000:8.1f} ms   revenue {revenue:>16,} EUR")
    print(
        f"Decimal loop on {n:,} accounts: {loop_s:.3f} s ({len(plans) * n * args.periods / loop_s:,.0f} bills/s); "
        f"scaled to {args.accounts:,}: {scaled:.1f} s"
    )
    print(
        f"speed-up: {scaled / best:,.0f}×   vectorised == Decimal on the sample: "
        f"{'yes' if mismatches == 0 else f'NO ({mismatches} mismatches)'}"
    )


if __name__ == "__main__":
    main()
