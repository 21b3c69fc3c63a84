"""Customer personas: how often people use their product, what they use, how they rate it, whether they leave."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from cxp.device_sim.errors import ConfigError
from cxp.device_sim.specs import CATEGORIES


@dataclass(frozen=True, slots=True)
class Persona:
    """A behavioural archetype; rhythms are factors on the product's own rhythm.

    A device's chance of being used on a day is product.expected_active_days_per_week / 7 ·
    `active_day_factor`; on an active day it averages product.uses_per_active_day · `uses_factor` uses.
    """

    name: str
    description: str
    share: float
    active_day_factor: float
    uses_factor: float
    # Touchpoint category → weight multiplier in the daily usage mix.
    feature_mix: Mapping[str, float]
    error_proneness: float
    survey_prob_week: float
    nps_mean: float
    nps_sd: float
    csat_mean: float
    csat_sd: float
    ces_mean: float
    ces_sd: float
    # Score points (NPS scale; CSAT/CES scaled down) lost per recent error the customer experienced.
    error_sensitivity: float
    churn_prob: float
    # Share of churners who cancel explicitly (`cancelled`); the rest just stop using the product.
    cancel_share: float
    referral_prob_week: float
    plan_change_prob_week: float
    upgrade_share: float
    # Chance of contacting support after an error (scaled by its severity).
    support_propensity: float

    def __post_init__(self) -> None:
        unknown = set(self.feature_mix) - set(CATEGORIES)
        if unknown:
            raise ConfigError(f"persona {self.name}: unknown feature categories {sorted(unknown)}")
        probs = (
            self.survey_prob_week,
            self.churn_prob,
            self.cancel_share,
            self.referral_prob_week,
            self.plan_change_prob_week,
            self.upgrade_share,
            self.support_propensity,
        )
        if any(not 0.0 <= p <= 1.0 for p in probs):
            raise ConfigError(f"persona {self.name}: probabilities must be within [0, 1]")
        if self.share < 0 or self.active_day_factor < 0 or self.uses_factor < 0:
            raise ConfigError(f"persona {self.name}: share and factors must be non-negative")

    def mix(self, category: str) -> float:
        """Weight multiplier for touchpoints of `category`."""
        return self.feature_mix.get(category, 1.0)


def _mix(**weights: float) -> Mapping[str, float]:
    return MappingProxyType(dict(weights))


POWER_USER = Persona(
    name="power_user",
    description="Uses the product daily and explores every feature; rates it highly and recommends it.",
    share=0.15,
    active_day_factor=1.15,
    uses_factor=1.8,
    feature_mix=_mix(core=1.0, extra=1.8, app=1.5, service=1.0),
    error_proneness=1.0,
    survey_prob_week=0.35,
    nps_mean=9.0,
    nps_sd=1.0,
    csat_mean=4.5,
    csat_sd=0.6,
    ces_mean=6.0,
    ces_sd=0.8,
    error_sensitivity=0.6,
    churn_prob=0.03,
    cancel_share=0.7,
    referral_prob_week=0.06,
    plan_change_prob_week=0.02,
    upgrade_share=0.8,
    support_propensity=0.3,
)

ROUTINE_USER = Persona(
    name="routine_user",
    description="Sticks to the core job on a steady rhythm; satisfied, rarely explores.",
    share=0.40,
    active_day_factor=1.0,
    uses_factor=1.0,
    feature_mix=_mix(core=1.2, extra=0.8, app=0.8, service=1.0),
    error_proneness=0.9,
    survey_prob_week=0.20,
    nps_mean=8.2,
    nps_sd=1.3,
    csat_mean=4.3,
    csat_sd=0.7,
    ces_mean=5.6,
    ces_sd=1.0,
    error_sensitivity=0.8,
    churn_prob=0.05,
    cancel_share=0.6,
    referral_prob_week=0.015,
    plan_change_prob_week=0.01,
    upgrade_share=0.6,
    support_propensity=0.25,
)

CASUAL = Persona(
    name="casual",
    description="Uses the product now and then, mostly the core feature; lukewarm, rarely answers surveys.",
    share=0.30,
    active_day_factor=0.5,
    uses_factor=0.7,
    feature_mix=_mix(core=1.0, extra=0.5, app=0.6, service=1.0),
    error_proneness=1.0,
    survey_prob_week=0.10,
    nps_mean=7.2,
    nps_sd=1.8,
    csat_mean=4.0,
    csat_sd=0.8,
    ces_mean=5.2,
    ces_sd=1.1,
    error_sensitivity=1.0,
    churn_prob=0.12,
    cancel_share=0.5,
    referral_prob_week=0.005,
    plan_change_prob_week=0.005,
    upgrade_share=0.4,
    support_propensity=0.15,
)

FADING = Persona(
    name="fading",
    description="At risk: more trouble than others, unhappy, calls support; most drift away.",
    share=0.15,
    active_day_factor=0.8,
    uses_factor=0.9,
    feature_mix=_mix(core=1.0, extra=0.6, app=0.7, service=1.3),
    error_proneness=1.4,
    survey_prob_week=0.15,
    nps_mean=5.8,
    nps_sd=2.0,
    csat_mean=3.5,
    csat_sd=0.9,
    ces_mean=4.4,
    ces_sd=1.3,
    error_sensitivity=1.5,
    churn_prob=0.55,
    cancel_share=0.6,
    referral_prob_week=0.001,
    plan_change_prob_week=0.01,
    upgrade_share=0.15,
    support_propensity=0.35,
)

PERSONAS: tuple[Persona, ...] = (POWER_USER, ROUTINE_USER, CASUAL, FADING)


def personas_by_name(personas: Sequence[Persona] = PERSONAS) -> dict[str, Persona]:
    """Personas keyed by name; rejects duplicates and an all-zero mix."""
    out: dict[str, Persona] = {}
    for p in personas:
        if p.name in out:
            raise ConfigError(f"duplicate persona {p.name!r}")
        out[p.name] = p
    if not out or sum(p.share for p in out.values()) <= 0:
        raise ConfigError("personas need a positive total share")
    return out
