"""A paho v5 client for broker-security tests: connect (plain, TLS or mutual TLS), publish and report reason codes."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

HOST = "127.0.0.1"


class Client:
    """One MQTT v5 connection whose CONNACK, PUBACK and SUBACK reason codes and disconnects are recorded."""

    def __init__(self, *, port: int, client_id: str, username: str | None = None, password: str | None = None,
                 ca_file: Path | None = None, cert: tuple[Path, Path] | None = None) -> None:
        self.port = port
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=MQTTProtocolVersion.MQTTv5)
        if ca_file is not None:
            context = ssl.create_default_context(cafile=str(ca_file))
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if cert is not None:
                context.load_cert_chain(certfile=str(cert[0]), keyfile=str(cert[1]))
            self.client.tls_set_context(context)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.connack: int | None = None
        self.disconnected = threading.Event()
        self.connected = threading.Event()
        self.pubacks: dict[int, int] = {}
        self.subacks: list[int] = []
        self.messages: list[str] = []
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_a: self.disconnected.set()
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self.pubacks.__setitem__(mid, rc.value)
        self.client.on_subscribe = lambda _c, _u, _mid, rcs, _p: self.subacks.extend(r.value for r in rcs)
        self.client.on_message = lambda _c, _u, msg: self.messages.append(msg.topic)

    def _on_connect(self, _c, _u, _flags, reason_code, _props) -> None:
        self.connack = reason_code.value
        if not reason_code.is_failure:
            self.connected.set()
        else:
            self.disconnected.set()

    def connect(self, timeout_s: float = 10.0) -> bool:
        """True when the broker accepted the connection; False when it refused it (CONNACK, TLS or closed socket)."""
        try:
            self.client.connect(HOST, self.port, keepalive=30)
        except (ssl.SSLError, OSError):
            return False
        self.client.loop_start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not (self.connected.is_set() or self.disconnected.is_set()):
            time.sleep(0.02)
        if not self.connected.is_set():
            self.close()
            return False
        # Under TLS 1.3 a refused client certificate shows only after the handshake: the broker then closes.
        time.sleep(0.2)
        return not self.disconnected.is_set()

    def publish(self, topic: str, payload: bytes, timeout_s: float = 10.0) -> int | None:
        """Publish QoS 1 and return the PUBACK reason code (None: no PUBACK in time)."""
        info = self.client.publish(topic, payload, qos=1)
        wait_until(lambda: info.mid in self.pubacks, timeout_s)
        return self.pubacks.get(info.mid)

    def subscribe(self, topic: str, timeout_s: float = 10.0) -> int | None:
        """Subscribe QoS 1 and return the SUBACK reason code."""
        self.client.subscribe(topic, qos=1)
        wait_until(lambda: bool(self.subacks), timeout_s)
        return self.subacks[0] if self.subacks else None

    def close(self) -> None:
        """Disconnect (idempotent)."""
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def wait_until(predicate: Callable[[], object], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll until true or the (generous) deadline passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


def accepted(**kwargs) -> bool:
    """Whether a fresh connection with these arguments is accepted (closed again at once)."""
    client = Client(**kwargs)
    ok = client.connect()
    client.close()
    return ok
