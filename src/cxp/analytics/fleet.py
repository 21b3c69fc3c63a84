"""Fleet summary per product from the daily rollups: the demo's closing report."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from cxp.store.errors import mapped_errors


@dataclass(frozen=True)
class ProductSummary:
    """One product model's fleet figures over the stored period."""

    product_id: str
    devices: int
    devices_reporting: int
    active_device_days: int
    usage_events: int
    success_rate: float | None
    errors: int
    errors_per_1000_uses: float | None
    mean_latency_ms: float | None
    heartbeats: int
    first_day: str | None
    last_day: str | None


@dataclass(frozen=True)
class FleetSummary:
    """The whole fleet: per product, plus ingest health."""

    products: list[ProductSummary]
    raw_events: int
    raw_states: int
    dead_letters: int
    dead_letter_reasons: dict[str, int]


_PER_PRODUCT = """
SELECT d.product_id, count(DISTINCT d.device_key), count(DISTINCT r.device_key),
       count(*) FILTER (WHERE r.active), coalesce(sum(r.usage_count), 0), sum(r.success_count)::float8
       / NULLIF(sum(r.usage_count), 0), coalesce(sum(r.error_count), 0),
       sum(r.latency_sum) / NULLIF(sum(r.latency_count), 0), coalesce(sum(r.heartbeat_count), 0),
       min(r.day)::text, max(r.day)::text
FROM devices d LEFT JOIN rollup_daily r ON r.device_key = d.device_key
GROUP BY d.product_id ORDER BY d.product_id
"""


def get_fleet_summary(conn: psycopg.Connection) -> FleetSummary:
    """Per-product usage, reliability and latency from the rollups, and the dead-letter tally."""
    with mapped_errors():
        rows = conn.execute(_PER_PRODUCT).fetchall()
        raw_events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        raw_states = conn.execute("SELECT count(*) FROM device_state").fetchone()[0]
        reasons = dict(conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY 1 ORDER BY 2 DESC").fetchall())
    products = [
        ProductSummary(pid, n, reporting, active, uses, rate, errors,
                       round(errors * 1000 / uses, 1) if uses else None, lat, beats, first, last)
        for pid, n, reporting, active, uses, rate, errors, lat, beats, first, last in rows
    ]
    return FleetSummary(products, raw_events, raw_states, sum(reasons.values()), reasons)
