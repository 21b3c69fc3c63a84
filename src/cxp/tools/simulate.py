"""Register a simulated fleet and publish its telemetry through the real broker (`cxp simulate`, the demo)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from cxp.core.config import Settings
from cxp.device_sim import MqttPublisher, build_fleet, simulate_backfill, simulate_live
from cxp.identity.broker import LOADER_ACCOUNT, service_secret
from cxp.store.db import connect
from cxp.tools.fleet import register_fleet


def _fleet_window(days: int, start: datetime | None) -> datetime:
    """The fleet start: `start`, or the UTC midnight `days` ago."""
    # Anchored at a UTC midnight so that re-runs on the same day replay identical events (deduplicated).
    if start is not None:
        return start.astimezone(UTC)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days)


def simulate_fleet(*, settings: Settings, devices: int, days: int, seed: int, mode: str, start: datetime | None,
                   duration_s: float, speed: float, error_prone: tuple[str, str] | None, progress: bool):
    """Build and register the fleet, then publish its telemetry; returns the publish report."""
    fleet_start = _fleet_window(days, start)
    fleet = build_fleet(seed=seed, devices=devices, start=fleet_start, days=days, error_prone=error_prone)
    with connect(settings.db) as conn:
        register_fleet(conn, fleet=fleet)
    publisher = MqttPublisher(host=settings.mqtt.host, port=settings.mqtt.port,
                              client_id=f"{settings.sim.client_id_prefix}-{os.getpid()}",
                              username=LOADER_ACCOUNT, password=service_secret(settings, LOADER_ACCOUNT),
                              max_inflight=settings.sim.max_inflight).connect()
    try:
        if mode == "backfill":
            end = min(datetime.now(UTC), fleet.end)
            return fleet, simulate_backfill(fleet=fleet, publisher=publisher, start=fleet_start, end=end,
                                            topic_prefix=settings.mqtt.topic_prefix,
                                            max_events_per_message=settings.sim.max_events_per_message,
                                            offline_buffer_messages=settings.sim.offline_buffer_messages,
                                            progress=progress)
        return fleet, simulate_live(fleet=fleet, publisher=publisher, duration_s=duration_s, speed=speed,
                                    topic_prefix=settings.mqtt.topic_prefix,
                                    max_events_per_message=settings.sim.max_events_per_message,
                                    offline_buffer_messages=settings.sim.offline_buffer_messages, progress=progress)
    finally:
        publisher.close(timeout_s=10)
