"""Benchmark: what keeping the precomputation current costs (`cxp bench refresh`, issue 15).

A simulated fleet whose days end yesterday is loaded broker-free (write_batch) up to the start of its last two
days. Then, through the stack's broker and `cxp gateway` (its own periodic refresh held off, so each phase
measures one thing):
  1. alone: the gateway drains the next-to-last day's messages → events/s;
     refresh: the rollups and answer contexts of exactly the device-days that day dirtied, timed (target ≤ 30 s
     for a day of 10,000 devices);
  2. beside a refresh: the gateway drains the last day's messages while another connection re-marks a whole
     loaded day of the fleet dirty and catches it up as the gateway's refresh does (`refresh_paced`: batches of
     CXP_GATEWAY__ROLLUP_BATCH_DEVICE_DAYS, busy at most --busy-share of the time), over and over → events/s and
     the ratio to phase 1 (target ≥ 0.8), and how long each catch-up took.
Prints JSON (`cxp bench analytics` prints the same figures as lines with issue 15's others).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

from cxp.core.config import GatewaySettings, MqttSettings, Settings
from cxp.tools.bench.ingest import Payload, _drain, _log

BENCH_DB = "cxp_bench_refresh"


class RefreshLoop(threading.Thread):
    """Re-mark one day of every device dirty and refresh it, pass after pass, until stopped."""

    def __init__(self, settings: Settings, day: datetime, busy_share: float) -> None:
        super().__init__(name="refresh-loop", daemon=True)
        self.settings, self.day, self.busy_share = settings, day.date(), busy_share
        self.passes: list[tuple[int, float]] = []  # (device-days, seconds) per finished pass
        self.started = threading.Event()
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from cxp.store.db import connect
        from cxp.store.rollups import refresh_paced

        try:
            with connect(self.settings.db) as conn:
                while not self.stopping.is_set():
                    conn.execute("INSERT INTO rollup_dirty (device_key, day)"
                                 " SELECT device_key, day FROM rollup_daily WHERE day = %s", (self.day,))
                    self.started.set()
                    t0 = time.perf_counter()
                    done = refresh_paced(conn, batch_device_days=self.settings.gateway.rollup_batch_device_days,
                                         max_busy_share=self.busy_share, stopping=self.stopping)
                    self.passes.append((done.device_days, time.perf_counter() - t0))
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
            self.error = exc
            self.started.set()

    def stop(self) -> list[tuple[int, float]]:
        """Finish the current pass and return every pass."""
        self.stopping.set()
        self.join()
        if self.error is not None:
            raise self.error
        return self.passes


def _day_payloads(fleet, start: datetime) -> list[Payload]:
    from cxp.device_sim import plan_messages

    return [Payload(m.device_id, m.payload, m.events)
            for m in plan_messages(fleet=fleet, start=start, end=start + timedelta(days=1))]


def run(*, devices: int, days: int, seed: int, workers: int, busy_share: float | None = None) -> dict:
    """Load the fleet, run both phases and the timed refresh; return the figures."""
    from cxp.device_sim import build_fleet
    from cxp.stack import start_stack
    from cxp.store.admin import truncate_data
    from cxp.store.db import connect
    from cxp.store.migrate import apply_migrations
    from cxp.store.rollups import refresh_all_pending
    from cxp.tools.fleet import bench_fleet_params, load_fleet

    if days < 3:
        raise SystemExit("--days must be at least 3: loaded days, then one day per phase")
    env = Settings()  # ports from the environment; only the database name is the bench's
    base = env.model_copy(update={"db": env.db.model_copy(update={"name": BENCH_DB})})
    start_stack(base)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = today - timedelta(days=days)
    alone_day, beside_day = today - timedelta(days=2), today - timedelta(days=1)
    params = {**bench_fleet_params(devices=devices, days=days, seed=seed), "start": first}
    gw = base.model_copy(update={
        "mqtt": MqttSettings(**{**base.mqtt.model_dump(), "topic_prefix": "bench-refresh"}),
        "gateway": GatewaySettings(**{**base.gateway.model_dump(), "client_id": f"bench-refresh-{os.getpid()}",
                                      "rollup_interval_s": 1e6}),
    })
    workdir = base.stack.dir / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                    "fleet": {"devices": devices, "days": days, "seed": seed}}
    with connect(base.db) as conn:
        apply_migrations(conn)
        truncate_data(conn)
        _log(f"loading {devices:,} devices × {days - 2} days broker-free")
        report = load_fleet(conn, fleet_params=params, workers=workers, until=alone_day, progress=_log)
        conn.execute("ANALYZE")
        result["loaded"] = {"events": report.events_stored, "heartbeats": report.states_stored,
                            "seconds": round(report.load_s + report.rollup_s, 1)}
        fleet = build_fleet(**params)
        alone, beside = _day_payloads(fleet, alone_day), _day_payloads(fleet, beside_day)
        _log(f"phase 1: the gateway drains {alone_day.date()} alone ({len(alone):,} messages)")
        result["gateway_alone"] = _drain(gw, conn, alone, workdir, "refresh-alone")
        _log(f"  {result['gateway_alone']}")
        pending = conn.execute("SELECT count(*) FROM (SELECT DISTINCT device_key, day FROM rollup_dirty) d"
                               ).fetchone()[0]
        t0 = time.perf_counter()
        done = refresh_all_pending(conn)
        seconds = time.perf_counter() - t0
        result["refresh_one_day"] = {"device_days": done.device_days, "pending_before": pending,
                                     "seconds": round(seconds, 2),
                                     "ms_per_device_day": round(seconds * 1000 / max(done.device_days, 1), 3)}
        _log(f"  refresh of that day: {result['refresh_one_day']}")
        share = busy_share if busy_share is not None else base.gateway.rollup_max_busy_share
        loop = RefreshLoop(base, alone_day - timedelta(days=1), share)
        loop.start()
        loop.started.wait()
        _log(f"phase 2: the gateway drains {beside_day.date()} ({len(beside):,} messages) beside a refresh loop")
        try:
            result["gateway_beside_refresh"] = _drain(gw, conn, beside, workdir, "refresh-beside")
        finally:
            passes = loop.stop()
        seconds_per_pass = sorted(s for _, s in passes)
        result["refresh_loop"] = {"busy_share": share, "passes": len(passes),
                                  "device_days_per_pass": passes[0][0] if passes else 0,
                                  "catch_up_s_median": round(statistics.median(seconds_per_pass), 2)
                                  if passes else None,
                                  "busy_s": round(sum(seconds_per_pass), 1)}
        _log(f"  {result['gateway_beside_refresh']}; refresh loop {result['refresh_loop']}")
        result["ratio_beside_vs_alone"] = round(result["gateway_beside_refresh"]["events_per_s"]
                                                / result["gateway_alone"]["events_per_s"], 3)
    return result


def main(argv: list[str] | None = None) -> None:
    """Command-line entry (`cxp bench refresh`)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=4, help="simulated days ending yesterday (≥ 3)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--workers", type=int, default=2, help="simulator processes feeding the loader")
    ap.add_argument("--busy-share", type=float, default=None,
                    help="the refresh loop's busy share (default: the gateway's setting; 1: back to back)")
    args = ap.parse_args(argv)
    print(json.dumps(run(devices=args.devices, days=args.days, seed=args.seed, workers=args.workers,
                         busy_share=args.busy_share), indent=2))


if __name__ == "__main__":
    main()
