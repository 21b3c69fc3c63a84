"""Administrative operations on the whole database."""

from __future__ import annotations

import psycopg

from cxp.store.errors import mapped_errors

TELEMETRY_TABLES = ("events", "device_state", "dead_letters", "rollup_dirty", "rollup_hourly", "rollup_daily",
                    "rollup_touchpoint_daily", "rollup_feedback_daily", "rollup_weekly", "rollup_touchpoint_weekly",
                    "rollup_monthly", "rollup_touchpoint_monthly",
                    "rollup_product_hourly", "rollup_product_error_hourly", "rollup_product_dirty",
                    "health_weekly", "answer_context", "uptime_daily", "touchpoint_first_success",
                    "device_seq", "device_seq_stats", "import_files")
# Alert rules and state (migration 014) go with the data they were raised on.
ALERT_TABLES = ("alert_deliveries", "alert_outbox", "alert_history", "alerts", "alert_rules", "alert_eval_state",
                "alert_device_seen")
REGISTRY_TABLES = (
    "sim_ground_truth", "sim_incidents", "sim_touchpoint_truth", "touchpoint_survey", "devices", "touchpoints",
    "products", "accounts"
)


def truncate_data(conn: psycopg.Connection, *, registry: bool = True) -> None:
    """Empty the telemetry tables (and the registry): for demos and tests, never in production."""
    tables = TELEMETRY_TABLES + ALERT_TABLES + (REGISTRY_TABLES if registry else ())
    with mapped_errors():
        conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
