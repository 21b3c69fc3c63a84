"""What a simulated device is over its timeline (fixed context) and what it carries from day to day (state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cxp.device_sim.fleet import DAY_MS, Device, DeviceProfile, Fleet, Incident, to_ms
from cxp.device_sim.kano import TouchpointTruth, touchpoint_truth
from cxp.device_sim.ladder import DeviceLadder, device_ladder
from cxp.device_sim.personas import Persona
from cxp.device_sim.specs import Product, Touchpoint

# A record is (ts_ms, event dict): an event not yet turned into a contract model, so events outside a
# window cost no model construction. The dict holds only non-None fields, in the model's field order.
Record = tuple[int, dict[str, Any]]


@dataclass(slots=True)
class ActiveIncident:
    """A fleet incident that touches this device, with its span in epoch ms."""

    inc: Incident
    start_ms: int
    end_ms: int


@dataclass(slots=True)
class DeviceContext:
    """What stays fixed over a device's timeline."""

    fleet: Fleet
    device: Device
    product: Product
    profile: DeviceProfile
    persona: Persona
    t0: int
    churn_ms: int | None
    decay_start_ms: int
    stops_at_churn: bool
    session_tps: list[Touchpoint]
    session_cum: list[float]
    hour_cum: list[float]
    periodic: list[Touchpoint]
    tps: dict[str, Touchpoint]
    planted: str | None
    incidents: dict[str, list[ActiveIncident]]
    latency_factor: float
    p_active: float
    onboarding: bool
    # The planted Kano class and effects of the product's touchpoints.
    truth: dict[str, TouchpointTruth]
    # Set up front from the profile, or on the day the experience churn hazard fires (`churn_cause`).
    churn_kind: str | None
    churn_cause: str | None
    gauge_cycle: dict[int, tuple[tuple[str, float, float, int], ...]] = field(default_factory=dict)
    # The planted capability ladder (fleets built with `ladder=True`): which levels are unlocked when.
    ladder: DeviceLadder | None = None


@dataclass(slots=True)
class DeviceState:
    """What a device carries from one day to the next."""

    seq: int
    battery: float | None
    energy_wh: float
    counters: dict[str, float]
    settings: dict[str, float]
    boot_ms: int
    last_meter_ms: int
    plan: str
    next_due: dict[str, int]
    recent_err: dict[str, float] = field(default_factory=dict)
    recent_total: float = 0.0
    recent_ok: dict[str, float] = field(default_factory=dict)
    # Failures per touchpoint decaying slowly (kano.HABIT_DECAY): how used to them the customer is.
    habit: dict[str, float] = field(default_factory=dict)
    recent_incident: float = 0.0
    recent_support: float = 0.0
    # What drove the experience churn hazard on the day it fired (term name -> hazard).
    churn_drivers: dict[str, float] = field(default_factory=dict)
    last_latency_ratio: dict[str, float] = field(default_factory=dict)
    pending: list[tuple[int, int, tuple[Any, ...]]] = field(default_factory=list)
    order: int = 0
    incident_hits: set[str] = field(default_factory=set)
    # Failed uses per incident this device lived through, and until when the planted recovery paradox lifts its
    # satisfaction (epoch ms).
    incident_failures: dict[str, int] = field(default_factory=dict)
    incident_first_failure: dict[str, int] = field(default_factory=dict)
    paradox_until: int = 0
    paradox_lifts: int = 0  # recoveries that lifted its satisfaction (the planted recovery paradox)
    stopped: bool = False
    recharge_pending: bool = False
    battery_warned: bool = False
    outage_from: int = 0
    outage_until: int = 0
    # Rounded counters and settings for heartbeats; rebuilt only after they change.
    fixed_metrics: dict[str, float] | None = None


def build_context(fleet: Fleet, device: Device) -> DeviceContext:
    product = fleet.product_of(device)
    profile = fleet.profile(device)
    persona = fleet.personas[profile.persona]
    act = to_ms(device.activated_at)
    start = to_ms(fleet.start)
    t0 = max(act, start)
    churn_ms = to_ms(profile.churn_at) if profile.churn_at is not None else None
    decay_start = churn_ms - int(profile.decay_days * DAY_MS) if churn_ms is not None else 0
    session = [t for t in product.touchpoints if t.trigger == "session" and t.weight * persona.mix(t.category) > 0]
    cum, acc = [], 0.0
    for t in session:
        acc += t.weight * persona.mix(t.category)
        cum.append(acc)
    hour_cum, acc = [], 0.0
    for w in product.hourly_profile:
        acc += w
        hour_cum.append(acc)
    incidents: dict[str, list[ActiveIncident]] = {}
    for inc in fleet.incidents:
        if inc.product == device.product and inc.affects(seed=fleet.seed, device_id=device.device_id):
            incidents.setdefault(inc.touchpoint, []).append(ActiveIncident(inc, to_ms(inc.start), to_ms(inc.end)))
    planted = fleet.error_prone[1] if fleet.error_prone and fleet.error_prone[0] == device.product else None
    # Weak signal slows every round trip a little.
    latency_factor = 1.0 + max(0.0, -60.0 - profile.signal_base_dbm) / 80.0
    p_active = min(1.0, product.expected_active_days_per_week / 7 * persona.active_day_factor)
    return DeviceContext(
        fleet=fleet,
        device=device,
        product=product,
        profile=profile,
        persona=persona,
        t0=t0,
        churn_ms=churn_ms,
        decay_start_ms=decay_start,
        stops_at_churn=profile.churn_kind in ("cancelled", "returned"),
        session_tps=session,
        session_cum=cum,
        hour_cum=hour_cum,
        periodic=[t for t in product.touchpoints if t.trigger == "periodic" and t.period_days > 0],
        tps={t.name: t for t in product.touchpoints},
        planted=planted,
        incidents=incidents,
        latency_factor=latency_factor,
        p_active=p_active,
        onboarding=act >= start,
        truth=touchpoint_truth(product),
        churn_kind=profile.churn_kind,
        churn_cause="persona" if churn_ms is not None else None,
        ladder=device_ladder(
            seed=fleet.seed,
            device_id=device.device_id,
            product=product,
            t0_ms=t0,
            end_ms=to_ms(fleet.end),
            session=session,
        )
        if fleet.ladder
        else None,
    )


def initial_state(ctx: DeviceContext) -> DeviceState:
    prof = ctx.profile
    counters = dict(prof.counter_start)
    energy = counters.pop("energy_wh", 0.0)
    settings = {t.sets: t.quantity.mean for t in ctx.product.touchpoints if t.sets and t.quantity}
    next_due = {t.name: ctx.t0 + int((1.0 - prof.periodic_phase) * t.period_days * DAY_MS) for t in ctx.periodic}
    return DeviceState(
        seq=0,
        battery=prof.battery_start,
        energy_wh=energy,
        counters=counters,
        settings=settings,
        boot_ms=ctx.t0 - int(prof.seconds_since_boot * 1000),
        last_meter_ms=ctx.t0,
        plan=ctx.device.plan,
        next_due=next_due,
    )


def usage_multiplier(ctx: DeviceContext, t: int) -> float:
    """How much of its normal usage a churner still has at t: 1 until the decay starts, 0 after churn."""
    if ctx.churn_ms is None:
        return 1.0
    if t >= ctx.churn_ms:
        return 0.0
    if t < ctx.decay_start_ms:
        return 1.0
    frac = (t - ctx.decay_start_ms) / max(ctx.churn_ms - ctx.decay_start_ms, 1)
    return max(0.05, (1.0 - frac) ** 1.5)
