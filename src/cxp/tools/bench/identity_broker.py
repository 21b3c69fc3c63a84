"""A burst of device connects against a private Mosquitto per auth mode: connects/s and the broker's CPU per connect.

Each mode starts its own broker in a temporary directory on a free loopback port (never the stack's broker):
anonymous TCP (baseline), a password file of `$7$` hashes at each iteration count over TCP and over TLS, and
client certificates (mutual TLS, CN as username). A thread pool opens N connections, each one CONNECT →
CONNACK → DISCONNECT with a minimal MQTT v5 client; the broker's own CPU time is read from /proc.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cxp.identity.files import PkiPaths, init_ca, save_server, write_private_key, write_public
from cxp.identity.pki import device_key_and_csr, issue_server_certificate, sign_device_csr
from cxp.identity.tokens import hash_secret, new_secret, write_password_file

HOST = "127.0.0.1"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str, username: str | None, password: str | None) -> bytes:
    """An MQTT v5 CONNECT (clean start, keepalive 30 s, no properties)."""
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = _utf8("MQTT") + bytes([5, flags]) + struct.pack("!H", 30) + b"\x00" + _utf8(client_id)
    body += (_utf8(username) if username is not None else b"") + (_utf8(password) if password is not None else b"")
    return b"\x10" + _varint(len(body)) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by the broker")
        data += chunk
    return data


def connect_once(*, port: int, client_id: str, context: ssl.SSLContext | None, username: str | None = None,
                 password: str | None = None) -> int:
    """Open a connection, send CONNECT, return the CONNACK reason code (0: accepted), disconnect."""
    with socket.create_connection((HOST, port), timeout=60) as raw:
        sock = context.wrap_socket(raw, server_hostname=HOST) if context else raw
        sock.sendall(connect_packet(client_id, username, password))
        header = _recv_exact(sock, 2)
        if header[0] != 0x20:
            raise ConnectionError(f"expected CONNACK, got packet type {header[0] >> 4}")
        length, shift, byte = header[1] & 0x7F, 7, header[1]
        while byte & 0x80:
            byte = _recv_exact(sock, 1)[0]
            length, shift = length + ((byte & 0x7F) << shift), shift + 7
        reason = _recv_exact(sock, length)[1]
        sock.sendall(b"\xe0\x00")
        return reason


@dataclass(frozen=True)
class BurstResult:
    """What one burst of connects cost."""

    accepted: int
    refused: int
    wall_s: float
    broker_cpu_s: float


class PrivateBroker:
    """A Mosquitto with one listener configured by `lines`, in its own directory."""

    def __init__(self, base: Path, lines: str) -> None:
        with socket.socket() as s:
            s.bind((HOST, 0))
            self.port = s.getsockname()[1]
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        # As root Mosquitto would switch to its system user, which cannot read a private temporary directory.
        user = "user root\n" if os.geteuid() == 0 else ""
        conf = base / f"mosquitto-{self.port}.conf"
        conf.write_text(f"{user}listener {self.port} {HOST}\n{lines}\nmax_connections -1\npersistence false\n"
                        f"log_dest file {base}/mosquitto-{self.port}.log\nlog_type error\n")
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not start (see {base})")

    def cpu_s(self) -> float:
        """User + system CPU seconds the broker has used."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Terminate the broker."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def burst(broker: PrivateBroker, *, connects: int, workers: int, context: ssl.SSLContext | None,
          credentials: list[tuple[str, str]] | None) -> BurstResult:
    """N connects through a pool of `workers` threads; counts CONNACK successes and refusals."""
    def one(i: int) -> int:
        user, secret = credentials[i % len(credentials)] if credentials else (None, None)
        return connect_once(port=broker.port, client_id=f"bench-{i}", context=context, username=user, password=secret)

    cpu0, t0 = broker.cpu_s(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        codes = list(pool.map(one, range(connects)))
    wall, cpu = time.perf_counter() - t0, broker.cpu_s() - cpu0
    accepted = sum(1 for c in codes if c == 0)
    return BurstResult(accepted=accepted, refused=len(codes) - accepted, wall_s=wall, broker_cpu_s=cpu)


def _client_context(pki: PkiPaths, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        context.load_cert_chain(certfile=str(cert[0]), keyfile=str(cert[1]))
    return context


def run(*, connects: int, workers: int, iterations: list[int], devices: int) -> None:
    """Print one line per auth mode: accepted, wall time, connects/s, broker CPU per connect."""
    print(f"\n{connects:,} connects through {workers} client threads, each its own TCP(+TLS) connection "
          f"(password file of {devices:,} devices)")
    print(f"{'mode':<28} {'accepted':>9} {'wall s':>8} {'connects/s':>11} {'broker CPU ms/connect':>22}")
    with tempfile.TemporaryDirectory(prefix="cxp-bench-identity-") as tmp:
        base = Path(tmp)
        pki = PkiPaths(base / "pki")
        ca, _ = init_ca(paths=pki)
        save_server(issue_server_certificate(ca=ca), pki)
        tls = (f"tls_version tlsv1.2\ncafile {pki.ca_cert}\ncertfile {pki.server_cert}\n"
               f"keyfile {pki.server_key}\n")
        key, csr = device_key_and_csr(device_id="bench-device")
        write_public(base / "dev.crt", sign_device_csr(ca=ca, csr_pem=csr, device_id="bench-device").pem())
        write_private_key(base / "dev.key", key)
        secrets_ = [(f"dev-{i:06d}", new_secret()) for i in range(devices)]
        modes: list[tuple[str, str, ssl.SSLContext | None, list | None]] = [
            ("anonymous TCP (baseline)", "allow_anonymous true", None, None)]
        for count in iterations:
            # Every device gets its own line; only the first `connects` devices connect.
            write_password_file(base / f"passwd-{count}",
                                [(u, hash_secret(s, iterations=count)) for u, s in secrets_])
            pw = f"allow_anonymous false\npassword_file {base}/passwd-{count}"
            modes.append((f"password {count:,} it, TCP", pw, None, secrets_))
            modes.append((f"password {count:,} it, TLS", f"{tls}{pw}", _client_context(pki), secrets_))
        modes.append(("client certificate, mTLS", f"{tls}require_certificate true\nuse_identity_as_username true\n"
                      "allow_anonymous false", _client_context(pki, (base / "dev.crt", base / "dev.key")), None))
        for name, lines, context, credentials in modes:
            broker = PrivateBroker(base, lines)
            try:
                r = burst(broker, connects=connects, workers=workers, context=context, credentials=credentials)
            finally:
                broker.stop()
            print(f"{name:<28} {r.accepted:>9,} {r.wall_s:>8.2f} {connects / r.wall_s:>11,.0f} "
                  f"{1000 * r.broker_cpu_s / connects:>22.3f}")
