"""Generation + serialisation throughput of the simulator, broker-free: `python -m cxp.tools.bench.simulator`."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from cxp.device_sim.fleet import build_fleet
from cxp.device_sim.runner import plan_messages


def measure(
    *, devices: int, days: int, seed: int = 1, validate: bool = False, max_events_per_message: int = 50
) -> dict[str, float]:
    """Build a fleet and plan all its messages; returns counts, seconds and events per second."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    t0, c0 = time.perf_counter(), time.process_time()
    fleet = build_fleet(seed=seed, devices=devices, start=start, days=days)
    fleet_s = time.perf_counter() - t0
    t1, c1 = time.perf_counter(), time.process_time()
    events = messages = size = 0
    for msg in plan_messages(fleet=fleet, validate=validate, max_events_per_message=max_events_per_message):
        events += msg.events
        messages += 1
        size += len(msg.payload)
    wall, cpu = time.perf_counter() - t1, time.process_time() - c1
    return {
        "devices": devices,
        "days": days,
        "events": events,
        "messages": messages,
        "bytes": size,
        "fleet_s": round(fleet_s, 3),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "events_per_s_wall": round(events / wall),
        "events_per_s_cpu": round(events / cpu),
        "messages_per_s_wall": round(messages / wall),
        "total_cpu_s": round(time.process_time() - c0, 3),
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--validate", action="store_true", help="validate every batch with the contract")
    parser.add_argument("--max-events-per-message", type=int, default=50)
    args = parser.parse_args(argv)
    result = measure(
        devices=args.devices,
        days=args.days,
        seed=args.seed,
        validate=args.validate,
        max_events_per_message=args.max_events_per_message,
    )
    for key, value in result.items():
        print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
