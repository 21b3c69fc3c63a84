"""A deterministic fleet: accounts, devices, hidden personas and churn, and fleet-wide incidents."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cxp.contract.models import Severity
from cxp.device_sim.catalogue import CATALOGUE, catalogue_by_model
from cxp.device_sim.errors import ConfigError
from cxp.device_sim.ladder import CLIMBER_CHURN_FACTOR, planted_climber, unlock_days
from cxp.device_sim.personas import PERSONAS, Persona, personas_by_name
from cxp.device_sim.referrals import REFERRAL_ACQUISITION_SHARE, referred_acquisition
from cxp.device_sim.specs import Product

Segment = Literal["consumer", "smb"]
ChurnKind = Literal["cancelled", "returned", "silent"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
# Rate a planted fault adds on its touchpoint: large enough to stand out next to 1–12 % base rates.
PLANTED_ERROR_RATE = 0.25
# An incident fixed within this many hours is an excellent recovery (the planted recovery quality).
EXCELLENT_RECOVERY_H = 4.0
MAX_DEVICES = 1_000_000


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from the parts' text, identical across processes and Python versions."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def unit_hash(*parts: object) -> float:
    """A stable pseudo-uniform number in [0, 1) from the parts' text (for hash-based assignment)."""
    return stable_seed(*parts) / 2**64


def to_ms(ts: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime."""
    if ts.tzinfo is None:
        raise ConfigError("timestamps must be timezone-aware")
    return (ts - EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    """The aware UTC datetime of epoch milliseconds."""
    # Exact for whole milliseconds (float error < 1 µs, rounded away) and faster than EPOCH + timedelta.
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True, slots=True)
class Account:
    """A customer account; some own several devices. `acquisition` is how it was won."""

    account_id: str
    name: str
    segment: Segment
    acquisition: Literal["organic", "referral"]
    referred_by: str | None


@dataclass(frozen=True, slots=True)
class Device:
    """The registry view of one device: what the platform may know about it."""

    device_id: str
    index: int
    product: str
    account_id: str
    activated_at: datetime
    plan: str
    experiment_arm: Literal["A", "B"]


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """Hidden simulation parameters of one device (ground truth and behaviour knobs)."""

    persona: str
    error_proneness: float
    churns: bool
    churn_at: datetime | None
    churn_kind: ChurnKind | None
    decay_days: float
    signal_base_dbm: float
    heartbeat_phase_s: float
    upload_phase_s: float
    # Fraction of each periodic touchpoint's period already elapsed at the device's timeline start.
    periodic_phase: float
    counter_start: dict[str, float]
    battery_start: float | None
    seconds_since_boot: float
    outage_prob_day: float


@dataclass(frozen=True, slots=True)
class Incident:
    """A fleet-wide disruption: a touchpoint's error rate spikes on affected devices, then recovers."""

    incident_id: str
    product: str
    touchpoint: str
    code: str
    severity: Severity
    start: datetime
    end: datetime
    error_rate: float
    affected_share: float

    @property
    def recovery_quality(self) -> str:
        """The planted quality of the incident's recovery: 'excellent' when fixed within EXCELLENT_RECOVERY_H hours."""
        return "excellent" if self.end - self.start <= timedelta(hours=EXCELLENT_RECOVERY_H) else "slow"

    def affects(self, *, seed: int, device_id: str) -> bool:
        """Whether the device is hit (hash-based, so it does not depend on fleet size)."""
        return unit_hash(seed, self.incident_id, device_id) < self.affected_share

    def as_dict(self) -> dict[str, Any]:
        """Plain-data view for storage."""
        return {
            "incident_id": self.incident_id,
            "product": self.product,
            "touchpoint": self.touchpoint,
            "code": self.code,
            "severity": self.severity.value,
            "start": self.start,
            "end": self.end,
            "error_rate": self.error_rate,
            "affected_share": self.affected_share,
            "recovery_quality": self.recovery_quality,
        }


@dataclass(frozen=True)
class Fleet:
    """Every simulated account and device, the hidden truth about them, and the period they cover."""

    seed: int
    start: datetime
    days: int
    products: dict[str, Product]
    personas: dict[str, Persona]
    accounts: tuple[Account, ...]
    devices: tuple[Device, ...]
    profiles: tuple[DeviceProfile, ...]
    incidents: tuple[Incident, ...]
    error_prone: tuple[str, str] | None
    experiment_salt: str
    # Scale of the experience churn hazard (device_sim/kano.py): 0 turns it off.
    experience_churn: float = 1.0
    # Whether an excellent recovery after a mild incident failure lifts later satisfaction (device_sim/kano.py).
    recovery_paradox: bool = False
    # Whether the smart-capability ladder is planted (device_sim/ladder.py).
    ladder: bool = False
    # Whether referrals depend on the customer's recent failures (device_sim/referrals.py).
    referral_experience: bool = False
    _by_id: dict[str, Device] = field(default_factory=dict, init=False, repr=False, compare=False)
    _accounts_by_id: dict[str, Account] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_id.update({d.device_id: d for d in self.devices})
        self._accounts_by_id.update({a.account_id: a for a in self.accounts})

    @property
    def end(self) -> datetime:
        """The end of the simulated period (exclusive)."""
        return self.start + timedelta(days=self.days)

    def device(self, device_id: str) -> Device:
        """The device with this id."""
        try:
            return self._by_id[device_id]
        except KeyError:
            raise ConfigError(f"unknown device {device_id!r}") from None

    def account(self, account_id: str) -> Account:
        """The account with this id."""
        try:
            return self._accounts_by_id[account_id]
        except KeyError:
            raise ConfigError(f"unknown account {account_id!r}") from None

    def product_of(self, device: Device) -> Product:
        """The product spec of a device."""
        return self.products[device.product]

    def profile(self, device: Device) -> DeviceProfile:
        """The hidden simulation profile of a device."""
        return self.profiles[device.index]

    def params(self) -> dict[str, Any]:
        """The inputs that rebuild this fleet with `build_fleet` (with the default catalogue/personas)."""
        return {
            "seed": self.seed,
            "devices": len(self.devices),
            "start": self.start,
            "days": self.days,
            "error_prone": self.error_prone,
            "incidents": len(self.incidents),
            "experiment_salt": self.experiment_salt,
            "experience_churn": self.experience_churn,
            "recovery_paradox": self.recovery_paradox,
            "ladder": self.ladder,
            "referral_experience": self.referral_experience,
            "products": list(self.products),
            "personas": list(self.personas),
        }

    def account_rows(self) -> list[dict[str, Any]]:
        """The account registry as plain dicts."""
        return [dataclasses.asdict(a) for a in self.accounts]

    def device_rows(self) -> list[dict[str, Any]]:
        """The device registry as plain dicts (no hidden truth)."""
        return [dataclasses.asdict(d) for d in self.devices]

    def ground_truth(self) -> list[dict[str, Any]]:
        """Per device: the hidden persona, churn and error proneness that analytics should recover."""
        rows = []
        for d, p in zip(self.devices, self.profiles, strict=True):
            rows.append(
                {
                    "device_id": d.device_id,
                    "product": d.product,
                    "account_id": d.account_id,
                    "persona": p.persona,
                    "churns": p.churns,
                    "churn_at": p.churn_at,
                    "churn_kind": p.churn_kind,
                    "error_proneness": p.error_proneness,
                    "error_prone_touchpoint": (
                        self.error_prone[1] if self.error_prone and self.error_prone[0] == d.product else None
                    ),
                    "incidents": [
                        i.incident_id
                        for i in self.incidents
                        if i.product == d.product and i.affects(seed=self.seed, device_id=d.device_id)
                    ],
                }
            )
        return rows

    def incident_truth(self) -> list[dict[str, Any]]:
        """The planted incidents as plain dicts, with `paradox`: whether the fleet plants the recovery paradox (then
        its mildly hit devices whose own outage ended within EXCELLENT_RECOVERY_H hours answer higher afterwards)."""
        return [{**i.as_dict(), "paradox": self.recovery_paradox} for i in self.incidents]


_FIRST = (
    "Mara",
    "Jonas",
    "Aiko",
    "Luca",
    "Noor",
    "Elena",
    "Tomas",
    "Priya",
    "Sven",
    "Ines",
    "Omar",
    "Lea",
    "Kofi",
    "Hana",
    "Mateo",
    "Freya",
    "Ravi",
    "Zoe",
    "Emil",
    "Yara",
)
_LAST = (
    "Lindqvist",
    "Okafor",
    "Tanaka",
    "Moreau",
    "Haddad",
    "Kowalski",
    "Silva",
    "Novak",
    "Berg",
    "Rossi",
    "Nguyen",
    "Fischer",
    "Costa",
    "Mensah",
    "Ivanova",
    "Keller",
    "Dubois",
    "Sato",
    "Walsh",
    "Horvat",
)
_BIZ_A = ("Blue", "Copper", "North", "Harbor", "Maple", "Granite", "Lumen", "Orchard", "Summit", "Willow")
_BIZ_B = ("Bean", "Studio", "Works", "Labs", "Dental", "Bakery", "Office", "Fitness", "Print", "Design")
_BIZ_C = ("GmbH", "Ltd", "& Co", "Collective", "Partners", "Cafe", "Group", "Hub")


def _account(
    seed: int, j: int, start: datetime, days: int, referral_share: float = 0.25
) -> tuple[Account, int, datetime, bool]:
    """Account j, its device count and its first activation time (draws depend on j only, not fleet size)."""
    rng = random.Random(stable_seed(seed, "account", j))
    segment: Segment = "smb" if rng.random() < 0.15 else "consumer"
    if segment == "consumer":
        size = rng.choices((1, 2, 3), (0.75, 0.2, 0.05))[0]
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
    else:
        size = rng.randint(2, 12)
        name = f"{rng.choice(_BIZ_A)} {rng.choice(_BIZ_B)} {rng.choice(_BIZ_C)}"
    during = rng.random() < 0.3
    if during:
        # New customers arrive over the first 80 % of the period, in waking hours.
        day = int(rng.random() * max(days * 0.8, 1))
        first = start.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(
            days=day, hours=7 + rng.random() * 14
        )
        first = max(first, start)
    else:
        first = start - timedelta(days=rng.random() * 540, seconds=rng.random() * 86_400)
    first = from_ms(to_ms(first))
    referral = j > 0 and rng.random() < (referral_share if during else 0.15)
    referred_by = f"acct-{rng.randrange(j):06d}" if referral else None
    acc = Account(f"acct-{j:06d}", name, segment, "referral" if referral else "organic", referred_by)
    return acc, size, first, during


def _weighted(rng: random.Random, items: Sequence[Any], weights: Sequence[float]) -> Any:
    return rng.choices(items, weights)[0]


def build_fleet(
    *,
    seed: int,
    devices: int,
    start: datetime,
    days: int,
    products: Sequence[Product] = CATALOGUE,
    personas: Sequence[Persona] = PERSONAS,
    error_prone: tuple[str, str] | None = None,
    incidents: int | None = None,
    experiment_salt: str = "exp-1",
    experience_churn: float = 1.0,
    recovery_paradox: bool = False,
    ladder: bool = False,
    referral_experience: bool = False,
) -> Fleet:
    """Build a deterministic fleet: same arguments, same fleet; device i does not depend on `devices`.

    `error_prone=(product_model, touchpoint)` plants a much higher error rate on that touchpoint for
    every device of that product. `incidents=None` picks about one incident per two weeks (1–6).
    `experience_churn` scales the daily churn hazard that failures, incidents and effort add (0: off).
    `recovery_paradox` plants the service recovery paradox: an excellent incident recovery after a mild failure
    lifts the device's later satisfaction above its no-failure level (kano.PARADOX_*).
    `ladder` plants the smart-capability ladder: levels unlock over time, climbers churn less (device_sim/ladder.py).
    `referral_experience` makes referrals rarer after failures, and referral wins rarer for the failing product
    (device_sim/referrals.py).
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError("seed must be an int")
    if not 0.0 <= experience_churn <= 100.0:
        raise ConfigError("experience_churn must be in [0, 100]")
    if not 0 <= devices <= MAX_DEVICES:
        raise ConfigError(f"devices must be within [0, {MAX_DEVICES}]")
    if days < 1:
        raise ConfigError("days must be at least 1")
    if start.tzinfo is None:
        raise ConfigError("start must be timezone-aware")
    start = from_ms(to_ms(start))
    by_model = catalogue_by_model(products)
    by_persona = personas_by_name(personas)
    if error_prone is not None:
        model, tp = error_prone
        if model not in by_model:
            raise ConfigError(f"error_prone names unknown product {model!r}")
        by_model[model].touchpoint(tp)
        error_prone = (model, tp)
    end = start + timedelta(days=days)
    models = list(by_model)
    persona_names = list(by_persona)
    persona_shares = [by_persona[n].share for n in persona_names]

    accounts: list[Account] = []
    devs: list[Device] = []
    profiles: list[DeviceProfile] = []
    first_product: dict[str, str] = {}  # account → its first device's product (whom a referral talks about)
    share = REFERRAL_ACQUISITION_SHARE if referral_experience else 0.25
    j = 0
    while len(devs) < devices:
        acc, size, first, during = _account(seed, j, start, days, share)
        model = None
        if referral_experience:
            acc, model = referred_acquisition(
                account=acc,
                draw=unit_hash("referral-acquisition", seed, j),
                first_product=first_product,
                failing_product=error_prone[0] if error_prone else None,
            )
        accounts.append(acc)
        for k in range(min(size, devices - len(devs))):
            i = len(devs)
            dev, prof = _device(
                seed,
                i,
                k,
                acc,
                first,
                during,
                start,
                end,
                by_model,
                models,
                by_persona,
                persona_names,
                persona_shares,
                experiment_salt,
                ladder,
                model,
            )
            first_product.setdefault(acc.account_id, dev.product)
            devs.append(dev)
            profiles.append(prof)
        j += 1

    incident_list = _incidents(seed, start, days, by_model, incidents)
    return Fleet(
        seed=seed,
        start=start,
        days=days,
        products=by_model,
        personas=by_persona,
        accounts=tuple(accounts),
        devices=tuple(devs),
        profiles=tuple(profiles),
        incidents=incident_list,
        error_prone=error_prone,
        experiment_salt=experiment_salt,
        experience_churn=experience_churn,
        recovery_paradox=bool(recovery_paradox),
        ladder=bool(ladder),
        referral_experience=bool(referral_experience),
    )


def experiment_arm(*, salt: str, device_id: str) -> Literal["A", "B"]:
    """Deterministic 50/50 arm from a salted hash of the device id."""
    return "A" if unit_hash("arm", salt, device_id) < 0.5 else "B"


def _device(
    seed: int,
    i: int,
    k: int,
    acc: Account,
    first: datetime,
    during: bool,
    start: datetime,
    end: datetime,
    by_model: dict[str, Product],
    models: list[str],
    by_persona: dict[str, Persona],
    persona_names: list[str],
    persona_shares: list[float],
    salt: str,
    ladder: bool = False,
    model: str | None = None,
) -> tuple[Device, DeviceProfile]:
    rng = random.Random(stable_seed(seed, "device", i))
    weights = [by_model[m].smb_weight if acc.segment == "smb" else by_model[m].consumer_weight for m in models]
    if sum(weights) <= 0:
        weights = [1.0] * len(models)
    product = by_model[_weighted(rng, models, weights)]
    product = by_model[model] if model is not None else product  # drawn anyway: the later draws stay the same
    persona = by_persona[_weighted(rng, persona_names, persona_shares)]
    plan = _weighted(rng, product.plans, product.plan_weights)
    device_id = f"{product.model}-{i:06d}"

    if k == 0:
        activated = first
    else:
        # Further devices of an account follow over the next weeks, never past 90 % of the period.
        activated = first + timedelta(days=rng.random() * 60, hours=rng.random() * 12)
        latest = start + (end - start) * 0.9
        if activated > latest:
            activated = max(first, latest)
    activated = from_ms(to_ms(activated))

    device_factor = rng.lognormvariate(0.0, 0.45)
    proneness = round(persona.error_proneness * device_factor, 4)
    # Error-prone devices churn more: a real driver for churn analytics to find.
    p_churn = min(0.95, persona.churn_prob * device_factor**0.7)
    timeline_start = max(start, activated)
    remaining = end - timeline_start
    unlocks = unlock_days(seed=seed, device_id=device_id, timeline_days=remaining / timedelta(days=1)) if ladder else {}
    if unlocks and planted_climber(product=product, unlocks=unlocks):
        p_churn *= CLIMBER_CHURN_FACTOR
    churns = rng.random() < p_churn and remaining >= timedelta(days=6)
    churn_frac = 0.45 + 0.45 * rng.random()
    kind_draw = rng.random()
    churn_at: datetime | None = None
    churn_kind: ChurnKind | None = None
    decay_days = 0.0
    if churns:
        churn_at = from_ms(to_ms(timeline_start + remaining * churn_frac))
        lived = (churn_at - timeline_start) / timedelta(days=1)
        decay_days = min(max(0.5 * lived, 2.0), 42.0)
        if churn_at - activated < timedelta(days=30) and kind_draw < 0.5:
            churn_kind = "returned"
        elif kind_draw < persona.cancel_share:
            churn_kind = "cancelled"
        else:
            churn_kind = "silent"

    lo, hi = product.signal_dbm_range
    signal = lo + (hi - lo) * rng.random()
    hb_phase = rng.random() * product.heartbeat_interval_s
    up_phase = rng.random() * product.upload_interval_s
    periodic_phase = rng.random()
    age_days = max((start - activated) / timedelta(days=1), 0.0)
    counters = {name: round(daily * age_days * (0.5 + rng.random()), 3) for name, daily in product.counters.items()}
    if "cups_since_descale" in counters:
        counters["cups_since_descale"] = float(rng.randint(0, 80)) if age_days > 0 else 0.0
    battery = None
    if product.battery is not None:
        battery = (
            100.0
            if age_days == 0
            else round(product.battery.low_pct + (100 - product.battery.low_pct) * rng.random(), 2)
        )
    since_boot = 0.0 if age_days == 0 else rng.random() * min(age_days, 30) * 86_400
    outage = 0.01 * device_factor**0.5

    dev = Device(
        device_id, i, product.model, acc.account_id, activated, plan, experiment_arm(salt=salt, device_id=device_id)
    )
    prof = DeviceProfile(
        persona.name,
        proneness,
        churns,
        churn_at,
        churn_kind,
        decay_days,
        round(signal, 1),
        hb_phase,
        up_phase,
        periodic_phase,
        counters,
        battery,
        since_boot,
        outage,
    )
    return dev, prof


def _incidents(
    seed: int,
    start: datetime,
    days: int,
    by_model: dict[str, Product],
    count: int | None,
) -> tuple[Incident, ...]:
    rng = random.Random(stable_seed(seed, "incidents", to_ms(start), days))
    n = min(6, max(1, days // 14)) if count is None else count
    if n < 0:
        raise ConfigError("incidents must be non-negative")
    out = []
    models = list(by_model)
    for k in range(n):
        product = by_model[models[rng.randrange(len(models))]]
        session = [t for t in product.touchpoints if t.trigger == "session" and t.weight > 0]
        if not session:
            continue
        tp = _weighted(rng, session, [t.weight for t in session])
        code = rng.choice(tp.error_codes)
        severity = _weighted(rng, (Severity.WARNING, Severity.ERROR, Severity.CRITICAL), (0.1, 0.6, 0.3))
        day = int(rng.random() * days * 0.9)
        t0 = start.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=day, hours=6 + rng.random() * 12)
        t0 = from_ms(to_ms(max(t0, start)))
        t1 = from_ms(to_ms(t0 + timedelta(hours=1.5 + rng.random() * 8.5)))
        out.append(
            Incident(
                f"inc-{k:03d}",
                product.model,
                tp.name,
                code,
                severity,
                t0,
                t1,
                round(0.35 + 0.45 * rng.random(), 3),
                round(0.3 + 0.7 * rng.random(), 3),
            )
        )
    return tuple(out)
