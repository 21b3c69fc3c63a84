"""MQTT topic layout: `<prefix>/<device_id>/telemetry`."""

from __future__ import annotations

import re

_DEVICE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def telemetry_topic(device_id: str, prefix: str = "devices") -> str:
    """The topic a device publishes its telemetry on."""
    return f"{prefix}/{device_id}/telemetry"


def telemetry_subscription(prefix: str = "devices") -> str:
    """The wildcard subscription covering every device's telemetry."""
    return f"{prefix}/+/telemetry"


def shared_telemetry_subscription(group: str, prefix: str = "devices") -> str:
    """The MQTT v5 shared subscription of a gateway group: each message goes to one member of `group`
    (a plain subscription when `group` is empty)."""
    plain = telemetry_subscription(prefix)
    return f"$share/{group}/{plain}" if group else plain


def device_id_from_topic(topic: str, prefix: str = "devices") -> str | None:
    """The device id a telemetry topic names, or None when the topic is not a telemetry topic."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != prefix or parts[2] != "telemetry":
        return None
    return parts[1] if _DEVICE_ID.match(parts[1]) else None
