"""Versioned pydantic v2 models of one telemetry message: a batch of events from one device."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    model_validator,
)

CONTRACT_VERSION = 1

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Seq = Annotated[int, Field(ge=0, le=2**62)]

# RFC 3339 date-time with an explicit offset. Pydantic alone also reads "20261130" or "1764496800" as
# Unix seconds, which PostgreSQL would read differently; real offsets stay within ±14:00.
_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d{1,9})?([Zz]|[+-](?:0\d|1[0-4]):[0-5]\d)$")


def _rfc3339(value: Any) -> Any:
    # Parsed here, once; a datetime then passes the strict AwareDatetime check unchanged.
    if not isinstance(value, str):
        return value
    found = _RFC3339.match(value)
    if found is None:
        raise ValueError("timestamp must be RFC 3339 with an offset, e.g. 2026-03-01T10:00:00Z")
    day, clock, fraction, offset = found.groups()
    offset = "+00:00" if offset in "Zz" else offset
    fraction = (fraction or "")[:7]  # nanoseconds: the microseconds are kept
    return datetime.fromisoformat(f"{day}T{clock}{fraction}{offset}")


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]

# PostgreSQL `real` refuses non-zero values that round to zero (underflow); refuse them here, before
# the database, so one device's odd float cannot cost a batch.
_REAL_MIN = 1.1754943508222875e-38


def _real(value: float) -> float:
    if value != 0 and abs(value) < _REAL_MIN:
        raise ValueError(f"{value!r} is too small for a 32-bit float (use 0)")
    return value


Real32 = AfterValidator(_real)


# Free text may not hold control characters: PostgreSQL text and jsonb cannot store NUL.
Text = Annotated[str, Field(max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$")]


class Severity(StrEnum):
    """How bad an error is, from the device's point of view."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class LifecycleStage(StrEnum):
    """Journey milestones a device reports, pre-purchase to post-purchase."""

    UNBOXED = "unboxed"
    SETUP = "setup"
    ACTIVATED = "activated"
    PLAN_CHANGED = "plan_changed"
    REFERRED = "referred"
    SUPPORT_CONTACTED = "support_contacted"
    RETURNED = "returned"
    CANCELLED = "cancelled"


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    seq: Seq
    ts: Timestamp


class UsageEvent(_Event):
    """One use of a touchpoint (a product feature, app flow or service interaction)."""

    kind: Literal["usage"] = "usage"
    touchpoint: Name
    duration_s: Annotated[float, Field(ge=0, le=86_400), Real32] | None = None
    quantity: Annotated[float, Field(ge=0, le=1e12)] | None = None
    unit: Name | None = None
    success: bool = True
    latency_ms: Annotated[float, Field(ge=0, le=3_600_000), Real32] | None = None

    @model_validator(mode="after")
    def _unit_goes_with_quantity(self) -> UsageEvent:
        if self.unit is not None and self.quantity is None:
            raise ValueError("unit given without quantity")
        return self


class ErrorEvent(_Event):
    """A fault the device observed, optionally at a touchpoint."""

    kind: Literal["error"] = "error"
    code: Name
    severity: Severity = Severity.ERROR
    touchpoint: Name | None = None


class RecoveryEvent(_Event):
    """The end of a fault: the error `code` no longer occurs."""

    kind: Literal["recovery"] = "recovery"
    code: Name
    touchpoint: Name | None = None


class StateEvent(_Event):
    """A heartbeat with the device's current metrics."""

    kind: Literal["state"] = "state"
    battery_pct: Annotated[float, Field(ge=0, le=100), Real32] | None = None
    signal_dbm: Annotated[float, Field(ge=-200, le=50), Real32] | None = None
    uptime_s: Annotated[float, Field(ge=0, le=3.2e9)] | None = None  # a century
    energy_wh: Annotated[float, Field(ge=0, le=1e12)] | None = None
    metrics: dict[Name, Annotated[float, Field(ge=-1e15, le=1e15)]] = Field(default_factory=dict, max_length=32)


class FeedbackEvent(_Event):
    """A customer's survey answer given through the product: NPS 0–10, CSAT 1–5, CES 1–7."""

    kind: Literal["feedback"] = "feedback"
    nps: Annotated[int, Field(ge=0, le=10)] | None = None
    csat: Annotated[int, Field(ge=1, le=5)] | None = None
    ces: Annotated[int, Field(ge=1, le=7)] | None = None
    touchpoint: Name | None = None

    @model_validator(mode="after")
    def _some_score(self) -> FeedbackEvent:
        if self.nps is None and self.csat is None and self.ces is None:
            raise ValueError("feedback needs at least one of nps, csat, ces")
        return self


class LifecycleEvent(_Event):
    """A journey milestone, with optional details (e.g. the new plan, the referred account)."""

    kind: Literal["lifecycle"] = "lifecycle"
    stage: LifecycleStage
    detail: dict[Name, Text] = Field(default_factory=dict, max_length=16)


Event = Annotated[
    UsageEvent | ErrorEvent | RecoveryEvent | StateEvent | FeedbackEvent | LifecycleEvent,
    Field(discriminator="kind"),
]


class TelemetryBatch(BaseModel):
    """One MQTT message: a batch of events from the device named in the topic."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    v: Literal[1] = CONTRACT_VERSION
    device_id: Name | None = None
    sent_at: Timestamp | None = None
    events: list[Event] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _sequence_unique_in_batch(self) -> TelemetryBatch:
        # Most messages hold one event: skip the set then (this runs on the gateway's hot path).
        if len(self.events) > 1 and len({e.seq for e in self.events}) != len(self.events):
            raise ValueError("sequence numbers repeat within the batch")
        return self


@lru_cache(maxsize=1)
def batch_adapter() -> TypeAdapter[TelemetryBatch]:
    """The TypeAdapter for a batch, built once per process."""
    return TypeAdapter(TelemetryBatch)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a telemetry message."""
    schema = batch_adapter().json_schema()
    schema["$id"] = f"urn:cxp:telemetry:v{CONTRACT_VERSION}"
    return schema
