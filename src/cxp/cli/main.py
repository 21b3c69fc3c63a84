"""`cxp`: one console script for every part of the platform."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from cxp.cli.alerts import alerts_app
from cxp.cli.bench import bench_app
from cxp.cli.common import console, fail, load_settings
from cxp.cli.credentials import credentials_app, provisioning_app
from cxp.cli.importer import import_history
from cxp.cli.pki import pki_app
from cxp.core.config import PROJECT_ROOT, Settings

app = typer.Typer(help="Connected-product experience platform.", no_args_is_help=True, add_completion=False)
stack_app = typer.Typer(help="The local Mosquitto + PostgreSQL/TimescaleDB stack.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema, rollups and retention.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
contract_app = typer.Typer(help="The telemetry message contract.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(contract_app, name="contract")
app.add_typer(bench_app, name="bench")
keys_app = typer.Typer(help="API keys (stored hashed; the key is shown once, at creation).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(pki_app, name="pki")
app.add_typer(credentials_app, name="credentials")
app.add_typer(provisioning_app, name="provisioning")
dead_letters_app = typer.Typer(help="Messages the gateway could not store.", no_args_is_help=True)
app.add_typer(dead_letters_app, name="dead-letters")
app.add_typer(alerts_app, name="alerts")
app.command("import")(import_history)


_settings, _fail = load_settings, fail


# ---------------------------------------------------------------------------------------------- stack

@stack_app.command("up")
def stack_up(
    ha: Annotated[bool, typer.Option("--ha", help="Also start the highly available TimescaleDB: etcd + three"
                                                  " Patroni-managed members (ports: CXP_STACK__HA__…).")] = False,
) -> None:
    """Provision (first time) and start the broker and the database; idempotent."""
    from cxp.stack import StackError, start_stack

    try:
        status = start_stack(_settings())
    except StackError as exc:
        _fail(str(exc))
    console.print(f"broker {status.broker_address} up={status.broker_up}  db {status.db_address} up={status.db_up}")
    if ha:
        _start_ha()
    _sync_broker_files()


def _start_ha() -> None:
    from cxp.stack import StackError
    from cxp.stack.ha import start_ha

    settings = _settings()
    try:
        members = start_ha(settings)
    except StackError as exc:
        _fail(str(exc))
    for m in members:
        console.print(f"ha member {m.name}: postgresql 127.0.0.1:{m.pg_port} ({m.role}, {m.state}), patroni REST"
                      f" :{m.rest_port}")
    console.print(f"use it: export CXP_DB__MEMBERS={settings.stack.ha.members}  (then `cxp db migrate`)")


def _sync_broker_files() -> None:
    """Rewrite the broker's device password file, ACL and CRL from the credential registry (once it exists)."""
    from cxp.identity import IdentityError
    from cxp.identity.service import sync_broker
    from cxp.store.db import connect
    from cxp.store.errors import StoreError

    try:
        with connect(_settings().db) as conn:
            if conn.execute("SELECT to_regclass('device_credentials') IS NOT NULL").fetchone()[0]:
                done = sync_broker(conn=conn, settings=_settings())
                console.print(f"broker files: {done.logins:,} token logins, {done.crl_serials:,} revoked serials")
    except (IdentityError, StoreError) as exc:
        _fail(f"broker files not synced from the registry: {exc}")


@stack_app.command("down")
def stack_down() -> None:
    """Stop the broker and the database."""
    from cxp.stack import stop_stack
    from cxp.stack.api_process import stop_api
    from cxp.stack.ha import ha_running, stop_ha

    stop_api(_settings())  # it needs the database
    if ha_running(_settings()):
        stop_ha(_settings())
        console.print("ha cluster stopped")
    status = stop_stack(_settings())
    console.print(f"broker up={status.broker_up}  db up={status.db_up}")


@stack_app.command("status")
def stack_status() -> None:
    """Tell whether the broker and the database answer; exit 1 when either does not."""
    from cxp.stack import get_status

    status = get_status(_settings())
    console.print(f"broker {status.broker_address}: {'up' if status.broker_up else 'down'}")
    console.print(f"db     {status.db_address}: {'up' if status.db_up else 'down'}")
    from cxp.stack.ha import ha_running, member_status

    if ha_running(_settings()):
        for m in member_status(_settings()):
            console.print(f"ha     {m.name} 127.0.0.1:{m.pg_port}: {m.role or 'down'} {m.state or ''}"
                          f"{f' (replay lag {m.lag_bytes} B)' if m.lag_bytes else ''}")
    if not (status.broker_up and status.db_up):
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------- db

@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending SQL migrations."""
    from cxp.store.db import connect
    from cxp.store.errors import StoreError
    from cxp.store.migrate import apply_migrations

    try:
        with connect(_settings().db) as conn:
            applied = apply_migrations(conn)
    except StoreError as exc:
        _fail(str(exc))
    console.print(f"applied {len(applied)} migration(s)" + (f": {', '.join(m.name for m in applied)}"
                                                              if applied else " (schema up to date)"))
    if applied:
        _sync_broker_files()


@db_app.command("rollup")
def db_rollup() -> None:
    """Recompute the rollups of every device-day marked dirty."""
    from cxp.store.db import connect
    from cxp.store.rollups import refresh_all_pending

    with connect(_settings().db) as conn:
        done = refresh_all_pending(conn)
    console.print(f"refreshed {done.device_days} device-days ({done.hourly_rows} hourly, {done.daily_rows} daily rows)")


@db_app.command("retention")
def db_retention(
    days: Annotated[int | None, typer.Option(help="Days of raw telemetry to keep (default: retention_days).")] = None,
) -> None:
    """Drop raw telemetry chunks older than the retention horizon (rollups are kept)."""
    from cxp.store.db import connect
    from cxp.store.errors import StoreError
    from cxp.store.retention import drop_old_chunks

    settings = _settings()
    keep = days if days is not None else settings.retention_days
    if keep is None:
        _fail("no retention configured: pass --days or set CXP_RETENTION_DAYS")
    try:
        with connect(settings.db) as conn:
            dropped = drop_old_chunks(conn, keep_days=keep)
    except StoreError as exc:
        _fail(str(exc))
    console.print(f"dropped chunks older than {keep} days: {dropped}")


@dead_letters_app.command("replay")
def dead_letters_replay(
    reason: Annotated[str | None, typer.Option(help="Only dead letters of this reason (e.g. schema).")] = None,
    dead_letter_id: Annotated[list[int] | None, typer.Option("--id", help="Only these ids; repeat.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many per run.")] = 1000,
    dry_run: Annotated[bool, typer.Option(help="Validate and write, then roll everything back.")] = False,
) -> None:
    """Re-ingest dead letters that pass validation now (after a fix), each exactly once (prints JSON)."""
    from dataclasses import asdict

    from cxp.deadletters import replay_dead_letters
    from cxp.store.db import connect
    from cxp.store.errors import StoreError

    settings = _settings()
    try:
        with connect(settings.db) as conn:
            result = replay_dead_letters(conn, settings=settings, reason=reason, ids=dead_letter_id or None,
                                         limit=limit, dry_run=dry_run)
    except StoreError as exc:
        _fail(str(exc))
    print(json.dumps({**asdict(result), "dry_run": dry_run}))


# ---------------------------------------------------------------------------------------------- gateway

@app.command()
def gateway(
    stats_file: Annotated[Path | None, typer.Option(help="Write the final counters here as JSON on exit.")] = None,
    rollups: Annotated[bool, typer.Option(help="Take part in the leader election for the single-run work (rollup"
                                              " refresh, alerts, retention).")] = True,
    alerts: Annotated[bool, typer.Option(help="Evaluate alert rules after each rollup refresh and deliver.")] = True,
    instances: Annotated[int, typer.Option(min=1, help="Start this many gateway processes (client ids <client_id>-1"
                                                       "…N) on the shared subscription, supervised.")] = 1,
    instance: Annotated[int | None, typer.Option(min=1, help="Run as instance N of a group: client id"
                                                             " <client_id>-N (what --instances starts).")] = None,
    forget_session: Annotated[bool, typer.Option(help="Discard this gateway's (or instance's) persistent session at"
                                                      " the broker, subscriptions and queue, and exit.")] = False,
) -> None:
    """Run the ingest gateway (or a supervised group of them) until SIGTERM."""
    from cxp.alerts.evaluator import after_rollup_refresh
    from cxp.cli.keepers import HealthKeeper, chain
    from cxp.gateway.errors import GatewayError
    from cxp.gateway.group import DEFAULT_GROUP, GatewayGroup, instance_client_id
    from cxp.gateway.service import Gateway
    from cxp.gateway.service import forget_session as forget
    from cxp.store.errors import StoreError

    settings = _settings()
    if instances > 1:
        if instance is not None or stats_file is not None:
            _fail("--instances starts instances 1…N itself; --instance and --stats-file are for one process")

        def command(n: int) -> list[str]:
            return [sys.executable, "-m", "cxp.cli.main", "gateway", "--instance", str(n),
                    "--rollups" if rollups else "--no-rollups", "--alerts" if alerts else "--no-alerts"]

        console.print(f"gateway group: {instances} instances of {settings.gateway.client_id} on"
                      f" $share/{settings.gateway.share_group or DEFAULT_GROUP}")
        raise typer.Exit(GatewayGroup(command, instances=instances,
                                      max_backoff_s=settings.gateway.retry_max_backoff_s).run())
    if instance is not None:
        cfg = settings.gateway.model_copy(update={
            "client_id": instance_client_id(settings.gateway.client_id, instance),
            "share_group": settings.gateway.share_group or DEFAULT_GROUP})
        settings = settings.model_copy(update={"gateway": cfg})
    if forget_session:
        try:
            forget(settings)
        except GatewayError as exc:
            _fail(str(exc))
        console.print(f"discarded the broker session of {settings.gateway.client_id}")
        return
    interval = settings.gateway.keep_health_interval_s
    after_refresh = chain(after_rollup_refresh if alerts else None,
                          HealthKeeper(settings, interval_s=interval) if interval > 0 else None)
    try:
        code = Gateway(settings, stats_file=stats_file, rollups=rollups, after_refresh=after_refresh).run()
    except (GatewayError, StoreError) as exc:
        _fail(str(exc))
    raise typer.Exit(code)


# ---------------------------------------------------------------------------------------------- simulator

def _parse_error_prone(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    product, sep, touchpoint = value.partition(":")
    if not sep:
        _fail("--error-prone takes PRODUCT:TOUCHPOINT, e.g. brew-c3:brew")
    return product, touchpoint


@app.command()
def simulate(
    devices: Annotated[int, typer.Option(min=1, help="Fleet size.")] = 200,
    days: Annotated[int, typer.Option(min=1, help="Days of history the fleet covers.")] = 30,
    seed: Annotated[int, typer.Option(help="Same seed, same fleet, same events.")] = 42,
    mode: Annotated[str, typer.Option(help="backfill: the history at full speed; live: in real time.")] = "backfill",
    start: Annotated[datetime | None, typer.Option(help="Fleet start (default: UTC midnight, DAYS ago).")] = None,
    duration: Annotated[float, typer.Option(help="Live mode: seconds to run.")] = 60.0,
    speed: Annotated[float, typer.Option(help="Live mode: simulated seconds per wall-clock second.")] = 1.0,
    error_prone: Annotated[str | None, typer.Option(help="Plant a failing touchpoint: PRODUCT:TOUCHPOINT.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    loader: Annotated[bool, typer.Option(help="Publish the whole fleet through the cxp-loader service account"
                                              " (one loopback connection) instead of each device over TLS.")] = False,
) -> None:
    """Register a simulated fleet and publish its telemetry, each device with its own credential over TLS."""
    from cxp.device_sim import SimError
    from cxp.tools.simulate import simulate_fleet

    if mode not in ("backfill", "live"):
        _fail("--mode is backfill or live")
    try:
        _, report = simulate_fleet(settings=_settings(), devices=devices, days=days, seed=seed, mode=mode, start=start,
                                   duration_s=duration, speed=speed, error_prone=_parse_error_prone(error_prone),
                                   progress=progress, identities=not loader)
    except SimError as exc:
        _fail(str(exc))
    console.print(f"published {report.messages:,} messages, {report.events:,} events in {report.elapsed_s:.1f}s"
                  f" ({report.events_per_s:,.0f} events/s); all acked by the broker: {report.all_acked}")
    if report.dropped_messages or report.undelivered_messages:
        console.print(f"[yellow]broker unreachable: devices dropped {report.dropped_messages:,} messages"
                      f" ({report.dropped_events:,} events) from full offline buffers;"
                      f" {report.undelivered_messages:,} never sent[/yellow]")


@app.command()
def demo(
    devices: Annotated[int, typer.Option(min=1, help="Fleet size.")] = 300,
    days: Annotated[int, typer.Option(min=1, help="Days published live over MQTT (the last ones).")] = 30,
    seed: Annotated[int, typer.Option(help="Fleet seed.")] = 42,
    history_days: Annotated[int, typer.Option(min=0, help="Days before those, loaded in bulk like an imported "
                                                          "history, so the pricing lab sees several months.")] = 90,
) -> None:
    """The whole pipeline: stack up → migrate → load older history in bulk → simulate the last days over MQTT →
    ingest → fleet summary."""
    from cxp.analytics.fleet import get_fleet_summary
    from cxp.store.admin import truncate_data
    from cxp.store.db import connect
    from cxp.store.rollups import refresh_all_pending
    from cxp.tools.fleet import load_fleet
    from cxp.tools.simulate import simulate_fleet

    stack_up()
    db_migrate()
    settings = _settings()
    with connect(settings.db) as conn:
        truncate_data(conn)  # the demo owns its database: each run starts from the same empty state
    total = history_days + days
    fleet_start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=total)
    live_from = fleet_start + timedelta(days=history_days)
    error_prone = ("brew-c3", "descale")
    if history_days:
        console.rule(f"history: {devices} devices × {history_days} days loaded in bulk (seed {seed})")
        with connect(settings.db) as conn:
            loaded = load_fleet(conn, fleet_params={"seed": seed, "devices": devices, "start": fleet_start,
                                                    "days": total, "error_prone": error_prone},
                                until=live_from, progress=console.print)
        console.print(f"stored {loaded.events_stored + loaded.states_stored:,} rows of history before "
                      f"{live_from:%Y-%m-%d} in {loaded.load_s:.1f}s (+ {loaded.rollup_s:.1f}s rollups)")
    console.rule("gateway")
    log_path = settings.stack.dir / "demo-gateway.log"
    with open(log_path, "wb") as log_file:
        gw = subprocess.Popen([sys.executable, "-m", "cxp.cli.main", "gateway"], cwd=PROJECT_ROOT,
                              stdout=log_file, stderr=subprocess.STDOUT)
        try:
            _wait_for_log(log_path, "connected to broker", gw)
            console.print(f"gateway pid {gw.pid} (log: {log_path})")
            console.rule(f"simulating {devices} devices × {days} days live over TLS (seed {seed})")
            t0 = time.perf_counter()
            fleet, report = simulate_fleet(settings=settings, devices=devices, days=total, seed=seed, mode="backfill",
                                           start=fleet_start, duration_s=0, speed=1, error_prone=error_prone,
                                           progress=True, identities=True, publish_from=live_from)
            with connect(settings.db) as conn:
                before = loaded.events_stored + loaded.states_stored if history_days else 0
                stored = _wait_for_events(conn, before + report.events, timeout_s=600) - before
            elapsed = time.perf_counter() - t0
        finally:
            gw.send_signal(signal.SIGTERM)
            gw.wait(60)
    with connect(settings.db) as conn:
        refresh_all_pending(conn)
        summary = get_fleet_summary(conn)
        console.print(f"published {report.messages:,} messages / {report.events:,} events; stored {stored:,} events"
                      f" in {elapsed:.1f}s end to end ({stored / elapsed:,.0f} events/s); gateway exit {gw.returncode}")
        _print_summary(summary)
        _print_reports(conn)
    _start_demo_api(settings)


def _start_demo_api(settings: Settings) -> None:
    """Leave the API running with a fresh demo key (earlier demo keys are revoked)."""
    from cxp.stack.api_process import ApiProcessError, start_api
    from cxp.store.apikeys import create_key, list_keys, revoke_key
    from cxp.store.db import connect

    console.rule("API")
    with connect(settings.db) as conn:
        for old in list_keys(conn):
            if old.name == "demo":
                revoke_key(conn, key_id=old.key_id)
        key = create_key(conn, name="demo", role="admin")
    try:
        url = start_api(settings)
    except ApiProcessError as exc:
        _fail(str(exc))
    console.print(f"API        {url}/v1   (OpenAPI docs: {url}/docs)", markup=False, highlight=False)
    console.print(f"dashboard  {url}/dashboard/login   (paste the API key below into the sign-in form)",
                  markup=False, highlight=False)
    console.print(f"API key    {key.token}   (role admin; e.g. curl -H 'Authorization: Bearer <key>' "
                  f"{url}/v1/experience/report)", markup=False, highlight=False)
    console.print("stop it with ./cxp api stop (./cxp stack down stops everything)", markup=False, highlight=False)


def _print_reports(conn) -> None:
    """The experience report (fleet health, top concerns) and the pricing side-by-side."""
    from cxp.analytics.service import get_fleet_report
    from cxp.pricing.decisions import get_decision_view
    from cxp.pricing.service import get_model_comparison_text

    console.rule("experience health")
    for line in get_fleet_report(conn=conn).render_text():
        console.print(line, markup=False, highlight=False)
    console.rule("pricing lab")
    for line in get_model_comparison_text(conn=conn):
        console.print(line, markup=False, highlight=False)
    view = get_decision_view(conn=conn, product="thermo-x1")
    if view.solved is not None:
        n = view.solved
        console.print(f"  Pay per kWh instead of the connectivity fee, revenue-neutral over the recorded months: "
                      f"{view.family.label(n.parameters)} ({n.metrics.losers_share:.0%} of customers would pay more, "
                      f"{n.metrics.shock_share:.0%} of account-months shocked; other families, limits and the "
                      "trade-off curves: /dashboard/pricing/decisions)", markup=False, highlight=False)


def _wait_for_log(path: Path, text: str, proc: subprocess.Popen, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            _fail(f"gateway exited with {proc.returncode}: {path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)
    _fail(f"gateway did not connect within {timeout_s:.0f}s; see {path}")


def _wait_for_events(conn, expected: int, *, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    stored = 0
    while time.monotonic() < deadline:
        stored = conn.execute("SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM device_state)"
                              ).fetchone()[0]
        if stored >= expected:
            break
        time.sleep(0.25)
    return stored


def _print_summary(summary) -> None:
    from rich.table import Table

    table = Table(title="Fleet summary (from the daily rollups)")
    for col in ("product", "devices", "reporting", "active device-days", "uses", "success", "errors / 1k uses",
                "mean latency ms", "heartbeats", "days"):
        table.add_column(col, justify="right" if col not in ("product", "days") else "left")
    for p in summary.products:
        table.add_row(p.product_id, f"{p.devices:,}", f"{p.devices_reporting:,}", f"{p.active_device_days:,}",
                      f"{p.usage_events:,}", f"{p.success_rate:.1%}" if p.success_rate is not None else "–",
                      f"{p.errors_per_1000_uses:.1f}" if p.errors_per_1000_uses is not None else "–",
                      f"{p.mean_latency_ms:.0f}" if p.mean_latency_ms is not None else "–", f"{p.heartbeats:,}",
                      f"{p.first_day} → {p.last_day}")
    console.print(table)
    reasons = ", ".join(f"{k}: {v}" for k, v in summary.dead_letter_reasons.items()) or "none"
    console.print(f"raw events {summary.raw_events:,}, heartbeats {summary.raw_states:,}; dead letters: {reasons}")


# ---------------------------------------------------------------------------------------------- API

api_app = typer.Typer(help="The HTTP API and dashboard.", no_args_is_help=True)
app.add_typer(api_app, name="api")


@api_app.command("serve")
def api_serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings api.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings api.port).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Uvicorn worker processes.")] = 1,
) -> None:
    """Serve the HTTP API (/v1, /docs) and the dashboard (/dashboard) in the foreground."""
    import uvicorn

    from cxp.api.server import tls_options, uvicorn_options

    settings = _settings()
    db_migrate()
    host = host or settings.api.host
    uvicorn.run("cxp.api.main:app", host=host, port=port or settings.api.port, workers=workers,
                log_level=settings.log_level.lower(), access_log=False, **uvicorn_options(settings.api),
                **tls_options(settings, host))


@api_app.command("start")
def api_start(workers: Annotated[int, typer.Option(min=1, help="Uvicorn worker processes.")] = 1) -> None:
    """Start the API in the background (idempotent) and wait until it is ready."""
    from cxp.stack.api_process import ApiProcessError, start_api

    settings = _settings()
    db_migrate()
    try:
        url = start_api(settings, workers=workers)
    except ApiProcessError as exc:
        _fail(str(exc))
    console.print(f"API ready at {url}")


@api_app.command("stop")
def api_stop() -> None:
    """Stop the background API."""
    from cxp.stack.api_process import stop_api

    console.print("API stopped" if stop_api(_settings()) else "API was not running")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what uses the key.")],
    role: Annotated[str, typer.Option(help="product, pricing or admin.")],
) -> None:
    """Create a key and print it (the only time it is shown)."""
    from cxp.store.apikeys import create_key
    from cxp.store.db import connect
    from cxp.store.errors import StoreError

    with connect(_settings().db) as conn:
        try:
            new = create_key(conn, name=name, role=role)
        except StoreError as exc:
            _fail(str(exc))
    console.print(f"key {new.key.key_id} ({new.key.role}) for {new.key.name}:")
    print(new.token)


@keys_app.command("list")
def keys_list(all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False) -> None:
    """List keys (ids, names, roles; never secrets)."""
    from cxp.store.apikeys import list_keys
    from cxp.store.db import connect

    with connect(_settings().db) as conn:
        for k in list_keys(conn, include_revoked=all_keys):
            state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
            used = f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never"
            console.print(f"{k.key_id}  {k.role:<8} {state:<24} last used {used:<17} {k.name}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (the part after 'cxp_').")]) -> None:
    """Revoke a key: the API refuses it within a few seconds, its dashboard sessions end at once."""
    from cxp.store.apikeys import revoke_key
    from cxp.store.db import connect

    with connect(_settings().db) as conn:
        key = revoke_key(conn, key_id=key_id)
    if key is None:
        _fail(f"no key {key_id!r}")
    console.print(f"revoked {key.key_id} ({key.role}, {key.name}); its dashboard sessions are ended")


# ---------------------------------------------------------------------------------------------- contract

@contract_app.command("schema")
def contract_schema(
    out: Annotated[Path | None, typer.Option(help="Write the schema here instead of printing it.")] = None,
) -> None:
    """Export the telemetry message's JSON Schema."""
    from cxp.contract import json_schema

    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        console.print(f"wrote {out}")


# ---------------------------------------------------------------------------------------------- tests

@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def test(ctx: typer.Context) -> None:
    """Start the local stack, then run the whole test suite (extra arguments go to pytest)."""
    stack_up()
    env = {**os.environ}
    code = subprocess.call([sys.executable, "-m", "pytest", *ctx.args], cwd=PROJECT_ROOT, env=env)
    raise typer.Exit(code)


if __name__ == "__main__":
    app()
