"""Planted experience truth: each touchpoint's Kano class and its effects on satisfaction and the churn hazard."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from cxp.device_sim.fleet import unit_hash
from cxp.device_sim.specs import Product

KanoClass = Literal["basic", "performance", "attractive", "indifferent"]
KANO_CLASSES: tuple[KanoClass, ...] = ("basic", "performance", "attractive", "indifferent")

# Class of each touchpoint name across the catalogue; a name not listed is indifferent.
# Basic: the job the product is bought for and the chores that keep it working (a failed lock or descale
# hurts, a working one is taken for granted). Attractive: extras nobody expects.
KANO_BY_TOUCHPOINT: dict[str, KanoClass] = {
    "heating_cycle": "basic",
    "ride": "basic",
    "brew": "basic",
    "lock": "basic",
    "charge": "basic",
    "descale": "basic",
    "app_pairing": "basic",
    "firmware_update": "basic",
    "set_temperature": "performance",
    "navigation": "performance",
    "remote_brew": "performance",
    "service_booking": "performance",
    "support_chat": "performance",
    "plan_checkout": "performance",
    "set_schedule": "attractive",
    "demand_response": "attractive",
    "voice_command": "attractive",
    "recipe_browse": "attractive",
    "bean_reorder": "attractive",
}

# Per class: CSAT points lost by a failure, CSAT points gained by a success, daily churn hazard of a recent failure
# (see `churn_hazard`: the hazard saturates in repeated failures).
_CLASS_EFFECTS: dict[KanoClass, tuple[float, float, float]] = {
    "basic": (1.6, 0.05, 0.03),
    "performance": (0.8, 0.4, 0.01),
    "attractive": (0.15, 0.8, 0.002),
    "indifferent": (0.0, 0.0, 0.0),
}
# The no-effect CSAT level sits this far below the persona mean, so a delighter's reward is not clipped at 5.
CSAT_NEUTRAL_SHIFT = 0.4
NPS_NEUTRAL_SHIFT = 1.0
# NPS points per CSAT point of a touchpoint effect (NPS is on 0–10, CSAT on 1–5).
NPS_PER_CSAT = 1.0
CES_PER_CSAT = 1.2
# Churn hazard terms besides touchpoint failures: per recent incident error and per recent support contact.
HAZARD_PER_INCIDENT_ERROR = 0.03
HAZARD_PER_SUPPORT_CONTACT = 0.03
# Share of uses followed by an in-app prompt (a transactional CSAT survey about that touchpoint), after a
# success and after a failure: apps ask more after something went wrong, so compare answers per outcome.
PROMPT_PROB = (0.04, 0.5)
# Share of device-days with an in-app feature survey: CSAT about a touchpoint drawn from the product's catalogue,
# whether or not it was used that day (so answers without a recent use give the neutral level).
FEATURE_SURVEY_PROB = 0.06
# The service recovery paradox (fleet.recovery_paradox): a device whose incident failure was mild (at most
# PARADOX_MILD_FAILURES failed uses) and whose recovery was excellent (its own outage, from its first failure in
# the incident to its recovery, within fleet.EXCELLENT_RECOVERY_H hours) answers PARADOX_LIFT CSAT points (NPS: ×
# NPS_PER_CSAT, CES: × CES_PER_CSAT) higher for PARADOX_DAYS days after the recovery. Satisfaction only: the churn
# hazard does not change (the evidence does not carry over to repurchase).
PARADOX_MILD_FAILURES = 2
PARADOX_LIFT = 0.8
PARADOX_DAYS = 28
# Daily decay of a customer's habituation to a touchpoint's failures (the recent failure counts decay by 0.75).
HABIT_DECAY = 0.97
# After the decision to leave, usage fades for 4–14 days before the device churns.
CHURN_LEAD_DAYS = (4.0, 14.0)


@dataclass(frozen=True, slots=True)
class TouchpointTruth:
    """A touchpoint's planted class and effect sizes (CSAT points; daily churn hazard per recent failure)."""

    product: str
    touchpoint: str
    kano: KanoClass
    fail_penalty: float
    success_reward: float
    churn_hazard: float

    @property
    def importance(self) -> float:
        """The planted importance: the spread between a failure and a success on satisfaction."""
        return self.fail_penalty + self.success_reward

    def as_dict(self) -> dict[str, Any]:
        """Plain-data view for storage."""
        return {
            "product": self.product,
            "touchpoint": self.touchpoint,
            "kano": self.kano,
            "fail_penalty": self.fail_penalty,
            "success_reward": self.success_reward,
            "churn_hazard": self.churn_hazard,
        }


def touchpoint_truth(product: Product) -> dict[str, TouchpointTruth]:
    """The planted class and effects of each of the product's touchpoints (a catalogue property, seed-free)."""
    out = {}
    for t in product.touchpoints:
        kano = KANO_BY_TOUCHPOINT.get(t.name, "indifferent")
        penalty, reward, hazard = _CLASS_EFFECTS[kano]
        # Magnitudes vary ±20 % by (product, touchpoint) so that importance has a ranking within a class.
        m = 0.8 + 0.4 * unit_hash("kano", product.model, t.name)
        out[t.name] = TouchpointTruth(
            product.model, t.name, kano, round(penalty * m, 3), round(reward * m, 3), round(hazard * m, 5)
        )
    return out


def churn_hazard(
    *,
    truth: dict[str, TouchpointTruth],
    recent_err: dict[str, float],
    habit: dict[str, float],
    recent_incident: float,
    recent_support: float,
    sensitivity: float,
) -> tuple[float, dict[str, float]]:
    """The day's churn probability and the terms that drove it (touchpoint names, `incidents`, `support`).

    A touchpoint's term saturates in repeated failures: h_k · min(e_k, 1) / max(1, a_k), with e_k its recent
    failures (decaying 25 %/day) capped at one, and a_k the customer's habituation, the same count decaying
    only 3 %/day: a first failure weighs fully, a touchpoint that keeps failing becomes what the customer
    expects and weighs less and less (those who could not stand it have left). Incidents and support contacts
    are capped at one likewise.
    """
    terms: dict[str, float] = {}
    for name, n in recent_err.items():
        tt = truth.get(name)
        if tt is not None and tt.churn_hazard > 0 and n > 0.01:
            terms[name] = sensitivity * tt.churn_hazard * min(n, 1.0) / max(1.0, habit.get(name, 0.0))
    if recent_incident > 0.01:
        terms["incidents"] = sensitivity * HAZARD_PER_INCIDENT_ERROR * min(recent_incident, 1.0)
    if recent_support > 0.01:
        terms["support"] = sensitivity * HAZARD_PER_SUPPORT_CONTACT * min(recent_support, 1.0)
    h = sum(terms.values())
    return 1.0 - math.exp(-h), terms
