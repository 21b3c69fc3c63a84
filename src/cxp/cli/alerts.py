"""`cxp alerts …`: rules import/export, alerts list/show/ack, one evaluation or delivery pass, a standalone loop."""

from __future__ import annotations

import json
import secrets
import threading
from pathlib import Path
from typing import Annotated

import typer

from cxp.cli.common import console, fail, load_settings

alerts_app = typer.Typer(help="Alerts: rules (versioned, JSON import/export), live alerts, webhook delivery.",
                         no_args_is_help=True)


_settings, _fail = load_settings, fail


@alerts_app.command("import")
def import_rules(path: Annotated[Path, typer.Argument(help="A rule set JSON file (the export format).")]) -> None:
    """Import rules: each changed definition becomes that rule's next version."""
    from cxp.alerts.core.rules import parse_ruleset
    from cxp.alerts.errors import AlertError
    from cxp.alerts.repository import import_rules as store
    from cxp.store.db import connect

    try:
        ruleset = parse_ruleset(path.read_bytes())
        with connect(_settings().db) as conn:
            for name, version, changed in store(conn, rules=list(ruleset.rules), by="cli"):
                console.print(f"{name}  v{version}  {'stored' if changed else 'unchanged'}")
    except (AlertError, OSError) as exc:
        _fail(str(exc))


@alerts_app.command("export")
def export_rules() -> None:
    """Print the current version of every rule as an importable rule set."""
    from cxp.alerts.core.rules import dump_ruleset
    from cxp.alerts.repository import current_rules
    from cxp.store.db import connect

    with connect(_settings().db) as conn:
        print(dump_ruleset(current_rules(conn)))


@alerts_app.command("list")
def list_alerts(all_alerts: Annotated[bool, typer.Option("--all", help="Include cleared alerts.")] = False) -> None:
    """Live alerts (or all), newest first."""
    from cxp.alerts.repository import list_alerts as rows
    from cxp.store.db import connect

    with connect(_settings().db) as conn:
        for a in rows(conn, live_only=not all_alerts):
            console.print(f"{a['alert_id']:>6}  {a['state']:<12} {a['severity']:<8} {a['rule_name']:<24}"
                          f" {a['entity']:<28} since {a['first_seen']:%Y-%m-%d %H:%M:%S}")


@alerts_app.command("show")
def show(alert_id: int) -> None:
    """One alert with its history and delivery log, as JSON."""
    from cxp.alerts.errors import AlertError
    from cxp.alerts.repository import get_alert
    from cxp.store.db import connect

    with connect(_settings().db) as conn:
        try:
            print(json.dumps(get_alert(conn, alert_id=alert_id), default=str, indent=2))
        except AlertError as exc:
            _fail(str(exc))


@alerts_app.command("ack")
def ack(alert_id: int, by: Annotated[str, typer.Option(help="Who acknowledges.")]) -> None:
    """Acknowledge a live alert."""
    from datetime import UTC, datetime

    from cxp.alerts.errors import AlertError
    from cxp.alerts.repository import acknowledge_alert
    from cxp.store.db import connect

    with connect(_settings().db) as conn:
        try:
            acknowledge_alert(conn, alert_id=alert_id, by=by, now=datetime.now(UTC))
        except AlertError as exc:
            _fail(str(exc))
    console.print(f"alert {alert_id} acknowledged by {by}")


@alerts_app.command("evaluate")
def evaluate_once() -> None:
    """Run one evaluation pass now (the gateway runs one after each rollup refresh)."""
    from cxp.alerts.evaluator import evaluate
    from cxp.store.db import connect

    with connect(_settings().db) as conn:
        result = evaluate(conn)
    console.print("another evaluator holds the leader lock" if result is None else str(result))


@alerts_app.command("deliver")
def deliver_once() -> None:
    """Send the due webhook notifications now."""
    from cxp.alerts.delivery import deliver_pending
    from cxp.store.db import connect

    settings = _settings()
    with connect(settings.db) as conn:
        console.print(str(deliver_pending(conn, settings=settings.alerts)))


@alerts_app.command("secret")
def make_secret(ref: Annotated[str, typer.Argument(help="The secret_ref channels name.")]) -> None:
    """Create a webhook signing secret file (0600) and print it once for the receiver."""
    directory = _settings().alerts.secrets_dir
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{ref}.secret"
    if path.exists():
        _fail(f"{path} exists (kept: receivers already hold it)")
    value = secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.write_text(value + "\n")
    console.print(f"secret {ref!r} written to {path}; give the receiver: {value}")


@alerts_app.command("run")
def run_loop() -> None:
    """Evaluate every eval_interval_s and deliver continuously, without a gateway (Ctrl-C stops)."""
    from cxp.alerts.delivery import delivery_loop
    from cxp.alerts.evaluator import after_rollup_refresh
    from cxp.store.db import connect

    settings = _settings()
    stopping, wake = threading.Event(), threading.Event()
    threading.Thread(target=delivery_loop, args=(settings, wake, stopping), daemon=True).start()
    try:
        with connect(settings.db) as conn:
            while not stopping.wait(max(settings.alerts.eval_interval_s, 1.0)):
                after_rollup_refresh(conn, settings, 0)
                wake.set()
    except KeyboardInterrupt:
        stopping.set()
