"""Register a simulated fleet and publish its telemetry through the real broker (`cxp simulate`, the demo)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from cxp.core.config import Settings
from cxp.device_sim import (
    ConfigError,
    ConnectionLoop,
    DeviceCredential,
    MqttPublisher,
    Publisher,
    build_fleet,
    simulate_backfill,
    simulate_live,
)
from cxp.identity.broker import LOADER_ACCOUNT, service_secret
from cxp.store.db import connect
from cxp.tools.device_keys import equip_fleet
from cxp.tools.fleet import register_fleet


def _fleet_window(days: int, start: datetime | None) -> datetime:
    """The fleet start: `start`, or the UTC midnight `days` ago."""
    # Anchored at a UTC midnight so that re-runs on the same day replay identical events (deduplicated).
    if start is not None:
        return start.astimezone(UTC)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days)


def simulate_fleet(*, settings: Settings, devices: int, days: int, seed: int, mode: str, start: datetime | None,
                   duration_s: float, speed: float, error_prone: tuple[str, str] | None, progress: bool,
                   credentials: Mapping[str, DeviceCredential] | None = None, identities: bool = False,
                   certificate_every: int = 5, publish_from: datetime | None = None):
    """Build and register the fleet, then publish its telemetry; returns the publish report.

    With `identities` every device is given (or keeps, from the simulated devices' key store) a credential of
    its own — a client certificate for every `certificate_every`-th device, an access token for the others —
    and, like with explicit `credentials` (device id → credential), each device connects over TLS with it and
    publishes through its own connection. Otherwise the whole fleet shares one connection of the `cxp-loader`
    service account on the loopback listener (bulk loads, benchmarks). `publish_from` (back-fill only): publish
    the events from then on, the earlier ones having been loaded otherwise (`tools.fleet.load_fleet(until=…)`).
    """
    fleet_start = _fleet_window(days, start)
    first = publish_from if publish_from is not None else fleet_start
    fleet = build_fleet(seed=seed, devices=devices, start=fleet_start, days=days, error_prone=error_prone)
    with connect(settings.db) as conn:
        register_fleet(conn, fleet=fleet)
        if identities and credentials is None:
            credentials, _ = equip_fleet(conn=conn, settings=settings, device_ids=[d.device_id for d in fleet.devices],
                                         certificate_every=certificate_every)
    if credentials is None:
        publisher = MqttPublisher(host=settings.mqtt.host, port=settings.mqtt.port,
                                  client_id=f"{settings.sim.client_id_prefix}-{os.getpid()}",
                                  username=LOADER_ACCOUNT, password=service_secret(settings, LOADER_ACCOUNT),
                                  max_inflight=settings.sim.max_inflight).connect()
        try:
            return fleet, _publish(settings, fleet, mode, first, duration_s, speed, progress, publisher=publisher)
        finally:
            publisher.close(timeout_s=10)
    missing = [d.device_id for d in fleet.devices if d.device_id not in credentials]
    if missing:
        raise ConfigError(f"{len(missing)} devices of the fleet have no credential (e.g. {missing[0]})")
    with ConnectionLoop(keepalive_s=settings.mqtt.keepalive_s) as loop:
        links: dict[str, Publisher] = dict(loop.open_all(credentials[d.device_id] for d in fleet.devices))
        return fleet, _publish(settings, fleet, mode, first, duration_s, speed, progress, publishers=links)


def _publish(settings: Settings, fleet, mode: str, fleet_start: datetime, duration_s: float, speed: float,
             progress: bool, *, publisher: Publisher | None = None,
             publishers: Mapping[str, Publisher] | None = None):
    common = {"fleet": fleet, "publisher": publisher, "publishers": publishers,
              "topic_prefix": settings.mqtt.topic_prefix,
              "max_events_per_message": settings.sim.max_events_per_message,
              "offline_buffer_messages": settings.sim.offline_buffer_messages, "progress": progress}
    if mode == "backfill":
        return simulate_backfill(start=fleet_start, end=min(datetime.now(UTC), fleet.end), **common)
    return simulate_live(duration_s=duration_s, speed=speed, **common)
