"""Pure validation of one telemetry message against the contract and the registry.

Time bounds (future timestamps, events before activation or past retention) are checked by the
store in the same SQL statement that expands the events, where they cost nothing per event.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from pydantic import ValidationError

from cxp.contract import batch_adapter, device_id_from_topic
from cxp.store.registry import DeviceIdentity


class Reason(StrEnum):
    """Why the gateway dead-lettered a message before it reached the database."""

    OVERSIZE = "oversize"
    BAD_TOPIC = "bad_topic"
    INVALID_JSON = "invalid_json"
    SCHEMA = "schema"
    DEVICE_MISMATCH = "device_mismatch"
    UNKNOWN_DEVICE = "unknown_device"


class Accepted(NamedTuple):
    """A message that conforms to the contract from a registered device."""

    device_id: str
    device_key: int
    activated_epoch: float
    events: int
    sent_at: datetime | None


class Rejected(NamedTuple):
    """An invalid message and the reason."""

    reason: Reason
    detail: str
    device_id: str | None


def _schema_detail(exc: ValidationError) -> tuple[Reason, str]:
    errors = exc.errors(include_url=False, include_input=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return Reason.INVALID_JSON, errors[0]["msg"]
    shown = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in errors[:5])
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return Reason.SCHEMA, shown + more


def validate_message(
    *,
    topic: str,
    payload: bytes,
    lookup_device: Callable[[str], tuple[DeviceIdentity, float] | None],
    max_payload_bytes: int,
    topic_prefix: str = "devices",
) -> Accepted | Rejected:
    """Check one message's topic, size, schema (strict JSON) and device."""
    device_id = device_id_from_topic(topic, topic_prefix)
    if device_id is None:
        return Rejected(Reason.BAD_TOPIC, f"expected {topic_prefix}/<device_id>/telemetry, got {topic!r}", None)
    if len(payload) > max_payload_bytes:
        return Rejected(Reason.OVERSIZE, f"{len(payload)} bytes > limit {max_payload_bytes}", device_id)
    try:
        # Strict: the raw bytes go to the database as they are, so nothing may need coercion.
        batch = batch_adapter().validate_json(payload, strict=True)
    except ValidationError as exc:
        reason, detail = _schema_detail(exc)
        return Rejected(reason, detail, device_id)
    if batch.device_id is not None and batch.device_id != device_id:
        return Rejected(Reason.DEVICE_MISMATCH, f"payload device_id {batch.device_id!r} != topic {device_id!r}",
                        device_id)
    found = lookup_device(device_id)
    if found is None:
        return Rejected(Reason.UNKNOWN_DEVICE, f"device {device_id!r} is not registered", device_id)
    identity, activated_epoch = found
    return Accepted(device_id, identity.device_key, activated_epoch, len(batch.events), batch.sent_at)
