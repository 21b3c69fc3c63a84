"""One evaluation pass of every enabled rule, by one leader, right after a rollup refresh."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import psycopg

from cxp.alerts import analytic, repository
from cxp.alerts.core.conditions import Verdict, due
from cxp.alerts.core.lifecycle import Event, step
from cxp.alerts.core.rules import Rule
from cxp.alerts.errors import AlertError
from cxp.alerts.queries import CONDITIONS, advance_device_seen, earliest_start, smallest_k
from cxp.analytics.errors import AnalyticsError
from cxp.core.config import Settings
from cxp.store.db import connect
from cxp.store.errors import StoreError, mapped_errors

log = logging.getLogger("cxp.alerts")

_LEADER_LOCK = 0x6378_7016  # one evaluator at a time across every gateway
_CADENCE_LOCK = 0x6378_7018  # and one evaluator of the cadence rules


@dataclass
class Evaluation:
    """What one pass did."""

    rules: int = 0
    firing: int = 0
    opened: int = 0
    cleared: int = 0
    not_evaluated: list[str] = field(default_factory=list)  # rules of a kind this version cannot evaluate
    deferred: int = 0  # cadence rules (incident, health, churn, voice) not due in this pass
    failed: list[str] = field(default_factory=list)  # cadence rules whose analytics failed (their alerts untouched)
    seconds: float = 0.0


Kinds = Literal["all", "fast", "cadence"]


def evaluate(conn: psycopg.Connection, *, now: datetime | None = None, kinds: Kinds = "all") -> Evaluation | None:
    """Evaluate every enabled rule once (cadence rules when due); None when another process holds the leader lock.

    `kinds`: "fast" (silence, touchpoint, pipeline: the gateway's pass after each rollup refresh), "cadence"
    (incident, health, churn, voice: a thread of their own, so their seconds of analytics never delay a refresh),
    or both. Each part has its own leader lock; "all" needs both.
    """
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    result = Evaluation()
    locks = {"fast": (_LEADER_LOCK,), "cadence": (_CADENCE_LOCK,), "all": (_LEADER_LOCK, _CADENCE_LOCK)}[kinds]
    with mapped_errors(), conn.transaction():
        for lock in locks:
            if not conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (lock,)).fetchone()[0]:
                return None
        if kinds != "cadence":
            advance_device_seen(conn, now=now)
        rules = [
            r
            for r in repository.current_rules(conn, enabled_only=True)
            if kinds == "all" or (r.kind in analytic.CONDITIONS) == (kinds == "cadence")
        ]
        cache: dict = {"tp_since": earliest_start(rules, now), "silence_k": smallest_k(rules)}  # shared reads
        last_runs = repository.cadence_state(conn) if kinds != "fast" else {}
        updates: list[tuple] = []
        for rule in rules:
            if rule.kind in analytic.CONDITIONS:
                last = last_runs.get(rule.name)
                if not due(
                    rule.kind,
                    last=last[1] if last and last[0] == rule.version else None,
                    now=now,
                    every_s=rule.params.every_s,
                ):
                    result.deferred += 1
                    continue
                repository.record_cadence(conn, rule=rule, now=now)  # a failure, too, waits for the next due time
                try:
                    with conn.transaction():  # a savepoint: one rule's failure leaves the pass and its alerts alone
                        verdicts = analytic.CONDITIONS[rule.kind](conn, rule, rule.params, now, cache)
                except (AnalyticsError, StoreError, psycopg.Error) as exc:
                    log.warning("alert rule %s: %s", rule.name, exc)
                    result.failed.append(rule.name)
                    continue
            elif rule.kind in CONDITIONS:
                verdicts = CONDITIONS[rule.kind](conn, rule, rule.params, now, cache)
            else:
                result.not_evaluated.append(rule.name)
                continue
            result.rules += 1
            updates += _apply(conn, rule, verdicts, now, result)
        repository.update_alerts(conn, rows=updates)  # every rule's refreshed live alerts in one statement
    result.seconds = time.perf_counter() - started
    return result


def _apply(
    conn: psycopg.Connection, rule: Rule, verdicts: dict[str, Verdict], now: datetime, result: Evaluation
) -> list[tuple]:
    """Step every entity of one rule through the lifecycle: open and clear now; return the live alerts to refresh."""
    result.firing += len(verdicts)
    live = repository.live_alerts(conn, rule_name=rule.name)
    updates = []
    for entity in sorted(verdicts.keys() | live.keys()):  # a stable notification order
        alert_id, current = live.get(entity, (None, None))
        verdict = verdicts.get(entity)
        new, event = step(current, firing=verdict is not None, now=now, hold_down_s=rule.hold_down_s)
        if event is Event.OPENED:
            repository.open_alert(
                conn,
                rule=rule,
                entity=entity,
                values=verdict.values,
                now=now,
                product_id=verdict.product_id,
                touchpoint=verdict.touchpoint,
            )
            result.opened += 1
        elif event is Event.CLEARED:
            repository.clear_alert(conn, rule=rule, alert_id=alert_id, now=now)
            result.cleared += 1
        elif event is Event.UPDATED:
            updates.append((alert_id, new, verdict.values if verdict else {}))
    return updates


class _HookState:
    """Per-process state of the gateway hook: when it last evaluated, the delivery and cadence threads."""

    last = 0.0
    deliverer: threading.Thread | None = None
    cadence: threading.Thread | None = None
    wake = threading.Event()


def _log_result(result: Evaluation | None) -> None:
    if result is not None and (result.opened or result.cleared or result.failed):
        log.info("alerts: %d opened, %d cleared, failed %s", result.opened, result.cleared, result.failed)


def cadence_loop(settings: Settings, wake: threading.Event, stopping: threading.Event | None = None) -> None:
    """Evaluate the cadence rules every eval_interval_s (a pass does work only when one is due); wake delivery."""
    conn = None
    while stopping is None or not stopping.is_set():
        try:
            conn = conn if conn is not None and not conn.closed else connect(settings.db)
            result = evaluate(conn, kinds="cadence")
            _log_result(result)
            if result is not None and (result.opened or result.cleared):
                wake.set()
        except (AlertError, StoreError) as exc:
            log.warning("alert evaluation (cadence rules) failed: %s", exc)
            conn = None
        except Exception:  # keep evaluating: a bug must not end the thread for good
            log.exception("alert evaluation (cadence rules) failed")
            conn = None
        if stopping is not None:
            stopping.wait(max(settings.alerts.eval_interval_s, 1.0))
        else:
            time.sleep(max(settings.alerts.eval_interval_s, 1.0))


def after_rollup_refresh(conn: psycopg.Connection, settings: Settings, refreshed_device_days: int) -> None:
    """The gateway's hook: evaluate the fast rules after a refresh that changed data, or when eval_interval_s has
    passed; keep the delivery and cadence threads running.

    Failures are logged, never raised: alerts must not stop the rollups.
    """
    state = _HookState
    if not refreshed_device_days and time.monotonic() - state.last < settings.alerts.eval_interval_s:
        return
    state.last = time.monotonic()
    try:
        _log_result(evaluate(conn, kinds="fast"))
    except (AlertError, StoreError) as exc:
        log.warning("alert evaluation failed: %s", exc)
        return
    except Exception:  # a bug here must not end the gateway's rollup thread
        log.exception("alert evaluation failed")
        return
    if state.deliverer is None or not state.deliverer.is_alive():
        from cxp.alerts.delivery import delivery_loop

        state.deliverer = threading.Thread(
            target=delivery_loop, args=(settings, state.wake), name="alert-delivery", daemon=True
        )
        state.deliverer.start()
    if state.cadence is None or not state.cadence.is_alive():
        state.cadence = threading.Thread(
            target=cadence_loop, args=(settings, state.wake), name="alert-cadence", daemon=True
        )
        state.cadence.start()
    state.wake.set()
