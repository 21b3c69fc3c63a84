"""Pure validation of one telemetry message against the contract, given a lookup of registered devices.

The gateway's writer and the dead-letter replay both use it. Time bounds (future timestamps, events before
activation or past retention) and seq identity are checked by the store in the same SQL statement that expands
the events, where they cost nothing per event.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import NamedTuple, get_origin

from pydantic import ValidationError

from cxp.contract.models import TelemetryBatch, batch_adapter
from cxp.contract.topics import device_id_from_topic

# device id -> (device_key, activation epoch seconds), or None when the device is not registered
DeviceLookup = Callable[[str], tuple[int, float] | None]


class Reason(StrEnum):
    """Why the gateway dead-lettered a message before it reached the database."""

    OVERSIZE = "oversize"
    BAD_TOPIC = "bad_topic"
    INVALID_JSON = "invalid_json"
    SCHEMA = "schema"
    DEVICE_MISMATCH = "device_mismatch"
    UNKNOWN_DEVICE = "unknown_device"
    DUPLICATE_KEY = "duplicate_key"


class Accepted(NamedTuple):
    """A message that conforms to the contract from a registered device."""

    device_id: str
    device_key: int
    activated_epoch: float
    events: int
    sent_at: datetime | None
    canonical: bytes  # the validated batch re-serialised: what is written, so the database reads no raw input
    batch: TelemetryBatch | None = None  # the validated batch itself, when asked for instead of `canonical`


class Rejected(NamedTuple):
    """An invalid message and the reason."""

    reason: Reason
    detail: str
    device_id: str | None


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return found


# Every key of a JSON text ends with a quote, maybe whitespace, then a colon; text inside a string value may too.
_KEY_END = re.compile(rb'"\s*:')
_QUOTE_SPACE = re.compile(rb'"\s')


def _key_ends(payload: bytes) -> int:
    """How often a key could end in the text: at least once per key written."""
    return payload.count(b'":') if _QUOTE_SPACE.search(payload) is None else len(_KEY_END.findall(payload))


@cache
def _dict_fields(kind: type) -> tuple[str, ...]:
    return tuple(name for name, field in kind.model_fields.items() if get_origin(field.annotation) is dict)


def _distinct_keys(batch: TelemetryBatch) -> int:
    """Keys of the objects a batch was validated from, a repeated key once: each is a field given (extra keys are
    refused) or a key of a dict field. A nested object this misses only makes the count smaller."""
    found = len(batch.model_fields_set)
    for event in batch.events:
        found += len(event.model_fields_set)
        for name in _dict_fields(type(event)):
            found += len(event.__dict__[name])
    return found


def duplicate_key(payload: bytes, batch: TelemetryBatch | None = None) -> str | None:
    """The first key repeated within one JSON object of a payload already known to be valid JSON, or None; `batch`
    (the payload validated) lets most payloads skip the second parse."""
    # The contract's parser keeps the last of repeated keys. When the text has no more places a key can end than
    # the batch has distinct keys, no key was written twice (key ends >= keys written >= distinct keys, and
    # equality all along means none repeats); otherwise a second, stricter parse sees them all.
    if batch is not None and _key_ends(payload) == _distinct_keys(batch):
        return None
    try:
        json.loads(payload, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as exc:
        return str(exc)
    return None


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
    lookup_device: DeviceLookup,
    max_payload_bytes: int,
    topic_prefix: str = "devices",
    canonical: bool = True,
) -> Accepted | Rejected:
    """Check one message's topic, size, schema (strict JSON) and device; an accepted message carries its validated
    batch re-serialised (`canonical`) or, for callers that write typed rows, the batch itself."""
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
    repeated = duplicate_key(payload, batch)
    if repeated is not None:
        return Rejected(Reason.DUPLICATE_KEY, f"key {repeated!r} repeats within one JSON object", device_id)
    if batch.device_id is not None and batch.device_id != device_id:
        return Rejected(Reason.DEVICE_MISMATCH, f"payload device_id {batch.device_id!r} != topic {device_id!r}",
                        device_id)
    found = lookup_device(device_id)
    if found is None:
        return Rejected(Reason.UNKNOWN_DEVICE, f"device {device_id!r} is not registered", device_id)
    device_key, activated_epoch = found
    if not canonical:
        return Accepted(device_id, device_key, activated_epoch, len(batch.events), batch.sent_at, b"", batch)
    return Accepted(device_id, device_key, activated_epoch, len(batch.events), batch.sent_at,
                    batch_adapter().dump_json(batch))
