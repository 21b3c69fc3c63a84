"""The API as a background process of the local stack: started detached, found by its pid file."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from cxp.core.config import PROJECT_ROOT, Settings, settings_env
from cxp.core.net import is_loopback


class ApiProcessError(Exception):
    """The background API could not be started."""


def _paths(settings: Settings) -> tuple[Path, Path]:
    return settings.stack.dir / "api.pid", settings.stack.dir / "api.log"


def api_url(settings: Settings) -> str:
    """Where the API listens: HTTPS beyond loopback (the server then serves TLS with the platform CA)."""
    scheme = "http" if is_loopback(settings.api.host) else "https"
    return f"{scheme}://{settings.api.host}:{settings.api.port}"


def _ready(url: str, settings: Settings) -> bool:
    context = None
    if url.startswith("https:"):
        ca_file = Path(settings.pki.dir or settings.stack.dir / "pki") / "ca.crt"
        context = ssl.create_default_context(cafile=str(ca_file))
        # A wildcard bind has no name of its own to check; the CA still vouches for the server.
        context.check_hostname = settings.api.host not in ("0.0.0.0", "::")
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2, context=context) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _running_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def api_pid(settings: Settings) -> int | None:
    """The background API's pid, None when it is not running."""
    return _running_pid(_paths(settings)[0])


def start_api(settings: Settings, *, workers: int = 1, timeout_s: float = 60) -> str:
    """Start `cxp api serve` detached unless it already answers; return its URL once ready."""
    pid_file, log_file = _paths(settings)
    url = api_url(settings)
    if _running_pid(pid_file) and _ready(url, settings):
        return url
    stop_api(settings)
    settings.stack.dir.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cxp.cli.main", "api", "serve", "--workers", str(workers)],
            cwd=PROJECT_ROOT, env=settings_env(settings, dict(os.environ)), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives the command that started it
        )
    pid_file.write_text(str(proc.pid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ApiProcessError(f"the API exited with {proc.returncode}; see {log_file}")
        if _ready(url, settings):
            return url
        time.sleep(0.3)
    raise ApiProcessError(f"the API did not become ready within {timeout_s:.0f} s; see {log_file}")


def stop_api(settings: Settings, *, timeout_s: float = 20) -> bool:
    """SIGTERM the background API and wait for it; False when it was not running."""
    pid_file, _ = _paths(settings)
    pid = _running_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _running_pid(pid_file):
        time.sleep(0.2)
    if _running_pid(pid_file):
        os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True
