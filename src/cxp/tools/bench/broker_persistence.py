"""Mosquitto persistence: what each autosave setting costs and what a broker crash loses.

For each setting, on a throw-away broker (`persistence true`, the stack's queue limits), while the consumer (a
persistent session, like the gateway's) is away:

  1. throughput: N QoS 1 messages published as fast as the broker acknowledges them, the backlog growing from 0;
     msgs/s and the longest PUBACK wait (a save blocks Mosquitto's single thread);
  2. loss: messages published at a steady rate for D seconds, then SIGKILL right after the last PUBACK; the broker
     restarted on the same files and the consumer's session drained. Lost = acknowledged - delivered, and the
     seconds between the last save (the file's mtime) and the kill.

`cxp bench broker-persistence` prints JSON: one object per setting and a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cxp.tools.bench.broker_auth.broker import HOST, TempBroker

CONSUMER = "bench-persist-gateway"
TOPIC = "devices/dev-{:05d}/telemetry"

# (label, lines): the stack's current default first, then shorter intervals and change counts.
SETTINGS: dict[str, str] = {
    "off": "persistence false",
    "interval_60s": "persistence true\nautosave_interval 60",
    "interval_10s": "persistence true\nautosave_interval 10",
    "interval_1s": "persistence true\nautosave_interval 1",
    "changes_10000": "persistence true\nautosave_on_changes true\nautosave_interval 10000",
    "changes_1000": "persistence true\nautosave_on_changes true\nautosave_interval 1000",
    "changes_100": "persistence true\nautosave_on_changes true\nautosave_interval 100",
}


class PersistentBroker(TempBroker):
    """A throw-away broker whose persistence lines are the setting's, and whose files survive a restart."""

    def conf_text(self) -> str:
        """Listener, log, the stack's queue limits, then the setting (which may turn persistence on)."""
        body = self.conf_body
        self.conf_body = "\n".join(
            [
                "allow_anonymous true",
                f"persistence_location {self.dir}/",
                "max_queued_messages 2000000",
                "max_queued_bytes 0",
                "max_inflight_messages 0",
                "persistent_client_expiration 14d",
                "log_type error",
                "log_type warning",
                "log_type notice",
                "log_type information",
                body,
            ]
        )
        try:
            return super().conf_text().replace("persistence false\n", "", 1)  # the base's line; ours follows
        finally:
            self.conf_body = body

    def kill(self) -> float:
        """SIGKILL (no save); returns when it happened (epoch s)."""
        assert self.proc is not None
        at = time.time()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        return at

    def cpu_s(self) -> float:
        """CPU seconds the broker has used (user + system)."""
        assert self.proc is not None
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def save(self, *, timeout_s: float = 30.0) -> None:
        """SIGUSR1: Mosquitto writes its persistence file now; returns once the file is rewritten."""
        assert self.proc is not None
        before = self.last_save()
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        while self.last_save() == before and time.monotonic() < deadline:
            time.sleep(0.02)

    def last_save(self) -> float | None:
        """When the persistence file was last written (epoch s), or None when never."""
        path = self.dir / "mosquitto.db"
        return path.stat().st_mtime if path.exists() else None


def _client(client_id: str) -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)


def _session_props(expiry: int = 3600) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry
    props.ReceiveMaximum = 4000
    return props


def create_session(port: int) -> None:
    """The consumer's persistent session with its QoS 1 subscription, then the consumer goes away. Clean start off,
    as the gateway connects: Mosquitto 2.0.11 keeps a session begun with clean start (and an expiry interval)
    across a disconnect but does not restore it after a restart."""
    c = _client(CONSUMER)
    subscribed = threading.Event()
    c.on_subscribe = lambda *_a: subscribed.set()
    c.connect(HOST, port, clean_start=False, properties=_session_props())
    c.loop_start()
    c.subscribe("devices/+/telemetry", qos=1)
    if not subscribed.wait(10):
        raise SystemExit("the consumer's subscription was not acknowledged")
    c.disconnect()
    c.loop_stop()


def drain_session(port: int, *, idle_s: float = 3.0, timeout_s: float = 600.0) -> set[int]:
    """Resume the consumer's session and collect the message numbers delivered until it stays idle."""
    got: set[int] = set()
    last = [time.monotonic()]
    c = _client(CONSUMER)

    def on_message(_c, _u, msg) -> None:
        got.add(int(msg.payload[:12]))
        last[0] = time.monotonic()

    c.on_message = on_message
    c.connect(HOST, port, clean_start=False, properties=_session_props())
    c.loop_start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() - last[0] < idle_s and time.monotonic() < deadline:
        time.sleep(0.1)
    c.disconnect()
    c.loop_stop()
    return got


@dataclass
class Published:
    """What a publisher saw acknowledged."""

    acked: set[int]
    seconds: float
    puback_ms_p99: float
    puback_ms_max: float


def publish(port: int, n: int, *, payload_bytes: int, rate: float | None = None, window: int = 1000) -> Published:
    """Publish messages 0..n-1 at QoS 1 (at `rate` msgs/s, or as fast as acknowledged), wait for every PUBACK."""
    c = _client(f"bench-persist-pub-{os.getpid()}")
    c.max_inflight_messages_set(window)
    c.max_queued_messages_set(0)
    sent_at: dict[int, tuple[int, float]] = {}  # mid -> (message number, when sent), until its PUBACK
    early: dict[int, float] = {}  # PUBACKs that arrived before publish() returned (mid -> when)
    acked: set[int] = set()
    waits: list[float] = []
    lock = threading.Lock()  # never held while calling into paho: its network thread calls on_publish
    room = threading.Semaphore(window)

    def on_publish(_c, _u, mid, reason_code, _props) -> None:
        now = time.perf_counter()
        with lock:
            if reason_code.is_failure:
                sent_at.pop(mid, None)
            elif mid in sent_at:
                number, t = sent_at.pop(mid)
                acked.add(number)
                waits.append((now - t) * 1000)
            else:
                early[mid] = now
        room.release()

    c.on_publish = on_publish
    c.connect(HOST, port)
    c.loop_start()
    pad = b"x" * max(0, payload_bytes - 12)
    t0 = time.perf_counter()
    for i in range(n):
        if rate is not None:
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        room.acquire()
        t = time.perf_counter()
        mid = c.publish(TOPIC.format(i % 1000), b"%012d" % i + pad, qos=1).mid
        with lock:
            if mid in early:
                acked.add(i)
                waits.append((early.pop(mid) - t) * 1000)
            else:
                sent_at[mid] = (i, t)
    deadline = time.monotonic() + 300
    while len(acked) < n and time.monotonic() < deadline:
        time.sleep(0.005)
    seconds = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    ordered = sorted(waits)
    p99 = ordered[int(0.99 * (len(ordered) - 1))] if ordered else 0.0
    return Published(acked, seconds, round(p99, 1), round(ordered[-1] if ordered else 0.0, 1))


def measure(label: str, lines: str, *, messages: int, payload_bytes: int, rate: float, seconds: float) -> dict:
    """Both phases for one setting, each on a fresh broker."""
    out: dict = {"setting": label, "config": lines.replace("\n", "; ")}
    with PersistentBroker(lines) as broker:
        broker.start()
        create_session(broker.port)
        cpu0 = broker.cpu_s()
        pub = publish(broker.port, messages, payload_bytes=payload_bytes)
        cpu = broker.cpu_s() - cpu0
        size = broker.dir / "mosquitto.db"
        out["throughput"] = {
            "broker_cpu_us_per_msg": round(cpu / messages * 1e6, 1),
            "persistence_file_mb": round(size.stat().st_size / 2**20, 1) if size.exists() else None,
            "messages": messages,
            "acked": len(pub.acked),
            "seconds": round(pub.seconds, 2),
            "msgs_per_s": round(len(pub.acked) / pub.seconds),
            "puback_ms_p99": pub.puback_ms_p99,
            "puback_ms_max": pub.puback_ms_max,
        }
    if lines == SETTINGS["off"]:
        return out
    # Plus an odd 3,333: a count-based setting would otherwise save exactly at the last message (30,000 is a
    # multiple of every count tried) and the kill would find nothing to lose.
    n = int(rate * seconds) + 3333
    with PersistentBroker(lines) as broker:
        broker.start()
        create_session(broker.port)
        broker.save()  # the gateway's session predates the outage: on disk before the run
        pub = publish(broker.port, n, payload_bytes=payload_bytes, rate=rate)
        killed = broker.kill()
        saved = broker.last_save()
        broker.start()
        got = drain_session(broker.port)
        lost = pub.acked - got
        out["crash"] = {
            "rate_msgs_per_s": rate,
            "achieved_msgs_per_s": round(len(pub.acked) / pub.seconds),
            "published_s": round(pub.seconds, 1),
            "acked": len(pub.acked),
            "delivered_after_restart": len(got & pub.acked),
            "lost": len(lost),
            # at the rate achieved (a loaded machine's publisher falls behind `rate`)
            "lost_s_at_rate": round(len(lost) / (len(pub.acked) / pub.seconds), 1),
            # the last save before the kill: an autosave, or the one made with the session before the run
            "s_since_last_save": None if saved is None else round(killed - saved, 1),
            "lost_are_the_newest": not lost or min(lost) > max(got & pub.acked, default=-1),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    """Command-line entry (`cxp bench broker-persistence`)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000, help="throughput phase: messages published")
    ap.add_argument("--payload-bytes", type=int, default=800, help="size of each message (a typical batch: ~800)")
    ap.add_argument("--rate", type=float, default=2000.0, help="crash phase: steady publish rate, msgs/s")
    ap.add_argument("--seconds", type=float, default=15.0, help="crash phase: seconds of publishing before SIGKILL")
    ap.add_argument("--setting", action="append", choices=list(SETTINGS), help="repeat; default: all")
    args = ap.parse_args(argv)
    results = []
    for label in args.setting or list(SETTINGS):
        print(f"[bench] {label}", file=sys.stderr, flush=True)
        result = measure(
            label,
            SETTINGS[label],
            messages=args.messages,
            payload_bytes=args.payload_bytes,
            rate=args.rate,
            seconds=args.seconds,
        )
        print(json.dumps(result), file=sys.stderr, flush=True)
        results.append(result)
    base = next((r["throughput"]["msgs_per_s"] for r in results if r["setting"] == "off"), None)
    summary = {
        r["setting"]: {
            "msgs_per_s": r["throughput"]["msgs_per_s"],
            "vs_off": round(r["throughput"]["msgs_per_s"] / base, 2) if base else None,
            "puback_ms_max": r["throughput"]["puback_ms_max"],
            "broker_cpu_us_per_msg": r["throughput"]["broker_cpu_us_per_msg"],
            "lost": r.get("crash", {}).get("lost"),
            "lost_s_at_rate": r.get("crash", {}).get("lost_s_at_rate"),
        }
        for r in results
    }
    print(json.dumps({"results": results, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
