"""The example revenue models side by side on a product's recorded fleet (the demo's table, with histograms)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from cxp.api.deps import CachedDep, PricingKey
from cxp.api.routers.pricing.backtest_schemas import QuantilesOut
from cxp.api.routers.pricing.common import NO_NUL, OutputModel, decimal_text
from cxp.pricing import service

router = APIRouter()


class ComparisonModel(OutputModel):
    """One example model against the baseline, with its monthly bills counted per histogram bin."""

    plan_key: str
    name: str
    revenue: Decimal
    arpu_month: Decimal
    bill: QuantilesOut
    revenue_delta: Decimal
    shock_rate: float
    shock_count: int
    winners: int
    losers: int
    unchanged: int
    histogram: list[int]


class ModelComparisonOut(OutputModel):
    """The demo's side-by-side of example models on a product's recorded fleet, with shared histogram bins.

    Bins are [bin_edges[k], bin_edges[k+1]), the last one including its upper edge.
    """

    product: str
    theta: Decimal
    currency: str | None
    baseline: str | None
    first_month: date | None
    last_month: date | None
    last_day: date | None
    accounts: int
    customer_periods: int
    bin_edges: list[Decimal]
    models: list[ComparisonModel]
    reason: str | None


@router.get("/comparison", response_model=ModelComparisonOut,
            summary="Example revenue models side by side on the recorded fleet")
def get_comparison(
    _: PricingKey,
    cached: CachedDep,
    product: Annotated[str, Query(min_length=1, max_length=200, pattern=NO_NUL)] = "thermo-x1",
    theta: Annotated[Decimal, Query(ge=0, le=100, max_digits=12, decimal_places=6,
                                    json_schema_extra=decimal_text(6))] = Decimal("0.2"),
    bins: Annotated[int, Query(ge=1, le=100, description="Histogram bins")] = 10,
    baseline: Annotated[Literal[service.COMPARISON_PLANS] | None,  # type: ignore[valid-type]
                        Query(description="Plan id of the baseline (default: the first)")] = None,
) -> ModelComparisonOut:
    """Revenue, ARPU, bill quantiles, Δ revenue, shock, winners/losers and bill histograms per model."""
    comparison = cached.service(service.get_model_comparison, product=product, theta=theta, bins=bins,
                                baseline=baseline)
    return ModelComparisonOut.model_validate(comparison)
