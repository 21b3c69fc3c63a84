"""History import throughput (`cxp bench import`): the same simulated history as JSON lines, CSV and Parquet through
`cxp import`'s path, and the same messages through the gateway's write path (validate each message, write_batch per
1,000 messages, no MQTT), into an emptied benchmark database each time. Prints events/s per format, the ratio to the
gateway's path, and the rollup refresh afterwards."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

BENCH_DB = "cxp_bench_import"


def _gateway_path(conn, *, settings, messages: list[bytes], batch: int = 1000) -> tuple[int, float]:
    """The gateway writer's work on the same messages: validate_message each, write_batch_isolating per batch."""
    from cxp.contract.validate import Accepted, validate_message
    from cxp.store.ingest import IngestMessage, TimeBounds, write_batch_isolating
    from cxp.store.registry import DeviceCache
    from cxp.tools.history import device_of

    devices = DeviceCache()
    devices.load(conn)
    prefix = settings.mqtt.topic_prefix
    stored = 0
    t0 = time.perf_counter()
    for lo in range(0, len(messages), batch):
        received = time.time()
        ready = []
        for payload in messages[lo : lo + batch]:
            topic = f"{prefix}/{device_of(payload)}/telemetry"
            verdict = validate_message(
                topic=topic,
                payload=payload,
                lookup_device=devices.lookup,
                max_payload_bytes=settings.gateway.max_payload_bytes,
                topic_prefix=prefix,
            )
            if type(verdict) is Accepted:
                ready.append(
                    IngestMessage(
                        topic,
                        verdict.device_id,
                        verdict.device_key,
                        verdict.canonical,
                        received,
                        verdict.activated_epoch,
                        payload,
                    )
                )
        result = write_batch_isolating(conn, messages=ready, bounds=TimeBounds())
        stored += result.events_stored + result.states_stored
    return stored, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    """Write the history files once, then time each format's import and the gateway's path."""
    from cxp.core.config import Settings
    from cxp.device_sim import build_fleet
    from cxp.importer import import_file
    from cxp.stack import start_stack
    from cxp.store.admin import truncate_data
    from cxp.store.db import connect
    from cxp.store.migrate import apply_migrations
    from cxp.store.rollups import refresh_all_pending
    from cxp.tools.fleet import bench_fleet_params, register_fleet
    from cxp.tools.history import fleet_messages, write_history

    parser = argparse.ArgumentParser(prog="cxp bench import", description=__doc__)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--formats", default="jsonl,csv,parquet")
    parser.add_argument("--chunk-events", type=int, default=5000)
    parser.add_argument("--no-gateway", action="store_true", help="skip the gateway write path run")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of every path (the best is reported)")
    args = parser.parse_args(argv)

    env = Settings()
    settings = env.model_copy(update={"db": env.db.model_copy(update={"name": BENCH_DB})})
    status = start_stack(settings)
    if not status.db_up:
        raise SystemExit(f"database not reachable: {status}")
    fleet = build_fleet(**bench_fleet_params(devices=args.devices, days=args.days, seed=args.seed))
    messages = list(fleet_messages(fleet))
    print(f"{args.devices:,} devices × {args.days} days: {len(messages):,} messages", flush=True)
    with tempfile.TemporaryDirectory(prefix="cxp-bench-import-") as tmp, connect(settings.db) as conn:
        apply_migrations(conn)
        files = {}
        for fmt in args.formats.split(","):
            path = Path(tmp) / f"history.{fmt}"
            rows = write_history(path, fmt, messages)
            files[fmt] = path
            print(f"  {fmt}: {rows:,} {'lines' if fmt == 'jsonl' else 'rows'}, {path.stat().st_size / 2**20:.1f} MiB")

        def fresh() -> None:
            truncate_data(conn)
            register_fleet(conn, fleet=fleet, lived_truth=False)
            conn.execute("ANALYZE")

        best: dict[str, float] = {}
        runs = [*files, *([] if args.no_gateway else ["gateway"])]
        for rep in range(args.repeat):  # alternated, so a noisy neighbour slows each path alike
            for what in runs:
                fresh()
                if what == "gateway":
                    stored, seconds = _gateway_path(conn, settings=settings, messages=messages)
                    dead = 0
                else:
                    result = import_file(
                        conn, settings=settings, path=files[what], chunk_events=args.chunk_events, refresh=False
                    )
                    stored, seconds, dead = result.events_stored, result.seconds, result.dead_lettered
                t0 = time.perf_counter()
                rollup = refresh_all_pending(conn)
                refresh_s = time.perf_counter() - t0
                rate = stored / seconds
                best[what] = max(best.get(what, 0.0), rate)
                print(
                    f"run {rep + 1} {what:8s} {stored:,} events in {seconds:.1f} s = {rate:,.0f} events/s"
                    f" (dead letters {dead}); then rollups of {rollup.device_days:,} device-days in"
                    f" {refresh_s:.1f} s",
                    flush=True,
                )
        print("RESULT best of runs, events/s:", ", ".join(f"{k} {v:,.0f}" for k, v in best.items()))
        if "gateway" in best:
            print(
                "RESULT import / gateway write path:",
                ", ".join(f"{k} {v / best['gateway']:.2f}×" for k, v in best.items() if k != "gateway"),
            )
        truncate_data(conn)
