"""Connect rate of a fleet with and without auth and TLS, and the broker CPU that debug logging costs."""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from cxp.tools.bench.broker_auth.broker import HOST, TempBroker, connect_many
from cxp.tools.bench.broker_auth.files import Credential, acl_file_text, password_line


def write_test_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 (benchmark only; the platform CA is cxp.identity's)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cxp bench CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def connect_rates(creds: list[Credential], *, gateway: Credential) -> dict:
    """The same clients connecting at once: anonymous plain, password plain, password over TLS 1.2+."""
    out: dict = {}
    pairs = [(c.username, c.secret) for c in creds]
    lines = "\n".join(password_line(c) for c in [*creds, gateway]) + "\n"
    for name in ("anonymous_plain", "password_plain", "password_tls"):
        broker = TempBroker("")
        with broker:
            conf = ["allow_anonymous true"] if name == "anonymous_plain" else ["allow_anonymous false"]
            ca = None
            if name != "anonymous_plain":
                (broker.dir / "passwd").write_text(lines)
                (broker.dir / "acl").write_text(acl_file_text(gateway_user=gateway.username))
                conf += [f"password_file {broker.dir}/passwd", f"acl_file {broker.dir}/acl"]
            if name == "password_tls":
                ca, cert, key = write_test_tls(broker.dir)
                conf += [f"certfile {cert}", f"keyfile {key}", "tls_version tlsv1.2"]
            broker.conf_body = "\n".join(conf) + "\n"
            broker.start()
            cpu0 = sum(psutil.Process(broker.proc.pid).cpu_times()[:2])
            result = connect_many(broker.port, pairs, tls_ca=ca)
            result["broker_cpu_ms_per_connect"] = round(
                1000 * (sum(psutil.Process(broker.proc.pid).cpu_times()[:2]) - cpu0) / len(pairs), 3)
            out[name] = result
    return out


def debug_log_cost(device: Credential, gateway: Credential, *, messages: int = 20_000) -> dict:
    """Broker CPU per QoS 1 message (device → gateway) at log level information vs debug."""
    # debug is the only level at which Mosquitto 2.0.11 logs a denied PUBLISH
    out: dict = {}
    lines = "\n".join(password_line(c) for c in [device, gateway]) + "\n"
    for level in ("information", "debug"):
        broker = TempBroker("")
        with broker:
            (broker.dir / "passwd").write_text(lines)
            (broker.dir / "acl").write_text(acl_file_text(gateway_user=gateway.username))
            types = ["error", "warning", "notice", "information"] + (["debug"] if level == "debug" else [])
            broker.conf_body = (f"allow_anonymous false\npassword_file {broker.dir}/passwd\nacl_file {broker.dir}/acl\n"
                                + "".join(f"log_type {t}\n" for t in types) + "max_inflight_messages 0\n")
            broker.start()
            out[level] = _stream(broker, device, gateway, messages)
    base, debug = out["information"]["broker_cpu_us_per_msg"], out["debug"]["broker_cpu_us_per_msg"]
    out["debug_over_information"] = round(debug / base, 2) if base else None
    return out


def _stream(broker: TempBroker, device: Credential, gateway: Credential, messages: int) -> dict:
    got = threading.Event()
    count = [0]

    def on_message(_c, _u, _msg) -> None:
        count[0] += 1
        if count[0] >= messages:
            got.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cost-gw", protocol=mqtt.MQTTv5)
    sub.username_pw_set(gateway.username, gateway.secret)
    sub.on_message = on_message
    sub.connect(HOST, broker.port)
    sub.subscribe("devices/+/telemetry", qos=1)
    sub.loop_start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cost-dev", protocol=mqtt.MQTTv5)
    pub.username_pw_set(device.username, device.secret)
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    pub.connect(HOST, broker.port)
    pub.loop_start()
    time.sleep(0.5)
    proc = psutil.Process(broker.proc.pid)
    cpu0, t0 = sum(proc.cpu_times()[:2]), time.perf_counter()
    topic, payload = f"devices/{device.username}/telemetry", b"x" * 200
    for _ in range(messages):
        pub.publish(topic, payload, qos=1)
    got.wait(300)
    wall, cpu = time.perf_counter() - t0, sum(proc.cpu_times()[:2]) - cpu0
    log_mb = broker.log.stat().st_size / 1e6 if broker.log.exists() else 0.0
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    return {"messages": count[0], "msgs_per_s": round(count[0] / wall),
            "broker_cpu_us_per_msg": round(1e6 * cpu / messages, 1), "log_mb": round(log_mb, 2)}
