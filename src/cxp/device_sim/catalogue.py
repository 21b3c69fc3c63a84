"""Product specs: what each simulated product reports, how often, and through which touchpoints."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from cxp.device_sim.errors import ConfigError

JourneyStage = Literal["pre_purchase", "purchase", "post_purchase"]
Owner = Literal["brand", "partner", "customer", "external"]
# Persona feature mixes weight touchpoints by category, so personas stay product-agnostic.
Category = Literal["core", "extra", "app", "service"]
# How a touchpoint gets used: `session` ones compete in the daily usage mix, the others fire on
# their own occasion (first setup, a schedule, a support need, a low battery, a plan change, a referral).
Trigger = Literal["session", "onboarding", "periodic", "support", "recharge", "plan_change", "referral"]
Value = Literal["time_well_saved", "time_well_spent"]
Capability = Literal["monitoring", "control", "optimisation", "autonomy"]
Distribution = Literal["const", "lognormal", "normal", "uniform", "poisson"]

JOURNEY_STAGES: tuple[JourneyStage, ...] = ("pre_purchase", "purchase", "post_purchase")
OWNERS: tuple[Owner, ...] = ("brand", "partner", "customer", "external")
CATEGORIES: tuple[Category, ...] = ("core", "extra", "app", "service")


@dataclass(frozen=True, slots=True)
class QuantitySpec:
    """How much one use of a touchpoint delivers, in `unit`, and how that amount varies.

    `mean` is the mean of the distribution (for lognormal too); `spread` is the log-sd for lognormal,
    the sd for normal and the half-width for uniform; poisson draws `min + Poisson(mean - min)`.
    """

    unit: str
    dist: Distribution = "const"
    mean: float = 1.0
    spread: float = 0.0
    min: float = 0.0
    max: float = 1e9
    decimals: int = 3

    def sample(self, rng: random.Random) -> float:
        """One draw, clipped to [min, max] and rounded."""
        if self.dist == "const":
            x = self.mean
        elif self.dist == "lognormal":
            # Shift mu so that `mean` is the arithmetic mean, which is what a spec reader expects.
            x = rng.lognormvariate(math.log(self.mean) - self.spread**2 / 2, self.spread)
        elif self.dist == "normal":
            x = rng.gauss(self.mean, self.spread)
        elif self.dist == "uniform":
            x = self.mean + (2 * rng.random() - 1) * self.spread
        else:
            x = self.min + poisson(rng, max(self.mean - self.min, 0.0))
        return round(min(max(x, self.min), self.max), self.decimals)


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth for small means, a rounded normal above 30: exact enough for a simulator)."""
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit = math.exp(-lam)
    k, p = 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


@dataclass(frozen=True, slots=True)
class Touchpoint:
    """One interaction with the brand that a device reports: a feature, an app flow or a service."""

    name: str
    journey_stage: JourneyStage
    owner: Owner
    core: bool
    category: Category
    trigger: Trigger
    target_latency_ms: float
    typical_duration_s: float
    base_error_rate: float
    error_codes: tuple[str, ...]
    weight: float = 0.0
    period_days: float = 0.0
    quantity: QuantitySpec | None = None
    # When set, duration follows the delivered quantity (a 20 km ride takes longer than a 2 km one).
    duration_per_quantity_s: float | None = None
    value: Value = "time_well_saved"
    capability: Capability = "control"
    energy_wh: float = 0.0
    battery_pct: float = 0.0
    counters: tuple[tuple[str, float], ...] = ()
    resets: tuple[str, ...] = ()
    sets: str | None = None
    reboots: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class Gauge:
    """A reported measurement with a daily cycle: mean + amplitude·cos(2π(hour − peak)/24) + noise."""

    name: str
    mean: float
    sd: float
    amplitude: float = 0.0
    peak_hour: float = 12.0
    decimals: int = 2


@dataclass(frozen=True, slots=True)
class BatterySpec:
    """A battery that drains idle and by use; recharged by a touchpoint or replaced when empty."""

    idle_drain_pct_per_h: float
    low_pct: float
    recharge_touchpoint: str | None = None


@dataclass(frozen=True, slots=True)
class Product:
    """A connected product: reporting rhythm, state metrics and touchpoint catalogue."""

    model: str
    display_name: str
    upload_interval_s: int
    heartbeat_interval_s: int
    expected_active_days_per_week: float
    uses_per_active_day: float
    touchpoints: tuple[Touchpoint, ...]
    plans: tuple[str, ...]
    plan_weights: tuple[float, ...]
    # Relative share of this product in consumer and in small-business accounts.
    consumer_weight: float
    smb_weight: float
    hourly_profile: tuple[float, ...]
    weekend_factor: float = 1.0
    standby_w: float = 1.0
    battery: BatterySpec | None = None
    gauges: tuple[Gauge, ...] = ()
    # Cumulative meters reported in `metrics`, with a typical daily increment used to give devices
    # activated before the simulated period a plausible starting reading.
    counters: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    signal_dbm_range: tuple[float, float] = (-85.0, -45.0)
    description: str = ""

    def __post_init__(self) -> None:
        names = [t.name for t in self.touchpoints]
        if len(set(names)) != len(names):
            raise ConfigError(f"{self.model}: duplicate touchpoint names")
        if len(self.hourly_profile) != 24 or min(self.hourly_profile) < 0 or sum(self.hourly_profile) <= 0:
            raise ConfigError(f"{self.model}: hourly_profile needs 24 non-negative weights")
        if len(self.plans) != len(self.plan_weights) or not self.plans:
            raise ConfigError(f"{self.model}: plans and plan_weights differ in length")
        if self.upload_interval_s <= 0 or self.heartbeat_interval_s <= 0:
            raise ConfigError(f"{self.model}: intervals must be positive")
        if self.battery and self.battery.recharge_touchpoint and self.battery.recharge_touchpoint not in names:
            raise ConfigError(f"{self.model}: unknown recharge touchpoint")
        for t in self.touchpoints:
            if not t.error_codes:
                raise ConfigError(f"{self.model}/{t.name}: needs at least one error code")

    def touchpoint(self, name: str) -> Touchpoint:
        """The touchpoint called `name`."""
        for t in self.touchpoints:
            if t.name == name:
                return t
        raise ConfigError(f"{self.model} has no touchpoint {name!r}")

    @property
    def touchpoint_names(self) -> tuple[str, ...]:
        """Names of all touchpoints, in catalogue order."""
        return tuple(t.name for t in self.touchpoints)


def _profile(peaks: Mapping[int, float], base: float = 0.2) -> tuple[float, ...]:
    return tuple(base + peaks.get(h, 0.0) for h in range(24))


# Touchpoints every product shares: comparing them across products is what finds a planted fault.
def _app_dashboard(weight: float) -> Touchpoint:
    return Touchpoint(
        "app_dashboard",
        "post_purchase",
        "brand",
        False,
        "app",
        "session",
        target_latency_ms=800,
        typical_duration_s=45,
        base_error_rate=0.01,
        error_codes=("APP_CRASH", "CLOUD_UNREACHABLE"),
        weight=weight,
        value="time_well_spent",
        capability="monitoring",
        description="Companion app home screen: status, history, tips.",
    )


_APP_PAIRING = Touchpoint(
    "app_pairing",
    "post_purchase",
    "brand",
    False,
    "app",
    "onboarding",
    target_latency_ms=3000,
    typical_duration_s=90,
    base_error_rate=0.12,
    error_codes=("PAIR_TIMEOUT", "BLE_NOT_FOUND", "WIFI_AUTH_FAILED"),
    capability="monitoring",
    description="First connection of the device to the app and cloud.",
)


def _firmware_update(period_days: float) -> Touchpoint:
    return Touchpoint(
        "firmware_update",
        "post_purchase",
        "brand",
        False,
        "service",
        "periodic",
        target_latency_ms=5000,
        typical_duration_s=180,
        base_error_rate=0.03,
        error_codes=("FW_DOWNLOAD_FAILED", "FW_VERIFY_FAILED"),
        period_days=period_days,
        capability="optimisation",
        reboots=True,
        description="Over-the-air update, installed at night.",
    )


_SUPPORT_CHAT = Touchpoint(
    "support_chat",
    "post_purchase",
    "partner",
    False,
    "service",
    "support",
    target_latency_ms=30_000,
    typical_duration_s=600,
    base_error_rate=0.05,
    error_codes=("CHAT_DROPPED",),
    capability="monitoring",
    description="In-app support chat, run by an outsourced contact centre (latency = first answer).",
)

_PLAN_CHECKOUT = Touchpoint(
    "plan_checkout",
    "purchase",
    "brand",
    False,
    "app",
    "plan_change",
    target_latency_ms=1500,
    typical_duration_s=120,
    base_error_rate=0.04,
    error_codes=("PAYMENT_DECLINED", "CHECKOUT_TIMEOUT"),
    capability="control",
    description="In-app subscription checkout when a customer changes plan.",
)

_REFERRAL_SHARE = Touchpoint(
    "referral_share",
    "pre_purchase",
    "external",
    False,
    "app",
    "referral",
    target_latency_ms=500,
    typical_duration_s=30,
    base_error_rate=0.01,
    error_codes=("SHARE_FAILED",),
    value="time_well_spent",
    capability="monitoring",
    description="A customer shares a referral link: word of mouth reaching a prospect.",
)


THERMOSTAT = Product(
    model="thermo-x1",
    display_name="Smart Thermostat X1",
    upload_interval_s=15 * 60,
    heartbeat_interval_s=3600,
    expected_active_days_per_week=7,
    uses_per_active_day=9,
    touchpoints=(
        Touchpoint(
            "heating_cycle",
            "post_purchase",
            "brand",
            True,
            "core",
            "session",
            target_latency_ms=250,
            typical_duration_s=1500,
            base_error_rate=0.004,
            error_codes=("SENSOR_DRIFT", "RELAY_FAULT", "HVAC_NO_RESPONSE"),
            weight=6.0,
            quantity=QuantitySpec("kwh", "lognormal", 0.9, 0.5, 0.05, 15.0),
            value="time_well_saved",
            capability="autonomy",
            energy_wh=1000.0,
            description="An automatic heating cycle; the meter counts the heating energy it controlled.",
        ),
        Touchpoint(
            "set_temperature",
            "post_purchase",
            "brand",
            True,
            "core",
            "session",
            target_latency_ms=400,
            typical_duration_s=8,
            base_error_rate=0.01,
            error_codes=("CMD_TIMEOUT", "CLOUD_UNREACHABLE"),
            weight=2.0,
            quantity=QuantitySpec("degC", "normal", 20.5, 1.2, 12.0, 28.0, 1),
            capability="control",
            sets="setpoint_c",
            description="A manual setpoint change on the device or in the app.",
        ),
        Touchpoint(
            "set_schedule",
            "post_purchase",
            "brand",
            False,
            "extra",
            "session",
            target_latency_ms=600,
            typical_duration_s=90,
            base_error_rate=0.02,
            error_codes=("SCHEDULE_SYNC_FAILED",),
            weight=0.25,
            capability="optimisation",
        ),
        Touchpoint(
            "demand_response",
            "post_purchase",
            "partner",
            False,
            "extra",
            "session",
            target_latency_ms=2000,
            typical_duration_s=3600,
            base_error_rate=0.02,
            error_codes=("DR_SIGNAL_LOST",),
            weight=0.15,
            quantity=QuantitySpec("kwh", "lognormal", 0.5, 0.4, 0.01, 10.0),
            capability="optimisation",
            description="A utility's demand-response event shifting load.",
        ),
        Touchpoint(
            "voice_command",
            "post_purchase",
            "partner",
            False,
            "extra",
            "session",
            target_latency_ms=800,
            typical_duration_s=4,
            base_error_rate=0.03,
            error_codes=("VOICE_LINK_FAILED", "INTENT_UNKNOWN"),
            weight=0.5,
            capability="control",
            description="A command through a third-party voice assistant.",
        ),
        _app_dashboard(0.8),
        _APP_PAIRING,
        _firmware_update(30),
        _SUPPORT_CHAT,
        _PLAN_CHECKOUT,
        _REFERRAL_SHARE,
    ),
    plans=("free", "plus", "pro"),
    plan_weights=(0.55, 0.35, 0.10),
    consumer_weight=0.40,
    smb_weight=0.35,
    hourly_profile=_profile(
        {5: 1.0, 6: 2.0, 7: 1.6, 8: 0.6, 12: 0.3, 16: 0.6, 17: 1.4, 18: 1.6, 19: 1.4, 20: 1.0, 21: 0.7}
    ),
    weekend_factor=1.0,
    standby_w=1.2,
    battery=BatterySpec(idle_drain_pct_per_h=0.025, low_pct=10.0),
    gauges=(
        Gauge("temperature_c", 20.5, 0.4, 1.2, 18.0),
        Gauge("humidity_pct", 45.0, 3.0, 5.0, 6.0, 1),
    ),
    counters=MappingProxyType({"energy_wh": 9000.0}),
    signal_dbm_range=(-80.0, -40.0),
    description="Wall thermostat with schedules, utility demand response and voice control.",
)

EBIKE = Product(
    model="ebike-s2",
    display_name="E-Bike S2",
    upload_interval_s=30 * 60,
    heartbeat_interval_s=3600,
    expected_active_days_per_week=4,
    uses_per_active_day=3,
    touchpoints=(
        Touchpoint(
            "ride",
            "post_purchase",
            "brand",
            True,
            "core",
            "session",
            target_latency_ms=150,
            typical_duration_s=1800,
            base_error_rate=0.006,
            error_codes=("MOTOR_OVERHEAT", "TORQUE_SENSOR_FAULT", "BATTERY_COMM_ERROR"),
            weight=3.0,
            quantity=QuantitySpec("km", "lognormal", 9.0, 0.6, 0.3, 120.0, 2),
            duration_per_quantity_s=200.0,
            value="time_well_spent",
            capability="control",
            battery_pct=-1.4,
            counters=(("odometer_km", 1.0),),
            description="A ride with motor assist; latency = assist response time.",
        ),
        Touchpoint(
            "charge",
            "post_purchase",
            "customer",
            False,
            "extra",
            "recharge",
            target_latency_ms=500,
            typical_duration_s=10_800,
            base_error_rate=0.01,
            error_codes=("CHARGER_FAULT", "CELL_IMBALANCE"),
            quantity=QuantitySpec("kwh", "const", 0.5, 0.0, 0.0, 1.0),
            capability="monitoring",
            energy_wh=1000.0,
            description="Charging on the customer's own socket; quantity = energy drawn.",
        ),
        Touchpoint(
            "navigation",
            "post_purchase",
            "partner",
            False,
            "extra",
            "session",
            target_latency_ms=1200,
            typical_duration_s=900,
            base_error_rate=0.03,
            error_codes=("GPS_LOST", "ROUTE_FAILED"),
            weight=0.6,
            value="time_well_spent",
            capability="optimisation",
            description="Turn-by-turn navigation from a maps partner.",
        ),
        Touchpoint(
            "lock",
            "post_purchase",
            "brand",
            False,
            "extra",
            "session",
            target_latency_ms=700,
            typical_duration_s=3,
            base_error_rate=0.015,
            error_codes=("LOCK_JAMMED", "BLE_TIMEOUT"),
            weight=1.2,
            capability="control",
        ),
        Touchpoint(
            "service_booking",
            "post_purchase",
            "partner",
            False,
            "service",
            "periodic",
            target_latency_ms=2000,
            typical_duration_s=300,
            base_error_rate=0.05,
            error_codes=("NO_SLOT_AVAILABLE",),
            period_days=120,
            capability="monitoring",
            description="Booking a maintenance slot at a partner bike shop.",
        ),
        _app_dashboard(0.6),
        _APP_PAIRING,
        _firmware_update(45),
        _SUPPORT_CHAT,
        _PLAN_CHECKOUT,
        _REFERRAL_SHARE,
    ),
    plans=("basic", "care", "care_plus"),
    plan_weights=(0.6, 0.3, 0.1),
    consumer_weight=0.30,
    smb_weight=0.05,
    hourly_profile=_profile(
        {7: 1.6, 8: 2.0, 9: 0.8, 11: 0.4, 12: 0.5, 13: 0.5, 14: 0.5, 15: 0.6, 16: 1.2, 17: 1.8, 18: 1.5, 19: 0.6},
        base=0.05,
    ),
    weekend_factor=1.3,
    standby_w=0.3,
    battery=BatterySpec(idle_drain_pct_per_h=0.05, low_pct=25.0, recharge_touchpoint="charge"),
    gauges=(Gauge("motor_temp_c", 24.0, 2.0, 5.0, 15.0),),
    counters=MappingProxyType({"energy_wh": 250.0, "odometer_km": 12.0}),
    signal_dbm_range=(-100.0, -60.0),
    description="Commuter e-bike with a cellular module, app lock and navigation.",
)

COFFEE = Product(
    model="brew-c3",
    display_name="Coffee Machine C3",
    upload_interval_s=60 * 60,
    heartbeat_interval_s=3600,
    expected_active_days_per_week=6,
    uses_per_active_day=3.5,
    touchpoints=(
        Touchpoint(
            "brew",
            "post_purchase",
            "brand",
            True,
            "core",
            "session",
            target_latency_ms=300,
            typical_duration_s=45,
            base_error_rate=0.012,
            error_codes=("WATER_EMPTY", "GRINDER_JAM", "BREW_TIMEOUT"),
            weight=4.0,
            quantity=QuantitySpec("cup", "poisson", 1.2, 0.0, 1.0, 4.0, 0),
            duration_per_quantity_s=45.0,
            capability="control",
            energy_wh=35.0,
            counters=(("water_l", 0.2), ("cups_since_descale", 1.0)),
        ),
        Touchpoint(
            "remote_brew",
            "post_purchase",
            "brand",
            False,
            "app",
            "session",
            target_latency_ms=900,
            typical_duration_s=50,
            base_error_rate=0.03,
            error_codes=("CLOUD_UNREACHABLE", "MACHINE_NOT_READY"),
            weight=0.5,
            quantity=QuantitySpec("cup", "const", 1.0, 0.0, 1.0, 1.0, 0),
            capability="control",
            energy_wh=35.0,
            counters=(("water_l", 0.2), ("cups_since_descale", 1.0)),
        ),
        Touchpoint(
            "recipe_browse",
            "post_purchase",
            "brand",
            False,
            "app",
            "session",
            target_latency_ms=700,
            typical_duration_s=180,
            base_error_rate=0.01,
            error_codes=("CONTENT_LOAD_FAILED",),
            weight=0.4,
            value="time_well_spent",
            capability="monitoring",
        ),
        Touchpoint(
            "bean_reorder",
            "purchase",
            "partner",
            False,
            "extra",
            "session",
            target_latency_ms=1500,
            typical_duration_s=60,
            base_error_rate=0.03,
            error_codes=("PAYMENT_DECLINED", "OUT_OF_STOCK"),
            weight=0.05,
            quantity=QuantitySpec("bag", "const", 1.0, 0.0, 1.0, 1.0, 0),
            capability="optimisation",
            description="Re-ordering beans from a partner roaster through the machine's app.",
        ),
        Touchpoint(
            "descale",
            "post_purchase",
            "brand",
            False,
            "extra",
            "periodic",
            target_latency_ms=500,
            typical_duration_s=1200,
            base_error_rate=0.04,
            error_codes=("DESCALE_INCOMPLETE",),
            period_days=30,
            capability="monitoring",
            energy_wh=60.0,
            resets=("cups_since_descale",),
        ),
        _app_dashboard(0.5),
        _APP_PAIRING,
        _firmware_update(30),
        _SUPPORT_CHAT,
        _PLAN_CHECKOUT,
        _REFERRAL_SHARE,
    ),
    plans=("basic", "beans", "office"),
    plan_weights=(0.6, 0.3, 0.1),
    consumer_weight=0.30,
    smb_weight=0.60,
    hourly_profile=_profile({6: 1.5, 7: 2.5, 8: 2.0, 9: 1.0, 10: 0.6, 13: 0.9, 14: 0.7, 15: 0.5}, base=0.1),
    weekend_factor=0.9,
    standby_w=1.5,
    gauges=(Gauge("boiler_temp_c", 92.0, 1.0),),
    counters=MappingProxyType({"energy_wh": 180.0, "water_l": 0.8, "cups_since_descale": 0.0}),
    signal_dbm_range=(-75.0, -35.0),
    description="Bean-to-cup machine with app brewing, recipes and a bean subscription.",
)

CATALOGUE: tuple[Product, ...] = (THERMOSTAT, EBIKE, COFFEE)


def catalogue_by_model(products: Sequence[Product] = CATALOGUE) -> dict[str, Product]:
    """Products keyed by model id; rejects duplicate model ids."""
    out: dict[str, Product] = {}
    for p in products:
        if p.model in out:
            raise ConfigError(f"duplicate product model {p.model!r}")
        out[p.model] = p
    return out

