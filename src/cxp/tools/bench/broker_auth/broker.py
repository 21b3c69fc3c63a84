"""A throw-away Mosquitto in a temp dir on a free loopback port, and small MQTT v5 probes against it."""

from __future__ import annotations

import os
import pwd
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

DYNSEC_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
HOST = "127.0.0.1"


class BrokerError(Exception):
    """The benchmark broker could not be started or did not answer."""


def mosquitto_bin() -> str:
    """Path of the installed broker."""
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if found is None:
        raise BrokerError("mosquitto is not installed")
    return found


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _raise_nofile() -> None:
    # 1,000 concurrent clients need more descriptors than a default soft limit of 1,024.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class TempBroker:
    """Mosquitto with `conf_body` (listener, pid and log lines are added) in its own temp dir."""

    conf_body: str
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cxp-broker-auth-")))
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        """The broker's log file."""
        return self.dir / "mosquitto.log"

    def conf_text(self) -> str:
        """The whole config: a loopback listener, a log file, then the mechanism's lines."""
        lines = [f"listener {self.port} {HOST}", f"log_dest file {self.log}", "persistence false", self.conf_body]
        try:
            # Mosquitto drops root privileges to this user: it must read (and dynsec write) the temp dir.
            user = pwd.getpwnam("mosquitto")
            if os.geteuid() == 0:
                for p in [self.dir, *self.dir.iterdir()]:
                    os.chown(p, user.pw_uid, user.pw_gid)
        except KeyError:
            pass
        return "\n".join(lines) + "\n"

    def start(self, *, timeout_s: float = 120.0) -> float:
        """Start and wait until the port answers; returns the seconds that took."""
        conf = self.dir / "mosquitto.conf"
        conf.write_text(self.conf_text())
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([mosquitto_bin(), "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, preexec_fn=_raise_nofile)
        while time.perf_counter() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise BrokerError(f"mosquitto exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}"
                                  f" {self.log.read_text() if self.log.exists() else ''}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return time.perf_counter() - t0
            except OSError:
                time.sleep(0.005)
        raise BrokerError(f"mosquitto did not listen on {self.port} within {timeout_s:.0f}s")

    def rss_mb(self) -> float:
        """Resident memory of the broker process."""
        assert self.proc is not None
        return psutil.Process(self.proc.pid).memory_info().rss / 1e6

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password and ACL files."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        """Terminate the broker and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> TempBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Probe:
    """One MQTT v5 client with its network loop in a thread, recording CONNACK, PUBACKs, messages, disconnect."""

    def __init__(
        self, port: int, username: str | None, password: str | None, *, client_id: str | None = None,
        keepalive: int = 60,
    ):
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or (username or "anon"),
                                  protocol=mqtt.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.port = port
        self.keepalive = keepalive
        self.connack: int | None = None
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.disconnected_at: float | None = None
        self.pubacks: dict[int, int] = {}
        self.puback_event = threading.Event()
        self.messages: list[tuple[str, bytes]] = []
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = lambda _c, _u, msg: self.messages.append((msg.topic, msg.payload))

    def _on_connect(self, _c, _u, _flags, reason_code, _props) -> None:
        self.connack = reason_code.value
        self.connected.set()

    def _on_disconnect(self, _c, _u, _flags, _reason_code, _props) -> None:
        self.disconnected_at = time.perf_counter()
        self.disconnected.set()
        self.connected.set()

    def _on_publish(self, _c, _u, mid, reason_code, _props) -> None:
        self.pubacks[mid] = reason_code.value
        self.puback_event.set()

    def connect(self, *, timeout_s: float = 10.0) -> int | None:
        """Connect without reconnecting on failure; returns the CONNACK reason code (0: accepted)."""
        self.client.reconnect_delay_set(60, 120)
        try:
            self.client.connect(HOST, self.port, keepalive=self.keepalive)
        except OSError:
            return None
        self.client.loop_start()
        self.connected.wait(timeout_s)
        return self.connack

    def publish_qos1(self, topic: str, payload: bytes, *, timeout_s: float = 5.0) -> int | None:
        """Publish at QoS 1 and return the PUBACK reason code (0x87: not authorized)."""
        self.puback_event.clear()
        info = self.client.publish(topic, payload, qos=1)
        deadline = time.monotonic() + timeout_s
        while info.mid not in self.pubacks and time.monotonic() < deadline:
            self.puback_event.wait(0.05)
            self.puback_event.clear()
        return self.pubacks.get(info.mid)

    def subscribe(self, topic: str) -> None:
        """Subscribe at QoS 1 (waits briefly for the SUBACK to land)."""
        self.client.subscribe(topic, qos=1)
        time.sleep(0.2)

    def close(self) -> None:
        """Disconnect and stop the loop thread."""
        self.client.disconnect()
        self.client.loop_stop()


def can_connect(port: int, username: str, password: str, *, timeout_s: float = 5.0) -> bool:
    """Whether the broker accepts these credentials now."""
    probe = Probe(port, username, password, client_id=f"probe-{username}-{time.monotonic_ns()}")
    try:
        return probe.connect(timeout_s=timeout_s) == 0 and not probe.disconnected.is_set()
    finally:
        probe.close()


def wait_until_connects(port: int, username: str, password: str, *, timeout_s: float = 120.0) -> float:
    """Seconds until a connect with these credentials is accepted (inf when never within the timeout)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if can_connect(port, username, password):
            return time.perf_counter() - t0
        time.sleep(0.01)
    return float("inf")


def connect_many(
    port: int, creds: list[tuple[str, str]], *, tls_ca: Path | None = None, timeout_s: float = 120.0
) -> dict[str, float]:
    """Open every connection at once from one thread (no thread per client) and wait for all CONNACKs."""
    clients: list[mqtt.Client] = []
    results: dict[int, int] = {}

    def on_connect(client, userdata, _flags, reason_code, _props) -> None:
        results[userdata] = reason_code.value

    props = Properties(PacketTypes.CONNECT)
    t0 = time.perf_counter()
    for i, (user, secret) in enumerate(creds):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"many-{user}", protocol=mqtt.MQTTv5, userdata=i)
        c.username_pw_set(user, secret)
        c.on_connect = on_connect
        if tls_ca is not None:
            c.tls_set(ca_certs=str(tls_ca))  # verifies the server certificate and its name; TLS ≥ 1.2
        c.connect(HOST, port, keepalive=120, properties=props)
        clients.append(c)
    sent = time.perf_counter()
    sockets = {c.socket(): c for c in clients}
    sel = selectors.DefaultSelector()
    for sock, c in sockets.items():
        sel.register(sock, selectors.EVENT_READ, c)
    while len(results) < len(clients) and time.perf_counter() - t0 < timeout_s:
        for key, _ in sel.select(timeout=0.5):
            key.data.loop_read()
        for c in clients:
            if c.want_write():
                c.loop_write()
    done = time.perf_counter()
    accepted = sum(1 for rc in results.values() if rc == 0)
    for c in clients:
        c.disconnect()
    sel.close()
    return {
        "clients": len(clients),
        "accepted": accepted,
        "refused_or_missing": len(clients) - accepted,
        "open_s": round(sent - t0, 3),
        "all_connack_s": round(done - t0, 3),
        "connects_per_s": round(len(clients) / (done - t0)),
    }
