"""Print what a simulated fleet's planted experience truth does, per seed: who churns and why, CSAT by class.

python -m cxp.tools.sim_truth --seeds 1 2 3 --devices 300 --days 45
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime

from cxp.device_sim import build_fleet, lived_ground_truth, touchpoint_truth
from cxp.device_sim.behaviour import iter_records
from cxp.device_sim.fleet import DAY_MS, to_ms


def seed_figures(
    *, seed: int, devices: int, days: int, start: datetime, error_prone: tuple[str, str] = ("brew-c3", "descale")
) -> dict[str, object]:
    """Churn by cause (per product), top churn drivers by class, mean transactional CSAT by class × last-use outcome."""
    fleet = build_fleet(seed=seed, devices=devices, start=start, days=days, error_prone=error_prone)
    classes = {(p.model, t): tt.kano for p in fleet.products.values() for t, tt in touchpoint_truth(p).items()}
    truth = lived_ground_truth(fleet)
    causes = Counter(t["churn_cause"] or "stays" for t in truth)
    by_product: dict[str, Counter[str]] = defaultdict(Counter)
    for t in truth:
        by_product[t["product"]][t["churn_cause"] or "stays"] += 1
    drivers = Counter()
    for t in truth:
        if t["churn_cause"] == "experience":
            top = next(iter(t["churn_drivers"]))
            drivers[classes.get((t["product"], top), top)] += 1
    csat: dict[tuple[str, str], list[int]] = defaultdict(list)
    end = to_ms(fleet.end)
    for d in fleet.devices:
        last: dict[str, tuple[int, bool]] = {}
        for ts, ev in iter_records(fleet=fleet, device=d, end_ms=end):
            if ev["kind"] == "usage":
                last[ev["touchpoint"]] = (ts // DAY_MS, not ev["success"])
            elif ev["kind"] == "feedback" and "csat" in ev and last.get(ev["touchpoint"], (None,))[0] == ts // DAY_MS:
                outcome = "failed" if last[ev["touchpoint"]][1] else "ok"
                csat[classes[d.product, ev["touchpoint"]], outcome].append(ev["csat"])
    return {
        "churn": dict(causes),
        "churn_by_product": {p: dict(c) for p, c in sorted(by_product.items())},
        "experience_drivers": dict(drivers),
        "csat": {f"{k[0]}/{k[1]}": (len(v), round(statistics.fmean(v), 2)) for k, v in sorted(csat.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--devices", type=int, default=300)
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--error-prone", default="brew-c3/descale", help="PRODUCT/TOUCHPOINT planted to fail")
    args = parser.parse_args()
    error_prone = tuple(args.error_prone.split("/", 1))
    start = datetime(2025, 3, 3, tzinfo=UTC)
    for seed in args.seeds:
        figures = seed_figures(seed=seed, devices=args.devices, days=args.days, start=start, error_prone=error_prone)
        print(f"seed {seed}: {args.devices} devices × {args.days} days (error_prone {args.error_prone})")
        for key, value in figures.items():
            print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
