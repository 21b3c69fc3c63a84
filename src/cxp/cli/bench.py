"""`cxp bench …`: the benchmarks that print measured figures (code in `cxp.tools.bench`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Annotated

import typer

bench_app = typer.Typer(help="Benchmarks that print measured figures.", no_args_is_help=True)

# Benchmarks whose options are their own (argparse in the module): `cxp bench NAME --help` shows them.
PASSTHROUGH: dict[str, tuple[str, str]] = {
    "backtest": ("cxp.tools.bench.backtest",
                 "Backtest 7 models × 100,000 accounts × 12 months vectorised vs a per-account Decimal loop."),
    "pricing-core": ("cxp.tools.bench.pricing_core",
                     "The pure billing kernel: 7 models × 100,000 accounts × 12 months vectorised vs a Decimal loop."),
    "pricing-solve": ("cxp.tools.bench.pricing_solve",
                      "Solve a revenue-neutral unit price and a 2-parameter constrained optimum (10,000 accounts)."),
    "simulator": ("cxp.tools.bench.simulator",
                  "Simulator generation + serialisation throughput, broker-free."),
    "analytics": ("cxp.tools.bench.analytics",
                  "Issue 15's figures in one run: every view cold per fleet size with the slope, fleet health from"
                  " the rollups vs raw events, the refresh cost, each against its target (--help)."),
    "views": ("cxp.tools.bench.views",
              "Every product-manager view and the pricing comparison, cold, at several fleet sizes, with the slope."),
    "refresh": ("cxp.tools.bench.refresh",
                "A day of 10,000 devices' rollup refresh; the gateway's events/s alone vs beside a refresh."),
    "api": ("cxp.tools.bench.api",
            "Locust on the API over 10,000 devices × 90 days: req/s and p50/p95/p99 per endpoint (--help)."),
    "jobs": ("cxp.tools.bench.jobs",
             "A large backtest job's bills served by the API: time and API RSS per read, CSV streamed (--help)."),
    "identity": ("cxp.tools.bench.identity",
                 "Device-secret verification ($7$ PBKDF2-SHA512) per iteration count, certificate signing."),
    "credentials": ("cxp.tools.bench.credentials",
                    "Credential registry at fleet scale: broker sync, issue, revoke, self-provision (--help)."),
    "fairness": ("cxp.tools.bench.fairness",
                 "One key's burst of heavy analytics vs an admin's reads, limits off vs on (see --help)."),
    "guard": ("cxp.tools.bench.guard",
              "API RSS and /healthz while 8 parallel 50 MB bodies arrive, without and with a key (--help)."),
    "device-tls": ("cxp.tools.bench.device_tls",
                   "Connect rate and QoS 1 throughput of N devices, plain vs token+TLS vs mTLS (throw-away broker)."),
    "import": ("cxp.tools.bench.history_import",
               "History import (cxp import) events/s per format (JSON lines, CSV, Parquet) vs the gateway path."),
    "import-memory": ("cxp.tools.bench.import_memory",
                      "API RSS while a 20 MiB devices CSV is imported."),
    "alerts": ("cxp.tools.bench.alerts",
               "Alert evaluation per pass at 10,000 devices × 100 rules; event → webhook p50/p99 (--help)."),
    "pages": ("cxp.tools.bench.pages",
              "A deep page of the device list by offset vs by keyset cursor."),
    "seq-cost": ("cxp.tools.bench.seq_cost",
                 "What the seq registry costs the store: write_batch as it is vs the pre-015 statement (--help)."),
    "broker-persistence": ("cxp.tools.bench.broker_persistence",
                           "Mosquitto autosave settings: publish throughput and what a broker SIGKILL loses (--help)."),
    "failover": ("cxp.tools.bench.failover",
                 "HA TimescaleDB: the Patroni primary SIGKILLed under live ingest; time without a writable primary,"
                 " time until ingest is back to rate, events lost (--help)."),
    "truth": ("cxp.tools.bench.truth",
              "Recovery of the planted experience truth per seed: incidents, classes, churn AUC, paradox (--help)."),
}


def _passthrough(module: str, doc: str) -> Callable[[typer.Context], None]:
    def command(ctx: typer.Context) -> None:
        importlib.import_module(module).main(list(ctx.args))

    command.__doc__ = doc
    return command


for _name, (_module, _doc) in PASSTHROUGH.items():
    # --help too goes to the module's own parser, which knows the options (Typer's would list none)
    bench_app.command(_name, add_help_option=False,
                      context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
        _passthrough(_module, _doc))


@bench_app.command("ingest")
def bench_ingest(
    devices: Annotated[int, typer.Option(help="Fleet size the messages come from.")] = 2000,
    days: Annotated[int, typer.Option(help="Days of fleet history.")] = 30,
    messages: Annotated[int, typer.Option(help="Messages drained by the no-op subscriber and the gateway.")] = 100_000,
    latency_seconds: Annotated[float, typer.Option(help="Duration of the half-rate latency phase.")] = 20.0,
    backlog: Annotated[int, typer.Option(help="Messages queued for the memory-bound phase (0: skip).")] = 0,
    poison_every: Annotated[int, typer.Option(help="Also drain with one poison message per N (0: skip).")] = 400,
    debug_log_cost: Annotated[bool, typer.Option(help="Also drain with the broker's debug log off and on "
                                                      "(restarts the stack's broker).")] = False,
    instances: Annotated[str, typer.Option(help="Instance counts, e.g. 1,2,3: only the gateway group's scaling "
                                                "(events/s per count on the same backlog of --messages).")] = "",
) -> None:
    """Ingest throughput vs the paho ceiling, latency at half rate, memory under a backlog (prints JSON)."""
    from cxp.tools.bench.ingest import main as bench_main

    bench_main(["--devices", str(devices), "--days", str(days), "--messages", str(messages),
                "--latency-seconds", str(latency_seconds), "--backlog", str(backlog),
                "--poison-every", str(poison_every), "--instances", instances,
                *(["--debug-log-cost"] if debug_log_cost else [])])


@bench_app.command("broker-auth")
def bench_broker_auth(
    devices: Annotated[list[int] | None, typer.Option(help="Fleet size; repeat (default 10000 and 100000).")] = None,
    mechanism: Annotated[str, typer.Option(help="files (password_file + acl_file), dynsec, or all.")] = "all",
    connect_clients: Annotated[int, typer.Option(help="Devices connecting at once with their own credentials.")] = 1000,
    dynsec_max_create_s: Annotated[float, typer.Option(help="Cap on dynsec creation over MQTT (0: skip).")] = 600.0,
    dynsec_batch: Annotated[int, typer.Option(help="Devices per dynsec control message.")] = 100,
    extras: Annotated[bool, typer.Option(help="Also connect rates with/without auth and TLS, debug-log cost.")] = True,
) -> None:
    """Broker auth at fleet scale on throw-away Mosquittos: provisioning, reload, revocation, RSS (prints JSON)."""
    from cxp.tools.bench.broker_auth import main as broker_auth_main

    argv = ["--mechanism", mechanism, "--connect-clients", str(connect_clients),
            "--dynsec-max-create-s", str(dynsec_max_create_s), "--dynsec-batch", str(dynsec_batch),
            "--extras" if extras else "--no-extras"]
    for n in devices or []:
        argv += ["--devices", str(n)]
    broker_auth_main(argv)


