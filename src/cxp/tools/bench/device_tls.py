"""Cost of TLS + auth on the device path: connect rate and QoS 1 publish throughput, plain vs token+TLS vs mTLS.

One throw-away Mosquitto (temp dir, free loopback ports, never the stack's broker) with three listeners: plain
anonymous (the baseline), the token TLS listener (password file of `$7$` hashes, username = device id) and the
certificate listener (`require_certificate`, identity = CN, CRL), both with `use_username_as_clientid` and the
ACL `pattern write devices/%u/telemetry`. Each mode connects N devices, each with its own connection and its
own credential, through the simulator's ConnectionLoop (one network thread, a few connect workers), then
every device publishes M QoS 1 messages on its own topic; a subscriber on the plain listener receives them.

    cxp bench device-tls [--devices 1000] [--messages 20] [--payload-bytes 300] [--connect-workers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from cxp.device_sim.credentials import DeviceCredential
from cxp.device_sim.links import ConnectionLoop
from cxp.identity.files import PkiPaths, init_ca, pem, save_server, write_private_key, write_public
from cxp.identity.pki import build_crl, device_key_and_csr, issue_server_certificate, sign_device_csr
from cxp.identity.tokens import issue_token, write_password_file
from cxp.tools.bench.broker_auth.broker import HOST, Probe, TempBroker, free_port

MODES = ("plain", "token+TLS", "mTLS")


@dataclass
class ModeResult:
    """One mode's figures."""

    mode: str
    devices: int
    connected: int
    connect_s: float
    connects_per_s: float
    broker_cpu_ms_per_connect: float
    client_cpu_ms_per_connect: float
    client_rss_mb: float
    messages: int
    acked: int
    rejected: int
    publish_s: float
    messages_per_s: float
    broker_cpu_us_per_message: float
    client_cpu_us_per_message: float
    delivered: int


class DeviceBroker(TempBroker):
    """The stack's device-side layout: plain, token TLS and certificate listeners (per-listener auth)."""

    def __init__(self, base: Path, pki: PkiPaths) -> None:
        super().__init__(conf_body="", dir=base)
        self.token_port, self.cert_port = free_port(), free_port()
        tls = (f"tls_version tlsv1.2\ncafile {pki.ca_cert}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
               "use_username_as_clientid true\nallow_anonymous false\n")
        # A slow subscriber must not lose messages to the default queue bound (1,000) during the burst.
        self.conf_body = (f"allow_anonymous true\nmax_queued_messages 0\nlistener {self.token_port} {HOST}\n{tls}"
                          f"password_file {base / 'passwd'}\nacl_file {base / 'acl'}\n"
                          f"listener {self.cert_port} {HOST}\n{tls}require_certificate true\n"
                          f"use_identity_as_username true\ncrlfile {pki.crl}\nacl_file {base / 'acl'}\n")

    def conf_text(self) -> str:
        """per_listener_settings must come before the first listener."""
        return "per_listener_settings true\n" + super().conf_text()

    def cpu_s(self) -> float:
        """CPU seconds the broker has used so far."""
        times = psutil.Process(self.proc.pid).cpu_times()  # type: ignore[union-attr]
        return times.user + times.system


def _credentials(base: Path, broker: DeviceBroker, pki: PkiPaths, n: int) -> dict[str, list[DeviceCredential]]:
    """N tokens and N certificates (keys made 'on the device', CSRs signed by the CA); N plain logins."""
    ca, _ = init_ca(paths=pki)
    save_server(issue_server_certificate(ca=ca), pki)
    write_public(pki.crl, pem(build_crl(ca=ca, revoked=[])))
    tokens = [issue_token(device_id=f"tok-{i:05d}") for i in range(n)]
    write_password_file(base / "passwd", [(t.username, t.password_hash) for t in tokens])
    (base / "acl").write_text("pattern write devices/%u/telemetry\n")
    device_dir = Path(tempfile.mkdtemp(prefix="cxp-bench-devices-"))
    certs = []
    for i in range(n):
        device_id = f"crt-{i:05d}"
        key, csr = device_key_and_csr(device_id=device_id)
        cert_file, key_file = device_dir / f"{device_id}.crt", device_dir / f"{device_id}.key"
        write_public(cert_file, sign_device_csr(ca=ca, csr_pem=csr, device_id=device_id).pem())
        write_private_key(key_file, key)
        certs.append(DeviceCredential.certificate(device_id=device_id, cert_file=cert_file, key_file=key_file,
                                                  ca_file=pki.ca_cert, host=HOST, port=broker.cert_port))
    plain = [DeviceCredential.token(device_id=f"pln-{i:05d}", secret="unused", ca_file=pki.ca_cert, host=HOST,
                                    port=broker.port) for i in range(n)]
    toks = [DeviceCredential.token(device_id=t.username, secret=t.secret, ca_file=pki.ca_cert, host=HOST,
                                   port=broker.token_port) for t in tokens]
    return {"plain": plain, "token+TLS": toks, "mTLS": certs}


def _rss_mb() -> float:
    return psutil.Process(os.getpid()).memory_info().rss / 1e6


def _cpu_s() -> float:
    times = psutil.Process(os.getpid()).cpu_times()
    return times.user + times.system


def run_mode(mode: str, credentials: list[DeviceCredential], broker: DeviceBroker, collector: Probe, *,
             messages: int, payload_bytes: int, connect_workers: int, timeout_s: float) -> ModeResult:
    """Connect every device of one mode, publish `messages` each, wait for the acks and the deliveries."""
    delivered0 = len(collector.messages)
    rss0, cpu0, own0 = _rss_mb(), broker.cpu_s(), _cpu_s()
    with ConnectionLoop(connect_workers=connect_workers, tls=mode != "plain", backoff_initial_s=0.5,
                        backoff_max_s=5.0, keepalive_s=120) as loop:
        t0 = time.perf_counter()
        links = loop.open_all(credentials)
        connected = loop.wait_all_connected(timeout_s)
        connect_s = time.perf_counter() - t0
        cpu1, rss1, own1 = broker.cpu_s(), _rss_mb(), _cpu_s()
        payload = b"x" * payload_bytes
        t1 = time.perf_counter()
        for _ in range(messages):
            for device_id, link in links.items():
                link.try_publish(f"devices/{device_id}/telemetry", payload)
        deadline = time.monotonic() + timeout_s
        for link in links.values():
            link.wait_all_acked(max(deadline - time.monotonic(), 0.0))
        publish_s = time.perf_counter() - t1
        cpu2, own2 = broker.cpu_s(), _cpu_s()
        stats = loop.stats()
        expected = delivered0 + stats["acked"] - stats["rejected"]
        while len(collector.messages) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
    return ModeResult(
        mode=mode, devices=len(credentials), connected=connected, connect_s=round(connect_s, 3),
        connects_per_s=round(connected / connect_s, 1), broker_cpu_ms_per_connect=round((cpu1 - cpu0) * 1e3 /
                                                                                       max(connected, 1), 3),
        client_cpu_ms_per_connect=round((own1 - own0) * 1e3 / max(connected, 1), 3),
        client_rss_mb=round(rss1 - rss0, 1), messages=stats["published"], acked=stats["acked"],
        rejected=stats["rejected"], publish_s=round(publish_s, 3),
        messages_per_s=round(stats["acked"] / publish_s, 1) if publish_s > 0 else 0.0,
        broker_cpu_us_per_message=round((cpu2 - cpu1) * 1e6 / max(stats["acked"], 1), 1),
        client_cpu_us_per_message=round((own2 - own1) * 1e6 / max(stats["acked"], 1), 1),
        delivered=len(collector.messages) - delivered0)


def table(results: list[ModeResult]) -> str:
    """The figures as a text table, with ratios to the plain baseline."""
    base = results[0]
    head = (f"{'mode':<10} {'devices':>7} {'connected':>9} {'connect s':>9} {'conn/s':>8} {'×plain':>7} "
            f"{'broker ms/conn':>14} {'client ms/conn':>14} {'client RSS MB':>13} {'msgs acked':>10} {'msgs/s':>9} "
            f"{'×plain':>7} {'broker µs/msg':>13} {'client µs/msg':>13} {'delivered':>9}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.mode:<10} {r.devices:>7} {r.connected:>9} {r.connect_s:>9.2f} {r.connects_per_s:>8.0f} "
                     f"{r.connects_per_s / base.connects_per_s:>7.2f} {r.broker_cpu_ms_per_connect:>14.2f} "
                     f"{r.client_cpu_ms_per_connect:>14.2f} {r.client_rss_mb:>13.1f} {r.acked:>10} "
                     f"{r.messages_per_s:>9.0f} {r.messages_per_s / base.messages_per_s:>7.2f} "
                     f"{r.broker_cpu_us_per_message:>13.1f} {r.client_cpu_us_per_message:>13.1f} {r.delivered:>9}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the three modes against one throw-away broker and print a table (and JSON with --json)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1000, help="devices per mode, each with its own connection")
    ap.add_argument("--messages", type=int, default=20, help="QoS 1 messages each device publishes")
    ap.add_argument("--payload-bytes", type=int, default=300, help="size of each message")
    ap.add_argument("--connect-workers", type=int, default=4, help="threads doing TCP connects + TLS handshakes")
    ap.add_argument("--timeout-s", type=float, default=300.0, help="longest wait for connects, acks, deliveries")
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = ap.parse_args(argv)
    # Each mode holds N client sockets in this process (the broker raises its own limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 2 * args.devices + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    base = Path(tempfile.mkdtemp(prefix="cxp-bench-device-tls-"))
    pki = PkiPaths(base)  # flat in the broker's dir, which TempBroker hands to the mosquitto user
    broker = DeviceBroker(base, pki)
    t0 = time.perf_counter()
    credentials = _credentials(base, broker, pki, args.devices)
    print(f"issued {args.devices} tokens and {args.devices} device certificates from CSRs in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    with broker:
        broker.start()
        collector = Probe(broker.port, None, None, client_id="bench-collector")
        if collector.connect() != 0:
            raise SystemExit("the collector could not connect to the plain listener")
        collector.subscribe("devices/+/telemetry")
        try:
            results = []
            for mode in MODES:
                results.append(run_mode(mode, credentials[mode], broker, collector, messages=args.messages,
                                        payload_bytes=args.payload_bytes, connect_workers=args.connect_workers,
                                        timeout_s=args.timeout_s))
                print(f"{mode}: done", flush=True)
        finally:
            collector.close()
    print(f"\n{args.devices} devices per mode, {args.messages} QoS 1 messages of {args.payload_bytes} B each, "
          f"{args.connect_workers} connect workers + 1 network thread, {os.cpu_count()} cores shared by client "
          "and broker")
    print(table(results))
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
