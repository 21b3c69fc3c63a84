"""Hypothesis strategies: tier tables, charge models, rounding rules, plans and their inputs."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
from hypothesis import strategies as st

from cxp.pricing.core import (
    GraduatedCharge,
    PackageCharge,
    Plan,
    RoundingMode,
    RoundingRule,
    Tier,
    UnitCharge,
    VolumeCharge,
)


def decimals(max_value: int | str, places: int, min_value: int | str = 0) -> st.SearchStrategy[Decimal]:
    """Finite Decimals with at most `places` decimals in [min_value, max_value]."""
    return st.decimals(
        min_value=Decimal(min_value), max_value=Decimal(max_value), places=places, allow_nan=False, allow_infinity=False
    )


prices = st.integers(0, 6).flatmap(lambda p: decimals(50, p))


@st.composite
def tier_tables(draw, bounded_last: bool | None = False) -> tuple[Tier, ...]:
    """1–6 contiguous tiers with bounds of up to 3 decimals and prices of up to 6."""
    n = draw(st.integers(1, 5))
    bounds = sorted(set(draw(st.lists(decimals(5000, draw(st.integers(0, 3)), "0.001"), min_size=n, max_size=n))))
    last_bounded = draw(st.booleans()) if bounded_last is None else bounded_last
    if last_bounded:
        lowers, uppers = [Decimal(0), *bounds[:-1]], list(bounds)
    else:
        lowers, uppers = [Decimal(0), *bounds], [*bounds, None]
    flats = st.one_of(st.just(Decimal(0)), decimals(20, 2))
    return tuple(
        Tier(lower=lo, upper=up, unit_price=draw(prices), flat_fee=draw(flats))
        for lo, up in zip(lowers, uppers, strict=True)
    )


@st.composite
def charge_models(draw):
    """Any charge model with random parameters (tier tables unbounded at the top)."""
    kind = draw(st.sampled_from(["unit", "graduated", "volume", "package"]))
    if kind == "unit":
        return UnitCharge(unit_price=draw(prices))
    if kind == "graduated":
        return GraduatedCharge(tiers=draw(tier_tables()))
    if kind == "volume":
        return VolumeCharge(tiers=draw(tier_tables()))
    return PackageCharge(
        package_size=draw(decimals(500, draw(st.integers(0, 3)), "0.001")),
        package_price=draw(prices),
        free_units=draw(decimals(300, draw(st.integers(0, 2)))),
    )


rounding_rules = st.builds(
    RoundingRule,
    quantum=st.sampled_from([Decimal("0.01"), Decimal("1"), Decimal("0.001"), Decimal("0.05"), Decimal("10")]),
    mode=st.sampled_from(list(RoundingMode)),
)


def quantity_values(tiers: tuple[Tier, ...] = ()) -> st.SearchStrategy[Decimal]:
    """Quantities of up to 4 decimals, biased towards tier bounds and just above them."""
    edges = [t.upper for t in tiers if t.upper is not None]
    near = [e + d for e in edges for d in (Decimal(0), Decimal("0.001"), Decimal("0.0001"))]
    spread = st.integers(0, 4).flatmap(lambda p: decimals(12000, p))
    return st.one_of(spread, st.sampled_from(near)) if near else spread


# ---- whole plans ----------------------------------------------------------------------------

METRICS = ("m1", "m2")
FEATURES = ("f1", "f2", "f3")


@st.composite
def components(draw, idx: int) -> dict:
    """One random component (as plan data) with id c<idx>."""
    cid = f"c{idx}"
    kind = draw(
        st.sampled_from(
            [
                "usage",
                "usage",
                "flat_fee",
                "one_time_sale",
                "hybrid",
                "per_outcome",
                "uptime_sla",
                "freemium",
                "tiered_subscription",
                "minimum_commitment",
            ]
        )
    )
    money = decimals(200, draw(st.integers(0, 4)))
    if kind == "usage":
        return {
            "kind": kind,
            "id": cid,
            "metric": draw(st.sampled_from(METRICS)),
            "charge": draw(charge_models()).model_dump(),
        }
    if kind == "flat_fee":
        return {"kind": kind, "id": cid, "fee": draw(money)}
    if kind == "one_time_sale":
        return {"kind": kind, "id": cid, "price": draw(money)}
    if kind == "hybrid":
        return {
            "kind": kind,
            "id": cid,
            "metric": draw(st.sampled_from(METRICS)),
            "base_fee": draw(money),
            "included": draw(decimals(3000, draw(st.integers(0, 3)))),
            "overage": draw(charge_models()).model_dump(),
        }
    if kind == "per_outcome":
        return {"kind": kind, "id": cid, "outcome": "o1", "price_per_success": draw(prices)}
    if kind == "uptime_sla":
        n = draw(st.integers(1, 3))
        thresholds = sorted(set(draw(st.lists(decimals(100, 3, "50"), min_size=n, max_size=n))), reverse=True)
        credits = sorted(
            draw(st.lists(decimals(100, draw(st.integers(0, 2))), min_size=len(thresholds), max_size=len(thresholds)))
        )
        return {
            "kind": kind,
            "id": cid,
            "fee": draw(money),
            "bands": [{"uptime_below": t, "credit_pct": c} for t, c in zip(thresholds, credits, strict=True)],
        }
    if kind == "freemium":
        return {"kind": kind, "id": cid, "premium_fee": draw(money), "conversion_rate": draw(decimals(1, 2))}
    if kind == "tiered_subscription":
        n = draw(st.integers(1, 3))
        fees = sorted(draw(st.lists(money, min_size=n, max_size=n)))
        return {
            "kind": kind,
            "id": cid,
            "tiers": [
                {"name": f"b{i}", "fee": f, "features": draw(st.lists(st.sampled_from(FEATURES), unique=True))}
                for i, f in enumerate(fees)
            ],
        }
    return {"kind": kind, "id": cid, "amount": draw(money)}


@st.composite
def plans(draw) -> Plan:
    """A plan of 1–5 random components in a random currency and rounding mode."""
    n = draw(st.integers(1, 5))
    comps = [draw(components(i)) for i in range(n)]
    for c in comps:
        if c["kind"] == "minimum_commitment" and draw(st.booleans()):
            others = [o["id"] for o in comps if o["kind"] != "minimum_commitment"]
            c["applies_to"] = draw(st.lists(st.sampled_from(others), unique=True)) if others else []
    currency, quantum = draw(st.sampled_from([("EUR", None), ("JPY", None), ("BHD", None), ("CHF", "0.05")]))
    return Plan(
        plan_id="rnd",
        version=1,
        name="random",
        currency=currency,
        quantum=quantum,
        rounding_mode=draw(st.sampled_from(list(RoundingMode))),
        components=comps,
    )


def random_inputs(rng: np.random.Generator, shape: tuple[int, int], qdec: int) -> dict:
    """Random array inputs for `plans()`: usage with `qdec` decimals, counts, uptime, upgrades."""

    def qty(scale: float) -> np.ndarray:
        kind = rng.integers(0, 3, size=shape)
        v = np.where(kind == 0, 0, rng.integers(0, int(scale * 10**qdec), size=shape))
        return v.astype(np.int64)

    return {
        "usage": {
            **{m: (qty(12000), qdec) for m in METRICS},
            **{f: (rng.integers(0, 2, size=shape), 0) for f in FEATURES},
        },
        "outcomes": {"o1": (rng.integers(0, 500, size=shape), 0)},
        "uptime": (rng.integers(90_000, 100_001, size=shape), 3),
        "upgrades": rng.random(shape[0]) < 0.5,
    }
