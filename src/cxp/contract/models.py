"""Versioned pydantic v2 models of one telemetry message: a batch of events from one device."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

CONTRACT_VERSION = 1

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Seq = Annotated[int, Field(ge=0, le=2**62)]


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
    ts: AwareDatetime


class UsageEvent(_Event):
    """One use of a touchpoint (a product feature, app flow or service interaction)."""

    kind: Literal["usage"] = "usage"
    touchpoint: Name
    duration_s: Annotated[float, Field(ge=0, le=86_400)] | None = None
    quantity: Annotated[float, Field(ge=0, le=1e12)] | None = None
    unit: Name | None = None
    success: bool = True
    latency_ms: Annotated[float, Field(ge=0, le=3_600_000)] | None = None

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
    battery_pct: Annotated[float, Field(ge=0, le=100)] | None = None
    signal_dbm: Annotated[float, Field(ge=-200, le=50)] | None = None
    uptime_s: Annotated[float, Field(ge=0)] | None = None
    energy_wh: Annotated[float, Field(ge=0)] | None = None
    metrics: dict[Name, float] = Field(default_factory=dict, max_length=32)


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
    detail: dict[Name, str] = Field(default_factory=dict, max_length=16)


Event = Annotated[
    UsageEvent | ErrorEvent | RecoveryEvent | StateEvent | FeedbackEvent | LifecycleEvent,
    Field(discriminator="kind"),
]


class TelemetryBatch(BaseModel):
    """One MQTT message: a batch of events from the device named in the topic."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    v: Literal[1] = CONTRACT_VERSION
    device_id: Name | None = None
    sent_at: AwareDatetime | None = None
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
