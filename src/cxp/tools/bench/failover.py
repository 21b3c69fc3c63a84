"""Failover of the HA TimescaleDB under live ingest: the Patroni primary is SIGKILLed mid-stream.

A gateway (writers on the multi-host conninfo, target_session_attrs=read-write) ingests a stream published at a
steady rate; after `--kill-after` seconds the primary member (its Patroni and its postmaster) is SIGKILLed.
Measured: the time without a writable primary (a probe connects with target_session_attrs=read-write every
50 ms), the time until the gateway's 1-s ingest rate is back to 90 % of its rate before the kill, and events
lost / duplicated (published vs stored, exactly). The killed member is started again at the end (it rejoins as a
standby). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import psycopg

from cxp.core.config import GatewaySettings, MqttSettings, Settings
from cxp.stack import start_stack
from cxp.stack.ha import kill_member, member_status, primary_port, start_ha, start_member
from cxp.store.db import connect
from cxp.store.migrate import apply_migrations
from cxp.tools.bench.ingest import GatewayRun, _forget_session, _generate, _log, _publish

BENCH_DB = "cxp_bench_ha"


def _progress(log_path: Path) -> int | None:
    """Events handled (stored + duplicates) per the gateway's latest stats line."""
    text = log_path.read_text(errors="replace")
    at = text.rfind("stats {")
    if at < 0:
        return None
    end = text.find("\n", at)
    if end < 0:
        return None
    stats = json.loads(text[at + 6 : end])
    return stats["events_stored"] + stats["states_stored"] + stats["duplicates"]


class WriteProbe(threading.Thread):
    """Every `interval_s`: can a writer (read-write session) commit? Records each outcome with its time."""

    def __init__(self, settings: Settings, interval_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.dsn = settings.db.dsn
        self.interval_s = interval_s
        self.samples: list[tuple[float, bool]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        conn = None
        while not self.stopping.wait(self.interval_s):
            ok = False
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=1)
                conn.execute("SELECT txid_current()")  # a write transaction id: only a primary hands one out
                ok = True
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None
            self.samples.append((time.monotonic(), ok))


def run(*, devices: int, days: int, seed: int, rate: float, seconds: float, kill_after: float) -> dict:
    """Publish `rate` msgs/s for `seconds` through one gateway; kill the primary at `kill_after`; the figures."""
    env = Settings()
    base = env.model_copy(update={"db": env.db.model_copy(update={"name": BENCH_DB})})
    start_stack(base)
    start_ha(base)
    ha = base.model_copy(
        update={
            "db": base.db.model_copy(update={"members": base.stack.ha.members}),
            "mqtt": MqttSettings(**{**base.mqtt.model_dump(), "topic_prefix": "bench-ha"}),
            "gateway": GatewaySettings(
                **{
                    **base.gateway.model_dump(),
                    "client_id": f"bench-ha-{os.getpid()}",
                    # A group of its own: an earlier run's session in the same group would be dealt half the stream.
                    "share_group": f"bench-ha-{os.getpid()}",
                    "stats_interval_s": 0.25,
                    "retry_max_backoff_s": 1.0,
                }
            ),
        }
    )
    with connect(ha.db) as conn:
        apply_migrations(conn)
    n = int(rate * seconds)
    _log(f"generating {n:,} messages ({devices:,} devices × {days} days)")
    payloads = _generate(ha, devices=devices, days=days, seed=seed, count=n)
    events = sum(p.events for p in payloads)
    workdir = base.stack.dir / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    gw = GatewayRun(ha, workdir, "failover")
    probe = WriteProbe(ha)
    probe.start()
    progress: list[tuple[float, int]] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.25):
            value = _progress(gw.log_path)
            if value is not None:
                progress.append((time.monotonic(), value))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    victim = next(m for m in member_status(ha) if m.role in ("primary", "master"))
    killed_at: list[float] = []

    def killer() -> None:
        time.sleep(kill_after)
        killed_at.append(time.monotonic())
        kill_member(ha, victim.name)
        _log(f"killed the primary {victim.name} (port {victim.pg_port})")

    threading.Thread(target=killer, daemon=True).start()
    _log(f"publishing {n:,} messages at {rate:,.0f}/s; the primary dies after {kill_after:.0f} s")
    _publish(ha, ha.mqtt.topic_prefix, payloads, rate=rate, max_inflight=1000)
    deadline = time.monotonic() + 300
    while (_progress(gw.log_path) or 0) < events and time.monotonic() < deadline:
        time.sleep(0.25)
    time.sleep(1.0)
    stats = gw.stop()
    _forget_session(ha, ha.gateway.client_id)
    sampling.set()
    probe.stopping.set()
    probe.join(5)
    new_primary = primary_port(ha)
    with connect(ha.db) as conn:
        stored, distinct = conn.execute(
            "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM device_state),"
            " (SELECT count(*) FROM (SELECT DISTINCT device_key, seq FROM events) e)"
            " + (SELECT count(*) FROM (SELECT DISTINCT device_key, seq FROM device_state)"
            " s)"
        ).fetchone()
    start_member(ha, victim.name)
    return {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "stream": {"messages": n, "events": events, "rate_msgs_per_s": rate, "kill_after_s": kill_after},
        "killed": victim.name,
        "new_primary_port": new_primary,
        **_figures(killed_at[0], probe.samples, progress),
        "events_stored": stored,
        "events_lost": events - distinct,
        "events_duplicated": stored - distinct,
        "gateway_db_retries": stats["db_retries"],
        "gateway_duplicates_seen": stats["duplicates"],
    }


def _figures(killed: float, probes: list[tuple[float, bool]], progress: list[tuple[float, int]]) -> dict:
    """Time without a writable primary; ingest rate before the kill; time until it is back to 90 % of it."""
    back = next((t for t, ok in probes if t > killed and ok), None)
    first_fail = next((t for t, ok in probes if t >= killed - 0.1 and not ok), None)

    def rate_at(i: int) -> float:
        (t0, v0), (t1, v1) = progress[i - 4], progress[i]  # ~1 s window
        return (v1 - v0) / (t1 - t0) if t1 > t0 else 0.0

    before = [rate_at(i) for i in range(4, len(progress)) if killed - 5 < progress[i][0] < killed]
    steady = sorted(before)[len(before) // 2] if before else None
    recovered = None
    if steady:
        recovered = next(
            (
                progress[i][0]
                for i in range(4, len(progress))
                if progress[i][0] > (back or killed) and rate_at(i) >= 0.9 * steady
            ),
            None,
        )
    return {
        "no_writable_primary_s": round(back - killed, 2) if back else None,
        "first_failed_write_probe_after_kill_s": round(first_fail - killed, 2) if first_fail else None,
        "ingest_events_per_s_before": round(steady) if steady else None,
        "ingest_back_to_90pct_after_kill_s": round(recovered - killed, 2) if recovered else None,
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry (`cxp bench failover`)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rate", type=float, default=500.0, help="messages per second published")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the stream lasts")
    ap.add_argument("--kill-after", type=float, default=15.0, help="seconds into the stream the primary dies")
    args = ap.parse_args(argv)
    print(
        json.dumps(
            run(
                devices=args.devices,
                days=args.days,
                seed=args.seed,
                rate=args.rate,
                seconds=args.seconds,
                kill_after=args.kill_after,
            ),
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
