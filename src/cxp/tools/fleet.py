"""Glue between the simulator and the store: register a simulated fleet and its ground truth, bulk-load its telemetry.

`load_fleet` is the broker-free bulk loader used by the benchmarks and the analytics tests: it registers a
simulated fleet, writes the simulator's payloads through `store.ingest.write_batch` (the gateway's own write
path, without MQTT) and refreshes the rollups.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from cxp.device_sim import Fleet, lived_ground_truth, touchpoint_truth_rows
from cxp.store.registry import (
    AccountRow,
    DeviceRow,
    GroundTruthRow,
    IncidentRow,
    ProductRow,
    TouchpointRow,
    TouchpointTruthRow,
    upsert_accounts,
    upsert_devices,
    upsert_ground_truth,
    upsert_products,
    upsert_touchpoint_truth,
)


def register_fleet(conn: psycopg.Connection, *, fleet: Fleet, lived_truth: bool = True) -> int:
    """Store the fleet's products, accounts, devices, ground truth and incidents; return the device count.

    `lived_truth` simulates every timeline to record churn as lived (the experience hazard's churners and
    why); without it the truth holds only the churn drawn up front (for benchmarks that never read it).
    """
    upsert_products(conn, products=[
        ProductRow(p.model, p.display_name, p.heartbeat_interval_s, p.expected_active_days_per_week, [
            TouchpointRow(t.name, t.journey_stage, t.owner, t.core, t.target_latency_ms, t.typical_duration_s,
                          t.quantity.unit if t.quantity else None,
                          t.capability if t.trigger == "session" else None)
            for t in p.touchpoints
        ]) for p in fleet.products.values()
    ])
    upsert_accounts(conn, accounts=[AccountRow(a.account_id, a.name, a.segment) for a in fleet.accounts])
    upsert_devices(conn, devices=[DeviceRow(d.device_id, d.product, d.account_id, d.activated_at, d.plan,
                                            d.experiment_arm) for d in fleet.devices])
    truths = [
        GroundTruthRow(t["device_id"], t["persona"], t["churns"], t["churn_at"], t["error_proneness"],
                       {k: t[k] for k in ("churn_kind", "error_prone_touchpoint", "incidents", "paradox_lifts")
                        if k in t},
                       t.get("churn_cause", "persona" if t["churns"] else None), t.get("decided_at"),
                       t.get("churn_drivers", {}))
        for t in (lived_ground_truth(fleet) if lived_truth else fleet.ground_truth())
    ]
    incidents = [IncidentRow(i["incident_id"], i["product"], i["touchpoint"], i["code"], i["severity"], i["start"],
                             i["end"], i["recovery_quality"], i["paradox"]) for i in fleet.incident_truth()]
    upsert_ground_truth(conn, truths=truths, incidents=incidents)
    upsert_touchpoint_truth(conn, rows=[
        TouchpointTruthRow(t["product"], t["touchpoint"], t["kano"], t["fail_penalty"], t["success_reward"],
                           t["churn_hazard"]) for t in touchpoint_truth_rows(fleet)
    ])
    return len(fleet.devices)


_DEVICES_PER_TASK = 25
# Bulk loads pack a device's events into few messages: fewer staging rows, same stored events.
_BULK_UPLOAD_INTERVAL_S = 6 * 3600
_BULK_EVENTS_PER_MESSAGE = 1000


@dataclass(frozen=True)
class LoadReport:
    """What `load_fleet` stored and how long each step took."""

    devices: int
    messages: int
    events_stored: int
    states_stored: int
    dead_lettered: int
    load_s: float
    rollup_s: float


def _plan_chunk(args: tuple[dict[str, Any], int, int, datetime | None]) -> list[tuple[str, bytes, int]]:
    """Worker: rebuild the fleet and plan the messages of devices [lo, hi) before `until` as (device_id, payload,
    due_ms)."""
    from cxp.device_sim import build_fleet, plan_messages

    params, lo, hi, until = args
    fleet = build_fleet(**params)
    return [
        (m.device_id, m.payload, m.due_ms)
        for m in plan_messages(
            fleet=fleet,
            devices=fleet.devices[lo:hi],
            end=until,
            upload_interval_s=_BULK_UPLOAD_INTERVAL_S,
            max_events_per_message=_BULK_EVENTS_PER_MESSAGE,
        )
    ]


def load_fleet(
    conn: psycopg.Connection,
    *,
    fleet_params: dict[str, Any],
    workers: int = 2,
    batch_messages: int = 1000,
    progress: Callable[[str], None] | None = None,
    until: datetime | None = None,
) -> LoadReport:
    """Register `build_fleet(**fleet_params)`, write its telemetry (before `until`, if given) with write_batch,
    refresh the rollups."""
    from cxp.device_sim import build_fleet
    from cxp.store.ingest import IngestMessage, write_batch
    from cxp.store.rollups import refresh_all_pending

    fleet = build_fleet(**fleet_params)
    register_fleet(conn, fleet=fleet)
    ids = [d.device_id for d in fleet.devices]
    keys = {
        device_id: (key, activated.timestamp())
        for device_id, key, activated in conn.execute(
            "SELECT device_id, device_key, activated_at FROM devices WHERE device_id = ANY(%s)", (ids,)
        ).fetchall()
    }
    n = len(fleet.devices)
    tasks = [(fleet_params, lo, min(lo + _DEVICES_PER_TASK, n), until) for lo in range(0, n, _DEVICES_PER_TASK)]
    t0 = time.perf_counter()
    totals = [0, 0, 0, 0]
    batch: list[IngestMessage] = []
    done_devices = 0

    def flush() -> None:
        result = write_batch(conn, messages=batch)
        totals[0] += len(batch)
        totals[1] += result.events_stored
        totals[2] += result.states_stored
        totals[3] += result.dead_lettered
        batch.clear()

    # Generation runs in worker processes while this process writes (the database does the rest).
    chunks: Iterator[list[tuple[str, bytes, int]]]
    if workers > 0:
        pool = mp.get_context("spawn").Pool(workers)
        chunks = pool.imap(_plan_chunk, tasks)
    else:
        pool = None
        chunks = map(_plan_chunk, tasks)
    try:
        for k, chunk in enumerate(chunks):
            for device_id, payload, due_ms in chunk:
                key, activated = keys[device_id]
                batch.append(IngestMessage("bulk", device_id, key, payload, due_ms / 1000.0 + 1.0, activated))
                if len(batch) >= batch_messages:
                    flush()
            done_devices = tasks[k][2]
            if progress and (k % 40 == 39 or done_devices == n):
                elapsed = time.perf_counter() - t0
                progress(f"loaded {done_devices:,}/{n:,} devices, {totals[1] + totals[2]:,} rows in {elapsed:.0f}s")
        if batch:
            flush()
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    t1 = time.perf_counter()
    if progress:
        progress("refreshing rollups")
    refresh_all_pending(conn)
    t2 = time.perf_counter()
    return LoadReport(n, totals[0], totals[1], totals[2], totals[3], t1 - t0, t2 - t1)


def _loaded(conn: psycopg.Connection, params: dict[str, Any]) -> bool:
    """Whether the database already holds this fleet fully rolled up (same device count and day span)."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM devices), (SELECT count(*) FROM rollup_dirty),"
        " (SELECT min(day) FROM rollup_daily), (SELECT max(day) FROM rollup_daily)"
    ).fetchone()
    start: date = params["start"].date()
    last = start + timedelta(days=params["days"] - 1)
    return row is not None and row[0] == params["devices"] and row[1] == 0 and row[2] == start and row[3] == last


def bench_fleet_params(*, devices: int, days: int, seed: int) -> dict[str, Any]:
    """The benchmark fleet: starts on a Monday so weekly periods line up with the simulated days."""
    return {"seed": seed, "devices": devices, "start": datetime(2025, 1, 6, tzinfo=UTC), "days": days,
            "error_prone": ("brew-c3", "brew")}


def ensure_fleet(
    conn: psycopg.Connection, *, params: dict[str, Any], workers: int, reload: bool, out: Callable[[str], None],
    settings: Any = None, migrated: bool = False,
) -> None:
    """Load the fleet into this (benchmark) database unless it already holds it fully rolled up; a held fleet that
    `migrated` (migrations were just applied to it) is vacuumed, as after a load."""
    from cxp.store.admin import truncate_data

    if not reload and _loaded(conn, params):
        out(f"the database already holds the fleet ({params['devices']:,} devices × {params['days']} days);"
            " --reload to rebuild")
        if migrated:  # a migration's rewrites leave dead rows and clear the visibility map, like a load
            _settle(conn, out)
        return
    truncate_data(conn)
    if settings is not None:  # through `cxp import`: the contract validation and checkpoint of a real history import
        from cxp.tools.history import import_fleet

        out(f"loading {params['devices']:,} devices × {params['days']} days (cxp import, JSON lines)…")
        result = import_fleet(conn, fleet_params=params, settings=settings, out=out)
        out(f"imported {result.events_stored:,} events and heartbeats in {result.seconds:.0f} s"
            f" ({result.events_per_s:,.0f} events/s), rollups in {result.rollup_seconds:.0f} s")
        _settle(conn, out)
        return
    out(f"loading {params['devices']:,} devices × {params['days']} days (write_batch, no MQTT)…")
    report = load_fleet(conn, fleet_params=params, workers=workers, progress=out)
    out(f"loaded {report.events_stored:,} events + {report.states_stored:,} heartbeats in {report.load_s:.0f} s,"
        f" rollups in {report.rollup_s:.0f} s")
    _settle(conn, out)


def _settle(conn: Any, out: Callable[[str], None]) -> None:
    """VACUUM ANALYZE a freshly loaded fleet, as autovacuum would in the following minutes.

    Until then the tables have no visibility map, so the covering indexes' index-only scans visit the heap: the
    views measured 30 % slower at 10,000 devices right after a load than a few minutes later.
    """
    started = time.perf_counter()
    conn.execute("VACUUM (ANALYZE)")
    out(f"vacuumed and analysed in {time.perf_counter() - started:.0f} s")
