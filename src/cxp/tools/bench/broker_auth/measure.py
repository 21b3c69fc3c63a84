"""Measure Mosquitto 2.0's password_file + acl_file and dynamic-security plugin at fleet scale."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

from cxp.tools.bench.broker_auth.broker import (
    DYNSEC_PLUGIN,
    Probe,
    TempBroker,
    can_connect,
    connect_many,
    wait_until_connects,
)
from cxp.tools.bench.broker_auth.files import (
    DYNSEC_RESPONSE_TOPIC,
    DYNSEC_TOPIC,
    Credential,
    acl_file_text,
    batched,
    device_credentials,
    dynsec_device_commands,
    dynsec_gateway_commands,
    dynsec_state,
    password_line,
)

GATEWAY = Credential("cxp-gateway", "gateway-bench-secret")
ADMIN = Credential("cxp-dynsec-admin", "admin-bench-secret")
# `Denied PUBLISH` is logged at the debug level only (checked: absent with error…unsubscribe).
LOG_TYPES = "log_type error\nlog_type warning\nlog_type notice\nlog_type information\nlog_type debug\n"
DENIED = re.compile(r"Denied PUBLISH from (\S+) \(.*?'([^']*)'")


def _atomic_write(path: Path, text: str) -> None:
    # The broker may re-read at any moment: it must see the old file or the new one, never half of one.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    if path.exists():
        os.chown(tmp, path.stat().st_uid, path.stat().st_gid)
    os.replace(tmp, path)


def cross_device_probe(broker: TempBroker, victim: Credential, other: Credential) -> dict:
    """Device `victim` publishes QoS 1 onto `other`'s topic while the gateway subscribes to all telemetry."""
    gateway = Probe(broker.port, GATEWAY.username, GATEWAY.secret)
    device = Probe(broker.port, victim.username, victim.secret)
    try:
        gateway.connect()
        gateway.subscribe("devices/+/telemetry")
        device.connect()
        own = device.publish_qos1(f"devices/{victim.username}/telemetry", b'{"own":1}')
        cross = device.publish_qos1(f"devices/{other.username}/telemetry", b'{"forged":1}')
        time.sleep(0.5)
        anonymous = Probe(broker.port, None, None, client_id="anonymous-probe")
        anon_rc = anonymous.connect()
        anonymous.close()
        log = broker.log.read_text() if broker.log.exists() else ""
        denied = [line for line in log.splitlines() if DENIED.search(line)]
        return {
            "own_topic_puback": own,
            "cross_topic_puback": f"0x{cross:02x}" if cross is not None else None,
            "disconnected_after_denied_publish": device.disconnected.is_set(),
            "gateway_received": [t for t, _ in gateway.messages],
            "anonymous_connack": anon_rc,
            "denied_log_lines": len(denied),
            "denied_log_example": denied[0].split(": ", 1)[-1] if denied else None,
        }
    finally:
        device.close()
        gateway.close()


def measure_files(devices: int, *, connect_clients: int = 1000) -> dict:
    """password_file + acl_file with SIGHUP reloads."""
    creds = device_credentials(devices + 1)
    fleet, newcomer = creds[:devices], creds[devices]
    out: dict = {"mechanism": "files", "devices": devices}
    t0 = time.perf_counter()
    lines = [password_line(c) for c in [*fleet, GATEWAY]]
    out["hash_all_s"] = round(time.perf_counter() - t0, 3)
    broker = TempBroker("")
    passwd, acl = broker.dir / "passwd", broker.dir / "acl"
    with broker:
        t0 = time.perf_counter()
        _atomic_write(passwd, "\n".join(lines) + "\n")
        _atomic_write(acl, acl_file_text(gateway_user=GATEWAY.username))
        out["write_files_s"] = round(time.perf_counter() - t0, 3)
        out["password_file_mb"] = round(passwd.stat().st_size / 1e6, 2)
        broker.conf_body = f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n{LOG_TYPES}"
        out["start_until_listening_s"] = round(broker.start(), 3)
        out["then_until_first_connect_s"] = round(wait_until_connects(broker.port, *_pair(fleet[0])), 3)
        out["rss_mb"] = round(broker.rss_mb(), 1)

        # Provisioning one more device = rewrite the file from stored hashes + SIGHUP.
        t0 = time.perf_counter()
        lines.append(password_line(newcomer))
        _atomic_write(passwd, "\n".join(lines) + "\n")
        out["add_one_rewrite_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        broker.reload()
        out["reload_until_new_device_connects_s"] = round(
            wait_until_connects(broker.port, *_pair(newcomer)) , 3)
        out["rss_after_reload_mb"] = round(broker.rss_mb(), 1)

        # Revocation: drop a connected device's line, SIGHUP, time until the broker closes its connection.
        victim = fleet[1]
        probe = Probe(broker.port, victim.username, victim.secret)
        probe.connect()
        _atomic_write(passwd, "\n".join(line for line in lines if not line.startswith(victim.username + ":")) + "\n")
        with PubackTimer(broker.port, fleet[-1]) as timer:
            time.sleep(1.0)
            out["puback_max_ms_without_reload"] = timer.take_max_ms()
            t0 = time.perf_counter()
            broker.reload()
            probe.disconnected.wait(60)
            time.sleep(1.0)
            # the broker has one thread: while it re-reads the files, nobody's messages are handled
            out["puback_max_ms_across_reload"] = timer.take_max_ms()
        out["revoke_disconnected"] = probe.disconnected.is_set()
        out["revoke_disconnect_s"] = round(probe.disconnected_at - t0, 3) if probe.disconnected_at else None
        out["revoked_reconnect_refused"] = not can_connect(broker.port, *_pair(victim))
        probe.close()

        out["cross_device"] = cross_device_probe(broker, fleet[2], fleet[3])
        if connect_clients:
            out["concurrent_connect"] = connect_many(broker.port, [_pair(c) for c in fleet[4:4 + connect_clients]])
            time.sleep(0.5)
            out["rss_after_connects_mb"] = round(broker.rss_mb(), 1)
    return out


class PubackTimer:
    """A device publishing QoS 1 back to back in a thread, keeping the longest PUBACK wait."""

    def __init__(self, port: int, cred: Credential):
        self.probe = Probe(port, cred.username, cred.secret, client_id=f"timer-{cred.username}")
        self.topic = f"devices/{cred.username}/telemetry"
        self.max_s = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            self.probe.publish_qos1(self.topic, b"tick", timeout_s=30)
            self.max_s = max(self.max_s, time.perf_counter() - t0)
            time.sleep(0.005)

    def take_max_ms(self) -> float:
        """The longest wait since the last call, in milliseconds."""
        value, self.max_s = self.max_s, 0.0
        return round(1000 * value, 1)

    def __enter__(self) -> PubackTimer:
        self.probe.connect()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(35)
        self.probe.close()


def _pair(cred: Credential) -> tuple[str, str]:
    return cred.username, cred.secret


def _command(admin: Probe, payload: str, *, timeout_s: float = 600.0) -> float:
    """Send one control payload and wait for its response; returns the round trip in seconds."""
    before = len(admin.messages)
    t0 = time.perf_counter()
    admin.client.publish(DYNSEC_TOPIC, payload, qos=1)
    while len(admin.messages) == before:
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError("no dynamic-security response")
        time.sleep(0.0005)
    reply = json.loads(admin.messages[-1][1])
    errors = [r for r in reply.get("responses", []) if r.get("error")]
    if errors:
        raise RuntimeError(f"dynamic-security refused: {errors[:3]}")
    return time.perf_counter() - t0


def _dynsec_broker() -> TempBroker:
    broker = TempBroker("")
    state = broker.dir / "dynamic-security.json"
    subprocess.run(["mosquitto_ctrl", "dynsec", "init", str(state), ADMIN.username, ADMIN.secret],
                   check=True, capture_output=True)
    broker.conf_body = (f"allow_anonymous false\nplugin {DYNSEC_PLUGIN}\nplugin_opt_config_file {state}\n{LOG_TYPES}")
    return broker


def measure_dynsec(devices: int, *, batch: int = 100, max_create_s: float = 600.0, connect_clients: int = 1000) -> dict:
    """Dynamic security: creation over MQTT from empty (time-capped; 0 skips), the rest on a bulk-loaded fleet."""
    out: dict = {"mechanism": "dynsec", "devices": devices}
    if max_create_s > 0:
        out["create_over_mqtt_from_empty"] = measure_dynsec_create(devices, batch=batch, max_create_s=max_create_s)
    out.update(measure_dynsec_loaded(devices, batch=batch, connect_clients=connect_clients))
    return out


def measure_dynsec_create(devices: int, *, batch: int, max_create_s: float) -> dict:
    """Devices (a role + a client each) created by batched control messages; each command rewrites the state."""
    fleet = device_credentials(devices)
    broker = _dynsec_broker()
    state = broker.dir / "dynamic-security.json"
    with broker:
        broker.start()
        # A dynsec save of a large state blocks the broker for minutes: keep the admin from timing out and resending.
        admin = Probe(broker.port, ADMIN.username, ADMIN.secret, keepalive=3600)
        admin.connect()
        admin.subscribe(DYNSEC_RESPONSE_TOPIC)
        _command(admin, json.dumps({"commands": dynsec_gateway_commands(GATEWAY)}))
        # 2.0.11 matches ACL topics literally (`devices/%u/telemetry` is a topic, not a pattern): a role per device.
        commands = (cmd for c in fleet for cmd in dynsec_device_commands(c, per_device_role=True))
        created, t0, samples = 0, time.perf_counter(), []
        for payload in batched(commands, batch * 2):
            samples.append(_command(admin, payload))
            created = min(created + batch, devices)
            if time.perf_counter() - t0 > max_create_s:
                break
        total = time.perf_counter() - t0
        admin.close()
        k = max(1, len(samples) // 20)
        return {
            "batch_devices": batch,
            "created": created,
            "complete": created == devices,
            "create_s": round(total, 1),
            "ms_per_device": round(1000 * total / created, 2),
            "ms_per_device_first_5pct": round(1000 * sum(samples[:k]) / (k * batch), 2),
            "ms_per_device_last_5pct": round(1000 * sum(samples[-k:]) / (k * batch), 2),
            "state_file_mb_at_end": round(state.stat().st_size / 1e6, 2),
        }


def measure_dynsec_loaded(devices: int, *, batch: int = 100, connect_clients: int = 1000) -> dict:
    """The JSON state written offline (hashes computed here), loaded by a broker start, then changed live."""
    creds = device_credentials(devices + 1 + batch)
    fleet, newcomer, more = creds[:devices], creds[devices], creds[devices + 1:]
    broker = _dynsec_broker()
    state = broker.dir / "dynamic-security.json"
    out: dict = {}
    with broker:
        base = json.loads(state.read_text())
        t0 = time.perf_counter()
        full = dynsec_state(base, fleet, per_device_role=True)
        gw_client = dynsec_state({"clients": []}, [GATEWAY], per_device_role=False)["clients"][0]
        full["clients"].append({**gw_client, "roles": [{"rolename": "gateway"}]})
        gw_role = dynsec_gateway_commands(GATEWAY)[0]
        full["roles"].append({"rolename": "gateway", "acls": [{**a, "priority": 0} for a in gw_role["acls"]]})
        _atomic_write(state, json.dumps(full))
        out["bulk_write_state_s"] = round(time.perf_counter() - t0, 3)
        out["state_file_mb"] = round(state.stat().st_size / 1e6, 2)
        out["start_until_listening_s"] = round(broker.start(timeout_s=600), 3)
        out["then_until_first_connect_s"] = round(wait_until_connects(broker.port, *_pair(fleet[0])), 3)
        out["rss_mb"] = round(broker.rss_mb(), 1)
        # A dynsec save of a large state blocks the broker for minutes: keep the admin from timing out and resending.
        admin = Probe(broker.port, ADMIN.username, ADMIN.secret, keepalive=3600)
        admin.connect()
        admin.subscribe(DYNSEC_RESPONSE_TOPIC)
        # One more device at this size: its role + client, each command a save of the whole state.
        out["add_one_device_s"] = round(
            _command(admin, json.dumps({"commands": dynsec_device_commands(newcomer, per_device_role=True)})), 3)
        commands = [cmd for c in more for cmd in dynsec_device_commands(c, per_device_role=True)]
        took = _command(admin, json.dumps({"commands": commands}))
        out[f"add_{batch}_devices_one_message_s"] = round(took, 2)
        out["add_ms_per_device_at_this_size"] = round(1000 * took / batch, 1)
        out["state_file_mb_after_save"] = round(state.stat().st_size / 1e6, 2)
        out["rss_after_save_mb"] = round(broker.rss_mb(), 1)
        for command, victim in (("disableClient", fleet[1]), ("deleteClient", fleet[2])):
            probe = Probe(broker.port, victim.username, victim.secret)
            probe.connect()
            t0 = time.perf_counter()
            admin.client.publish(DYNSEC_TOPIC, json.dumps({"commands": [{"command": command,
                                                                         "username": victim.username}]}), qos=1)
            probe.disconnected.wait(60)
            out[f"{command}_disconnect_s"] = round(probe.disconnected_at - t0, 3) if probe.disconnected_at else None
            probe.close()
            time.sleep(0.2)
            out[f"{command}_reconnect_refused"] = not can_connect(broker.port, *_pair(victim))
        admin.close()
        out["cross_device"] = cross_device_probe(broker, fleet[3], fleet[4])
        if connect_clients:
            out["concurrent_connect"] = connect_many(broker.port, [_pair(c) for c in fleet[5:5 + connect_clients]])
            time.sleep(0.5)
            out["rss_after_connects_mb"] = round(broker.rss_mb(), 1)
    return out
