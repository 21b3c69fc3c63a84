"""A gateway group on one machine: N gateway processes on one MQTT v5 shared subscription, supervised.

Each instance is a whole `cxp gateway --instance n` process (client id `<client_id>-<n>`, its own persistent
session, its own writer process), so one crash costs one instance. The supervisor restarts an instance that
exits (except after a clean stop it asked for), with backoff, and stops them all on SIGTERM/SIGINT.
While an instance is away, the broker keeps queueing its share of the stream for its session (Mosquitto
round-robins over the group's sessions, connected or not): the restart drains it (docs/scaling.md).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("cxp.gateway.group")

_STABLE_S = 30.0  # an instance that ran this long before exiting is restarted without backoff


DEFAULT_GROUP = "cxp-gateways"  # the shared-subscription group of `--instances`/`--instance` when none is configured


def instance_client_id(base: str, instance: int) -> str:
    """The MQTT client id (and persistent session, and stats key) of instance `instance` of a group."""
    return f"{base}-{instance}"


@dataclass
class _Member:
    instance: int
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = 0.5
    next_start: float = field(default=0.0)


class GatewayGroup:
    """Start `instances` gateway processes with `command(n)` and keep them running until stopped."""

    def __init__(
        self,
        command: Callable[[int], list[str]],
        *,
        instances: int,
        max_backoff_s: float = 10.0,
        stop_timeout_s: float = 60.0,
    ) -> None:
        if instances < 1:
            raise ValueError("a gateway group needs at least one instance")
        self.command = command
        self.members = [_Member(n) for n in range(1, instances + 1)]
        self.max_backoff_s = max_backoff_s
        self.stop_timeout_s = stop_timeout_s
        self.stopping = threading.Event()

    def _start(self, member: _Member) -> None:
        member.proc = subprocess.Popen(self.command(member.instance))
        member.started = time.monotonic()
        log.info("gateway instance %d started (pid %d)", member.instance, member.proc.pid)

    def _check(self, member: _Member) -> None:
        now = time.monotonic()
        if member.proc is None:
            if now >= member.next_start:
                self._start(member)
            return
        code = member.proc.poll()
        if code is None:
            return
        ran = now - member.started
        member.backoff = 0.5 if ran >= _STABLE_S else min(member.backoff * 2, self.max_backoff_s)
        member.restarts += 1
        member.proc = None
        member.next_start = now + member.backoff
        log.error(
            "gateway instance %d exited with %s after %.0f s; restarting in %.1f s (restart %d)",
            member.instance,
            code,
            ran,
            member.backoff,
            member.restarts,
        )

    def stop(self, *_args) -> None:
        """Ask every instance to stop (SIGTERM: each flushes, acks and exits)."""
        self.stopping.set()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; then stop every instance; 0 when all stopped cleanly."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)
        for member in self.members:
            self._start(member)
        while not self.stopping.wait(0.5):
            for member in self.members:
                self._check(member)
        return self._stop_all()

    def _stop_all(self) -> int:
        running = [m.proc for m in self.members if m.proc is not None and m.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        worst = 0
        deadline = time.monotonic() + self.stop_timeout_s
        for proc in running:
            try:
                code = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error(
                    "gateway pid %d did not stop in time; killing it (its unacked messages are redelivered)", proc.pid
                )
                proc.kill()
                code = proc.wait()
            worst = worst or code
        log.info(
            "gateway group stopped (%d instances, %d restarts)",
            len(self.members),
            sum(m.restarts for m in self.members),
        )
        return 1 if worst else 0
