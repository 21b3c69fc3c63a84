"""Deterministic per-device timelines: usage, errors, recoveries, heartbeats, feedback and lifecycle events.

A device's timeline is simulated day by day (UTC days) from the later of the fleet start and its
activation, with one RNG per (fleet seed, device index, day) and state (sequence counter, meters,
battery, pending follow-ups) carried from day to day. So an event's seq and ts depend neither on
the fleet size nor on the window asked for; a window only skips events outside it. The day itself is
simulated in `device_day`, over the context and carried state of `device_state`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from itertools import count
from typing import Any

from cxp.contract.models import (
    ErrorEvent,
    FeedbackEvent,
    LifecycleEvent,
    RecoveryEvent,
    StateEvent,
    UsageEvent,
)
from cxp.device_sim.device_day import DeviceDay
from cxp.device_sim.device_state import Record, build_context, initial_state
from cxp.device_sim.errors import ConfigError
from cxp.device_sim.fleet import DAY_MS, Device, Fleet, from_ms, to_ms

__all__ = [
    "EVENT_KINDS",
    "EVENT_MODELS",
    "Record",
    "build_event",
    "device_events",
    "device_outcome",
    "iter_records",
    "resolve_device",
]

EVENT_MODELS: dict[str, type] = {
    "usage": UsageEvent,
    "error": ErrorEvent,
    "recovery": RecoveryEvent,
    "state": StateEvent,
    "feedback": FeedbackEvent,
    "lifecycle": LifecycleEvent,
}
EVENT_KINDS: tuple[str, ...] = tuple(EVENT_MODELS)


def iter_records(*, fleet: Fleet, device: Device, end_ms: int) -> Iterator[Record]:
    """The device's raw records with ts < end_ms, from its first event in the fleet timeline."""
    ctx = build_context(fleet, device)
    st = initial_state(ctx)
    for day in count(ctx.t0 // DAY_MS):
        if day * DAY_MS >= end_ms:
            return
        out = DeviceDay(ctx, st, day).run()
        for rec in out:
            if rec[0] >= end_ms:
                return
            yield rec
        if st.stopped and not st.pending:
            return


def device_outcome(*, fleet: Fleet, device: Device) -> dict[str, Any]:
    """How the device's timeline ends in the fleet period: churn (up front or by the experience hazard) and why."""
    ctx = build_context(fleet, device)
    st = initial_state(ctx)
    end_ms = to_ms(fleet.end)
    for day in count(ctx.t0 // DAY_MS):
        if day * DAY_MS >= end_ms or (st.stopped and not st.pending):
            break
        DeviceDay(ctx, st, day).run()
    churn_at = from_ms(ctx.churn_ms) if ctx.churn_ms is not None and ctx.churn_ms < end_ms else None
    return {
        "device_id": device.device_id,
        "churns": churn_at is not None,
        "churn_at": churn_at,
        "churn_kind": ctx.churn_kind if churn_at is not None else None,
        "churn_cause": ctx.churn_cause if churn_at is not None else None,
        "decided_at": from_ms(ctx.decay_start_ms) if churn_at is not None else None,
        "churn_drivers": dict(st.churn_drivers),
        "paradox_lifts": st.paradox_lifts,
    }


def build_event(record: Record) -> Any:
    """The contract event model of a record (validated)."""
    d = record[1]
    return EVENT_MODELS[d["kind"]].model_validate(d)


def resolve_device(fleet: Fleet, device: Device | str) -> Device:
    """The fleet's device by id, or the given device after checking that it belongs to this fleet."""
    if isinstance(device, str):
        return fleet.device(device)
    if device.index >= len(fleet.devices) or fleet.devices[device.index] != device:
        raise ConfigError(f"device {device.device_id} is not part of this fleet")
    return device


def device_events(
    *,
    fleet: Fleet,
    device: Device | str,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Iterator[Any]:
    """The device's contract events with start <= ts < end (defaults: the fleet period), in seq order."""
    dev = resolve_device(fleet, device)
    start_ms = to_ms(start if start is not None else fleet.start)
    end_ms = to_ms(end if end is not None else fleet.end)
    for rec in iter_records(fleet=fleet, device=dev, end_ms=end_ms):
        if rec[0] >= start_ms:
            yield build_event(rec)
