"""Ingest benchmark: the gateway against a no-op paho subscriber on the same stream, in one run.

Phases (each consumer drains a backlog queued for its persistent session while it was away, so the
publisher's speed does not limit the consumer being measured):
  1. ceiling: a no-op paho subscriber (manual acks, like the gateway) drains N messages;
  2. gateway: `cxp gateway` drains the same N messages into TimescaleDB; RSS sampled;
  3. latency: the gateway live, fed at half its measured rate; publish→commit p50/p99 from its stats;
  2c. poison: the phase-2 drain with one message per 400 the contract refuses (a NUL in a detail, a float
      that underflows `real`), beside the clean rate;
  4. backlog (optional): B messages queued, then the gateway drains them; peak RSS shows the window bound.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cxp.core.config import PROJECT_ROOT, GatewaySettings, MqttSettings, Settings
from cxp.device_sim import MqttPublisher, build_fleet, plan_messages
from cxp.identity.broker import GATEWAY_ACCOUNT, LOADER_ACCOUNT, service_secret
from cxp.stack import start_stack
from cxp.stack.local import start_broker
from cxp.store.admin import truncate_data
from cxp.store.db import connect
from cxp.store.migrate import apply_migrations
from cxp.tools.fleet import register_fleet

BENCH_DB = "cxp_bench"
_SENT_AT = re.compile(rb'"sent_at":"[^"]*"')


@dataclass
class Payload:
    """One pre-generated message, topic-less so each phase can use its own prefix."""

    device_id: str
    body: bytes
    events: int


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _generate(settings: Settings, *, devices: int, days: int, seed: int, count: int) -> list[Payload]:
    start = (datetime.now(UTC) - timedelta(days=days + 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    fleet = build_fleet(seed=seed, devices=devices, start=start, days=days)
    with connect(settings.db) as conn:
        truncate_data(conn)
        register_fleet(conn, fleet=fleet, lived_truth=False)
    out = [Payload(m.device_id, m.payload, m.events)
           for m in itertools.islice(plan_messages(fleet=fleet, max_events_per_message=50), count)]
    if len(out) < count:
        raise SystemExit(f"the fleet yields only {len(out)} messages; raise --devices or --days")
    return out


def _publish(settings: Settings, prefix: str, payloads: list[Payload], *, rate: float | None = None,
             fresh_sent_at: bool = False, max_inflight: int = 1000) -> float:
    """Publish every payload (QoS 1) and wait for the broker's acks; returns msgs/s achieved."""
    pub = MqttPublisher(host=settings.mqtt.host, port=settings.mqtt.port,
                        client_id=f"bench-pub-{os.getpid()}-{threading.get_ident()}", username=LOADER_ACCOUNT,
                        password=service_secret(settings, LOADER_ACCOUNT), max_inflight=max_inflight).connect()
    t0 = time.perf_counter()
    try:
        for i, p in enumerate(payloads):
            body = p.body
            if fresh_sent_at:
                stamp = b'"sent_at":"' + datetime.now(UTC).isoformat().encode() + b'"'
                body = _SENT_AT.sub(stamp, body, count=1)
            if rate is not None:
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            pub.publish(f"{prefix}/{p.device_id}/telemetry", body)
        pub.wait_all_acked(600)
    finally:
        pub.close(timeout_s=10)
    return len(payloads) / (time.perf_counter() - t0)


def _noop_client(settings: Settings, client_id: str, receive_maximum: int) -> tuple[mqtt.Client, Properties]:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True)
    client.username_pw_set(GATEWAY_ACCOUNT, service_secret(settings, GATEWAY_ACCOUNT))  # reads telemetry only
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = receive_maximum
    return client, props


def _forget_session(settings: Settings, client_id: str) -> None:
    """Discard a persistent session (clean start, expiry 0), so the broker keeps no queue for it."""
    client, props = _noop_client(settings, client_id, settings.gateway.receive_maximum)
    props.SessionExpiryInterval = 0
    client.connect(settings.mqtt.host, settings.mqtt.port, clean_start=True, properties=props)
    client.loop_start()
    time.sleep(0.2)
    client.disconnect()
    client.loop_stop()


def measure_ceiling(settings: Settings, payloads: list[Payload], prefix: str) -> dict:
    """Drain rate of a no-op paho subscriber that acks each message (the Python client's ceiling)."""
    cid = f"bench-noop-{os.getpid()}"
    client, props = _noop_client(settings, cid, settings.gateway.receive_maximum)
    client.connect(settings.mqtt.host, settings.mqtt.port, clean_start=True, properties=props)
    client.subscribe(f"{prefix}/+/telemetry", qos=1)
    client.loop_start()
    time.sleep(0.5)
    client.disconnect()
    client.loop_stop()
    _publish(settings, prefix, payloads)
    n = len(payloads)
    got = 0
    first = last = 0.0
    done = threading.Event()

    def on_message(c, userdata, msg):
        nonlocal got, first, last
        got += 1
        if got == 1:
            first = time.perf_counter()
        c.ack(msg.mid, msg.qos)
        if got == n:
            last = time.perf_counter()
            done.set()

    client, props = _noop_client(settings, cid, settings.gateway.receive_maximum)
    client.on_message = on_message
    client.connect(settings.mqtt.host, settings.mqtt.port, clean_start=False, properties=props)
    client.loop_start()
    done.wait(900)
    client.disconnect()
    client.loop_stop()
    _forget_session(settings, cid)
    rate = (n - 1) / (last - first) if last > first else 0.0
    return {"messages": got, "msgs_per_s": round(rate)}


class GatewayRun:
    """`cxp gateway` as a child process with RSS sampling."""

    def __init__(self, settings: Settings, workdir: Path, name: str, *, wait: bool = True) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CXP_")}
        for section in ("mqtt", "db", "gateway"):
            for key, value in getattr(settings, section).model_dump().items():
                if value is not None:
                    env[f"CXP_{section.upper()}__{key.upper()}"] = str(value)
        env["CXP_STACK__DIR"] = str(settings.stack.dir)  # the stack's files (CA, service credentials) are there
        self.log_path = workdir / f"{name}.log"
        self.stats_path = workdir / f"{name}.stats.json"
        self.stats_path.unlink(missing_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - open for the child's lifetime
        self.proc = subprocess.Popen([sys.executable, "-m", "cxp.cli.main", "gateway", "--stats-file",
                                      str(self.stats_path)], cwd=PROJECT_ROOT, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.peak_rss = 0
        self.cpu_s: dict[int, float] = {}  # latest CPU seconds of the gateway and each child process
        self._ps = psutil.Process(self.proc.pid)
        self._stop_sampling = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        if wait:
            self.wait_connected()

    def wait_connected(self) -> None:
        """Until the gateway says it is connected to the broker (exit when it fails)."""
        deadline = time.monotonic() + 60
        while "connected to broker" not in self.log_path.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gateway failed to start:\n{self.log_path.read_text(errors='replace')}")
            time.sleep(0.05)

    def _sample(self) -> None:
        while not self._stop_sampling.wait(0.1):
            try:
                # The receiver and its writer process together.
                procs = [self._ps, *self._ps.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in procs)
                for p in procs:
                    t = p.cpu_times()
                    self.cpu_s[p.pid] = t.user + t.system
            except psutil.Error:
                return
            self.peak_rss = max(self.peak_rss, rss)

    def stop(self) -> dict:
        """SIGTERM, wait, return the gateway's final stats."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        self._stop_sampling.set()
        self._log.close()
        return json.loads(self.stats_path.read_text())


def _stored(conn) -> int:
    return conn.execute("SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM device_state)").fetchone()[0]


def _logged_progress(log_path: Path) -> int:
    """Events handled (stored + duplicates) per the gateway's latest stats line: no load on the database."""
    text = log_path.read_text(errors="replace")
    at = text.rfind("stats {")
    if at < 0:
        return 0
    stats = json.loads(text[at + 6:text.index("\n", at)])
    return stats["events_stored"] + stats["states_stored"] + stats["duplicates"]


def with_poison(payloads: list[Payload], every: int) -> list[Payload]:
    """The payloads with a message the contract refuses after every `every`-th, alternating two kinds."""
    ts = (datetime.now(UTC) - timedelta(hours=1)).isoformat().encode()
    kinds = (b'"kind":"lifecycle","stage":"setup","detail":{"note":"a\\u0000b"}',
             b'"kind":"usage","touchpoint":"brew","duration_s":1e-50')
    out: list[Payload] = []
    for i, p in enumerate(payloads, 1):
        out.append(p)
        if i % every == 0:
            body = b'{"v":1,"events":[{"seq":%d,"ts":"%s",%s}]}' % (2**61 + i, ts, kinds[(i // every) % 2])
            out.append(Payload(p.device_id, body, 0))  # 0: none of its events is stored
    return out


def _drain(settings: Settings, conn, payloads: list[Payload], workdir: Path, name: str) -> dict:
    """Queue the payloads for the (stopped) gateway's session, then time the gateway draining them."""
    settings = settings.model_copy(update={"gateway": settings.gateway.model_copy(update={"stats_interval_s": 0.5})})
    GatewayRun(settings, workdir, f"{name}-prime").stop()  # creates the persistent session and subscription
    base = _stored(conn)
    _publish(settings, settings.mqtt.topic_prefix, payloads)
    events = sum(p.events for p in payloads)
    gw = GatewayRun(settings, workdir, name)
    while _logged_progress(gw.log_path) < events:
        if gw.proc.poll() is not None:
            raise SystemExit(f"gateway died:\n{gw.log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.25)
    stats = gw.stop()
    _forget_session(settings, settings.gateway.client_id)
    stored = _stored(conn) - base
    if stored != events:
        raise SystemExit(f"stored {stored} events, expected {events}")
    active = stats["active_s"]
    return {"messages": len(payloads), "events": events, "seconds": active,
            "events_per_s": round(events / active), "msgs_per_s": round(len(payloads) / active),
            "peak_rss_mb": round(gw.peak_rss / 2**20, 1), "duplicates": stats["duplicates"],
            "gateway_cpu_us_per_msg": round(sum(gw.cpu_s.values()) / len(payloads) * 1e6, 1),
            "dead_lettered": stats["dead_lettered"]}


def _latency(settings: Settings, conn, payloads: list[Payload], rate: float, workdir: Path) -> dict:
    gw = GatewayRun(settings, workdir, "latency")
    base = _stored(conn)
    # A small window, like a device's: latency should not include a queue inside the publisher.
    achieved = _publish(settings, settings.mqtt.topic_prefix, payloads, rate=rate, fresh_sent_at=True,
                        max_inflight=100)
    expected = base + sum(p.events for p in payloads)
    deadline = time.monotonic() + 120
    while _stored(conn) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    stats = gw.stop()
    _forget_session(settings, settings.gateway.client_id)
    return {"target_msgs_per_s": round(rate), "achieved_msgs_per_s": round(achieved),
            "messages": len(payloads), "p50_ms": stats["publish_to_commit_ms_p50"],
            "p99_ms": stats["publish_to_commit_ms_p99"]}


def _broker_cpu_s(settings: Settings) -> float:
    """CPU seconds the stack's broker has used so far."""
    pid = int((settings.stack.dir / "mosquitto" / "mosquitto.pid").read_text().strip())
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def debug_log_cost(gw_settings: Settings, conn, payloads: list[Payload], workdir: Path) -> dict:
    """The same drain with the broker's debug log off and on, twice alternating (the shared machine is noisy)."""
    out: dict = {"off": [], "on": []}
    for run_no, flag in enumerate((False, True, False, True)):
        client_id = f"{gw_settings.gateway.client_id}-d{run_no}"
        mode = gw_settings.model_copy(update={
            "mqtt": gw_settings.mqtt.model_copy(update={"broker_debug_log": flag}),
            "gateway": gw_settings.gateway.model_copy(update={"client_id": client_id}),
        })
        start_broker(mode)  # a changed config restarts the broker
        truncate_data(conn, registry=False)
        cpu0, log0 = _broker_cpu_s(mode), _log_bytes(mode)
        result = _drain(mode, conn, payloads, workdir, f"debug-{run_no}")
        cpu, logged = _broker_cpu_s(mode) - cpu0, _log_bytes(mode) - log0
        result.update(broker_cpu_us_per_msg=round(cpu / len(payloads) * 1e6, 1),
                      broker_log_bytes_per_msg=round(logged / len(payloads)))
        out["on" if flag else "off"].append(result)
        _log(f"  debug log {'on' if flag else 'off'}: {result}")
    mean = {k: sum(r["events_per_s"] for r in v) / len(v) for k, v in out.items() if k in ("on", "off")}
    out["throughput_ratio_on_vs_off"] = round(mean["on"] / mean["off"], 3)
    start_broker(gw_settings)  # back to the configured level
    return out


def _log_bytes(settings: Settings) -> int:
    path = settings.stack.dir / "mosquitto" / "mosquitto.log"
    return path.stat().st_size if path.exists() else 0


def run(*, devices: int, days: int, seed: int, messages: int, latency_s: float, backlog: int,
        debug_cost: bool = False, poison_every: int = 400, instances: list[int] | None = None) -> dict:
    """Run every phase and return the figures (with `instances`: only the gateway group's scaling)."""
    env = Settings()  # ports from the environment (CXP_DB__PORT…), only the database name is the bench's
    base = env.model_copy(update={"db": env.db.model_copy(update={"name": BENCH_DB})})
    start_stack(base)
    with connect(base.db) as conn:
        apply_migrations(conn)
    gw_settings = base.model_copy(update={
        "mqtt": MqttSettings(**{**base.mqtt.model_dump(), "topic_prefix": "bench-gw"}),
        "gateway": GatewaySettings(**{**base.gateway.model_dump(), "client_id": f"bench-gw-{os.getpid()}"}),
    })
    workdir = base.stack.dir / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    if instances:
        from cxp.tools.bench.ingest_group import run_scaling

        payloads = _generate(base, devices=devices, days=days, seed=seed, count=messages)
        with connect(base.db) as conn:
            scaling = run_scaling(gw_settings, conn, payloads, workdir, instances)
        return {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                "fleet": {"devices": devices, "days": days, "seed": seed}, "gateway_group": scaling}
    _log(f"generating {messages + backlog:,} messages from a {devices:,}-device × {days}-day fleet")
    t0 = time.perf_counter()
    # Latency messages come after the drained ones in the fleet timeline, so none is a duplicate.
    latency_n = int(latency_s * 4000)
    payloads = _generate(base, devices=devices, days=days, seed=seed, count=messages + latency_n + backlog)
    _log(f"generated in {time.perf_counter() - t0:.1f}s")
    drain_set, latency_set = payloads[:messages], payloads[messages:messages + latency_n]
    backlog_set = payloads[messages + latency_n:]
    epm = sum(p.events for p in drain_set) / len(drain_set)
    result: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                    "fleet": {"devices": devices, "days": days, "seed": seed},
                    "events_per_message": round(epm, 3)}
    _log("phase 1: no-op paho subscriber (ceiling)")
    result["ceiling"] = measure_ceiling(base, drain_set, "bench-noop")
    _log(f"  {result['ceiling']}")
    with connect(base.db) as conn:
        ceiling_events = result["ceiling"]["msgs_per_s"] * epm
        for mode, in_process in (("gateway", False), ("gateway_inline_writer", True)):
            _log(f"phase 2: gateway drain ({'writer in-process' if in_process else 'writer process'})")
            mode_settings = gw_settings.model_copy(update={"gateway": gw_settings.gateway.model_copy(update={
                "writer_process": not in_process, "client_id": f"{gw_settings.gateway.client_id}-{mode}"})})
            truncate_data(conn, registry=False)  # both modes store the identical stream into empty tables
            result[mode] = _drain(mode_settings, conn, drain_set, workdir, mode)
            result[mode]["ratio_events_vs_ceiling"] = round(result[mode]["events_per_s"] / ceiling_events, 3)
            _log(f"  {result[mode]}")
        if poison_every:
            _log(f"phase 2c: gateway drain with one poison message per {poison_every}")
            mode_settings = gw_settings.model_copy(update={"gateway": gw_settings.gateway.model_copy(update={
                "client_id": f"{gw_settings.gateway.client_id}-poison"})})
            truncate_data(conn, registry=False)
            poisoned = _drain(mode_settings, conn, with_poison(drain_set, poison_every), workdir, "poison")
            poisoned["ratio_events_vs_clean"] = round(poisoned["events_per_s"] / result["gateway"]["events_per_s"], 3)
            result[f"gateway_poison_1_per_{poison_every}"] = poisoned
            _log(f"  {poisoned}")
        if debug_cost:
            _log("phase 2b: gateway drain with the broker's debug log off, then on")
            result["broker_debug_log"] = debug_log_cost(gw_settings, conn, drain_set, workdir)
        half = result["gateway"]["msgs_per_s"] / 2
        n_lat = min(len(latency_set), int(half * latency_s))
        _log(f"phase 3: latency at half rate ({half:,.0f} msgs/s for {n_lat / half:.0f}s)")
        result["latency_at_half_rate"] = _latency(gw_settings, conn, latency_set[:n_lat], half, workdir)
        _log(f"  {result['latency_at_half_rate']}")
        if backlog:
            _log(f"phase 4: {backlog:,}-message backlog")
            result["backlog"] = _drain(gw_settings, conn, backlog_set, workdir, "backlog")
            _log(f"  {result['backlog']}")
    return result


def main(argv: list[str] | None = None) -> None:
    """Command-line entry (also reachable as `cxp bench ingest`)."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--latency-seconds", type=float, default=20.0)
    ap.add_argument("--backlog", type=int, default=0, help="e.g. 1000000 for the memory-bound phase")
    ap.add_argument("--poison-every", type=int, default=400, help="one poison message per N in phase 2c (0: skip)")
    ap.add_argument("--instances", default="", help="e.g. 1,2,3: only the gateway group's scaling on one backlog")
    ap.add_argument("--debug-log-cost", action="store_true",
                    help="also drain with the broker's debug log off and on (restarts the stack's broker twice)")
    args = ap.parse_args(argv)
    print(json.dumps(run(devices=args.devices, days=args.days, seed=args.seed, messages=args.messages,
                         latency_s=args.latency_seconds, backlog=args.backlog, debug_cost=args.debug_log_cost,
                         poison_every=args.poison_every,
                         instances=[int(n) for n in args.instances.split(",") if n.strip()]),
                     indent=2))


if __name__ == "__main__":
    main()
