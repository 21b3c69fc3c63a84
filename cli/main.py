"""`cxp`: one console script for every part of the platform."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from core.config import PROJECT_ROOT, Settings, get_settings
from core.logs import configure_logging

app = typer.Typer(help="Connected-product experience platform.", no_args_is_help=True, add_completion=False)
stack_app = typer.Typer(help="The local Mosquitto + PostgreSQL/TimescaleDB stack.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema, rollups and retention.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
contract_app = typer.Typer(help="The telemetry message contract.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(contract_app, name="contract")
console = Console()


def _settings() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level)
    return settings


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------- stack

@stack_app.command("up")
def stack_up() -> None:
    """Provision (first time) and start the broker and the database; idempotent."""
    from stack import StackError, start_stack

    try:
        status = start_stack(_settings())
    except StackError as exc:
        _fail(str(exc))
    console.print(f"broker {status.broker_address} up={status.broker_up}  db {status.db_address} up={status.db_up}")


@stack_app.command("down")
def stack_down() -> None:
    """Stop the broker and the database."""
    from stack import stop_stack

    status = stop_stack(_settings())
    console.print(f"broker up={status.broker_up}  db up={status.db_up}")


@stack_app.command("status")
def stack_status() -> None:
    """Tell whether the broker and the database answer; exit 1 when either does not."""
    from stack import get_status

    status = get_status(_settings())
    console.print(f"broker {status.broker_address}: {'up' if status.broker_up else 'down'}")
    console.print(f"db     {status.db_address}: {'up' if status.db_up else 'down'}")
    if not (status.broker_up and status.db_up):
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------- db

@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending SQL migrations."""
    from store.db import connect
    from store.errors import StoreError
    from store.migrate import apply_migrations

    try:
        with connect(_settings().db) as conn:
            applied = apply_migrations(conn)
    except StoreError as exc:
        _fail(str(exc))
    console.print(f"applied {len(applied)} migration(s)" + (f": {', '.join(m.name for m in applied)}"
                                                              if applied else " (schema up to date)"))


@db_app.command("rollup")
def db_rollup() -> None:
    """Recompute the rollups of every device-day marked dirty."""
    from store.db import connect
    from store.rollups import refresh_all_pending

    with connect(_settings().db) as conn:
        done = refresh_all_pending(conn)
    console.print(f"refreshed {done.device_days} device-days ({done.hourly_rows} hourly, {done.daily_rows} daily rows)")


@db_app.command("retention")
def db_retention(
    days: Annotated[int | None, typer.Option(help="Days of raw telemetry to keep (default: retention_days).")] = None,
) -> None:
    """Drop raw telemetry chunks older than the retention horizon (rollups are kept)."""
    from store.db import connect
    from store.errors import StoreError
    from store.retention import drop_old_chunks

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


# ---------------------------------------------------------------------------------------------- gateway

@app.command()
def gateway(
    stats_file: Annotated[Path | None, typer.Option(help="Write the final counters here as JSON on exit.")] = None,
    rollups: Annotated[bool, typer.Option(help="Refresh rollups periodically in the gateway process.")] = True,
) -> None:
    """Run the ingest gateway until SIGTERM."""
    from gateway.errors import GatewayError
    from gateway.service import Gateway
    from store.errors import StoreError

    try:
        code = Gateway(_settings(), stats_file=stats_file, rollups=rollups).run()
    except (GatewayError, StoreError) as exc:
        _fail(str(exc))
    raise typer.Exit(code)


# ---------------------------------------------------------------------------------------------- contract

@contract_app.command("schema")
def contract_schema(
    out: Annotated[Path | None, typer.Option(help="Write the schema here instead of printing it.")] = None,
) -> None:
    """Export the telemetry message's JSON Schema."""
    from contract import json_schema

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
