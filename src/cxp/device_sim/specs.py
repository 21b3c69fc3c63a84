"""The shape of a product spec: touchpoints, quantities, gauges, battery, and the product itself."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
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
