"""Bodies of the willingness-to-pay endpoints: survey answers in, curves, demand and elasticity fits out."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field, model_validator

from cxp.api.routers.pricing.common import InputModel, OutputModel, Price, Stat, decimal_text

MAX_SURVEY_ROWS = 100_000


class VanWestendorpAnswer(InputModel):
    """One respondent's four price answers."""

    respondent_id: Annotated[str, Field(max_length=200)] | None = None
    too_cheap: Price
    cheap: Price
    expensive: Price
    too_expensive: Price


class VanWestendorpIn(InputModel):
    """Survey responses (or upload a CSV: respondent_id,too_cheap,cheap,expensive,too_expensive)."""

    responses: Annotated[list[VanWestendorpAnswer], Field(min_length=1, max_length=MAX_SURVEY_ROWS)]


class GaborGrangerAnswerIn(InputModel):
    """Would the respondent buy at `price`?"""

    respondent_id: Annotated[str, Field(max_length=200)] | None = None
    price: Price
    would_buy: bool


class GaborGrangerIn(InputModel):
    """Survey answers (or upload a CSV: respondent_id,price,would_buy with yes/no)."""

    answers: Annotated[list[GaborGrangerAnswerIn], Field(min_length=1, max_length=MAX_SURVEY_ROWS)]


class PricePoint(OutputModel):
    """The four cumulative Van Westendorp curves at one answered price."""

    price: Decimal
    too_cheap: float
    cheap: float
    expensive: float
    too_expensive: float


class PriceRange(OutputModel):
    """Acceptable price range: marginal cheapness to marginal expensiveness."""

    low: Decimal
    high: Decimal


class VanWestendorpOut(OutputModel):
    """Curves on the answered-price grid and their intersections (None where two curves do not cross).

    Intersections are interpolated between grid prices, so they are estimates (decimal strings).
    """

    n: int
    dropped_inconsistent: int
    optimal_price: Decimal | None
    indifference_price: Decimal | None
    marginal_cheapness: Decimal | None
    marginal_expensiveness: Decimal | None
    acceptable_range: PriceRange | None
    curves: list[PricePoint]


class DemandPoint(OutputModel):
    """Demand share and revenue index (price × share) at one asked price."""

    price: Decimal
    demand: float
    answers: int
    revenue_index: Decimal


class GaborGrangerOut(OutputModel):
    """The demand curve D(p) and the revenue-maximising price (ties: the lower price)."""

    revenue_maximising_price: Decimal
    points: list[DemandPoint]


Positive = Annotated[Decimal, Field(gt=0, le=Decimal("1e15"), max_digits=30, json_schema_extra=decimal_text(15))]


class ElasticityIn(InputModel):
    """(price, quantity) pairs, e.g. experiment arms or before/after a price change."""

    prices: Annotated[list[Positive], Field(min_length=2, max_length=100_000)]
    quantities: Annotated[list[Positive], Field(min_length=2, max_length=100_000)]

    @model_validator(mode="after")
    def _paired(self) -> ElasticityIn:
        if len(self.prices) != len(self.quantities):
            raise ValueError(f"{len(self.prices)} prices but {len(self.quantities)} quantities")
        return self


class ElasticityOut(OutputModel):
    """ln Q = a + ε ln P by least squares: ε with its standard error and 95% CI, n points, R²."""

    elasticity: float
    intercept: float
    std_error: Stat
    low: Stat
    high: Stat
    n: int
    r_squared: Stat
