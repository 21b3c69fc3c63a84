"""Per-channel delivery policy: quiet hours and a rate limit hold notifications back, never drop them."""

from __future__ import annotations

from datetime import datetime, time, timedelta

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


def parse_quiet_hours(value: str) -> tuple[time, time]:
    """`HH:MM-HH:MM` (UTC; may wrap midnight) as two times; ValueError when malformed or empty."""
    start_s, end_s = value.split("-")
    start, end = time.fromisoformat(start_s), time.fromisoformat(end_s)
    if start == end:
        raise ValueError("quiet hours must not start and end at the same time")
    return start, end


def quiet_until(value: str | None, now: datetime) -> datetime | None:
    """When the quiet period containing `now` ends, or None outside quiet hours."""
    if not value:
        return None
    start, end = parse_quiet_hours(value)
    t = now.timetz().replace(tzinfo=None)
    inside = start <= t < end if start < end else (t >= start or t < end)
    if not inside:
        return None
    end_today = now.replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
    return end_today if end_today > now else end_today + timedelta(days=1)


def hold_until(policy: dict, *, severity: str, now: datetime, sent_last_hour: list[datetime]) -> datetime | None:
    """When a notification may go at the earliest, or None for now.

    Quiet hours hold notifications below `quiet_min_severity` (default critical: critical ones always go);
    `max_per_hour` holds the next one until the oldest delivery of the last hour is an hour old.
    """
    quiet = quiet_until(policy.get("quiet_hours"), now)
    if quiet is not None and SEVERITY_RANK[severity] < SEVERITY_RANK[policy.get("quiet_min_severity", "critical")]:
        return quiet
    limit = policy.get("max_per_hour")
    recent = sorted(t for t in sent_last_hour if t > now - timedelta(hours=1))
    if limit is not None and len(recent) >= limit:
        return recent[len(recent) - limit] + timedelta(hours=1)
    return None
