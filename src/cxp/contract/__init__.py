"""The telemetry message contract shared by devices (device_sim) and the gateway."""

from cxp.contract.models import (
    CONTRACT_VERSION,
    ErrorEvent,
    Event,
    FeedbackEvent,
    LifecycleEvent,
    LifecycleStage,
    RecoveryEvent,
    Severity,
    StateEvent,
    TelemetryBatch,
    UsageEvent,
    batch_adapter,
    json_schema,
)
from cxp.contract.topics import (
    device_id_from_topic,
    shared_telemetry_subscription,
    telemetry_subscription,
    telemetry_topic,
)
from cxp.core.config import MAX_PAYLOAD_BYTES

__all__ = [
    "CONTRACT_VERSION",
    "MAX_PAYLOAD_BYTES",
    "ErrorEvent",
    "Event",
    "FeedbackEvent",
    "LifecycleEvent",
    "LifecycleStage",
    "RecoveryEvent",
    "Severity",
    "StateEvent",
    "TelemetryBatch",
    "UsageEvent",
    "batch_adapter",
    "device_id_from_topic",
    "json_schema",
    "shared_telemetry_subscription",
    "telemetry_subscription",
    "telemetry_topic",
]
