"""The charge models over numpy arrays (many accounts × periods at once), exact to the cent.

Exactness: nothing here touches floats. Quantities enter as `FixedArray`s, integers with an
implied number of decimals (`values=[12345], decimals=3` is 12.345). Each charge is computed as
an exact scaled integer: with the quantity at Q decimals (raised to the tier bounds' decimals
when those have more) and the charge's prices at P decimals (the most any of its prices needs,
e.g. 4 for €0.0035), an amount is an integer count of 10^-(Q+P) currency units. That integer is
then rounded **once** to the plan's quantum (integer division with the plan's rounding mode),
giving an integer count of quanta (cents for EUR, yen for JPY). This is the same value at the
same point as the Decimal path in `pricing.core.charges` (exact amount, rounded once per line item),
so the results are equal, not merely close; the tests check that on random tables.

Integers stay int64 while a bound computed from the largest quantity proves every intermediate
below 2^62; otherwise that computation switches to numpy object arrays of Python ints, which
are exact at any size (slower, still vectorised). Amounts come back as int64 quanta.

Layout: arrays broadcast against each other; by convention axis 0 is accounts and the last axis
periods (`period_index` defaults to 0..n-1 along the last axis).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from math import gcd
from typing import Any

import numpy as np

from cxp.pricing.core.charges import account_hash, line_keys, upgrade_ratio
from cxp.pricing.core.integers import (
    INT64_MAX,
    LIMIT,
    absmax,
    constant_like,
    decimals_needed,
    narrow,
    round_div,
    scaled_int,
    widen,
)
from cxp.pricing.core.money import EXACT, RoundingMode, RoundingRule, to_decimal
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
)
from cxp.pricing.errors import PricingError


@dataclass(frozen=True, slots=True)
class FixedArray:
    """Exact decimals as integers: the value of `values[i]` is `values[i] · 10^-decimals`.

    `values` is int64, or object dtype holding Python ints when a number does not fit int64.
    """

    values: np.ndarray
    decimals: int

    def __post_init__(self) -> None:
        if not isinstance(self.values, np.ndarray) or not (
            np.issubdtype(self.values.dtype, np.integer) or self.values.dtype == object
        ):
            raise PricingError("FixedArray values must be an integer (or object-of-int) numpy array")
        if isinstance(self.decimals, bool) or not isinstance(self.decimals, int) or self.decimals < 0:
            raise PricingError(f"decimals must be an int ≥ 0, got {self.decimals!r}")

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the values."""
        return self.values.shape

    def decimal_at(self, index: Any) -> Decimal:
        """The exact Decimal at `index`."""
        return Decimal(int(self.values[index])).scaleb(-self.decimals, EXACT)

    def to_decimals(self) -> np.ndarray:
        """All values as an object array of exact Decimals (slow; for checks and display)."""
        out = np.empty(self.values.shape, dtype=object)
        flat = out.reshape(-1)
        for i, v in enumerate(self.values.reshape(-1)):
            flat[i] = Decimal(int(v)).scaleb(-self.decimals, EXACT)
        return out


# ---------------------------------------------------------------------------------------------
# Conversion in


def to_fixed(*, values: Any, decimals: int, rounding: RoundingMode | str = RoundingMode.HALF_EVEN) -> FixedArray:
    """`values` on a grid of 10^-decimals, equal to `Decimal(str(x)).quantize(10^-decimals, rounding)` per element.

    Floats take the fast path (x · 10^decimals in float64) except where that product is within a
    few ulps of a rounding decision, where the element is redone through `Decimal(str(x))`.
    Integers are exact; Decimals and strings go element by element.
    """
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 18:
        raise PricingError(f"decimals must be an int within [0, 18], got {decimals!r}")
    mode = RoundingMode(rounding)
    if isinstance(values, FixedArray):
        if values.decimals <= decimals:
            k = 10 ** (decimals - values.decimals)
            v = widen(values.values, absmax(values.values) * k)
            return FixedArray(narrow(v * k), decimals)
        den = 10 ** (values.decimals - decimals)
        return FixedArray(narrow(round_div(values.values, den, mode)), decimals)
    arr = np.asarray(values)
    if arr.dtype == bool:
        raise PricingError("expected numbers, got booleans")
    if np.issubdtype(arr.dtype, np.integer):
        k = 10**decimals
        v = widen(arr, absmax(arr) * k)
        return FixedArray(narrow(v * k), decimals)
    if np.issubdtype(arr.dtype, np.floating):
        return _floats_to_fixed(arr.astype(np.float64), decimals, mode)
    out = np.empty(arr.shape, dtype=object)
    flat_in, flat_out = arr.reshape(-1), out.reshape(-1)
    for i, x in enumerate(flat_in):
        flat_out[i] = _decimal_to_int(to_decimal(value=x), decimals, mode)
    return FixedArray(narrow(out), decimals)


def _decimal_to_int(d: Decimal, decimals: int, mode: RoundingMode) -> int:
    return int(d.scaleb(decimals, EXACT).to_integral_value(rounding=mode.value))


def _floats_to_fixed(x: np.ndarray, decimals: int, mode: RoundingMode) -> FixedArray:
    if not np.isfinite(x).all():
        raise PricingError("quantities must be finite (no NaN or infinity)")
    y = x * float(10**decimals)
    # y differs from the decimal value Decimal(str(x))·10^d by at most ~2 ulps of y; only where y is
    # that close to an integer or a half could the two round differently, so redo those exactly.
    # (Proof sketch: |Decimal(str(x)) − x| ≤ ulp(x)/2 and |y − x·10^d| ≤ ulp(y)/2, so the two
    # differ by < 1.5 ulp(y); 8 ulps of margin leaves every decision outside `near` the same.)
    frac = y - np.floor(y)
    tol = 8.0 * np.spacing(np.abs(y))
    half = mode in (RoundingMode.HALF_EVEN, RoundingMode.HALF_UP, RoundingMode.HALF_DOWN)
    # Nearest-rounding only decides at halves, so whole numbers (counts, zeros) stay on the fast path;
    # directed rounding decides at whole numbers, where only an exact zero is safe.
    near = np.abs(frac - 0.5) <= tol if half else ((frac <= tol) | (frac >= 1.0 - tol)) & (x != 0)
    near |= np.abs(y) >= 2.0**44  # beyond this an ulp is no longer small against a half
    if half:
        r = np.rint(y)  # no ties left outside `near`, so every half-mode is plain nearest
    elif mode is RoundingMode.DOWN:
        r = np.trunc(y)
    elif mode is RoundingMode.UP:
        r = np.sign(y) * np.ceil(np.abs(y))
    elif mode is RoundingMode.CEILING:
        r = np.ceil(y)
    else:
        r = np.floor(y)
    r = np.where(near, 0.0, r)
    out = r.astype(np.int64)
    idx = np.flatnonzero(near)
    if idx.size:
        exact = [_decimal_to_int(Decimal(str(float(v))), decimals, mode) for v in x.reshape(-1)[idx]]
        if max((abs(e) for e in exact), default=0) > INT64_MAX:
            out = out.astype(object)
        out.reshape(-1)[idx] = exact
    return FixedArray(out, decimals)


def _as_fixed(x: Any, what: str) -> FixedArray:
    if isinstance(x, FixedArray):
        return x
    arr = np.asarray(x)
    if arr.dtype == bool:
        raise PricingError(f"{what}: expected numbers, got booleans")
    if np.issubdtype(arr.dtype, np.integer):
        return FixedArray(arr if arr.dtype == np.int64 else arr.astype(np.int64), 0)
    if np.issubdtype(arr.dtype, np.floating):
        # Which decimal grid a float sits on is a choice the caller must state.
        raise PricingError(f"{what}: floats must be converted first with to_fixed(values=..., decimals=...)")
    decs = [to_decimal(value=v) for v in arr.reshape(-1)]
    return to_fixed(values=arr, decimals=decimals_needed(*decs) if decs else 0)


# ---------------------------------------------------------------------------------------------
# Exact charges and rounding


def round_to_quanta(*, amount: FixedArray, rule: RoundingRule) -> np.ndarray:
    """Exact amounts rounded once by `rule`, as integer counts of its quantum (int64 when they fit)."""
    qnum, qden = rule.quantum.as_integer_ratio()
    num_k, den = qden, 10**amount.decimals * qnum
    g = gcd(num_k, den)  # keeps EUR amounts from being multiplied by 100 only to be divided again
    num_k, den = num_k // g, den // g
    v = amount.values
    if num_k != 1:
        v = widen(v, absmax(v) * num_k) * num_k
    return narrow(round_div(v, den, rule.mode))


def _check_nonneg(q: FixedArray, what: str) -> None:
    if q.values.size and (q.values < 0).any():
        raise PricingError(f"{what} must not be negative ({int((q.values < 0).sum())} negative values)")


def _exceeds(v: np.ndarray, upper: int, last: Tier) -> None:
    over = v > upper
    if over.any():
        raise PricingError(f"{int(over.sum())} quantities exceed the last tier's upper bound {last.upper}")


def _exact_unit(q: FixedArray, price: Decimal) -> FixedArray:
    p_dec = decimals_needed(price)
    r = scaled_int(price, p_dec)
    v = widen(q.values, absmax(q.values) * max(r, 1))
    return FixedArray(v * r, q.decimals + p_dec)


def _tier_scales(q: FixedArray, tiers: Sequence[Tier]) -> tuple[int, int]:
    bounds = [t.lower for t in tiers] + [t.upper for t in tiers if t.upper is not None]
    prices = [t.unit_price for t in tiers] + [t.flat_fee for t in tiers]
    return max(q.decimals, decimals_needed(*bounds)), decimals_needed(*prices)


def _exact_graduated(q: FixedArray, tiers: Sequence[Tier]) -> FixedArray:
    qd, pd = _tier_scales(q, tiers)
    k = 10 ** (qd - q.decimals)
    rates = [scaled_int(t.unit_price, pd) for t in tiers]
    flats = [scaled_int(t.flat_fee, pd) * 10**qd for t in tiers]
    bounds = [scaled_int(t.upper, qd) for t in tiers if t.upper is not None]
    vmax = max(absmax(q.values), 1) * k
    bound = vmax * (max(rates) + 1) + sum(flats) + max(bounds, default=0)
    v = widen(q.values, bound)
    if k != 1:
        v = v * k
    if tiers[-1].upper is not None:
        _exceeds(v, scaled_int(tiers[-1].upper, qd), tiers[-1])
    total = np.zeros_like(v)
    for i, t in enumerate(tiers):
        lo = scaled_int(t.lower, qd)
        top = v if t.upper is None else np.minimum(v, constant_like(scaled_int(t.upper, qd), v))
        piece = top - lo if i == 0 else np.maximum(top - lo, constant_like(0, v))
        if rates[i]:
            total = total + piece * rates[i]
        if flats[i]:
            # Tier 0 is always reached (it holds q = 0); a later one once q exceeds its lower bound.
            total = total + (flats[i] if i == 0 else np.where(v > lo, constant_like(flats[i], v), constant_like(0, v)))
    return FixedArray(total, qd + pd)


def _exact_volume(q: FixedArray, tiers: Sequence[Tier]) -> FixedArray:
    qd, pd = _tier_scales(q, tiers)
    k = 10 ** (qd - q.decimals)
    rates = [scaled_int(t.unit_price, pd) for t in tiers]
    flats = [scaled_int(t.flat_fee, pd) * 10**qd for t in tiers]
    uppers = [scaled_int(t.upper, qd) for t in tiers if t.upper is not None]
    vmax = max(absmax(q.values), 1) * k
    bound = vmax * (max(rates) + 1) + max(flats) + max(uppers, default=0)
    v = widen(q.values, bound)
    if k != 1:
        v = v * k
    if tiers[-1].upper is not None:
        _exceeds(v, uppers[-1], tiers[-1])
    # Inclusive upper bounds: the tier is the first whose upper bound is ≥ q (searchsorted 'left').
    if v.dtype == object:
        idx = np.zeros(v.shape, dtype=np.intp)
        for u in uppers:
            idx += v > u
        rate_arr, flat_arr = np.array(rates, dtype=object), np.array(flats, dtype=object)
    else:
        idx = np.searchsorted(np.array(uppers, dtype=np.int64), v, side="left")
        rate_arr, flat_arr = np.array(rates, dtype=np.int64), np.array(flats, dtype=np.int64)
    total = v * rate_arr[idx]
    if any(flats):
        total = total + flat_arr[idx]
    return FixedArray(total, qd + pd)


def _exact_package(q: FixedArray, charge: PackageCharge) -> FixedArray:
    qd = max(q.decimals, decimals_needed(charge.package_size, charge.free_units))
    pd = decimals_needed(charge.package_price)
    k = 10 ** (qd - q.decimals)
    size, free = scaled_int(charge.package_size, qd), scaled_int(charge.free_units, qd)
    price = scaled_int(charge.package_price, pd)
    vmax = max(absmax(q.values), 1) * k
    bound = (vmax + free + size) * max(price, 1)
    v = widen(q.values, bound)
    if k != 1:
        v = v * k
    excess = np.maximum(v - free, constant_like(0, v))
    n = -((-excess) // size)  # ceiling division in integers
    return FixedArray(n * price, pd)


def exact_charge(*, quantity: FixedArray, charge: ChargeModel) -> FixedArray:
    """The exact (unrounded) amount of `charge` on every quantity, as fixed-point integers."""
    _check_nonneg(quantity, "quantities")
    if isinstance(charge, UnitCharge):
        return _exact_unit(quantity, charge.unit_price)
    if isinstance(charge, GraduatedCharge):
        return _exact_graduated(quantity, charge.tiers)
    if isinstance(charge, VolumeCharge):
        return _exact_volume(quantity, charge.tiers)
    if isinstance(charge, PackageCharge):
        return _exact_package(quantity, charge)
    raise PricingError(f"unknown charge model {charge!r}")


def charge_quanta(*, quantity: FixedArray, charge: ChargeModel, rule: RoundingRule) -> np.ndarray:
    """`charge` on every quantity, rounded once by `rule`, in quanta (cents for EUR)."""
    return round_to_quanta(amount=exact_charge(quantity=quantity, charge=charge), rule=rule)


# ---------------------------------------------------------------------------------------------
# Population assumptions


def assign_upgrades(*, account_ids: Sequence[str], conversion_rate: Decimal, salt: str) -> np.ndarray:
    """Per account, whether it converts under a freemium assumption (same hash as `charges.is_upgraded`)."""
    num, den = upgrade_ratio(conversion_rate=conversion_rate)
    limit = num << 64
    return np.fromiter(
        (account_hash(account_id=a, salt=salt) * den < limit for a in account_ids), dtype=bool, count=len(account_ids)
    )


# ---------------------------------------------------------------------------------------------
# Bills over arrays


@dataclass(frozen=True)
class BillArrays:
    """Bills of many account-periods: every line and the total as int64 counts of `rule.quantum`."""

    plan_key: str
    currency: str
    rule: RoundingRule
    lines: dict[str, np.ndarray]
    total: np.ndarray
    bundles: dict[str, np.ndarray] = field(default_factory=dict)

    def amount_at(self, key: str, index: Any) -> Decimal:
        """The Decimal amount of line `key` at `index`."""
        return self.rule.from_quanta(int(self.lines[key][index]))

    def total_at(self, index: Any) -> Decimal:
        """The Decimal total at `index`."""
        return self.rule.from_quanta(int(self.total[index]))


def _shape_of(x: Any) -> tuple[int, ...]:
    return x.shape if isinstance(x, FixedArray) else np.shape(x)


def _input(values: Mapping[str, Any] | None, key: str, what: str, comp: str, shape: tuple[int, ...]) -> FixedArray:
    if values is None or key not in values:
        raise PricingError(f"{what} has no {key!r} (component {comp!r}); give zeros explicitly for none")
    fx = _as_fixed(values[key], f"{what} {key!r}")
    _check_nonneg(fx, f"{what} {key!r}")
    if fx.shape != shape:
        fx = FixedArray(np.broadcast_to(fx.values, shape), fx.decimals)
    return fx


def _bundle_index(c: TieredSubscription, given: Any, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(given)
    if arr.dtype.kind in "UO":
        names = {t.name: i for i, t in enumerate(c.tiers)}
        try:
            arr = np.vectorize(names.__getitem__, otypes=[np.intp])(arr)
        except KeyError as e:
            raise PricingError(f"component {c.id!r} has no bundle {e.args[0]!r}") from None
    if not np.issubdtype(arr.dtype, np.integer):
        raise PricingError(f"bundles[{c.id!r}] must hold bundle names or indices")
    if arr.size and (arr.min() < 0 or arr.max() >= len(c.tiers)):
        raise PricingError(f"bundles[{c.id!r}] holds an index outside 0..{len(c.tiers) - 1}")
    return np.broadcast_to(arr, shape)


def bill_arrays(
    *,
    plan: Plan,
    usage: Mapping[str, Any],
    period_index: Any = None,
    outcomes: Mapping[str, Any] | None = None,
    uptime_pct: Any = None,
    upgrades: Mapping[str, Any] | None = None,
    account_ids: Sequence[str] | None = None,
    bundles: Mapping[str, Any] | None = None,
) -> BillArrays:
    """`charges.bill_period` over arrays: same inputs as arrays (axis 0 accounts, last axis periods)."""
    # Every array given shapes the population, read by this plan or not: a backtest passes the same
    # inputs to every plan, and a plan of fixed fees still bills every account-period.
    shapes = [_shape_of(v) for v in usage.values()] + [_shape_of(v) for v in (outcomes or {}).values()]
    if uptime_pct is not None:
        shapes.append(_shape_of(uptime_pct))
    shapes += [np.shape(v) for v in (upgrades or {}).values()] + [np.shape(v) for v in (bundles or {}).values()]
    if period_index is not None:
        shapes.append(np.shape(period_index))
    try:
        shape = np.broadcast_shapes(*shapes) if shapes else ()
    except ValueError as e:
        raise PricingError(f"input arrays do not broadcast together: {e}") from None
    if not shape:
        raise PricingError("cannot tell how many account-periods to bill: give array inputs or period_index")
    periods = np.broadcast_to(np.arange(shape[-1]) if period_index is None else np.asarray(period_index), shape)
    if not np.issubdtype(periods.dtype, np.integer) or (periods.size and periods.min() < 0):
        raise PricingError("period_index must hold integers ≥ 0")
    rule = plan.rounding
    mode = rule.mode
    uptime: FixedArray | None = None
    if uptime_pct is not None:
        uptime = _as_fixed(uptime_pct, "uptime_pct")
        if uptime.values.size and ((uptime.values < 0).any() or (uptime.values > 100 * 10**uptime.decimals).any()):
            raise PricingError("uptime_pct must be within [0, 100]")
        uptime = FixedArray(np.broadcast_to(uptime.values, shape), uptime.decimals)

    def full(n: int) -> np.ndarray:
        return np.full(shape, n, dtype=np.int64 if abs(n) <= INT64_MAX else object)

    lines: dict[str, np.ndarray] = {}
    chosen: dict[str, np.ndarray] = {}
    by_component: dict[str, list[str]] = {}
    for c in plan.components:
        if isinstance(c, UsageCharge):
            q = _input(usage, c.metric, "usage", c.id, shape)
            lines[f"{c.id}:usage"] = charge_quanta(quantity=q, charge=c.charge, rule=rule)
        elif isinstance(c, FlatFee):
            lines[f"{c.id}:fee"] = full(rule.to_quanta(c.fee))
        elif isinstance(c, OneTimeSale):
            price = constant_like(rule.to_quanta(c.price), periods)
            lines[f"{c.id}:sale"] = np.where(periods == 0, price, constant_like(0, periods))
        elif isinstance(c, TieredSubscription):
            if bundles is not None and c.id in bundles:
                idx = _bundle_index(c, bundles[c.id], shape)
            else:
                used = {f: _input(usage, f, "usage", c.id, shape).values > 0 for f in c.gated_features}
                idx = np.full(shape, len(c.tiers) - 1, dtype=np.intp)
                # Walk from the top bundle down so the cheapest covering bundle is written last.
                for i in range(len(c.tiers) - 1, -1, -1):
                    missing = [f for f in c.gated_features if f not in c.tiers[i].features]
                    covers = np.ones(shape, dtype=bool)
                    for f in missing:
                        covers &= ~used[f]
                    idx = np.where(covers, i, idx)
            chosen[c.id] = idx
            fees = np.array([rule.to_quanta(t.fee) for t in c.tiers], dtype=np.int64)
            lines[f"{c.id}:bundle"] = fees[idx]
        elif isinstance(c, Hybrid):
            q = _input(usage, c.metric, "usage", c.id, shape)
            qd = max(q.decimals, decimals_needed(c.included))
            q = to_fixed(values=q, decimals=qd)
            inc = scaled_int(c.included, qd)
            qv = widen(q.values, absmax(q.values) + inc)
            excess = np.maximum(qv - inc, constant_like(0, qv))
            lines[f"{c.id}:base"] = full(rule.to_quanta(c.base_fee))
            lines[f"{c.id}:overage"] = charge_quanta(quantity=FixedArray(excess, qd), charge=c.overage, rule=rule)
        elif isinstance(c, PerOutcome):
            n = _input(outcomes, c.outcome, "outcomes", c.id, shape)
            lines[f"{c.id}:outcomes"] = round_to_quanta(amount=_exact_unit(n, c.price_per_success), rule=rule)
        elif isinstance(c, UptimeSla):
            if uptime is None:
                raise PricingError(f"plan {plan.key} has an uptime SLA ({c.id!r}): give uptime_pct")
            fee = rule.to_quanta(c.fee)
            cd = decimals_needed(*(b.credit_pct for b in c.bands))
            ud = max(uptime.decimals, decimals_needed(*(b.uptime_below for b in c.bands)))
            u = to_fixed(values=uptime, decimals=ud).values
            pct = np.zeros(shape, dtype=np.int64)
            # Thresholds fall band by band, so "below" holds for a prefix: the last band it holds for wins.
            for b in c.bands:
                pct = np.where(u < scaled_int(b.uptime_below, ud), scaled_int(b.credit_pct, cd), pct)
            lines[f"{c.id}:fee"] = full(fee)
            num = widen(pct, abs(fee) * 100 * 10**cd) * fee
            lines[f"{c.id}:credit"] = -narrow(round_div(num, 100 * 10**cd, mode))
        elif isinstance(c, Freemium):
            if upgrades is not None and c.id in upgrades:
                up = np.broadcast_to(np.asarray(upgrades[c.id], dtype=bool), shape)
            elif account_ids is not None:
                flags = assign_upgrades(
                    account_ids=account_ids, conversion_rate=c.conversion_rate, salt=c.assignment_salt
                )
                if len(shape) == 0 or shape[0] != len(flags):
                    raise PricingError(f"{len(flags)} account_ids for arrays of shape {shape} (axis 0 = accounts)")
                up = np.broadcast_to(flags.reshape((-1,) + (1,) * (len(shape) - 1)), shape)
            else:
                raise PricingError(f"freemium component {c.id!r} needs upgrades[{c.id!r}] or account_ids")
            fee = constant_like(rule.to_quanta(c.premium_fee), up)
            lines[f"{c.id}:premium"] = np.where(up, fee, constant_like(0, up))
        elif isinstance(c, MinimumCommitment):
            lines[f"{c.id}:true_up"] = np.zeros(0)  # placeholder keeps line order; filled below
        else:  # pragma: no cover - the Component union is closed
            raise PricingError(f"unknown component {c!r}")
        by_component[c.id] = [k for k in lines if k.startswith(f"{c.id}:")]

    for c in plan.components:
        if isinstance(c, MinimumCommitment):
            covered = [
                o.id
                for o in plan.components
                if not isinstance(o, MinimumCommitment) and (c.applies_to is None or o.id in c.applies_to)
            ]
            keys = [k for cid in covered for k in by_component[cid]]
            spent = _sum([lines[k] for k in keys], shape)
            commit = rule.to_quanta(c.amount)
            lines[f"{c.id}:true_up"] = narrow(np.maximum(constant_like(commit, spent) - spent, constant_like(0, spent)))

    assert tuple(lines) == line_keys(plan=plan)
    lines = {k: np.broadcast_to(v, shape) if v.shape != shape else v for k, v in lines.items()}
    return BillArrays(plan.key, plan.currency, rule, lines, narrow(_sum(list(lines.values()), shape)), chosen)


def _sum(arrays: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    if not arrays:
        return np.zeros(shape, dtype=np.int64)
    bound = sum(absmax(a) for a in arrays)
    total = np.zeros(shape, dtype=object if bound >= LIMIT else np.int64)
    for a in arrays:
        total = total + (a.astype(object) if total.dtype == object and a.dtype != object else a)
    return total
