"""Bodies of backtests: the request (plans, period, cohort, cost, demand) and the report with its bills."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import Discriminator, Field, Tag, model_validator

from cxp.api.routers.pricing.common import (
    CostAmount,
    InputModel,
    OutputModel,
    PlanIdField,
    Stat,
    Text,
    Theta,
    VersionField,
)
from cxp.api.schemas import day_type
from cxp.pricing.core.plans import BillableMetric, Name, Plan
from cxp.pricing.metrics import BillingPeriod, Cohort


class PlanRef(InputModel):
    """A stored plan: its id and a version (default: the latest)."""

    plan_id: PlanIdField
    version: VersionField | None = None


def _plan_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "inline" if "components" in value else "ref"
    return "inline" if isinstance(value, Plan) else "ref"


BacktestPlan = Annotated[Annotated[PlanRef, Tag("ref")] | Annotated[Plan, Tag("inline")], Discriminator(_plan_kind)]


class CohortIn(InputModel):
    """Which accounts: those with a device of `product` (only those devices count), in `segment`, listed ids."""

    product: Text | None = None
    segment: Text | None = None
    account_ids: Annotated[list[Text], Field(min_length=1, max_length=10_000)] | None = None

    def cohort(self) -> Cohort:
        """As the library's cohort."""
        ids = tuple(dict.fromkeys(self.account_ids)) if self.account_ids is not None else None
        return Cohort(product=self.product, segment=self.segment, account_ids=ids)


_FIRST_DAY, _LAST_DAY = date(1970, 1, 1), date(2199, 12, 31)
PeriodDay = day_type(_FIRST_DAY, _LAST_DAY)


class PeriodIn(InputModel):
    """Calendar months billed: `start_month` (YYYY-MM) + `months`, or the months covering `start`..`end`.

    With dates, `end` is the last day (inclusive) and also the data horizon: usage after it is not
    counted and months after it are not billed.
    """

    start_month: Annotated[str, Field(pattern=r"^(19[7-9][0-9]|2[01][0-9]{2})-(0[1-9]|1[0-2])$")] | None = None
    months: Annotated[int, Field(ge=1, le=120)] | None = None
    start: PeriodDay | None = None
    end: PeriodDay | None = None

    @model_validator(mode="after")
    def _one_form(self) -> PeriodIn:
        by_month = self.start_month is not None or self.months is not None
        by_date = self.start is not None or self.end is not None
        if by_month == by_date:
            raise ValueError("give either start_month and months, or start and end")
        if by_month and (self.start_month is None or self.months is None):
            raise ValueError("start_month and months go together")
        if by_date:
            if self.start is None or self.end is None:
                raise ValueError("start and end go together")
            if not (_FIRST_DAY <= self.start <= self.end <= _LAST_DAY):
                raise ValueError(f"need {_FIRST_DAY} <= start <= end <= {_LAST_DAY}")
            if (self.end.year - self.start.year) * 12 + self.end.month - self.start.month >= 120:
                raise ValueError("a backtest spans at most 120 months")
        return self

    def period(self) -> BillingPeriod:
        """The billing period."""
        if self.start_month is not None and self.months is not None:
            year, month = map(int, self.start_month.split("-"))
            return BillingPeriod(date(year, month, 1), self.months)
        assert self.start is not None and self.until() is not None
        return BillingPeriod.covering(start=datetime.combine(self.start, time(0), UTC), end=self.until())

    def until(self) -> datetime | None:
        """The data horizon (the day after `end`), None for a month range."""
        return None if self.end is None else datetime.combine(self.end + timedelta(days=1), time(0), UTC)


class CostIn(InputModel):
    """The cost floor: `per_unit` × units of `unit_metric` + `per_device_month` per active device-month."""

    per_unit: CostAmount = Decimal(0)
    unit_metric: Name | None = None
    per_device_month: CostAmount = Decimal(0)

    @model_validator(mode="after")
    def _metric_with_unit_cost(self) -> CostIn:
        if self.per_unit and self.unit_metric is None:
            raise ValueError("a cost per unit needs unit_metric (the usage key it is per)")
        return self


class DemandIn(InputModel):
    """Constant-elasticity response of usage to the bill ratio: Q_new = Q_old · (P_new / P_old)^ε."""

    elasticity: Annotated[float, Field(ge=-5, le=5)]
    keys: Annotated[list[Name], Field(max_length=100)] | None = None


class BacktestIn(InputModel):
    """What to backtest: plans (stored references and/or inline definitions) on a cohort's recorded usage."""

    plans: Annotated[list[BacktestPlan], Field(min_length=1, max_length=20)]
    period: PeriodIn
    cohort: CohortIn = CohortIn()
    baseline: Annotated[str, Field(min_length=1, max_length=80)] | None = Field(
        None, description="Plan key (id@vN) or plan id of the baseline (default: the first plan)")
    theta: Theta = Field(Decimal("0.2"), description="Bill shock: bill > (1 + theta) × baseline bill")
    cost: CostIn | None = None
    value_metric: Name | None = Field(None, description="Usage key measuring value (fairness = Gini of price/value)")
    demand: DemandIn | None = None
    coverage_threshold: Annotated[float, Field(ge=0, le=1)] | None = Field(
        0.9, description="Flag account-months whose devices reported less than this share of the time (null: no flags)")
    exclude_low_coverage: bool = Field(False, description="Leave flagged account-months out of every figure")
    experience_risk: bool = Field(
        False, description="Compare each account's bill change with its Experience Health Score (analytics, "
                           "weekly account scores averaged over the period): flag plans raising bills most where "
                           "it is worst")
    metrics: Annotated[list[BillableMetric], Field(max_length=100)] = Field(
        [], description="Metric definitions of usage keys (win over the plans' own)")
    example_metrics: bool = Field(
        True, description="Also define the example plans' usage keys (heating_kwh, app_sessions, optimised_cycles) "
                          "where neither `metrics` nor the plans define them")

    @model_validator(mode="after")
    def _unique_metrics(self) -> BacktestIn:
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metric names must be unique, got {names}")
        return self


class QuantilesOut(OutputModel):
    """p10 / p50 / p90 (each an observed value, so exact)."""

    p10: Decimal
    p50: Decimal
    p90: Decimal


class PlanSummaryOut(OutputModel):
    """One plan's figures over the cohort and period (changes against the baseline)."""

    plan_key: str
    name: str
    baseline: bool
    revenue: Decimal
    revenue_delta: Decimal
    static_revenue: Decimal = Field(description="Revenue before the demand response (= revenue without one)")
    accounts: int
    customer_periods: int
    arpu: Decimal = Field(description="Per active account over the period, rounded to the quantum")
    arpu_month: Decimal = Field(description="Per active account-month, rounded to the quantum")
    bill: QuantilesOut
    bill_change: QuantilesOut
    volatility_cv: Stat = Field(description="Mean per-account coefficient of variation of monthly bills")
    winners: int
    losers: int
    unchanged: int
    shock_rate: float
    shock_count: int
    fairness_gini: Stat
    cost: Decimal
    margin: Decimal
    below_cost_share: float
    low_coverage_periods: int = Field(0, description="Account-months below the coverage threshold")
    low_coverage_revenue: Decimal = Field(Decimal(0), description="This plan's bills in those account-months")
    coverage_shortfall: Decimal = Field(
        Decimal(0), description="Revenue at risk there: re-billed with usage × 1 / coverage, minus what was billed")


class SegmentExperienceOut(OutputModel):
    """Bill vs experience health in one segment under one plan."""

    plan_key: str
    segment: str
    accounts: int
    mean_bill_month: Decimal
    mean_health: Stat
    spearman: Stat
    low_health_bill_ratio: Stat


class PeriodOut(OutputModel):
    """The months billed and the data horizon."""

    first_month: date
    months: int
    month_starts: list[date]
    until: datetime | None


class CohortOut(OutputModel):
    """The cohort backtested."""

    product: str | None
    segment: str | None
    account_ids: list[str] | None


class ExperienceRiskOut(OutputModel):
    """One plan's bill change against account health: flagged when the unhappiest quartile's rises most."""

    plan_key: str
    accounts: int
    spearman: Stat
    p_value: Stat
    low_health_change: Stat
    rest_change: Stat
    flagged: bool


class BacktestReport(OutputModel):
    """Per-plan figures side by side (baseline first) and bill vs experience health per segment."""

    baseline: str
    plan_keys: list[str]
    currency: str
    quantum: Decimal
    theta: Decimal
    period: PeriodOut
    cohort: CohortOut
    accounts: int
    size: int = Field(description="Account-months × plans billed")
    value_metric: str | None
    elasticity: Stat
    summaries: list[PlanSummaryOut]
    experience: list[SegmentExperienceOut]
    experience_risk: list[ExperienceRiskOut] | None = Field(
        None, description="With `experience_risk`: per plan, bill change vs analytics' health score")


class BillRow(OutputModel):
    """One account-month's bill under one plan."""

    plan: str
    account_id: str
    segment: str | None
    month: date
    bill: Decimal
    currency: str


BILL_COLUMNS = ("plan", "account_id", "segment", "month", "bill", "currency")
