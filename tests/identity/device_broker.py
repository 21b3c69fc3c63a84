"""A throw-away Mosquitto laid out as the stack's device side: token TLS, certificate TLS and plain listeners.

* plain listener (anonymous, loopback): the test's collector, standing in for the gateway;
* token listener: TLS ≥ 1.2, password file written with `cxp.identity.tokens`, username = device id;
* certificate listener: TLS ≥ 1.2, `require_certificate`, identity = CN, CRL;
both device listeners force client id = username and allow a device to write its own telemetry topic only.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cxp.device_sim.credentials import DeviceCredential
from cxp.identity.files import PkiPaths, init_ca, pem, save_server, write_private_key, write_public
from cxp.identity.pki import (
    CertificateAuthority,
    build_crl,
    device_key_and_csr,
    issue_server_certificate,
    sign_device_csr,
)
from cxp.identity.tokens import issue_token, write_password_file
from tests.identity.broker import HOST, MOSQUITTO, free_port

ACL = "pattern write devices/%u/telemetry\n"


def _tls(pki: PkiPaths) -> str:
    return (f"tls_version tlsv1.2\ncafile {pki.ca_cert}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
            "use_username_as_clientid true\nallow_anonymous false\n")


class DeviceBroker:
    """Mosquitto with the three listeners on free loopback ports; restartable on the same ports."""

    def __init__(self, base: Path, pki: PkiPaths, *, passwd: Path, acl: Path, persistence: bool = False,
                 debug_log: bool = True) -> None:
        self.base, self.log = base, base / "mosquitto.log"
        self.plain_port, self.token_port, self.cert_port = free_port(), free_port(), free_port()
        user = "user root\n" if os.geteuid() == 0 else ""
        store = f"persistence true\npersistence_location {base}/\n" if persistence else "persistence false\n"
        levels = "all" if debug_log else "error\nlog_type warning\nlog_type notice\nlog_type information"
        self.conf = base / "mosquitto.conf"
        self.conf.write_text(
            f"{user}per_listener_settings true\n{store}log_dest file {self.log}\nlog_type {levels}\n"
            f"listener {self.plain_port} {HOST}\nallow_anonymous true\n"
            f"listener {self.token_port} {HOST}\n{_tls(pki)}password_file {passwd}\nacl_file {acl}\n"
            f"listener {self.cert_port} {HOST}\n{_tls(pki)}require_certificate true\nuse_identity_as_username true\n"
            f"crlfile {pki.crl}\nacl_file {acl}\n")
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        """Start the broker and wait until all three ports listen."""
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        for port in (self.plain_port, self.token_port, self.cert_port):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()} {self.log_text()}")
                try:
                    with socket.create_connection((HOST, port), timeout=0.2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        self.close()
                        raise RuntimeError(f"mosquitto did not listen on {port}: {self.log_text()}") from None
                    time.sleep(0.05)

    def log_text(self) -> str:
        """The broker's log so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self) -> None:
        """Stop the broker (idempotent); with persistence it saves its sessions first."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self, *, down_s: float = 0.0) -> None:
        """Stop, stay down `down_s`, start again on the same ports."""
        self.close()
        time.sleep(down_s)
        self.start()


@dataclass
class DeviceWorld:
    """A platform CA, a broker, and the devices' credentials (tokens and certificates issued from CSRs)."""

    base: Path
    pki: PkiPaths
    ca: CertificateAuthority
    broker: DeviceBroker
    secrets: dict[str, str] = field(default_factory=dict)
    certs: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    def token(self, device_id: str, *, secret: str | None = None, username: str | None = None) -> DeviceCredential:
        """The device's token credential on the token listener (its own secret unless another is given)."""
        return DeviceCredential.token(device_id=device_id, secret=secret or self.secrets[device_id],
                                      ca_file=self.pki.ca_cert, host=HOST, port=self.broker.token_port,
                                      username=username)

    def cert(self, device_id: str, *, files: tuple[Path, Path] | None = None) -> DeviceCredential:
        """The device's certificate credential on the certificate listener."""
        cert, key = files or self.certs[device_id]
        return DeviceCredential.certificate(device_id=device_id, cert_file=cert, key_file=key,
                                            ca_file=self.pki.ca_cert, host=HOST, port=self.broker.cert_port)

    def credential(self, device_id: str) -> DeviceCredential:
        """Whichever credential the device was given."""
        return self.token(device_id) if device_id in self.secrets else self.cert(device_id)


def raise_open_files_limit(need: int) -> None:
    """Raise this process's soft limit on open files (inherited by brokers started afterwards) to at least `need`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def issue_cert_files(base: Path, ca: CertificateAuthority, device_id: str, **sign: object) -> tuple[Path, Path]:
    """A device key made on the 'device', its CSR signed by `ca`; returns (cert, key) paths."""
    key, csr = device_key_and_csr(device_id=device_id)
    issued = sign_device_csr(ca=ca, csr_pem=csr, device_id=device_id, **sign)  # type: ignore[arg-type]
    cert_path, key_path = base / f"{device_id}.crt", base / f"{device_id}.key"
    write_public(cert_path, issued.pem())
    write_private_key(key_path, key)
    return cert_path, key_path


def make_world(base: Path, *, token_devices: list[str], cert_devices: list[str],
               extra_users: dict[str, str] | None = None, extra_acl: str = "", persistence: bool = False,
               debug_log: bool = True) -> DeviceWorld:
    """Issue every device its credential, write the password file, ACL and CRL, start the broker."""
    pki = PkiPaths(base / "pki")
    ca, _ = init_ca(paths=pki)
    save_server(issue_server_certificate(ca=ca), pki)
    write_public(pki.crl, pem(build_crl(ca=ca, revoked=[])))
    tokens = [issue_token(device_id=d) for d in token_devices]
    write_password_file(base / "passwd", [(t.username, t.password_hash) for t in tokens])
    with (base / "passwd").open("a") as f:
        # Rotation usernames (`<device>~<n>`) are not device ids, which the writer checks: appended raw.
        f.writelines(f"{user}:{password_hash}\n" for user, password_hash in (extra_users or {}).items())
    (base / "acl").write_text(ACL + extra_acl)
    devices = base / "devices"
    devices.mkdir(exist_ok=True)
    certs = {d: issue_cert_files(devices, ca, d) for d in cert_devices}
    broker = DeviceBroker(base, pki, passwd=base / "passwd", acl=base / "acl", persistence=persistence,
                          debug_log=debug_log)
    return DeviceWorld(base=base, pki=pki, ca=ca, broker=broker, secrets={t.username: t.secret for t in tokens},
                       certs=certs)


class Collector:
    """The gateway's stand-in: subscribes to every device's telemetry on the plain listener (persistent session)."""

    def __init__(self, port: int, *, topic: str = "devices/+/telemetry", client_id: str | None = None) -> None:
        # A fresh client id each time, so no earlier collector's queued session is resumed.
        client_id = client_id or f"collector-{uuid.uuid4().hex[:12]}"
        self.received: Counter[str] = Counter()
        self.payloads: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._topic = topic
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
        client.on_connect, client.on_message, client.on_subscribe = self._on_connect, self._on_message, \
            self._on_subscribe
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600  # messages queue at the broker while the collector is away
        # Never a clean start: after a broker restart the persisted session (and what was queued for it) resumes.
        # (With paho's clean-first-only, Mosquitto 2.0.11 answered the devices' publishes after a restart with
        # 0x10 "no matching subscribers": the session was not resumed.)
        client.connect(HOST, port, keepalive=30, clean_start=False, properties=props)
        client.loop_start()
        self.client = client
        if not self._subscribed.wait(10):
            raise RuntimeError("collector did not subscribe")

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        client.subscribe(self._topic, qos=1)

    def _on_subscribe(self, client, userdata, mid, reasons, properties) -> None:
        self._subscribed.set()

    def _on_message(self, client, userdata, message) -> None:
        with self._cond:
            self.received[message.topic] += 1
            self.payloads.append((message.topic, message.payload))
            self._cond.notify_all()

    def wait_for(self, total: int, timeout_s: float) -> int:
        """Wait until `total` messages arrived (or the timeout); returns how many did."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.payloads) < total:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
            return len(self.payloads)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()
