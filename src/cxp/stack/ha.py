"""A highly available TimescaleDB on loopback: etcd + three PostgreSQL + TimescaleDB members managed by Patroni.

`start_ha` provisions (Debian's `patroni` and `etcd-server`), writes each member's Patroni config under
`<stack dir>/ha/`, starts etcd and the members detached (idempotent: what answers is left alone), waits for a
primary and its standbys, and creates the role and database. `stop_ha` stops them. Writers reach the primary
with `CXP_DB__MEMBERS` (libpq multi-host, target_session_attrs=read-write); Patroni moves the primary on failure.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cxp.core.config import HaSettings, Settings
from cxp.stack.local import (
    PROVISION_SCRIPT,
    StackError,
    _chown_tree,
    _ensure_database,
    _pg_bin,
    _port_open,
    _service_user,
    _wait_port,
)

SCOPE = "cxp-ha"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """One Patroni member as its REST API reports it."""

    name: str
    pg_port: int
    rest_port: int
    role: str | None  # "primary"/"master", "replica", or None when it does not answer
    state: str | None
    lag_bytes: int | None = None


def _base(settings: Settings) -> Path:
    return settings.stack.dir / "ha"


def _binary(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)


def provision_ha() -> None:
    """Install Patroni and etcd (Debian packages) when missing."""
    if _binary("patroni") and _binary("etcd"):
        return
    proc = subprocess.run(["bash", str(PROVISION_SCRIPT), "ha"], env={**os.environ, "CXP_STACK_DIR": ""})
    if proc.returncode != 0 or not (_binary("patroni") and _binary("etcd")):
        raise StackError("installing patroni and etcd-server failed; see the messages above")


def _member_names(ha: HaSettings) -> list[str]:
    return [f"pg{i + 1}" for i in range(len(ha.pg_ports))]


def _patroni_conf(settings: Settings, i: int) -> str:
    ha = settings.stack.ha
    name = _member_names(ha)[i]
    base = _base(settings) / name
    pg, rest = ha.pg_ports[i], ha.rest_ports[i]
    retry = max(2, (ha.ttl_s - ha.loop_s) // 2)
    conf = {
        "scope": SCOPE,
        "namespace": "/cxp/",
        "name": name,
        "log": {"level": "INFO"},
        "restapi": {"listen": f"127.0.0.1:{rest}", "connect_address": f"127.0.0.1:{rest}"},
        "etcd3": {"hosts": [f"127.0.0.1:{ha.etcd_client_port}"]},
        "bootstrap": {
            "dcs": {
                "ttl": ha.ttl_s,
                "loop_wait": ha.loop_s,
                "retry_timeout": retry,
                "maximum_lag_on_failover": 16 * 1024 * 1024,
                "synchronous_mode": ha.synchronous,
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": {
                        "shared_preload_libraries": "timescaledb",
                        "timescaledb.telemetry_level": "off",
                        "max_connections": 100,
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "wal_log_hints": "on",
                        "max_wal_senders": 10,
                        "max_replication_slots": 10,
                        "wal_keep_size": "256MB",
                        "max_worker_processes": 32,
                        "timescaledb.max_background_workers": 8,
                        "hot_standby_feedback": "on",
                        "wal_receiver_status_interval": "1s",
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{pg}",
            "connect_address": f"127.0.0.1:{pg}",
            "data_dir": str(base / "data"),
            "bin_dir": str(_pg_bin()),
            "pgpass": str(base / "pgpass"),
            # Loopback only, no passwords in the repo: the local stack trusts its own machine (as the single node).
            "pg_hba": [
                "local all all trust",
                "host all all 127.0.0.1/32 trust",
                "host replication all 127.0.0.1/32 trust",
            ],
            "authentication": {"superuser": {"username": "postgres"}, "replication": {"username": "postgres"}},
            # Three members share this machine's cores and memory with the rest of the stack.
            "parameters": {
                "unix_socket_directories": str(base / "run"),
                "shared_buffers": "256MB",
                "work_mem": "32MB",
                "max_wal_size": "1GB",
                "jit": "off",
                "log_min_messages": "warning",
            },
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
    }
    return json.dumps(conf, indent=2)  # JSON is YAML


def _start_detached(cmd: list[str], log: Path, pid_file: Path, user: str | None) -> None:
    """Start `cmd` in a session of its own (as `user`: PostgreSQL refuses root) and record its own pid."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            user=user,
            group=user,
            env={**os.environ, "HOME": str(pid_file.parent)},
            cwd=pid_file.parent,
        )
    pid_file.write_text(str(proc.pid))


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        # A killed child of this process stays a zombie until reaped: it answers kill(0) but is gone.
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return None
    except (OSError, ValueError, IndexError):
        return None
    return pid


def _start_etcd(settings: Settings) -> None:
    ha = settings.stack.ha
    base = _base(settings)
    if _port_open("127.0.0.1", ha.etcd_client_port):
        return
    binary = _binary("etcd")
    if binary is None:
        raise StackError("etcd is not installed")
    client, peer = f"http://127.0.0.1:{ha.etcd_client_port}", f"http://127.0.0.1:{ha.etcd_peer_port}"
    _start_detached(
        [
            binary,
            "--name",
            "cxp",
            "--data-dir",
            str(base / "etcd"),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"cxp={peer}",
            "--initial-cluster-state",
            "new",
            "--log-outputs",
            "stderr",
        ],
        base / "etcd.log",
        base / "etcd.pid",
        None,
    )
    _wait_port("127.0.0.1", ha.etcd_client_port, 30, "etcd")


def member_status(settings: Settings) -> list[Member]:
    """Each member's role and state from its Patroni REST API (None when it does not answer)."""
    ha = settings.stack.ha
    out = []
    for name, pg, rest in zip(_member_names(ha), ha.pg_ports, ha.rest_ports, strict=True):
        role = state = lag = None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{rest}/patroni", timeout=2) as resp:
                body = json.loads(resp.read())
            role, state = body.get("role"), body.get("state")
            xlog = body.get("xlog") or {}
            behind = xlog.get("received_location", 0) - xlog.get("replayed_location", 0)
            lag = max(0, behind) if role == "replica" else 0
        except (OSError, urllib.error.URLError, ValueError):
            pass
        out.append(Member(name, pg, rest, role, state, lag))
    return out


def primary_port(settings: Settings) -> int | None:
    """The PostgreSQL port of the running primary, or None."""
    for m in member_status(settings):
        if m.role in ("primary", "master") and m.state == "running":
            return m.pg_port
    return None


def start_ha(settings: Settings, *, timeout_s: float = 180.0) -> list[Member]:
    """Provision, then start etcd and every Patroni member (idempotent); wait for a primary and running standbys;
    ensure the role and database on the primary."""
    provision_ha()
    ha = settings.stack.ha
    if len(ha.pg_ports) != len(ha.rest_ports):
        raise StackError("stack.ha.pg_ports and stack.ha.rest_ports must name as many members")
    base = _base(settings)
    base.mkdir(parents=True, exist_ok=True)
    user = _service_user("postgres")
    _start_etcd(settings)
    patroni = _binary("patroni")
    if patroni is None:
        raise StackError("patroni is not installed")
    for i, name in enumerate(_member_names(ha)):
        home = base / name
        (home / "run").mkdir(parents=True, exist_ok=True)
        conf = home / "patroni.yml"
        conf.write_text(_patroni_conf(settings, i))
        _chown_tree(home, user)
        if _alive(home / "patroni.pid") is None and not _port_open("127.0.0.1", ha.rest_ports[i]):
            _start_detached([patroni, str(conf)], home / "patroni.log", home / "patroni.pid", user)
    deadline = time.monotonic() + timeout_s
    while True:
        members = member_status(settings)
        primary = [m for m in members if m.role in ("primary", "master") and m.state == "running"]
        standbys = [m for m in members if m.role == "replica" and m.state in ("running", "streaming")]
        if primary and len(standbys) == len(members) - 1:
            break
        if time.monotonic() > deadline:
            raise StackError(
                f"the HA cluster did not come up within {timeout_s:.0f} s: {members}; see {base}/*/patroni.log"
            )
        time.sleep(1)
    primary_db = settings.db.model_copy(update={"port": primary[0].pg_port, "host": "127.0.0.1", "members": None})
    _ensure_database(settings.model_copy(update={"db": primary_db}), _pg_bin())
    return members


def kill_member(settings: Settings, name: str) -> None:
    """SIGKILL a member's Patroni and its postmaster: a crashed host, as far as the others can tell (tests, bench)."""
    home = _base(settings) / name
    pids = [_alive(home / "patroni.pid")]
    with contextlib.suppress(OSError, ValueError, IndexError):  # the postmaster's pid: its pid file's first line
        pids.append(int((home / "data" / "postmaster.pid").read_text().splitlines()[0]))
    for pid in pids:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):  # reap it when it is ours (tests), so it is not a zombie
                os.waitpid(pid, 0)


def start_member(settings: Settings, name: str) -> None:
    """Start one member's Patroni again (after `kill_member`): it rejoins as a standby (pg_rewind when needed)."""
    home = _base(settings) / name
    if _alive(home / "patroni.pid") is None:
        patroni = _binary("patroni")
        assert patroni is not None
        _start_detached(
            [patroni, str(home / "patroni.yml")], home / "patroni.log", home / "patroni.pid", _service_user("postgres")
        )


def stop_ha(settings: Settings, *, timeout_s: float = 60.0) -> None:
    """Stop the standbys, then the primary (a synchronous standby waits for its primary to release it), then etcd;
    what has not stopped after `timeout_s` is killed."""
    base = _base(settings)
    if not base.exists():
        return
    roles = {m.name: m.role for m in member_status(settings)}
    names = _member_names(settings.stack.ha)
    primaries = [n for n in names if roles.get(n) in ("primary", "master")]
    standbys = [n for n in names if n not in primaries]
    deadline = time.monotonic() + timeout_s
    for group in (standbys, primaries):
        pids = {}
        for name in group:
            pid = _alive(base / name / "patroni.pid")
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
                pids[name] = pid
        left = _still_running(list(pids.values()), max(5.0, deadline - time.monotonic()))
        for name in [n for n, pid in pids.items() if pid in left]:
            logger.warning("the HA member %s did not stop within %.0f s: killed", name, timeout_s)
            kill_member(settings, name)
    etcd = _alive(base / "etcd.pid")
    if etcd is not None:
        os.kill(etcd, signal.SIGTERM)
        if _still_running([etcd], 20):
            os.kill(etcd, signal.SIGKILL)


def ha_running(settings: Settings) -> bool:
    """Whether any part of the HA cluster of this stack dir is running."""
    base = _base(settings)
    return any(
        _alive(p) is not None
        for p in [base / "etcd.pid", *(base / n / "patroni.pid" for n in _member_names(settings.stack.ha))]
    )


def _still_running(pids: list[int], timeout_s: float) -> list[int]:
    """Wait up to `timeout_s` for the processes to exit; those still running."""
    deadline = time.monotonic() + timeout_s
    left = list(pids)
    while True:
        left = [pid for pid in left if _pid_alive(pid)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def _pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # reap it when it is ours, so it is not a zombie
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
