"""A private Mosquitto for identity tests (own tmp dir, free loopback port) and a paho v5 client reporting outcomes."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
HOST = "127.0.0.1"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Broker:
    """Mosquitto started on its own config in `base`; stopped (and its log kept for failures) on close."""

    def __init__(self, base: Path, listener_lines: str, *, global_lines: str = "") -> None:
        self.base, self.port = base, free_port()
        self.log = base / "mosquitto.log"
        conf = base / "mosquitto.conf"
        # As root Mosquitto would switch to its system user, which cannot enter pytest's 0700 tmp dirs.
        user = "user root\n" if os.geteuid() == 0 else ""
        # Global options such as per_listener_settings must come before the first listener.
        conf.write_text(f"{user}{global_lines}listener {self.port} {HOST}\n{listener_lines}\n"
                        f"log_dest file {self.log}\nlog_type all\npersistence false\n")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()} {self.log_text()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.close()
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log_text()}")

    def log_text(self) -> str:
        """The broker's log so far (for assertion messages)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self) -> None:
        """Stop the broker (idempotent)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Outcome:
    """How a connection attempt ended: connected (CONNACK success) or refused, with the detail why."""

    connected: bool
    detail: str


def try_connect(*, port: int, ca_file: Path, client_id: str, cert: tuple[Path, Path] | None = None,
                username: str | None = None, password: str | None = None, timeout_s: float = 5.0,
                tls_max: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED) -> Outcome:
    """Connect over TLS with MQTT v5 and wait for the CONNACK (or the broker closing the connection).

    Under TLS 1.2 the broker's verdict on a client certificate arrives inside the handshake, so the alert
    (unknown ca, certificate expired, certificate revoked) is in the detail; under TLS 1.3 it comes after.
    """
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=MQTTProtocolVersion.MQTTv5)
    context = ssl.create_default_context(cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = tls_max
    if cert is not None:
        context.load_cert_chain(certfile=str(cert[0]), keyfile=str(cert[1]))
    client.tls_set_context(context)
    if username is not None:
        client.username_pw_set(username, password)
    done = threading.Event()
    result: dict[str, Outcome] = {}

    def on_connect(_c, _u, _flags, reason_code, _props) -> None:
        result.setdefault("r", Outcome(not reason_code.is_failure, f"CONNACK {reason_code}"))
        done.set()

    def on_disconnect(_c, _u, _flags, reason_code, _props) -> None:
        result.setdefault("r", Outcome(False, f"closed before CONNACK: {reason_code}"))
        done.set()

    client.on_connect, client.on_disconnect = on_connect, on_disconnect
    try:
        client.connect(HOST, port, keepalive=10)
    except (ssl.SSLError, OSError) as exc:
        return Outcome(False, f"TLS/socket refused: {exc}")
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            return Outcome(False, "no CONNACK")
        return result["r"]
    finally:
        client.disconnect()
        client.loop_stop()
