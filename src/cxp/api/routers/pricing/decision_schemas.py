"""Bodies of price solving and trade-off curves: free parameters, goals, and the reports."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from cxp.api.routers.pricing.backtest_schemas import BacktestPlan, CohortIn, PeriodIn, PlanSummaryOut
from cxp.api.routers.pricing.common import InputModel, OutputModel, Price, Stat, Theta
from cxp.pricing.core.plans import BillableMetric
from cxp.pricing.core.solve import FreeParameter, MaximiseRevenue, RevenueTarget

Share = Annotated[float, Field(ge=0, le=1)]
Step = Annotated[Decimal, Field(gt=0, le=Decimal("1e9"), max_digits=24, decimal_places=8)]


class FreeParameterIn(InputModel):
    """A number of the plan to solve: `field` (dotted path) of component `component`, within [lower, upper].

    Values are multiples of `step` (default: the currency's minor unit). Paths: fee, price, base_fee,
    included, charge.unit_price, overage.unit_price, overage.package_size, charge.tiers.<i>.unit_price,
    charge.tiers.<i>.upper (a tier boundary; the next tier's lower bound follows).
    """

    component: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    field: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z_]+(\.([a-z_]+|[0-9]{1,2}))*$")]
    lower: Price
    upper: Price
    step: Step | None = None

    @model_validator(mode="after")
    def _ordered(self) -> FreeParameterIn:
        if self.upper < self.lower:
            raise ValueError("upper must be ≥ lower")
        return self

    def parameter(self) -> FreeParameter:
        """As the library's parameter."""
        return FreeParameter(self.component, self.field, self.lower, self.upper, self.step)


class RevenueTargetIn(InputModel):
    """Hit a revenue: `target` (default: the baseline's, i.e. revenue-neutral) within ± `tolerance` (a share)."""

    kind: Literal["revenue_target"]
    target: Price | None = None
    tolerance: Annotated[Decimal, Field(ge=0, le=Decimal("0.5"), max_digits=8, decimal_places=6)] = Decimal("0.005")

    def goal(self) -> RevenueTarget:
        """As the library's goal."""
        return RevenueTarget(self.target, self.tolerance)


class MaxRevenueIn(InputModel):
    """Maximise revenue with at most these shares of bill shocks and of losers, and this p90 relative increase."""

    kind: Literal["max_revenue"]
    max_shock_share: Share | None = None
    max_losers_share: Share | None = None
    max_p90_increase: Annotated[float, Field(ge=0, le=100)] | None = None

    def goal(self) -> MaximiseRevenue:
        """As the library's goal."""
        return MaximiseRevenue(self.max_shock_share, self.max_losers_share, self.max_p90_increase)


class _FamilyIn(InputModel):
    baseline: BacktestPlan = Field(description="Today's plan: a stored reference or an inline definition")
    plan: BacktestPlan = Field(description="The plan whose parameters move (its key must differ from the baseline's)")
    period: PeriodIn
    cohort: CohortIn = CohortIn()
    theta: Theta = Field(Decimal("0.2"), description="Bill shock: bill > (1 + theta) × baseline bill")
    metrics: Annotated[list[BillableMetric], Field(max_length=100)] = []
    example_metrics: bool = Field(True, description="Also define the example plans' usage keys where not defined")


class SolveIn(_FamilyIn):
    """What to solve: free parameters of `plan` and a goal against `baseline` on a cohort's recorded usage."""

    parameters: Annotated[list[FreeParameterIn], Field(min_length=1, max_length=3)]
    goal: Annotated[RevenueTargetIn | MaxRevenueIn, Field(discriminator="kind")]
    grid: Annotated[int, Field(ge=2, le=41)] | None = Field(None, description="Coarse grid points per parameter")
    max_evaluations: Annotated[int, Field(ge=10, le=5000)] = 2000


class TradeoffIn(_FamilyIn):
    """A family of plans: one or two free parameters of `plan` on a grid of `points` per axis."""

    parameters: Annotated[list[FreeParameterIn], Field(min_length=1, max_length=2)]
    points: Annotated[int, Field(ge=2, le=41)] | None = None


class MetricsOut(OutputModel):
    """A candidate's figures against the baseline (money exact; shares as numbers)."""

    revenue: Decimal
    revenue_delta: Decimal
    revenue_change: Stat
    shock_share: float
    losers_share: float
    p90_increase: Stat
    volatility_cv: Stat


class BoundOut(OutputModel):
    """The searched range of one parameter."""

    lower: Decimal
    upper: Decimal
    step: Decimal


class SolveReport(OutputModel):
    """The solved parameters and plan, re-billed exactly, and how the search went."""

    parameters: dict[str, Decimal]
    plan: dict[str, Any]
    metrics: MetricsOut
    baseline_revenue: Decimal
    target_revenue: Decimal | None
    feasible: bool
    violations: list[str]
    evaluations: int
    method: str
    stop_reason: str
    deterministic: bool = True
    bounds: dict[str, BoundOut]
    summary: PlanSummaryOut
    decimal_check_accounts: int
    decimal_check_equal: bool


class TradeoffPointOut(OutputModel):
    """One plan of the family (index 0: the baseline)."""

    index: int
    baseline: bool
    parameters: dict[str, Decimal]
    metrics: MetricsOut
    on_losers_front: bool
    on_volatility_front: bool


class TradeoffReport(OutputModel):
    """Every evaluated plan and the two Pareto fronts (indices, along rising revenue)."""

    currency: str
    points: list[TradeoffPointOut]
    losers_front: list[int]
    volatility_front: list[int]
    evaluations: int
    bounds: dict[str, BoundOut]


class ElasticityIn(InputModel):
    """The lab's elasticity fit (e.g. from `POST /v1/pricing/wtp/elasticity`): ε and its 95% CI."""

    elasticity: Annotated[float, Field(ge=-5, le=5)]
    low: Annotated[float, Field(ge=-5, le=5)] | None = None
    high: Annotated[float, Field(ge=-5, le=5)] | None = None


class HorizonIn(InputModel):
    """Plans over a horizon from a cohort's recorded usage, with an optional customer-response band."""

    plans: Annotated[list[BacktestPlan], Field(min_length=1, max_length=10)]
    period: PeriodIn
    cohort: CohortIn = CohortIn()
    baseline: Annotated[str, Field(min_length=1, max_length=80)] | None = None
    months: Annotated[int, Field(ge=1, le=120)] = 24
    elasticity: ElasticityIn | None = Field(None, description="Without it: no response, no churn (static only)")
    churn_base: Annotated[float, Field(ge=0, lt=1)] = 0.01
    annual_discount: Annotated[float, Field(ge=0, lt=1)] = 0.0
    metrics: Annotated[list[BillableMetric], Field(max_length=100)] = []
    example_metrics: bool = True


class HorizonFiguresOut(OutputModel):
    """One plan in one response scenario over the horizon (expected money, rounded to the quantum)."""

    plan_key: str
    scenario: str
    recurring: Decimal
    one_time: Decimal
    total: Decimal
    revenue_delta: Decimal
    ltv: Decimal
    retained: float


class HorizonReport(OutputModel):
    """Figures per plan × scenario, the assumptions behind them and the one-line verdict."""

    months: int
    first_month: str
    baseline: str
    currency: str
    figures: list[HorizonFiguresOut]
    assumptions: list[str]
    verdict: str


class ExperimentDesignIn(InputModel):
    """Size a price experiment on a metric's recorded values before it starts."""

    metric: BillableMetric | Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")] = Field(
        description="A metric definition, or the name of an example metric (heating_kwh, app_sessions, "
                    "optimised_cycles)")
    period: PeriodIn
    cohort: CohortIn = CohortIn()
    mde_relative: Annotated[float, Field(gt=0, le=10)] | None = None
    mde: Annotated[float, Field(gt=0, le=1e12)] | None = None
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    power: Annotated[float, Field(gt=0, lt=1)] = 0.8
    arms: Annotated[int, Field(ge=2, le=10)] = 2
    ratio: Annotated[float, Field(gt=0, le=100)] = 1.0

    @model_validator(mode="after")
    def _one_effect(self) -> ExperimentDesignIn:
        if (self.mde is None) == (self.mde_relative is None):
            raise ValueError("give exactly one of mde and mde_relative")
        return self


class DurationOptionOut(OutputModel):
    """One candidate duration and what it needs."""

    months: int
    units: int
    mean: float
    sd: float
    n_per_arm: int | None
    mde_at_available: Stat


class ExperimentPlanOut(OutputModel):
    """Sample size, minimum detectable effect and duration of a planned experiment."""

    metric: str
    kind: str
    alpha: float
    power: float
    arms: int
    ratio: float
    mde: float
    mde_relative: Stat
    baseline_mean: float
    sd: float
    n_per_arm: int
    total_n: int
    duration_months: int | None
    available_units: int
    options: list[DurationOptionOut]
    guardrail_mde: Stat
    method: str
