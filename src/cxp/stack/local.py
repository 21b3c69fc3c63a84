"""Provision, start, stop and inspect the local Mosquitto and PostgreSQL + TimescaleDB."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cxp.core.config import Settings
from cxp.identity.broker import BrokerPaths, reload_broker
from cxp.identity.errors import IdentityError
from cxp.stack.broker import broker_conf, broker_log, provision_broker_identity

PROVISION_SCRIPT = Path(__file__).with_name("provision.sh")


class StackError(Exception):
    """The local stack could not be provisioned, started or stopped."""


@dataclass(frozen=True)
class StackStatus:
    """Whether each service answers on its port."""

    broker_up: bool
    db_up: bool
    broker_address: str
    db_address: str


def _pg_bin() -> Path:
    majors = sorted((p for p in Path("/usr/lib/postgresql").glob("*") if p.name.isdigit()), key=lambda p: int(p.name))
    if not majors:
        raise StackError("PostgreSQL is not installed (run `cxp stack up` as root to provision it)")
    return majors[-1] / "bin"


def _mosquitto_bin() -> str | None:
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def _is_provisioned() -> bool:
    try:
        major = _pg_bin().parent.name
    except StackError:
        return False
    control = Path(f"/usr/share/postgresql/{major}/extension/timescaledb.control")
    return _mosquitto_bin() is not None and control.exists()


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_port(host: str, port: int, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _port_open(host, port):
            return
        time.sleep(0.1)
    raise StackError(f"{what} did not open {host}:{port} within {timeout_s:.0f}s")


def _run(cmd: list[str], *, as_user: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    if as_user is not None:
        cmd = ["runuser", "-u", as_user, "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise StackError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _service_user(name: str) -> str | None:
    """PostgreSQL and Mosquitto refuse to run as root; run them as their package's system user then."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError as exc:
        raise StackError(f"system user {name!r} is missing; reinstall its package") from exc
    return name


def _chown_tree(path: Path, user: str | None) -> None:
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
            os.chown(name, entry.pw_uid, entry.pw_gid)


def provision() -> None:
    """Install Mosquitto, PostgreSQL and TimescaleDB when missing."""
    if _is_provisioned():
        return
    proc = subprocess.run(["bash", str(PROVISION_SCRIPT)], env={**os.environ, "CXP_STACK_DIR": ""})
    if proc.returncode != 0 or not _is_provisioned():
        raise StackError("provisioning failed; see the messages above")


# --------------------------------------------------------------------------- PostgreSQL

def _pg_paths(settings: Settings) -> tuple[Path, Path, Path]:
    base = settings.stack.dir / "pg"
    return base / "data", base / "run", base / "postgres.log"


def _wal_compression(bin_dir: Path) -> str:
    """lz4 where the server was built with it (full-page images compressed for a fraction of pglz's CPU)."""
    try:
        built = subprocess.run([str(bin_dir / "pg_config"), "--configure"], capture_output=True, text=True,
                               timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        built = ""
    return "lz4" if "--with-lz4" in built else "pglz"


def _pg_conf(settings: Settings, run_dir: Path, *, wal_compression: str = "pglz") -> str:
    # Sized for a 2-core, 24 GiB machine shared with the broker and the gateway.
    return f"""
listen_addresses = '{settings.db.host}'
port = {settings.db.port}
unix_socket_directories = '{run_dir}'
max_connections = 100
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
shared_buffers = 1GB
work_mem = 64MB
maintenance_work_mem = 512MB
effective_cache_size = 8GB
max_wal_size = 4GB
checkpoint_timeout = 15min
wal_compression = {wal_compression}
random_page_cost = 1.1
jit = off
log_min_messages = warning
# One TimescaleDB scheduler per database (tests make several) plus its jobs and parallel workers.
max_worker_processes = 32
timescaledb.max_background_workers = 16
"""


_PROJECT_CONF = "cxp.conf"


def _write_project_conf(data: Path, text: str, user: str | None) -> None:
    """Keep the cluster's included project settings file current; older clusters get the include line."""
    conf = data / "postgresql.conf"
    include = f"include_if_exists = '{_PROJECT_CONF}'"
    if include not in conf.read_text():
        with open(conf, "a") as handle:
            handle.write(f"\n{include}\n")
    target = data / _PROJECT_CONF
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(target, entry.pw_uid, entry.pw_gid)


def start_db(settings: Settings) -> None:
    """Initialise (once) and start the private PostgreSQL cluster, then ensure the role and database."""
    data, run_dir, log = _pg_paths(settings)
    user = _service_user("postgres")
    bin_dir = _pg_bin()
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        _chown_tree(data.parent, user)
        os.chmod(data, 0o700)
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
              "--locale=C.UTF-8"], as_user=user)
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"\ninclude_if_exists = '{_PROJECT_CONF}'\n")
        # Loopback only, no passwords in the repo: the local stack trusts its own machine.
        (data / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
        )
        _chown_tree(data.parent, user)
    # Rewritten on every start so a settings change reaches clusters made by older checkouts too.
    _write_project_conf(data, _pg_conf(settings, run_dir, wal_compression=_wal_compression(bin_dir)), user)
    if not _port_open(settings.db.host, settings.db.port):
        run_dir.mkdir(parents=True, exist_ok=True)
        _chown_tree(run_dir, user)
        # Generous: after an unclean stop (killed session) crash recovery replays WAL before accepting.
        _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "900", "start"], as_user=user)
        _wait_port(settings.db.host, settings.db.port, 30, "PostgreSQL")
    else:  # running already: settings that need no restart take effect now
        _run([str(bin_dir / "pg_ctl"), "-D", str(data), "reload"], as_user=user)
    _wait_accepting(settings, bin_dir, timeout_s=900)
    _ensure_database(settings, bin_dir)


def _wait_accepting(settings: Settings, bin_dir: Path, *, timeout_s: float) -> None:
    """Wait until the server accepts connections (it listens, but refuses, during crash recovery)."""
    deadline = time.monotonic() + timeout_s
    while True:
        # As an existing role: pg_isready's default (the OS user, root) makes the server log a FATAL each time.
        probe = subprocess.run([str(bin_dir / "pg_isready"), "-q", "-h", settings.db.host, "-p", str(settings.db.port),
                                "-U", "postgres", "-d", "postgres"], check=False)
        if probe.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise StackError(f"PostgreSQL on port {settings.db.port} did not accept connections in {timeout_s:.0f} s")
        time.sleep(0.5)


def _ensure_database(settings: Settings, bin_dir: Path) -> None:
    psql = [str(bin_dir / "psql"), "-h", settings.db.host, "-p", str(settings.db.port), "-U", "postgres",
            "-d", "postgres", "-tAq", "-v", "ON_ERROR_STOP=1"]
    role, db = settings.db.user, settings.db.name
    if _run([*psql, "-c", f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'"]).stdout.strip() != "1":
        _run([*psql, "-c", f'CREATE ROLE "{role}" LOGIN SUPERUSER'])
    if _run([*psql, "-c", f"SELECT 1 FROM pg_database WHERE datname = '{db}'"]).stdout.strip() != "1":
        _run([*psql, "-c", f'CREATE DATABASE "{db}" OWNER "{role}"'])


def stop_db(settings: Settings, *, mode: str = "fast") -> None:
    """Stop the PostgreSQL cluster (mode: smart, fast or immediate)."""
    data, _, _ = _pg_paths(settings)
    if (data / "postmaster.pid").exists():
        _run([str(_pg_bin() / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop"],
             as_user=_service_user("postgres"), check=False)


# --------------------------------------------------------------------------- Mosquitto

def _broker_paths(settings: Settings) -> tuple[Path, Path, Path, Path]:
    base = settings.stack.dir / "mosquitto"
    return base, base / "mosquitto.conf", base / "mosquitto.pid", base / "data"


def _broker_ports(settings: Settings) -> list[tuple[str, int]]:
    mqtt = settings.mqtt
    return [(mqtt.host, mqtt.port), (mqtt.device_host, mqtt.device_tls_port), (mqtt.device_host, mqtt.device_mtls_port)]


def start_broker(settings: Settings) -> None:
    """Provision the broker's identity files, write its config and start it; restart a broker on an older config."""
    binary = _mosquitto_bin()
    if binary is None:
        raise StackError("mosquitto is not installed (run `cxp stack up` as root to provision it)")
    base, conf, _pid, data = _broker_paths(settings)
    data.mkdir(parents=True, exist_ok=True)
    user = _service_user("mosquitto")
    try:
        tls_changed = provision_broker_identity(settings)
    except IdentityError as exc:
        raise StackError(f"cannot provision the broker's identity files: {exc}") from exc
    text = broker_conf(settings, user=user)
    running = all(_port_open(h, p) for h, p in _broker_ports(settings))
    if running and conf.exists() and conf.read_text() == text:
        if tls_changed:
            reload_broker(settings)  # a renewed CRL or certificate is read on SIGHUP
        return
    if running or _port_open(settings.mqtt.host, settings.mqtt.port):
        # An older config (e.g. anonymous, from a previous checkout) must not stay in force.
        stop_broker(settings)
    conf.write_text(text)
    log = broker_log(BrokerPaths.of(settings))
    if log.exists() and log.stat().st_size > settings.mqtt.broker_log_max_bytes:
        log.replace(log.with_name(log.name + ".1"))  # the broker is stopped: it opens a new file at start
    _chown_tree(base, user)
    _run([binary, "-c", str(conf), "-d"])
    for host, port in _broker_ports(settings):
        _wait_port(host, port, 15, "Mosquitto")


def stop_broker(settings: Settings) -> None:
    """Stop Mosquitto (it saves its persistence file on SIGTERM)."""
    _, _, pid_file, _ = _broker_paths(settings)
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (ValueError, ProcessLookupError):
        pid_file.unlink(missing_ok=True)
        return
    # Saving a large backlog to the persistence file can take a while: wait for it, never kill it.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            pid_file.unlink(missing_ok=True)
            return
        time.sleep(0.1)
    raise StackError(f"mosquitto (pid {pid}) is still saving its persistence file after 180 s; try again later")


# --------------------------------------------------------------------------- the whole stack

def start_stack(settings: Settings) -> StackStatus:
    """Provision when needed, then start both services; idempotent."""
    provision()
    settings.stack.dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.stack.dir, 0o755)
    start_db(settings)
    start_broker(settings)
    return get_status(settings)


def stop_stack(settings: Settings) -> StackStatus:
    """Stop both services."""
    stop_broker(settings)
    stop_db(settings)
    return get_status(settings)


def get_status(settings: Settings) -> StackStatus:
    """Which services answer."""
    mqtt = settings.mqtt
    return StackStatus(
        broker_up=all(_port_open(h, p) for h, p in _broker_ports(settings)),
        db_up=_port_open(settings.db.host, settings.db.port),
        broker_address=(f"mqtt://{mqtt.host}:{mqtt.port} (services), mqtts://{mqtt.device_host}:"
                        f"{mqtt.device_tls_port} (device tokens), mqtts://{mqtt.device_host}:{mqtt.device_mtls_port}"
                        " (device certificates)"),
        db_address=f"postgresql://{settings.db.user}@{settings.db.host}:{settings.db.port}/{settings.db.name}",
    )
