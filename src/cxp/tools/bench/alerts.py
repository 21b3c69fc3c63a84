"""Alert evaluation at fleet scale and event → webhook latency, `cxp bench alerts`.

Part 1 (database only): registers `--devices` devices (default 10,000) of one product with 4 touchpoints,
writes 26 hours of hourly rollups for them (20% of the devices failing one touchpoint this hour) and a heartbeat per
device (1% silent for 5 h), imports `--rules` rules (default 100: 30 silence of which 5 as a share of the product,
40 touchpoint with threshold and baseline test, 10 pipeline, 5 each of incident, health, churn and voice) and times
`evaluate()` — the pass the gateway runs after each rollup refresh: the first pass (opens the alerts, every cadence
rule due), steady passes (nothing new, cadence rules not due), and a pass after a refresh's worth of new
heartbeats (incremental last-seen). Part 1b: the cost of the cadence rules when due, on a simulated fleet of
`--devices` × `--cadence-days` days loaded once into its own database (`cxp_bench_alerts_cadence`).
Part 2 (the whole pipeline): starts `cxp gateway` (rollup interval `--rollup-interval` s) and a real loopback
webhook receiver; each of `--trials` trials publishes 25 failing uses of a new touchpoint over MQTT and times
publish → signed webhook received. Bench rules and alerts are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cxp.alerts import repository
from cxp.alerts.core.rules import parse_ruleset
from cxp.alerts.evaluator import evaluate
from cxp.alerts.repository import import_rules
from cxp.core.config import PROJECT_ROOT, Settings, get_settings, settings_env
from cxp.device_sim import MqttPublisher
from cxp.identity.broker import LOADER_ACCOUNT, service_secret
from cxp.stack import start_stack
from cxp.store.db import connect
from cxp.store.migrate import apply_migrations
from cxp.store.registry import DeviceRow, ProductRow, TouchpointRow, upsert_devices, upsert_products
from cxp.tools.bench.ingest import _forget_session as forget_session

PRODUCT = "bench-alerts"
TOUCHPOINTS = ("brew", "descale", "app_pairing", "order")


def _setup(conn, devices: int, now: datetime) -> None:
    apply_migrations(conn)
    _cleanup(conn)
    upsert_products(
        conn,
        products=[
            ProductRow(
                PRODUCT,
                "Bench alerts",
                3600,
                None,
                [TouchpointRow(t, "post_purchase", "brand", False, None, None, None) for t in TOUCHPOINTS],
            )
        ],
    )
    upsert_devices(
        conn,
        devices=(DeviceRow(f"ba-{i:06d}", PRODUCT, None, datetime(2026, 1, 1, tzinfo=UTC)) for i in range(devices)),
    )
    hour = now.replace(minute=0, second=0, microsecond=0)
    conn.execute(
        "DELETE FROM rollup_hourly r USING devices d WHERE d.device_key = r.device_key AND d.product_id = %s",
        (PRODUCT,),
    )
    conn.execute(
        "INSERT INTO rollup_hourly (device_key, bucket, touchpoint, usage_count, success_count, error_count,"
        " duration_sum, quantity_sum, latency_count, latency_sum, latency_sumsq, latency_max)"
        " SELECT d.device_key, %(hour)s - make_interval(hours => h), t, 3,"
        "   CASE WHEN t = 'brew' AND d.device_key %% 5 = 0 AND h = 0 THEN 0 ELSE 3 END, 0, 30, 3, 3, 300, 30000, 100"
        " FROM devices d, generate_series(0, 25) h, unnest(%(tps)s::text[]) t WHERE d.product_id = %(p)s",
        {"hour": hour, "tps": list(TOUCHPOINTS), "p": PRODUCT},
    )
    conn.execute(
        "DELETE FROM device_state s USING devices d WHERE d.device_key = s.device_key AND d.product_id = %s", (PRODUCT,)
    )
    conn.execute(
        "DELETE FROM alert_device_seen s USING devices d WHERE d.device_key = s.device_key AND d.product_id = %s",
        (PRODUCT,),
    )
    conn.execute(
        "INSERT INTO device_state (device_key, ts, seq) SELECT device_key,"
        " CASE WHEN device_key %% 100 = 1 THEN %(old)s ELSE %(recent)s END, 1 FROM devices WHERE product_id = %(p)s"
        " ON CONFLICT DO NOTHING",
        {"old": now - timedelta(hours=5), "recent": now - timedelta(minutes=10), "p": PRODUCT},
    )


PIPELINE = (
    {"metric": "dead_letters", "max_value": 100},
    {"metric": "rollup_backlog", "max_value": 100_000},
    {"metric": "ingest_lag_ms", "max_value": 5000},
    {"metric": "gateway_silent_s", "max_value": 300},
)
CADENCE = {
    16: {"kind": "incident"},
    17: {"kind": "health", "max_weekly_drop": 5},
    18: {"kind": "churn", "top_n": 20},
    19: {"kind": "voice", "period_days": 7},
}


def _rules(count: int, channel: dict | None = None) -> list:
    """The mix per 20 rules: 6 silence (one as a share of the product), 8 touchpoint, 2 pipeline, and one each of
    incident, health, churn and voice (judged by analytics on their cadence)."""
    rules = []
    for i in range(count):
        kind = i % 20
        base = {"name": f"bench-{i:03d}", "scope": {"product_id": PRODUCT}, "hold_down_s": 300}
        if kind < 6:
            base["params"] = {"kind": "silence", "k": 2 + kind % 3}
            if kind == 5:
                base["params"]["min_share"] = 0.005
        elif kind < 14:
            tp = TOUCHPOINTS[i % len(TOUCHPOINTS)]
            base["scope"]["touchpoint"] = tp
            base["params"] = {
                "kind": "touchpoint",
                "min_n": 20,
                "max_failure_rate": 0.05 + 0.01 * (kind - 5),
                "baseline_h": 24,
            }
        elif kind < 16:
            base["params"] = {"kind": "pipeline", **PIPELINE[(i // 20 * 2 + kind - 14) % len(PIPELINE)]}
        else:
            base["params"] = CADENCE[kind]
        rules.append(base)
    if channel:
        rules.append(
            {
                "name": "bench-e2e",
                "hold_down_s": 3600,
                "scope": {"product_id": f"{PRODUCT}-e2e"},
                "params": {"kind": "touchpoint", "min_n": 20, "max_failure_rate": 0.5},
                "channels": [channel],
            }
        )
    return list(parse_ruleset(json.dumps({"rules": rules})).rules)


def _cleanup(conn) -> None:
    conn.execute("DELETE FROM alerts WHERE rule_name LIKE 'bench-%%'")
    conn.execute("DELETE FROM alert_rules WHERE name LIKE 'bench-%%'")
    conn.execute("DELETE FROM alert_eval_state WHERE key LIKE 'rule:bench-%%'")  # the cadence rules' last runs


def _ms(seconds: list[float]) -> str:
    s = sorted(seconds)
    return f"median {statistics.median(s) * 1000:.0f} ms (min {s[0] * 1000:.0f}, max {s[-1] * 1000:.0f})"


def evaluation_cost(settings: Settings, *, devices: int, rules: int, repeat: int) -> None:
    """Part 1: evaluation cost per pass at fleet scale."""
    now = datetime.now(UTC)
    with connect(settings.db) as conn:
        t0 = time.perf_counter()
        _setup(conn, devices, now)
        print(
            f"{devices:,} devices with 26 h of hourly rollups × {len(TOUCHPOINTS)} touchpoints set up in"
            f" {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        import_rules(conn, rules=_rules(rules), by="bench")
        first = evaluate(conn, now=now)  # both parts: every rule evaluated, the cadence ones due the first time
        # What the gateway runs after each refresh: the fast rules (the cadence rules have a thread of their own).
        steady = [evaluate(conn, now=now + timedelta(seconds=1 + i), kinds="fast") for i in range(repeat)]
        incremental = []
        for i in range(repeat):
            conn.execute(
                "INSERT INTO device_state (device_key, ts, seq) SELECT device_key, %s, %s FROM devices"
                " WHERE product_id = %s AND device_key %% 20 = %s",
                (now + timedelta(seconds=i), 10 + i, PRODUCT, i % 20),
            )
            incremental.append(evaluate(conn, now=now + timedelta(seconds=100 + i), kinds="fast"))
        cadence = [evaluate(conn, now=now + timedelta(seconds=200 + i), kinds="cadence") for i in range(repeat)]
        print(
            f"RESULT alerts evaluation, {devices:,} devices × {rules} rules: first pass (opens"
            f" {first.opened:,} alerts, all {first.rules} rules due) {first.seconds * 1000:.0f} ms; steady pass of the"
            f" {steady[-1].rules} fast rules (nothing new) {_ms([r.seconds for r in steady])}; pass after a refresh"
            f" of {devices // 20:,} devices' new heartbeats {_ms([r.seconds for r in incremental])}; cadence thread's"
            f" pass, none due ({cadence[-1].deferred} deferred) {_ms([r.seconds for r in cadence])};"
            f" live alerts {steady[-1].firing:,}",
            flush=True,
        )


CADENCE_DB = "cxp_bench_alerts_cadence"


def cadence_cost(settings: Settings, *, devices: int, days: int, seed: int, workers: int) -> None:
    """Part 1b: what a pass costs when the cadence rules are due, on a simulated fleet of `devices` × `days` (loaded
    once into its own database): each kind's analytics call over the whole fleet, then one pass with all four due
    and one with none due."""
    from cxp.alerts import analytic
    from cxp.tools.fleet import bench_fleet_params, ensure_fleet

    sim = settings.model_copy(update={"db": settings.db.model_copy(update={"name": CADENCE_DB})})
    start_stack(sim)
    params = bench_fleet_params(devices=devices, days=days, seed=seed)
    now = params["start"] + timedelta(days=days, minutes=30)  # just after the last simulated day
    with connect(sim.db) as conn:
        apply_migrations(conn)
        ensure_fleet(conn, params=params, workers=workers, reload=False, out=lambda line: print(line, flush=True))
        conn.execute("DELETE FROM alerts; DELETE FROM alert_rules; DELETE FROM alert_eval_state")
        rules = [{"name": f"bench-cadence-{p['kind']}", "params": p} for p in CADENCE.values()]
        import_rules(conn, rules=list(parse_ruleset(json.dumps({"rules": rules})).rules), by="bench")
        costs = []
        for rule in repository.current_rules(conn):
            t0 = time.perf_counter()
            firing = analytic.CONDITIONS[rule.kind](conn, rule, rule.params, now, {})
            costs.append(f"{rule.kind} {time.perf_counter() - t0:.2f} s ({len(firing)} firing)")
        due = evaluate(conn, now=now, kinds="cadence")  # the cadence thread's pass
        not_due = evaluate(conn, now=now + timedelta(minutes=1), kinds="cadence")
        print(
            f"RESULT alerts cadence rules, {devices:,} devices × {days} days (whole fleet, one rule each): "
            + ", ".join(costs)
            + f"; pass with all four due {due.seconds:.2f} s, pass with none due"
            f" {not_due.seconds * 1000:.0f} ms ({not_due.deferred} deferred)",
            flush=True,
        )


class _Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if body["type"] == "alert.opened" and self.headers.get("X-Cxp-Signature"):
                    server.arrived.setdefault(body["alert"]["entity"], time.monotonic())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def event_to_webhook(settings: Settings, *, trials: int, rollup_interval: float) -> None:
    """Part 2: publish → gateway → rollup refresh → evaluation → signed webhook, per trial."""
    receiver = _Receiver()
    product = f"{PRODUCT}-e2e"
    with tempfile.TemporaryDirectory() as tmp, connect(settings.db) as conn:
        (Path(tmp) / "bench.secret").write_text("bench-signing-secret-" + os.urandom(16).hex())
        upsert_products(conn, products=[ProductRow(product, "Bench alerts e2e", 3600, None, [])])
        upsert_devices(conn, devices=[DeviceRow("ba-e2e-0", product, None, datetime(2026, 1, 1, tzinfo=UTC))])
        conn.execute(
            "DELETE FROM events e USING devices d WHERE d.device_key = e.device_key AND d.device_id = %s", ("ba-e2e-0",)
        )
        conn.execute(
            "DELETE FROM rollup_hourly r USING devices d WHERE d.device_key = r.device_key AND d.device_id = %s",
            ("ba-e2e-0",),
        )
        import_rules(
            conn,
            rules=_rules(0, {"url": f"http://127.0.0.1:{receiver.server_port}/hook", "secret_ref": "bench"}),
            by="bench",
        )
        gw_settings = settings.model_copy(
            update={
                "gateway": settings.gateway.model_copy(
                    update={"rollup_interval_s": rollup_interval, "client_id": f"bench-alerts-{os.getpid()}"}
                ),
                "alerts": settings.alerts.model_copy(update={"secrets_dir": Path(tmp)}),
            }
        )
        log_path = Path(tmp) / "gw.log"
        with open(log_path, "wb") as log:
            gw = subprocess.Popen(
                [sys.executable, "-m", "cxp.cli.main", "gateway"],
                cwd=PROJECT_ROOT,
                env=settings_env(gw_settings, dict(os.environ)),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        pub = None
        try:
            deadline = time.monotonic() + 60
            while "connected to broker" not in log_path.read_text(errors="replace"):
                if gw.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"gateway failed to start:\n{log_path.read_text(errors='replace')}")
                time.sleep(0.05)
            pub = MqttPublisher(
                host=settings.mqtt.host,
                port=settings.mqtt.port,
                client_id="bench-alerts-pub",
                username=LOADER_ACCOUNT,
                password=service_secret(settings, LOADER_ACCOUNT),
            ).connect()
            latencies = []
            for trial in range(trials):
                tp = f"bench_tp_{trial:03d}"
                ts = datetime.now(UTC) - timedelta(seconds=5)
                events = [
                    {
                        "seq": 1000 * trial + i,
                        "ts": (ts + timedelta(milliseconds=i)).isoformat(),
                        "kind": "usage",
                        "touchpoint": tp,
                        "success": False,
                    }
                    for i in range(25)
                ]
                sent = time.monotonic()
                pub.publish(
                    f"{settings.mqtt.topic_prefix}/ba-e2e-0/telemetry",
                    json.dumps({"v": 1, "device_id": "ba-e2e-0", "events": events}).encode(),
                )
                entity = f"{product}/{tp}"
                while entity not in receiver.arrived:
                    if time.monotonic() - sent > 60:
                        raise SystemExit(f"no webhook within 60 s:\n{log_path.read_text(errors='replace')[-3000:]}")
                    time.sleep(0.01)
                latencies.append(receiver.arrived[entity] - sent)
            q = statistics.quantiles(latencies, n=100, method="inclusive")
            print(
                f"RESULT alerts event → webhook ({trials} trials, rollup interval {rollup_interval:g} s, real"
                f" gateway + loopback receiver): p50 {statistics.median(latencies) * 1000:.0f} ms, p99"
                f" {q[98] * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms",
                flush=True,
            )
        finally:
            if pub is not None:
                pub.close(timeout_s=5)
            gw.terminate()
            gw.wait(60)
            forget_session(gw_settings, gw_settings.gateway.client_id)  # no queue kept for a gone bench gateway
            receiver.shutdown()


def main(argv: list[str] | None = None) -> None:
    """Both parts, then remove the bench rules and alerts."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5, help="timed passes per case")
    parser.add_argument("--trials", type=int, default=20, help="event → webhook trials")
    parser.add_argument("--rollup-interval", type=float, default=5.0, help="the gateway's rollup interval (s)")
    parser.add_argument(
        "--cadence-days",
        type=int,
        default=21,
        help="days of the simulated fleet for the cadence rules' cost (0: skip that part)",
    )
    parser.add_argument("--workers", type=int, default=2, help="simulator processes loading that fleet")
    args = parser.parse_args(argv)
    settings = get_settings()
    start_stack(settings)
    try:
        evaluation_cost(settings, devices=args.devices, rules=args.rules, repeat=args.repeat)
        if args.cadence_days:
            cadence_cost(settings, devices=args.devices, days=args.cadence_days, seed=42, workers=args.workers)
        if args.trials:
            event_to_webhook(settings, trials=args.trials, rollup_interval=args.rollup_interval)
    finally:
        with connect(settings.db) as conn:
            _cleanup(conn)
