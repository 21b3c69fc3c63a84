"""The planted smart-capability ladder (issue 18): devices climb monitoring → control → optimisation → autonomy.

Seeing and operating the product (monitoring, control) are there from activation. Each higher level is reached by
a planted share of the devices that reached the level below (LEVEL_SHARE, hash-drawn per device, so the rest of the
simulation keeps its random streams), on a day drawn uniformly after the level below and within CLIMB_BY of the
device's timeline; the others never unlock it. Until a level is unlocked the device uses no touchpoint of it: such
a use becomes the heaviest unlocked session touchpoint of the same category (else of the product) — the thermostat
heats under manual control until its owner turns on the autonomous mode. A *planted climber* unlocks every level
its product offers, and its churn hazards (drawn up front and from experience) are CLIMBER_CHURN_FACTOR times the
others'; it churns less by that factor (the planted effect the ladder
measure must recover; planted churn starts at ≥ 45 % of the timeline, after every unlock)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cxp.device_sim.specs import Product, Touchpoint

LEVELS = ("monitoring", "control", "optimisation", "autonomy")
START_LEVELS = ("monitoring", "control")
LEVEL_SHARE = {"optimisation": 0.6, "autonomy": 0.6}  # of the devices that reached the level below
CLIMBER_CHURN_FACTOR = 0.3
CLIMB_BY = 0.4  # share of the device's timeline within which the levels it reaches unlock
NEVER = math.inf


def _unit(*parts: object) -> float:
    from cxp.device_sim.fleet import unit_hash  # fleet imports this module

    return unit_hash(*parts)


def unlock_days(*, seed: int, device_id: str, timeline_days: float) -> dict[str, float]:
    """Days from the device's timeline start until each level is unlocked (inf: never)."""
    days = dict.fromkeys(START_LEVELS, 0.0)
    t = 0.0
    for level in LEVELS[len(START_LEVELS) :]:
        if t == NEVER or _unit(seed, "ladder", device_id, level) >= LEVEL_SHARE[level]:
            t = NEVER
        else:
            t += _unit(seed, "ladder-day", device_id, level) * (CLIMB_BY * timeline_days - t)
        days[level] = t
    return days


def offered_levels(product: Product) -> tuple[str, ...]:
    """The levels of the product's session touchpoints, in ladder order."""
    have = {t.capability for t in product.touchpoints if t.trigger == "session"}
    return tuple(lv for lv in LEVELS if lv in have)


def planted_climber(*, product: Product, unlocks: dict[str, float]) -> bool:
    """Whether the device unlocks every level its product offers."""
    return all(unlocks[lv] != NEVER for lv in offered_levels(product))


@dataclass(slots=True)
class DeviceLadder:
    """One device's unlock times (epoch ms) and, per set of unlocked levels, where a locked use goes instead."""

    unlock_ms: dict[str, int]
    session: Sequence[Touchpoint]
    climber: bool  # a planted climber: its churn hazards (up front and from experience) × CLIMBER_CHURN_FACTOR
    _maps: dict[frozenset[str], dict[str, Touchpoint]] = field(default_factory=dict)

    def resolve(self, tp: Touchpoint, ts: int) -> Touchpoint:
        """The touchpoint actually used at `ts` for the drawn `tp`."""
        if self.unlock_ms[tp.capability] <= ts:
            return tp
        unlocked = frozenset(lv for lv, at in self.unlock_ms.items() if at <= ts)
        moves = self._maps.get(unlocked)
        if moves is None:
            moves = self._maps[unlocked] = _substitutes(self.session, unlocked)
        return moves.get(tp.name, tp)


def _substitutes(session: Sequence[Touchpoint], unlocked: frozenset[str]) -> dict[str, Touchpoint]:
    usable = sorted((t for t in session if t.capability in unlocked), key=lambda t: -t.weight)
    out = {}
    for t in session:
        if t.capability in unlocked or not usable:
            continue
        out[t.name] = next((u for u in usable if u.category == t.category), usable[0])
    return out


def device_ladder(
    *, seed: int, device_id: str, product: Product, t0_ms: int, end_ms: int, session: Sequence[Touchpoint]
) -> DeviceLadder:
    """The ladder of one device whose timeline runs from `t0_ms` to `end_ms`."""
    days = unlock_days(seed=seed, device_id=device_id, timeline_days=(end_ms - t0_ms) / 86_400_000)
    unlock = {lv: t0_ms + int(d * 86_400_000) if math.isfinite(d) else 2**62 for lv, d in days.items()}
    return DeviceLadder(unlock, session, planted_climber(product=product, unlocks=days))


def ladder_truth(fleet: Any) -> list[dict[str, Any]]:
    """Per device of a fleet built with `ladder=True`: unlock days per level and whether it is a planted climber."""
    from cxp.device_sim.fleet import to_ms

    rows = []
    end = to_ms(fleet.end)
    for d in fleet.devices:
        product = fleet.product_of(d)
        t0 = max(to_ms(d.activated_at), to_ms(fleet.start))
        timeline = (end - t0) / 86_400_000
        unlocks = unlock_days(seed=fleet.seed, device_id=d.device_id, timeline_days=timeline)
        rows.append(
            {
                "device_id": d.device_id,
                "product_id": d.product,
                **{f"unlock_{lv}": unlocks[lv] for lv in LEVELS},
                "top_level": offered_levels(product)[-1],
                "timeline_days": timeline,
                "planted_climber": planted_climber(product=product, unlocks=unlocks),
            }
        )
    return rows
