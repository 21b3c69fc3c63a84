"""Typed results of the CX measures (issue 18): engagement rate; frozen dataclasses, None never NaN."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from cxp.analytics.models import EffectComparison, Window


@dataclass(frozen=True)
class EngagementRate:
    """Engaged ÷ reached devices of one product (and account segment; None = all segments) in one period."""

    product_id: str
    segment: str | None
    period_start: date
    period_end: date
    reached: int
    engaged: int
    rate: float | None  # percent
    ci_low: float | None
    ci_high: float | None
    engagement_component: float | None  # mean health engagement component (0–100) of the same devices
    partial: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class EngagementTrend:
    """The trend of one product × segment series: Theil–Sen slope and agreement with the engagement component."""

    product_id: str
    segment: str | None
    periods: int
    first_rate: float | None
    last_rate: float | None
    slope_pp_per_period: float | None
    component_slope_per_period: float | None
    direction_agreement: float | None  # share of period-to-period moves in the same direction


@dataclass(frozen=True)
class EngagementReport:
    """Engagement rate per product × segment × period, the trends, and the stated definition per product."""

    grain: str
    window: Window
    rates: tuple[EngagementRate, ...]
    trends: tuple[EngagementTrend, ...]
    # Spearman rank correlation, across the (product, segment, period) groups, of rate vs engagement component
    rank_agreement: float | None
    definitions: dict[str, str] = field(default_factory=dict)
    reason: str | None = None


# ---------------------------------------------------------------- smart-capability ladder


@dataclass(frozen=True)
class LadderLevel:
    """Devices of one product (and segment; None = all) that reached one capability level, and how fast."""

    product_id: str
    segment: str | None
    level: str
    devices: int
    reached: int
    share: float | None  # 0–1
    median_days_to_reach: float | None  # from activation


@dataclass(frozen=True)
class LadderContrast:
    """Climbers (reached every level the product offers) vs the others: health and churn differences, 95% CIs."""

    product_id: str
    climbers: int
    others: int
    health: EffectComparison  # mean health score, climbers − others (points)
    churn: EffectComparison  # churn share, climbers − others (0–1)


@dataclass(frozen=True)
class LadderReport:
    """The smart-capability ladder per product and segment, and whether climbers are healthier and churn less."""

    window: Window
    levels: tuple[LadderLevel, ...]
    contrasts: tuple[LadderContrast, ...]
    definitions: dict[str, str] = field(default_factory=dict)
    reason: str | None = None


# ---------------------------------------------------------------- journey map


@dataclass(frozen=True)
class JourneyMapCell:
    """One touchpoint row in one journey-stage column: reach, performance, satisfaction, pain."""

    product_id: str
    stage: str
    touchpoint: str
    owner: str
    devices: int
    reach: float | None  # 0–1
    success_rate: float | None  # 0–1
    performance: float | None  # 0–100, as in the touchpoint report
    csat: float | None  # % top-2-box, None without answers
    csat_n: int
    quadrant: str | None
    pain: bool


@dataclass(frozen=True)
class JourneyMapStage:
    """A column of the map: journey stage (post-purchase split into lifecycle stages), devices, drop-off onward."""

    stage: str
    lifecycle_stage: str | None
    devices: int | None
    drop_off_to_next: float | None  # 0–1
    pain_points: tuple[str, ...]
    note: str | None = None


@dataclass(frozen=True)
class JourneyMap:
    """The journey map of one scope (product, segment): stage columns, touchpoint cells, pain points, drop-off."""

    window: Window
    stages: tuple[JourneyMapStage, ...]
    cells: tuple[JourneyMapCell, ...]
    definitions: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    persona: str | None = None  # the persona the map was narrowed to, if any


# ---------------------------------------------------------------- referrals (earned growth, analytics half)


@dataclass(frozen=True)
class ReferralGroup:
    """Referrals, earned (referred) new customers and NPS of one group (product, segment, activation cohort)."""

    key: dict[str, str]
    devices: int
    customer_weeks: float
    referrals: int
    rate_per_100_weeks: float | None
    ci_low: float | None
    ci_high: float | None
    new_devices: int  # activated in the window
    earned_new_devices: int  # of which came by referral
    nps: float | None
    nps_n: int


@dataclass(frozen=True)
class ReferralReport:
    """Referral behaviour per group next to the group's NPS, and whether the NPS predicts it across groups."""

    window: Window
    by: tuple[str, ...]
    groups: tuple[ReferralGroup, ...]
    # Spearman rank correlation of NPS and referral rate across the groups with enough answers and devices
    nps_rate_correlation: float | None
    correlation_groups: int
    definitions: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
