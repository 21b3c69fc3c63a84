"""Device simulator: a deterministic fleet of connected products publishing contract telemetry over MQTT."""

from cxp.device_sim.behaviour import EVENT_KINDS, device_events, device_outcome
from cxp.device_sim.catalogue import CATALOGUE, COFFEE, EBIKE, THERMOSTAT, catalogue_by_model
from cxp.device_sim.client import (
    DeviceBatcher,
    MqttPublisher,
    OutboundMessage,
    Publisher,
    encode_batch,
    pack_events,
)
from cxp.device_sim.credentials import CredentialKind, DeviceCredential
from cxp.device_sim.errors import (
    ConfigError,
    ConnectRefused,
    PublisherError,
    PublishTimeout,
    SequenceError,
    SimError,
)
from cxp.device_sim.fleet import (
    PLANTED_ERROR_RATE,
    Account,
    Device,
    DeviceProfile,
    Fleet,
    Incident,
    build_fleet,
    experiment_arm,
)
from cxp.device_sim.kano import KANO_CLASSES, KanoClass, TouchpointTruth, touchpoint_truth
from cxp.device_sim.links import ConnectionLoop, DeviceLink, LinkState, Refusal, RefusalKind
from cxp.device_sim.personas import CASUAL, FADING, PERSONAS, POWER_USER, ROUTINE_USER, Persona, personas_by_name
from cxp.device_sim.runner import (
    PlannedMessage,
    PublishReport,
    Upload,
    device_messages,
    plan_messages,
    simulate_backfill,
    simulate_live,
)
from cxp.device_sim.specs import BatterySpec, Gauge, Product, QuantitySpec, Touchpoint
from cxp.device_sim.truth import lived_ground_truth, touchpoint_truth_rows
from cxp.device_sim.uplink import Uplink

__all__ = [
    "RefusalKind",
    "Refusal",
    "LinkState",
    "DeviceLink",
    "DeviceCredential",
    "CredentialKind",
    "ConnectRefused",
    "ConnectionLoop",
    "CASUAL",
    "CATALOGUE",
    "COFFEE",
    "EBIKE",
    "EVENT_KINDS",
    "FADING",
    "PERSONAS",
    "PLANTED_ERROR_RATE",
    "POWER_USER",
    "ROUTINE_USER",
    "THERMOSTAT",
    "Account",
    "BatterySpec",
    "ConfigError",
    "Device",
    "DeviceBatcher",
    "DeviceProfile",
    "Fleet",
    "Gauge",
    "Incident",
    "MqttPublisher",
    "OutboundMessage",
    "Persona",
    "PlannedMessage",
    "Product",
    "PublishReport",
    "PublishTimeout",
    "Publisher",
    "PublisherError",
    "QuantitySpec",
    "SequenceError",
    "SimError",
    "Touchpoint",
    "Upload",
    "Uplink",
    "build_fleet",
    "catalogue_by_model",
    "device_events",
    "device_outcome",
    "KANO_CLASSES",
    "KanoClass",
    "TouchpointTruth",
    "touchpoint_truth",
    "lived_ground_truth",
    "touchpoint_truth_rows",
    "device_messages",
    "encode_batch",
    "experiment_arm",
    "pack_events",
    "personas_by_name",
    "plan_messages",
    "simulate_backfill",
    "simulate_live",
]
