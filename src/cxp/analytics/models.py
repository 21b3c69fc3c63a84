"""Typed results of the analytics services: frozen dataclasses holding plain values (None, never NaN)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

from cxp.analytics.lazy_rows import LazyRows

Level = Literal["device", "account", "product", "fleet"]


@dataclass(frozen=True)
class Window:
    """The UTC days an answer covers (both ends inclusive) and the day it is "as of"."""

    start: date
    end: date
    as_of: date


# ---------------------------------------------------------------- health


@dataclass(frozen=True)
class Driver:
    """One component's pull on the score: (component − segment median) × its effective weight, in score points."""

    component: str
    score: float
    segment_median: float
    weight: float
    contribution: float


@dataclass(frozen=True)
class HealthScore:
    """Experience Health Score of one entity in one period, with components, drivers and trend."""

    level: Level
    entity_id: str
    period_start: date
    period_end: date
    product_id: str | None
    segment: str | None
    devices: int
    score: float | None
    band: str | None
    capped: bool
    score_uncapped: float | None
    components: dict[str, float | None]
    weights: dict[str, float | None]
    sub_scores: dict[str, float | None]
    drivers: tuple[Driver, ...]
    top_negative_drivers: tuple[str, ...]
    previous_score: float | None
    delta: float | None
    arrow: str | None
    reason: str | None = None
    # A week that the window covers only in part (data began mid-week, or the window ends mid-week): its
    # score is not comparable with whole weeks, so charts mark or leave it out.
    partial: bool = False


@dataclass(frozen=True)
class HealthReport:
    """Scores of every entity × period (ordered by entity, then period) and what they were computed from."""

    level: Level
    grain: Literal["day", "week"]
    window: Window
    source: Literal["rollups", "raw"]
    scores: Sequence[HealthScore]  # a tuple, or LazyRows built on access
    reason: str | None = None

    def _entity_ids(self) -> Sequence[str]:
        return self.scores.keys if isinstance(self.scores, LazyRows) else [s.entity_id for s in self.scores]

    def latest(self) -> Sequence[HealthScore]:
        """The last period's score of each entity (built as read, like the scores)."""
        last: dict[str, int] = {}
        for i, entity_id in enumerate(self._entity_ids()):
            last[entity_id] = i
        rows = list(last.values())
        return LazyRows(list(last), lambda j: self.scores[rows[j]])

    def history(self, entity_id: str) -> tuple[HealthScore, ...]:
        """One entity's scores, oldest first."""
        return tuple(self.scores[i] for i, e in enumerate(self._entity_ids()) if e == entity_id)

    def get(self, entity_id: str) -> HealthScore | None:
        """The latest score of one entity, or None."""
        hist = self.history(entity_id)
        return hist[-1] if hist else None


# ---------------------------------------------------------------- voice of the customer


@dataclass(frozen=True)
class Measure:
    """One survey measure for one group: NPS (−100..100), CSAT (% top-2-box) or CES (mean 1..7), with n and 95% CI."""

    measure: Literal["nps", "csat", "ces"]
    scale: str
    n: int
    value: float | None
    margin: float | None
    ci_low: float | None
    ci_high: float | None
    promoters_pct: float | None = None
    detractors_pct: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class VoiceGroup:
    """NPS, CSAT and CES of one group (keys: the grouping columns asked for); a measure without answers is None."""

    key: dict[str, str]
    nps: Measure | None
    csat: Measure | None
    ces: Measure | None


@dataclass(frozen=True)
class VoiceReport:
    """Voice of the customer per group and overall; scales are never mixed."""

    window: Window
    by: tuple[str, ...]
    overall: VoiceGroup
    groups: tuple[VoiceGroup, ...]


# ---------------------------------------------------------------- touchpoints


@dataclass(frozen=True)
class TouchpointInsight:
    """One touchpoint of one product: reach, use, reliability, latency, importance, IPA quadrant and Kano-like class."""

    product_id: str
    touchpoint: str
    journey_stage: str
    owner: str
    is_core: bool
    devices: int
    reach: float | None
    uses: int
    usage_share: float | None
    success_rate: float | None
    success_ci_low: float | None
    success_ci_high: float | None
    errors: int
    mean_latency_ms: float | None
    target_latency_ms: float | None
    latency_vs_target: float | None
    performance: float | None
    importance_usage: float | None
    importance_retention: float | None
    importance_feedback: float | None
    rho_retention: float | None
    rho_feedback: float | None
    n_retention: int
    n_feedback: int
    importance: float | None
    importance_basis: str
    quadrant: str | None
    classification: str | None
    penalty: float | None
    reward: float | None
    n_low: int | None
    n_high: int | None
    reason: str | None = None
    # answers without a recent use of the touchpoint in the product (the neutral level penalty and reward are from)
    n_middle: int | None = None
    # derived importance: satisfaction spread between a failed and a successful use (CSAT points) with its 95 % CI
    spread: float | None = None
    spread_ci_low: float | None = None
    spread_ci_high: float | None = None


@dataclass(frozen=True)
class OutcomeModel:
    """How well touchpoint performance explains one outcome in one product (R², n, p-value of the overall F test)."""

    product_id: str
    outcome: str
    n_devices: int
    r2: float | None
    p_value: float | None
    significant: bool
    method: str | None
    reason: str | None = None


@dataclass(frozen=True)
class SurveyPoint:
    """A touchpoint's stated importance and quality from a questionnaire, with its IPA quadrant on the survey scale."""

    product_id: str
    touchpoint: str
    importance: float
    quality: float
    respondents: int
    scale_min: float
    scale_max: float
    quadrant: str | None


@dataclass(frozen=True)
class TouchpointReport:
    """Every touchpoint with its figures, the outcome models behind derived importance, and the IPA crosshairs;
    beside them the stated importance × quality survey, placed with its own crosshairs (`survey_crosshair_basis`)."""

    window: Window
    touchpoints: tuple[TouchpointInsight, ...]
    models: tuple[OutcomeModel, ...]
    crosshairs: dict[str, tuple[float | None, float | None]]
    definitions: dict[str, str] = field(default_factory=dict)
    survey: tuple[SurveyPoint, ...] = ()
    survey_crosshairs: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    survey_crosshair_basis: str | None = None

    def for_product(self, product_id: str) -> tuple[TouchpointInsight, ...]:
        """The touchpoints of one product."""
        return tuple(t for t in self.touchpoints if t.product_id == product_id)


# ---------------------------------------------------------------- journey


@dataclass(frozen=True)
class StageCount:
    """Devices that reached a journey stage (and every stage before it), with conversions (0–1)."""

    stage: str
    devices: int
    conversion_from_previous: float | None
    conversion_from_start: float | None


@dataclass(frozen=True)
class Cohort:
    """One activation cohort (calendar week) through the funnel."""

    cohort: str
    age_days: int
    mature: bool
    registered: int
    activated: int
    first_core_use: int
    habitual: int
    churned: int | None
    conv_activated: float | None
    conv_first_core_use: float | None
    conv_habitual: float | None
    churn_rate: float | None


@dataclass(frozen=True)
class TimeToValueStats:
    """Time from activation to the first successful core use, in hours, for one product (or all)."""

    product_id: str
    n_activated: int
    n_reached: int
    share_reached: float | None
    median_h: float | None
    p90_h: float | None
    mean_h: float | None
    reason: str | None = None


@dataclass(frozen=True)
class JourneyReport:
    """Lifecycle funnel of the devices activated in the window, per cohort, with time to first value."""

    window: Window
    stages: tuple[StageCount, ...]
    churned: int | None
    churn_rate: float | None
    cohorts: tuple[Cohort, ...]
    time_to_value: tuple[TimeToValueStats, ...]
    definitions: dict[str, str]
    reason: str | None = None


# ---------------------------------------------------------------- disruptions


@dataclass(frozen=True)
class Disruption:
    """A fleet incident: overlapping error episodes on one product/touchpoint/code, with its recovery times."""

    product_id: str
    touchpoint: str
    code: str
    start: datetime
    end: datetime
    open: bool
    devices_affected: int
    share_of_product: float | None
    episodes: int
    errors: int
    recovered_episodes: int
    median_recovery_s: float | None
    p90_recovery_s: float | None
    # when the last affected device recovered, minus `start` (None while a device has not)
    time_to_recovery_s: float | None = None
    never_recovered_episodes: int = 0
    users: int = 0  # device-hours of use of the touchpoint in the anomalous hours
    error_rate: float | None = None  # share of those device-hours with the incident's error
    baseline_rate: float | None = None  # the key's pooled rate (core incidents)


@dataclass(frozen=True)
class RecoveryTimes:
    """Time to recovery (seconds) over recovered error episodes, with the count that did not recover."""

    scope: str
    episodes: int
    recovered: int
    not_recovered: int
    median_s: float | None
    p90_s: float | None
    mean_s: float | None
    never_recovered: int = 0  # no recovery and no later successful use, last error > 24 h before the window end
    unconfirmed: int = 0  # device-level faults (no touchpoint) that no recovery report closed


@dataclass(frozen=True)
class Spike:
    """A day whose error count exceeded its product's trailing baseline."""

    product_id: str
    day: date
    errors: int
    baseline: float
    threshold: float
    excess: float


@dataclass(frozen=True)
class EffectGroup:
    """Later usage and satisfaction of one group of devices (none / fast recovery / slow recovery)."""

    group: str
    devices: int
    usage_n: int
    usage_change_mean: float | None
    nps_n: int
    nps: float | None
    nps_margin: float | None
    csat_n: int
    csat: float | None
    csat_margin: float | None


@dataclass(frozen=True)
class EffectComparison:
    """Difference a − b of one metric with its 95% CI."""

    metric: str
    a: str
    b: str
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    n_a: int
    n_b: int
    reason: str | None = None


@dataclass(frozen=True)
class ParadoxEstimate:
    """The recovery paradox on one metric: excellent-recovery − undisrupted difference of satisfaction changes."""

    metric: str  # "csat" (1–5 answers) or "nps" (0–10 answers)
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    n_excellent: int
    n_none: int
    products: str
    reason: str | None = None


@dataclass(frozen=True)
class DisruptionReport:
    """Incidents, recovery times, error spikes and the effect of disruption and recovery on later behaviour."""

    window: Window
    incidents: tuple[Disruption, ...]
    recovery: tuple[RecoveryTimes, ...]
    spikes: tuple[Spike, ...]
    fast_recovery_s: float | None
    effect_groups: tuple[EffectGroup, ...]
    effect_comparisons: tuple[EffectComparison, ...]
    recovery_paradox: str
    definitions: dict[str, str]
    reason: str | None = None
    paradox: tuple[ParadoxEstimate, ...] = ()


# ---------------------------------------------------------------- segments and churn


@dataclass(frozen=True)
class PersonaSegment:
    """One usage segment named in product-manager words, with its size, profile and health."""

    cluster: int
    name: str
    description: str
    devices: int
    share: float
    profile: dict[str, float]
    profile_z: dict[str, float]
    mean_health: float | None
    red_share: float | None
    products: dict[str, int]


@dataclass(frozen=True)
class SegmentReport:
    """k-means personas on standardised usage features; `k_scores` = the index k was chosen by, per k tried."""

    window: Window
    k: int | None
    k_method: str
    k_scores: dict[int, float]
    features: tuple[str, ...]
    segments: tuple[PersonaSegment, ...]
    assignments: dict[str, str]
    unsegmented: dict[str, str]
    reason: str | None = None


@dataclass(frozen=True)
class ChurnRiskEntry:
    """One device or account in the churn-risk ranking, with the reasons in words."""

    rank: int
    entity_id: str
    product_id: str | None
    account_id: str | None
    status: str
    risk_score: float | None
    slope_risk: float | None
    recency_risk: float | None
    disruption_risk: float | None
    weekly_change: float | None
    days_since_last_core_use: float | None
    recent_disruptions: float | None
    reasons: str
    drop_risk: float | None = None  # recent use against the entity's own rate (core early_warning)
    experience_risk: float | None = None  # failures weighted by their satisfaction cost, incidents, support
    drivers: str | None = None  # what it lived lately, largest first ("descale ×2, incident ×3")
    top_driver: str | None = None  # the touchpoint name, "incident" or "support contact" weighing most


@dataclass(frozen=True)
class ChurnRiskList:
    """Devices or accounts ranked by churn risk (0–100, highest first)."""

    level: Literal["device", "account"]
    window: Window
    weights: dict[str, float]
    entries: tuple[ChurnRiskEntry, ...]
    reason: str | None = None


@dataclass(frozen=True)
class ChurnRiskSummary:
    """How many entities were ranked, how many are at or above a risk threshold, and the riskiest of them."""

    ranked: int
    at_risk: int
    threshold: float
    top: ChurnRiskEntry | None


# ---------------------------------------------------------------- fleet report


@dataclass(frozen=True)
class Concern:
    """One thing a product manager should look at, most severe first."""

    severity: Literal["high", "medium", "low"]
    area: str
    message: str


@dataclass(frozen=True)
class ProductHealthLine:
    """One product's latest health in the fleet report."""

    product_id: str
    devices: int
    score: float | None
    band: str | None
    arrow: str | None
    delta: float | None
    components: dict[str, float | None]
    top_negative_drivers: tuple[str, ...]
    nps: Measure | None


@dataclass(frozen=True)
class FleetReport:
    """A short fleet health summary with the top concerns (for the demo and the API)."""

    window: Window
    devices: int
    fleet_score: float | None
    fleet_band: str | None
    fleet_arrow: str | None
    fleet_delta: float | None
    products: tuple[ProductHealthLine, ...]
    band_shares: dict[str, float]
    nps: Measure | None
    concerns: tuple[Concern, ...]
    at_risk_devices: int

    def render_text(self) -> list[str]:
        """Plain-text lines of the report (no colours, no markup)."""

        def num(x: float | None, fmt: str = "{:.0f}") -> str:
            return "–" if x is None else fmt.format(x)

        arrows = {"up": "↑", "down": "↓", "flat": "→"}
        w = self.window
        lines = [
            f"Fleet health as of {w.as_of} (weeks {w.start} → {w.end}), {self.devices:,} devices",
            f"  fleet score {num(self.fleet_score)} ({self.fleet_band or 'no band'})"
            f" {arrows.get(self.fleet_arrow or '', '')} {num(self.fleet_delta, '{:+.1f}')} vs previous week",
            "  devices by band: " + ", ".join(f"{b} {s:.0%}" for b, s in self.band_shares.items()),
        ]
        if self.nps is not None and self.nps.value is not None:
            lines.append(f"  NPS {self.nps.value:+.0f} ± {num(self.nps.margin)} (n={self.nps.n})")
        lines.append("  per product:")
        for p in self.products:
            comps = " ".join(f"{k[:3]} {num(v)}" for k, v in p.components.items())
            nps = f", NPS {p.nps.value:+.0f} (n={p.nps.n})" if p.nps and p.nps.value is not None else ""
            drivers = f"; drags: {', '.join(p.top_negative_drivers)}" if p.top_negative_drivers else ""
            lines.append(
                f"    {p.product_id:<10} {p.devices:>6,} dev  score {num(p.score):>3} {p.band or '–':<5}"
                f" {arrows.get(p.arrow or '', ' ')} [{comps}]{nps}{drivers}"
            )
        lines.append(f"  devices at high churn risk: {self.at_risk_devices:,}")
        lines.append("  top concerns:")
        if not self.concerns:
            lines.append("    none")
        for i, c in enumerate(self.concerns, start=1):
            lines.append(f"    {i}. [{c.severity}] {c.area}: {c.message}")
        return lines
