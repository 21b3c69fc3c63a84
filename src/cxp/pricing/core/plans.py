"""Typed, versioned plan definitions: pydantic v2 models of revenue models and their components.

A plan is a list of components billed together each monthly period. Components:

* `OneTimeSale`: a hardware price, charged in the account's first period (period index 0).
* `FlatFee`: a subscription fee every period.
* `TieredSubscription`: named feature bundles, each with a fee and the features it includes.
* `UsageCharge`: pay-per-use on a billable metric with a charge model (`unit`, `graduated`,
  `volume`, `package`).
* `Hybrid`: base fee + included allowance + overage on the excess (any charge model).
* `MinimumCommitment`: true-up = max(0, commitment − sum of the covered charges).
* `PerOutcome`: a price per successful outcome.
* `UptimeSla`: a fee with service credits (a credit % of the fee by uptime band).
* `Freemium`: free base, paid premium features, with a stated conversion assumption.

Tier tables (`Tier`): the first tier starts at 0, every next tier starts where the previous one
ends, only the last may be unbounded. **Upper bounds are inclusive and quantities are exact
decimals**: a quantity q falls in the tier with lower < q ≤ upper (the first tier also holds 0).
With tiers [0, 100], (100, ∞): q = 100 falls in the first tier, q = 100.5 (or 100.001) in the
second. Fractional quantities are never rounded to whole units before tiering; a plan that
wants whole units bills a metric that counts whole units.

Every model is frozen and rejects unknown fields. Constructing a `Plan` (or any model here)
with bad input raises `PlanValidationError`, whose `problems` list says where and what.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from cxp.pricing.core.money import CURRENCY_QUANTA, RoundingMode, RoundingRule, rounding_rule
from cxp.pricing.core.validation import StrictModel
from cxp.pricing.errors import PlanValidationError

# Metric, feature and tier names: the same alphabet as telemetry names (':' allowed for prefixes).
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
# Component ids appear in line-item keys as "<id>:<part>", so they may not contain ':'.
ComponentId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
NonNegative = Annotated[Decimal, Field(ge=0)]
Positive = Annotated[Decimal, Field(gt=0)]
Percent = Annotated[Decimal, Field(ge=0, le=100)]
Share = Annotated[Decimal, Field(ge=0, le=1)]

# ---------------------------------------------------------------------------------------------
# Tier tables and charge models


class Tier(StrictModel):
    """Quantities q with lower < q ≤ upper (the first tier also holds q = 0); `upper=None` is unbounded."""

    lower: NonNegative
    upper: NonNegative | None = None
    unit_price: NonNegative = Decimal(0)
    flat_fee: NonNegative = Decimal(0)

    @model_validator(mode="after")
    def _upper_above_lower(self) -> Tier:
        if self.upper is not None and self.upper <= self.lower:
            raise ValueError(f"upper bound {self.upper} must be greater than lower bound {self.lower}")
        return self


def check_tiers(tiers: tuple[Tier, ...]) -> tuple[Tier, ...]:
    """`tiers` if they start at 0, are contiguous and only the last is unbounded; else ValueError."""
    if not tiers:
        raise ValueError("a tier table needs at least one tier")
    if tiers[0].lower != 0:
        raise ValueError(f"the first tier must start at 0, but tiers[0] starts at {tiers[0].lower}")
    for i in range(1, len(tiers)):
        prev, cur = tiers[i - 1], tiers[i]
        if prev.upper is None:
            raise ValueError(f"only the last tier may be unbounded, but tiers[{i - 1}] has no upper bound")
        if cur.lower != prev.upper:
            raise ValueError(
                f"tiers must be contiguous: tiers[{i}] starts at {cur.lower} but tiers[{i - 1}] ends at {prev.upper}"
            )
    return tiers


TierTable = Annotated[tuple[Tier, ...], Field(min_length=1), AfterValidator(check_tiers)]


def validate_tiers(*, tiers: Any) -> tuple[Tier, ...]:
    """`tiers` (Tier objects or dicts) as a checked tier table; raises `PlanValidationError`."""
    try:
        return _TierTableModel(tiers=tiers).tiers
    except PlanValidationError as e:
        raise PlanValidationError("invalid tier table: " + "; ".join(e.problems), e.problems) from None


class _TierTableModel(StrictModel):
    tiers: TierTable


class UnitCharge(StrictModel):
    """q · unit_price."""

    model: Literal["unit"] = "unit"
    unit_price: NonNegative


class GraduatedCharge(StrictModel):
    """Each slice of q at its own tier's unit price, plus each reached tier's flat fee once."""

    model: Literal["graduated"] = "graduated"
    tiers: TierTable


class VolumeCharge(StrictModel):
    """The tier q falls in prices every unit, plus that tier's flat fee; totals can drop at boundaries."""

    model: Literal["volume"] = "volume"
    tiers: TierTable


class PackageCharge(StrictModel):
    """⌈max(q − free_units, 0) / package_size⌉ · package_price."""

    model: Literal["package"] = "package"
    package_size: Positive
    package_price: NonNegative
    free_units: NonNegative = Decimal(0)


ChargeModel = Annotated[UnitCharge | GraduatedCharge | VolumeCharge | PackageCharge, Field(discriminator="model")]


# ---------------------------------------------------------------------------------------------
# Components


class _Component(StrictModel):
    id: ComponentId
    description: str = ""


class OneTimeSale(_Component):
    """A product sale (hardware price), charged once in the account's first period (index 0)."""

    kind: Literal["one_time_sale"] = "one_time_sale"
    price: NonNegative


class FlatFee(_Component):
    """A subscription fee charged every period."""

    kind: Literal["flat_fee"] = "flat_fee"
    fee: NonNegative


class BundleTier(StrictModel):
    """A named feature bundle: its fee per period and the features (usage keys) it includes."""

    name: Name
    fee: NonNegative
    features: tuple[Name, ...] = ()


class TieredSubscription(_Component):
    """Feature bundles in ascending fee order; an account pays the fee of its bundle each period.

    The bundle is given per account when billing; if it is not, the account gets the cheapest
    bundle that includes every *gated* feature it used (usage > 0), where gated means listed in
    some bundle; if no bundle covers them all, the last (top) bundle.
    """

    kind: Literal["tiered_subscription"] = "tiered_subscription"
    tiers: Annotated[tuple[BundleTier, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _ordered(self) -> TieredSubscription:
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"bundle names must be unique, got {names}")
        for i in range(1, len(self.tiers)):
            if self.tiers[i].fee < self.tiers[i - 1].fee:
                cur, prev = self.tiers[i], self.tiers[i - 1]
                raise ValueError(
                    f"bundles must be in ascending fee order: tiers[{i}] ({cur.name}) costs {cur.fee}, "
                    f"less than tiers[{i - 1}] ({prev.name}) at {prev.fee}"
                )
        return self

    @property
    def gated_features(self) -> tuple[str, ...]:
        """Every feature some bundle lists, in first-seen order."""
        return tuple(dict.fromkeys(f for t in self.tiers for f in t.features))

    def tier_index(self, name: str) -> int:
        """The position of the bundle called `name`."""
        for i, t in enumerate(self.tiers):
            if t.name == name:
                return i
        raise PlanValidationError(f"component {self.id!r} has no bundle {name!r}", (f"{self.id}: no bundle {name!r}",))


class UsageCharge(_Component):
    """Pay-per-use: the period's quantity of `metric` priced by `charge`."""

    kind: Literal["usage"] = "usage"
    metric: Name
    charge: ChargeModel


class Hybrid(_Component):
    """Base fee + `included` units of `metric` + overage priced by `overage` on max(q − included, 0)."""

    kind: Literal["hybrid"] = "hybrid"
    metric: Name
    base_fee: NonNegative
    included: NonNegative
    overage: ChargeModel


class MinimumCommitment(_Component):
    """A minimum spend per period: true-up = max(0, amount − the covered components' rounded charges).

    `applies_to=None` covers every non-commitment component of the plan (one-time sales and SLA
    credits included); list component ids to narrow it.
    """

    kind: Literal["minimum_commitment"] = "minimum_commitment"
    amount: NonNegative
    applies_to: tuple[ComponentId, ...] | None = None


class PerOutcome(_Component):
    """Outcome-based: `price_per_success` times the period's count of successful `outcome`s."""

    kind: Literal["per_outcome"] = "per_outcome"
    outcome: Name
    price_per_success: NonNegative


class SlaBand(StrictModel):
    """Uptime strictly below `uptime_below` % earns `credit_pct` % of the SLA fee back."""

    uptime_below: Annotated[Decimal, Field(gt=0, le=100)]
    credit_pct: Percent


class UptimeSla(_Component):
    """Outcome-based on a guaranteed level: a fee per period minus a service credit by uptime band.

    Bands are listed from the highest threshold down; the applicable band is the one with the
    lowest threshold the uptime is still below (uptime 99.9 with bands <99.9, <99 earns nothing;
    98.5 earns the <99 credit). The credit is `credit_pct` % of the *rounded* fee, rounded itself.
    """

    kind: Literal["uptime_sla"] = "uptime_sla"
    fee: NonNegative
    bands: Annotated[tuple[SlaBand, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _bands_ordered(self) -> UptimeSla:
        for i in range(1, len(self.bands)):
            a, b = self.bands[i - 1], self.bands[i]
            if b.uptime_below >= a.uptime_below:
                raise ValueError(
                    f"bands must have strictly decreasing thresholds: bands[{i}] is below {b.uptime_below}, "
                    f"not less than bands[{i - 1}] below {a.uptime_below}"
                )
            if b.credit_pct < a.credit_pct:
                raise ValueError(
                    f"a lower uptime may not earn a smaller credit: bands[{i}] credits {b.credit_pct}% "
                    f"but bands[{i - 1}] credits {a.credit_pct}%"
                )
        return self

    def credit_pct(self, uptime_pct: Decimal) -> Decimal:
        """The credit % for `uptime_pct` (0 when the SLA is met)."""
        credit = Decimal(0)
        for band in self.bands:
            if uptime_pct < band.uptime_below:
                credit = band.credit_pct
            else:
                break
        return credit


class Freemium(_Component):
    """Free base, premium features for `premium_fee` per period; upgraders are `conversion_rate` of accounts.

    The conversion rate is a stated assumption (no telemetry reveals who *would* pay). When an
    account's upgrade is not given explicitly, it is decided deterministically from a hash of
    (salt or component id, account id), so a population converts at the stated rate and one
    account's decision never changes between periods or runs.
    """

    kind: Literal["freemium"] = "freemium"
    premium_fee: NonNegative
    premium_features: tuple[Name, ...] = ()
    conversion_rate: Share
    salt: str | None = None

    @property
    def assignment_salt(self) -> str:
        """The salt hashed with account ids to decide upgrades."""
        return self.salt if self.salt is not None else self.id


Component = Annotated[
    OneTimeSale
    | FlatFee
    | TieredSubscription
    | UsageCharge
    | Hybrid
    | MinimumCommitment
    | PerOutcome
    | UptimeSla
    | Freemium,
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------------------------------------
# Billable metrics (definitions for the backtest layer, which aggregates telemetry per period)


class Aggregation(StrEnum):
    """How a billable metric aggregates telemetry within a period."""

    COUNT = "count"
    SUM = "sum"
    MAX = "max"
    UNIQUE_COUNT = "unique_count"
    LATEST = "latest"
    TIME_WEIGHTED_SUM = "time_weighted_sum"


class MetricSource(StrEnum):
    """Which telemetry a metric reads: touchpoint usage events or state heartbeats."""

    USAGE = "usage_events"
    STATE = "state"


USAGE_FIELDS = frozenset({"quantity", "duration_s", "latency_ms"})
STATE_FIELDS = frozenset({"battery_pct", "signal_dbm", "uptime_s", "energy_wh"})
# Distinct-value fields for unique_count: active devices, active days, distinct touchpoints used.
UNIQUE_FIELDS = frozenset({"device", "day", "touchpoint"})


class MetricFilter(StrictModel):
    """Which usage events count: only these touchpoints (empty = all) and optionally only successes."""

    touchpoints: tuple[Name, ...] = ()
    success_only: bool = False


class BillableMetric(StrictModel):
    """A named per-period aggregate of telemetry that components bill on.

    count: number of events (no field). sum / max / latest: of a numeric field. unique_count:
    distinct devices, days or touchpoints. time_weighted_sum: ∫ value dt in hours of a state field
    (the last reported value holds until the next), e.g. device-hours or kWh from power.
    Usage fields: quantity, duration_s, latency_ms. State fields: battery_pct, signal_dbm,
    uptime_s, energy_wh, metrics.<name>. Filters apply to usage events only.
    """

    name: Name
    aggregation: Aggregation
    source: MetricSource = MetricSource.USAGE
    field: str | None = None
    filter: MetricFilter = MetricFilter()
    unit_label: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> BillableMetric:
        agg, src, fld = self.aggregation, self.source, self.field
        if src is MetricSource.STATE and self.filter != MetricFilter():
            raise ValueError("filters (touchpoints, success_only) apply to usage events only")
        if agg is Aggregation.COUNT:
            if fld is not None:
                raise ValueError("a count metric counts events and takes no field")
            return self
        if fld is None:
            raise ValueError(f"a {agg.value} metric needs a field")
        if agg is Aggregation.UNIQUE_COUNT:
            allowed = UNIQUE_FIELDS if src is MetricSource.USAGE else UNIQUE_FIELDS - {"touchpoint"}
            if fld not in allowed:
                raise ValueError(f"unique_count over {src.value} counts one of {sorted(allowed)}, not {fld!r}")
            return self
        if agg is Aggregation.TIME_WEIGHTED_SUM and src is not MetricSource.STATE:
            raise ValueError("time_weighted_sum integrates a state metric over time; use source 'state'")
        if src is MetricSource.USAGE and fld not in USAGE_FIELDS:
            raise ValueError(f"usage events have numeric fields {sorted(USAGE_FIELDS)}, not {fld!r}")
        if (
            src is MetricSource.STATE
            and fld not in STATE_FIELDS
            and not (fld.startswith("metrics.") and len(fld) > len("metrics."))
        ):
            raise ValueError(f"state has numeric fields {sorted(STATE_FIELDS)} or metrics.<name>, not {fld!r}")
        return self


# ---------------------------------------------------------------------------------------------
# Plans


@dataclass(frozen=True, slots=True)
class PlanInputs:
    """What billing a plan reads: usage keys, outcome keys, uptime, freemium components."""

    usage_keys: frozenset[str]
    outcome_keys: frozenset[str]
    needs_uptime: bool
    freemium_components: tuple[str, ...]
    bundle_components: tuple[str, ...]


@lru_cache(maxsize=256)
def _rule(currency: str, mode: RoundingMode, quantum: Decimal | None) -> RoundingRule:
    return rounding_rule(currency=currency, mode=mode, quantum=quantum)


class Plan(StrictModel):
    """A versioned revenue model: components billed together each monthly period in one currency.

    Rounding: every line item is rounded once to `quantum` (default: the currency's ISO minor
    unit) with `rounding_mode` (default half-even); the total is the exact sum of rounded lines.
    """

    plan_id: ComponentId
    version: Annotated[int, Field(ge=1)]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    billing_period: Literal["month"] = "month"
    rounding_mode: RoundingMode = RoundingMode.HALF_EVEN
    quantum: Positive | None = None
    metrics: tuple[BillableMetric, ...] = ()
    components: Annotated[tuple[Component, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _consistent(self) -> Plan:
        if self.quantum is None and self.currency not in CURRENCY_QUANTA:
            raise ValueError(f"no rounding quantum known for currency {self.currency}; set 'quantum'")
        ids = [c.id for c in self.components]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"component ids must be unique; repeated: {dup}")
        commitments = {c.id for c in self.components if isinstance(c, MinimumCommitment)}
        for c in self.components:
            if isinstance(c, MinimumCommitment) and c.applies_to is not None:
                for ref in c.applies_to:
                    if ref not in ids:
                        raise ValueError(f"commitment {c.id!r} applies to unknown component {ref!r}")
                    if ref in commitments:
                        raise ValueError(f"commitment {c.id!r} may not cover another commitment ({ref!r})")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metric names must be unique, got {names}")
        if self.metrics:
            for c in self.components:
                if isinstance(c, UsageCharge | Hybrid) and c.metric not in names:
                    raise ValueError(f"component {c.id!r} bills metric {c.metric!r}, which the plan does not define")
        return self

    @property
    def key(self) -> str:
        """`plan_id@vN`, the identity of this plan version."""
        return f"{self.plan_id}@v{self.version}"

    @property
    def rounding(self) -> RoundingRule:
        """The rounding rule every line item is rounded with."""
        return _rule(self.currency, self.rounding_mode, self.quantum)

    def component(self, component_id: str) -> Component:
        """The component with id `component_id`."""
        for c in self.components:
            if c.id == component_id:
                return c
        raise PlanValidationError(f"plan {self.key} has no component {component_id!r}", (component_id,))

    def required_inputs(self) -> PlanInputs:
        """Every input billing this plan reads (so the backtest knows what to aggregate)."""
        usage: set[str] = set()
        outcomes: set[str] = set()
        for c in self.components:
            if isinstance(c, UsageCharge | Hybrid):
                usage.add(c.metric)
            elif isinstance(c, TieredSubscription):
                usage.update(c.gated_features)
            elif isinstance(c, PerOutcome):
                outcomes.add(c.outcome)
        return PlanInputs(
            usage_keys=frozenset(usage),
            outcome_keys=frozenset(outcomes),
            needs_uptime=any(isinstance(c, UptimeSla) for c in self.components),
            freemium_components=tuple(c.id for c in self.components if isinstance(c, Freemium)),
            bundle_components=tuple(c.id for c in self.components if isinstance(c, TieredSubscription)),
        )


def parse_plan(*, data: Mapping[str, Any] | str | bytes) -> Plan:
    """A `Plan` from a mapping or JSON text; raises `PlanValidationError` listing every problem."""
    if isinstance(data, str | bytes):
        return Plan.model_validate_json(data)
    return Plan.model_validate(data)
