"""The alert state machine: open → acknowledged → cleared, with a hold-down against flapping."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum


class State(StrEnum):
    """Where an alert is in its lifecycle."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


class Event(StrEnum):
    """What a step did; `opened` and `cleared` are notified, `updated` only recorded."""

    OPENED = "opened"
    UPDATED = "updated"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


@dataclass(frozen=True)
class Live:
    """The live (not cleared) alert of one rule × entity."""

    state: State
    first_seen: datetime
    last_seen: datetime
    false_since: datetime | None = None
    acked_by: str | None = None


def step(live: Live | None, *, firing: bool, now: datetime, hold_down_s: float) -> tuple[Live | None, Event | None]:
    """Advance one rule × entity by one evaluation; at most one live alert exists per rule × entity.

    A firing condition opens an alert (or refreshes the live one); a false condition clears it only
    once it has stayed false for `hold_down_s`, so a flapping condition keeps one alert open instead of
    opening and clearing one per flap.
    """
    if live is None:
        if not firing:
            return None, None
        return Live(State.OPEN, now, now), Event.OPENED
    if firing:
        return replace(live, last_seen=now, false_since=None), Event.UPDATED
    false_since = live.false_since or now
    if (now - false_since).total_seconds() >= hold_down_s:
        return None, Event.CLEARED
    if live.false_since is None:
        return replace(live, false_since=false_since), Event.UPDATED
    return live, None


def acknowledge(live: Live, *, by: str) -> tuple[Live, Event | None]:
    """Acknowledge an open alert (idempotent: acknowledging again changes nothing)."""
    if live.state is State.ACKNOWLEDGED:
        return live, None
    return replace(live, state=State.ACKNOWLEDGED, acked_by=by), Event.ACKNOWLEDGED
