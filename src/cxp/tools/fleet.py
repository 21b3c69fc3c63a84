"""Glue between the simulator and the store: register a simulated fleet and its ground truth."""

from __future__ import annotations

import psycopg

from cxp.device_sim import Fleet
from cxp.store.registry import (
    AccountRow,
    DeviceRow,
    GroundTruthRow,
    IncidentRow,
    ProductRow,
    TouchpointRow,
    upsert_accounts,
    upsert_devices,
    upsert_ground_truth,
    upsert_products,
)


def register_fleet(conn: psycopg.Connection, *, fleet: Fleet) -> int:
    """Store the fleet's products, accounts, devices, ground truth and incidents; return the device count."""
    upsert_products(conn, products=[
        ProductRow(p.model, p.display_name, p.heartbeat_interval_s, p.expected_active_days_per_week, [
            TouchpointRow(t.name, t.journey_stage, t.owner, t.core, t.target_latency_ms, t.typical_duration_s,
                          t.quantity.unit if t.quantity else None)
            for t in p.touchpoints
        ]) for p in fleet.products.values()
    ])
    upsert_accounts(conn, accounts=[AccountRow(a.account_id, a.name, a.segment) for a in fleet.accounts])
    upsert_devices(conn, devices=[DeviceRow(d.device_id, d.product, d.account_id, d.activated_at, d.plan,
                                            d.experiment_arm) for d in fleet.devices])
    truths = [
        GroundTruthRow(t["device_id"], t["persona"], t["churns"], t["churn_at"], t["error_proneness"],
                       {k: t[k] for k in ("churn_kind", "error_prone_touchpoint", "incidents")})
        for t in fleet.ground_truth()
    ]
    incidents = [IncidentRow(i["incident_id"], i["product"], i["touchpoint"], i["code"], i["severity"], i["start"],
                             i["end"]) for i in fleet.incident_truth()]
    upsert_ground_truth(conn, truths=truths, incidents=incidents)
    return len(fleet.devices)
