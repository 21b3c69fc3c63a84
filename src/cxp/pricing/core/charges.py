"""Pure charge functions and one period's bill, in exact `Decimal` arithmetic.

Charge functions (`price_*`) return the *exact, unrounded* amount. `bill_period` turns a plan
and one account's period inputs into line items; the rounding rule is:

* every line item's exact amount is rounded **once**, to the plan's quantum with the plan's
  rounding mode (half-even by default);
* lines derived from other lines use the *rounded* amounts: an SLA credit is credit % of the
  rounded SLA fee (then rounded itself), a commitment true-up compares the rounded commitment
  with the sum of the covered rounded lines (so it needs no rounding);
* the bill total is the exact sum of the rounded lines; it is never rounded again.

Arithmetic runs in a 100-digit context that traps `Inexact`, so a charge is either exact or an
error, never silently rounded on the way.
"""

from __future__ import annotations

import decimal
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from cxp.pricing.core.money import EXACT, Money, to_decimal
from cxp.pricing.core.plans import (
    ChargeModel,
    FlatFee,
    Freemium,
    GraduatedCharge,
    Hybrid,
    MinimumCommitment,
    OneTimeSale,
    PackageCharge,
    PerOutcome,
    Plan,
    Tier,
    TieredSubscription,
    UnitCharge,
    UptimeSla,
    UsageCharge,
    VolumeCharge,
    validate_tiers,
)
from cxp.pricing.errors import PricingError

_ZERO = Decimal(0)
_ONE = Decimal(1)
_HUNDRED = Decimal(100)


def _quantity(value: Decimal | int | float | str, what: str) -> Decimal:
    q = value if type(value) is Decimal and value.is_finite() else to_decimal(value=value)
    if q < 0:
        raise PricingError(f"{what} must not be negative, got {q}")
    return q


# ---------------------------------------------------------------------------------------------
# Charge models (exact amounts). The underscored variants trust validated inputs: bill_period
# calls them in its inner loop, the public ones check their arguments first.


def _tier_index(q: Decimal, tiers: Sequence[Tier]) -> int:
    for i, t in enumerate(tiers):
        # Inclusive upper bound: q == upper stays in this tier.
        if t.upper is None or q <= t.upper:
            return i
    raise PricingError(f"quantity {q} exceeds the last tier's upper bound {tiers[-1].upper}")


def _graduated(q: Decimal, tiers: Sequence[Tier]) -> Decimal:
    last = tiers[-1]
    if last.upper is not None and q > last.upper:
        raise PricingError(f"quantity {q} exceeds the last tier's upper bound {last.upper}")
    total = _ZERO
    for i, t in enumerate(tiers):
        # The first tier holds q = 0, so it is always reached; a later tier only once q exceeds its lower bound.
        if i > 0 and q <= t.lower:
            break
        top = q if t.upper is None or q < t.upper else t.upper
        total += (top - t.lower) * t.unit_price + t.flat_fee
    return total


def _volume(q: Decimal, tiers: Sequence[Tier]) -> Decimal:
    t = tiers[_tier_index(q, tiers)]
    return q * t.unit_price + t.flat_fee


def _package(q: Decimal, size: Decimal, price: Decimal, free: Decimal) -> Decimal:
    excess = q - free
    if excess <= 0:
        return _ZERO
    n, r = divmod(excess, size)  # exact integer quotient and remainder: no division rounding
    return (n + (1 if r else 0)) * price


def _charge(q: Decimal, charge: ChargeModel) -> Decimal:
    if isinstance(charge, UnitCharge):
        return q * charge.unit_price
    if isinstance(charge, GraduatedCharge):
        return _graduated(q, charge.tiers)
    if isinstance(charge, VolumeCharge):
        return _volume(q, charge.tiers)
    if isinstance(charge, PackageCharge):
        return _package(q, charge.package_size, charge.package_price, charge.free_units)
    raise PricingError(f"unknown charge model {charge!r}")


def tier_index(*, quantity: Decimal | int | float | str, tiers: Sequence[Tier]) -> int:
    """Index of the tier `quantity` falls in (lower < q ≤ upper; the first tier also holds 0)."""
    q = _quantity(quantity, "quantity")
    return _tier_index(q, validate_tiers(tiers=tuple(tiers)))


def price_unit(*, quantity: Decimal | int | float | str, rate: Decimal | int | str) -> Decimal:
    """Exact q · rate."""
    q = _quantity(quantity, "quantity")
    r = _quantity(rate, "rate")
    with decimal.localcontext(EXACT):
        return q * r


def price_graduated(*, quantity: Decimal | int | float | str, tiers: Sequence[Tier]) -> Decimal:
    """Exact graduated price: each slice at its tier's rate plus each reached tier's flat fee once."""
    q = _quantity(quantity, "quantity")
    checked = validate_tiers(tiers=tuple(tiers))
    with decimal.localcontext(EXACT):
        return _graduated(q, checked)


def price_volume(*, quantity: Decimal | int | float | str, tiers: Sequence[Tier]) -> Decimal:
    """Exact volume price: every unit at the rate of the tier q falls in, plus that tier's flat fee."""
    q = _quantity(quantity, "quantity")
    checked = validate_tiers(tiers=tuple(tiers))
    with decimal.localcontext(EXACT):
        return _volume(q, checked)


def price_package(
    *,
    quantity: Decimal | int | float | str,
    package_size: Decimal | int | str,
    package_price: Decimal | int | str,
    free_units: Decimal | int | str = _ZERO,
) -> Decimal:
    """Exact package price: ⌈max(q − free_units, 0) / package_size⌉ · package_price."""
    charge = PackageCharge(package_size=package_size, package_price=package_price, free_units=free_units)
    q = _quantity(quantity, "quantity")
    with decimal.localcontext(EXACT):
        return _package(q, charge.package_size, charge.package_price, charge.free_units)


def price_charge(*, quantity: Decimal | int | float | str, charge: ChargeModel) -> Decimal:
    """Exact price of `quantity` under any charge model."""
    q = _quantity(quantity, "quantity")
    with decimal.localcontext(EXACT):
        return _charge(q, charge)


@dataclass(frozen=True, slots=True)
class VolumeDrop:
    """A volume-tier boundary where the total falls as q moves just above it (exact, unrounded amounts).

    `total_just_above` is the limit as q → boundary from above (the infimum of the next tier's
    totals); `recovers_at` is the quantity in the next tier where the total is back to
    `total_at_boundary` (rounded up to 28 significant digits), or None if it is not in that tier.
    """

    boundary: Decimal
    tier: int
    total_at_boundary: Decimal
    total_just_above: Decimal
    drop: Decimal
    recovers_at: Decimal | None


def volume_drops(*, tiers: Sequence[Tier]) -> list[VolumeDrop]:
    """Every boundary of a volume tier table where the total drops when q crosses it."""
    checked = validate_tiers(tiers=tuple(tiers))
    out = []
    with decimal.localcontext(EXACT):
        for i in range(len(checked) - 1):
            here, nxt = checked[i], checked[i + 1]
            b = here.upper
            assert b is not None  # only the last tier may be unbounded
            at = b * here.unit_price + here.flat_fee
            above = b * nxt.unit_price + nxt.flat_fee
            if above >= at:
                continue
            recovers = None
            if nxt.unit_price > 0:
                with decimal.localcontext(decimal.Context(prec=28, rounding=decimal.ROUND_CEILING)):
                    q_star = (at - nxt.flat_fee) / nxt.unit_price
                if nxt.upper is None or q_star <= nxt.upper:
                    recovers = q_star
            out.append(VolumeDrop(b, i + 1, at, above, at - above, recovers))
    return out


# ---------------------------------------------------------------------------------------------
# Population assumptions


def is_upgraded(*, account_id: str, conversion_rate: Decimal, salt: str) -> bool:
    """Whether `account_id` converts under a freemium conversion assumption (deterministic hash)."""
    num, den = upgrade_ratio(conversion_rate=conversion_rate)
    return account_hash(account_id=account_id, salt=salt) * den < num << 64


def upgrade_ratio(*, conversion_rate: Decimal) -> tuple[int, int]:
    """The conversion rate as an exact integer ratio (checked to lie within [0, 1])."""
    if not 0 <= conversion_rate <= 1:
        raise PricingError(f"conversion rate must be within [0, 1], got {conversion_rate}")
    return conversion_rate.as_integer_ratio()


def account_hash(*, account_id: str, salt: str) -> int:
    """A uniform integer in [0, 2^64) from (salt, account id): upgraded iff hash / 2^64 < rate."""
    # Compared in integers (hash · den < num · 2^64) so the share is exact, not float-rounded.
    return int.from_bytes(hashlib.sha256(f"{salt}\x1f{account_id}".encode()).digest()[:8], "big")


def select_bundle(*, component: TieredSubscription, usage: Mapping[str, Decimal | int | float | str]) -> int:
    """The cheapest bundle covering every gated feature used (usage > 0); the top bundle if none does."""
    used = set()
    for f in component.gated_features:
        if f not in usage:
            raise PricingError(f"usage has no {f!r} (feature of {component.id!r}); give 0 explicitly for no use")
        if _quantity(usage[f], f"usage {f!r}") > 0:
            used.add(f)
    for i, t in enumerate(component.tiers):
        if used.issubset(t.features):
            return i
    return len(component.tiers) - 1


# ---------------------------------------------------------------------------------------------
# Bills


@dataclass(frozen=True, slots=True)
class LineItem:
    """One line of a bill: `amount` is rounded per the plan's rule; credits are negative."""

    component: str
    part: str
    quantity: Decimal
    amount: Decimal
    label: str = ""

    @property
    def key(self) -> str:
        """`component:part`, stable across periods and accounts (the column name in backtests)."""
        return f"{self.component}:{self.part}"


@dataclass(frozen=True, slots=True)
class Bill:
    """One account's bill for one period under one plan version."""

    plan_key: str
    period_index: int
    currency: str
    lines: tuple[LineItem, ...]
    total: Decimal

    @property
    def total_money(self) -> Money:
        """The total with its currency."""
        return Money(self.total, self.currency)

    def amounts(self) -> dict[str, Decimal]:
        """Rounded amount by line key."""
        return {li.key: li.amount for li in self.lines}

    def line(self, key: str) -> LineItem:
        """The line with key `key` (`component:part`)."""
        for li in self.lines:
            if li.key == key:
                return li
        raise PricingError(f"bill has no line {key!r}; lines: {[li.key for li in self.lines]}")


_PARTS: dict[type, tuple[str, ...]] = {
    OneTimeSale: ("sale",),
    FlatFee: ("fee",),
    TieredSubscription: ("bundle",),
    UsageCharge: ("usage",),
    Hybrid: ("base", "overage"),
    MinimumCommitment: ("true_up",),
    PerOutcome: ("outcomes",),
    UptimeSla: ("fee", "credit"),
    Freemium: ("premium",),
}


def line_keys(*, plan: Plan) -> tuple[str, ...]:
    """The line keys every bill of `plan` has, in order (same for every account and period)."""
    return tuple(f"{c.id}:{p}" for c in plan.components for p in _PARTS[type(c)])


def _lookup(values: Mapping[str, Decimal | int | float | str] | None, key: str, what: str, comp: str) -> Decimal:
    if values is None or key not in values:
        # Missing is an error, not zero: a misspelt metric must not silently bill nothing.
        raise PricingError(f"{what} has no {key!r} (component {comp!r}); give 0 explicitly for none")
    return _quantity(values[key], f"{what} {key!r}")


def bill_period(
    *,
    plan: Plan,
    usage: Mapping[str, Decimal | int | float | str],
    period_index: int,
    outcomes: Mapping[str, Decimal | int | float | str] | None = None,
    uptime_pct: Decimal | int | float | str | None = None,
    upgrades: Mapping[str, bool] | None = None,
    account_id: str | None = None,
    bundles: Mapping[str, str] | None = None,
) -> Bill:
    """One account's bill for period `period_index` (0 = its first period) under `plan`."""
    if isinstance(period_index, bool) or not isinstance(period_index, int) or period_index < 0:
        raise PricingError(f"period_index must be an int ≥ 0, got {period_index!r}")
    rule = plan.rounding
    rnd = rule.round
    nil = rnd(_ZERO)  # a zero shown with the currency's decimals (0.00, not 0)
    uptime: Decimal | None = None
    if uptime_pct is not None:
        uptime = _quantity(uptime_pct, "uptime_pct")
        if uptime > _HUNDRED:
            raise PricingError(f"uptime_pct must be within [0, 100], got {uptime}")
    lines: list[LineItem | MinimumCommitment] = []
    with decimal.localcontext(EXACT):
        for c in plan.components:
            if isinstance(c, UsageCharge):
                q = _lookup(usage, c.metric, "usage", c.id)
                lines.append(LineItem(c.id, "usage", q, rnd(_charge(q, c.charge)), c.metric))
            elif isinstance(c, FlatFee):
                lines.append(LineItem(c.id, "fee", _ONE, rnd(c.fee)))
            elif isinstance(c, OneTimeSale):
                first = period_index == 0
                lines.append(LineItem(c.id, "sale", _ONE if first else _ZERO, rnd(c.price) if first else nil))
            elif isinstance(c, TieredSubscription):
                if bundles is not None and c.id in bundles:
                    i = c.tier_index(bundles[c.id])
                else:
                    i = select_bundle(component=c, usage=usage)
                lines.append(LineItem(c.id, "bundle", _ONE, rnd(c.tiers[i].fee), c.tiers[i].name))
            elif isinstance(c, Hybrid):
                q = _lookup(usage, c.metric, "usage", c.id)
                excess = q - c.included if q > c.included else _ZERO
                lines.append(LineItem(c.id, "base", _ONE, rnd(c.base_fee)))
                lines.append(LineItem(c.id, "overage", excess, rnd(_charge(excess, c.overage)), c.metric))
            elif isinstance(c, PerOutcome):
                n = _lookup(outcomes, c.outcome, "outcomes", c.id)
                lines.append(LineItem(c.id, "outcomes", n, rnd(n * c.price_per_success), c.outcome))
            elif isinstance(c, UptimeSla):
                if uptime is None:
                    raise PricingError(f"plan {plan.key} has an uptime SLA ({c.id!r}): give uptime_pct")
                fee = rnd(c.fee)
                pct = c.credit_pct(uptime)
                lines.append(LineItem(c.id, "fee", _ONE, fee))
                lines.append(LineItem(c.id, "credit", pct, nil - rnd(fee * pct / _HUNDRED), f"uptime {uptime}%"))
            elif isinstance(c, Freemium):
                if upgrades is not None and c.id in upgrades:
                    up = bool(upgrades[c.id])
                elif account_id is not None:
                    up = is_upgraded(account_id=account_id, conversion_rate=c.conversion_rate, salt=c.assignment_salt)
                else:
                    raise PricingError(f"freemium component {c.id!r} needs upgrades[{c.id!r}] or an account_id")
                lines.append(LineItem(c.id, "premium", _ONE if up else _ZERO, rnd(c.premium_fee) if up else nil))
            elif isinstance(c, MinimumCommitment):
                lines.append(c)  # filled in below, once every line it covers is known
            else:  # pragma: no cover - the Component union is closed
                raise PricingError(f"unknown component {c!r}")
        done = [li for li in lines if isinstance(li, LineItem)]
        out: list[LineItem] = []
        for li in lines:
            if isinstance(li, MinimumCommitment):
                covered = set(li.applies_to) if li.applies_to is not None else None
                spent = sum((d.amount for d in done if covered is None or d.component in covered), _ZERO)
                commitment = rnd(li.amount)
                true_up = commitment - spent if commitment > spent else nil
                out.append(LineItem(li.id, "true_up", _ONE if true_up else _ZERO, true_up))
            else:
                out.append(li)
        total = sum((li.amount for li in out), nil)
    return Bill(plan.key, period_index, plan.currency, tuple(out), total)
