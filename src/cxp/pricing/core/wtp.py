"""Willingness to pay: Van Westendorp, Gabor–Granger and a log-log elasticity fit.

Van Westendorp (domain notes): four price answers per respondent (too cheap, cheap, expensive,
too expensive). On the grid of every answered price p:
* too_cheap(p) = share whose too-cheap answer is ≥ p, cheap(p) = share whose cheap answer is ≥ p
  (the two "cheap" curves reversed: falling in p);
* expensive(p) = share whose expensive answer is ≤ p, too_expensive(p) likewise (rising in p).
Intersections are found between adjacent grid prices where the difference of two curves changes
sign, by linear interpolation (a grid price where they are equal is returned as is):
optimal price point = too_cheap ∩ too_expensive, indifference point = cheap ∩ expensive,
marginal cheapness = too_cheap ∩ expensive, marginal expensiveness = too_expensive ∩ cheap; the
acceptable range lies between the last two. Respondents whose answers are not ordered
too_cheap ≤ cheap ≤ expensive ≤ too_expensive are dropped and counted.

Gabor–Granger: D(p) = share of the answers at price p that would buy; the revenue-maximising
price maximises p · D(p) over the asked prices (ties: the lower price).

Elasticity: ordinary least squares of ln Q on ln P (ε = slope) with its standard error and 95% CI.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np

from cxp.core.stats import t_quantile
from cxp.pricing.core.experiments import ArmStats
from cxp.pricing.core.money import to_decimal
from cxp.pricing.errors import PricingError, maps_numeric_errors

VW_COLUMNS = ("too_cheap", "cheap", "expensive", "too_expensive")


@dataclass(frozen=True, slots=True)
class VanWestendorpResponse:
    """One respondent's four price answers."""

    respondent_id: str
    too_cheap: Decimal
    cheap: Decimal
    expensive: Decimal
    too_expensive: Decimal

    @property
    def consistent(self) -> bool:
        """Answers ordered too_cheap ≤ cheap ≤ expensive ≤ too_expensive."""
        return self.too_cheap <= self.cheap <= self.expensive <= self.too_expensive


@dataclass(frozen=True)
class VanWestendorpResult:
    """Curves on the price grid and their intersections (None where two curves do not cross)."""

    n: int
    dropped_inconsistent: int
    prices: np.ndarray
    too_cheap: np.ndarray
    cheap: np.ndarray
    expensive: np.ndarray
    too_expensive: np.ndarray
    optimal_price: float | None
    indifference_price: float | None
    marginal_cheapness: float | None
    marginal_expensiveness: float | None

    @property
    def acceptable_range(self) -> tuple[float, float] | None:
        """(marginal cheapness, marginal expensiveness)."""
        if self.marginal_cheapness is None or self.marginal_expensiveness is None:
            return None
        return (self.marginal_cheapness, self.marginal_expensiveness)


def _price(value: Any, what: str) -> Decimal:
    try:
        price = to_decimal(value=value)
    except PricingError:
        raise PricingError(f"{what}: not a number: {value!r}") from None
    if price < 0:
        raise PricingError(f"{what}: expected a finite price ≥ 0, got {value!r}")
    return price


def _crossing(p: np.ndarray, f: np.ndarray, g: np.ndarray) -> float | None:
    """The first price where f − g changes sign (linear interpolation between grid prices)."""
    d = f - g
    for i in range(d.size):
        if d[i] == 0:
            return float(p[i])
        if i + 1 < d.size and d[i] * d[i + 1] < 0:
            t = d[i] / (d[i] - d[i + 1])
            return float(p[i] + t * (p[i + 1] - p[i]))
    return None


@maps_numeric_errors
def van_westendorp(*, responses: Iterable[VanWestendorpResponse]) -> VanWestendorpResult:
    """Van Westendorp curves and price points from survey responses."""
    rs = list(responses)
    ok = [r for r in rs if r.consistent]
    if len(ok) < 2:
        raise PricingError(f"Van Westendorp needs at least two consistent responses, got {len(ok)}")
    a = np.array([[float(getattr(r, c)) for c in VW_COLUMNS] for r in ok])
    grid = np.unique(a)
    n = len(ok)
    tc = (a[:, 0][None, :] >= grid[:, None]).sum(axis=1) / n
    ch = (a[:, 1][None, :] >= grid[:, None]).sum(axis=1) / n
    ex = (a[:, 2][None, :] <= grid[:, None]).sum(axis=1) / n
    te = (a[:, 3][None, :] <= grid[:, None]).sum(axis=1) / n
    return VanWestendorpResult(
        n=n,
        dropped_inconsistent=len(rs) - n,
        prices=grid,
        too_cheap=tc,
        cheap=ch,
        expensive=ex,
        too_expensive=te,
        optimal_price=_crossing(grid, tc, te),
        indifference_price=_crossing(grid, ch, ex),
        marginal_cheapness=_crossing(grid, tc, ex),
        marginal_expensiveness=_crossing(grid, te, ch),
    )


@maps_numeric_errors
def van_westendorp_from_records(*, records: Iterable[Mapping[str, Any]]) -> list[VanWestendorpResponse]:
    """Responses from dicts (CSV rows or feedback `detail` documents) with the four price keys."""
    out = []
    for i, r in enumerate(records):
        missing = [c for c in VW_COLUMNS if r.get(c) in (None, "")]
        if missing:
            raise PricingError(f"record {i}: missing {missing}")
        rid = str(r.get("respondent_id") or r.get("account_id") or i)
        out.append(VanWestendorpResponse(rid, *(_price(r[c], f"record {i} {c}") for c in VW_COLUMNS)))
    return out


@dataclass(frozen=True, slots=True)
class GaborGrangerAnswer:
    """Would the respondent buy at `price`?"""

    respondent_id: str
    price: Decimal
    would_buy: bool


@dataclass(frozen=True)
class GaborGrangerResult:
    """Demand curve D(p), revenue index p · D(p) and the revenue-maximising price."""

    prices: tuple[Decimal, ...]
    demand: tuple[float, ...]
    answers: tuple[int, ...]
    revenue_index: tuple[float, ...]
    revenue_maximising_price: Decimal


@maps_numeric_errors
def gabor_granger(*, answers: Iterable[GaborGrangerAnswer]) -> GaborGrangerResult:
    """Demand share at each asked price and the price maximising p · D(p)."""
    by_price: dict[Decimal, list[bool]] = {}
    for a in answers:
        by_price.setdefault(a.price, []).append(a.would_buy)
    if not by_price:
        raise PricingError("Gabor–Granger needs answers")
    prices = tuple(sorted(by_price))
    demand = tuple(sum(by_price[p]) / len(by_price[p]) for p in prices)
    # Compared exactly (price × buyers / answers as fractions) so ties resolve to the lower price.
    rev = [Fraction(p) * Fraction(sum(by_price[p]), len(by_price[p])) for p in prices]
    best = max(range(len(prices)), key=lambda i: (rev[i], -i))
    return GaborGrangerResult(
        prices, demand, tuple(len(by_price[p]) for p in prices), tuple(float(r) for r in rev), prices[best]
    )


_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


@maps_numeric_errors
def gabor_granger_from_records(*, records: Iterable[Mapping[str, Any]]) -> list[GaborGrangerAnswer]:
    """Answers from dicts with respondent_id, price, would_buy (bool or yes/no/1/0)."""
    out = []
    for i, r in enumerate(records):
        wb = r.get("would_buy")
        if isinstance(wb, str):
            s = wb.strip().lower()
            if s not in _TRUE | _FALSE:
                raise PricingError(f"record {i}: would_buy must be yes/no, got {wb!r}")
            wb = s in _TRUE
        if not isinstance(wb, bool):
            raise PricingError(f"record {i}: would_buy must be yes/no, got {wb!r}")
        rid = str(r.get("respondent_id") or r.get("account_id") or i)
        out.append(GaborGrangerAnswer(rid, _price(r.get("price"), f"record {i} price"), wb))
    return out


@dataclass(frozen=True, slots=True)
class ElasticityFit:
    """ln Q = a + ε ln P by least squares: ε with its standard error and 95% CI, n points, R²."""

    elasticity: float
    intercept: float
    std_error: float | None
    low: float | None
    high: float | None
    n: int
    r_squared: float | None


@maps_numeric_errors
def fit_elasticity(*, prices: Sequence[float] | np.ndarray, quantities: Sequence[float] | np.ndarray) -> ElasticityFit:
    """Constant-elasticity fit on positive (price, quantity) pairs, e.g. experiment arms or plan changes."""
    p = np.asarray(prices, dtype=np.float64)
    q = np.asarray(quantities, dtype=np.float64)
    if p.shape != q.shape:
        raise PricingError("prices and quantities must have the same shape")
    keep = (p > 0) & (q > 0) & np.isfinite(p) & np.isfinite(q)
    x, y = np.log(p[keep]), np.log(q[keep])
    n = int(x.size)
    if n < 2 or np.ptp(x) == 0:
        raise PricingError("an elasticity fit needs at least two distinct positive prices")
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    eps = float(((x - xm) * (y - ym)).sum() / sxx)
    a = float(ym - eps * xm)
    resid = y - (a + eps * x)
    sst = float(((y - ym) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / sst if sst > 0 else None
    if n < 3:
        return ElasticityFit(eps, a, None, None, None, n, r2)
    se = float(np.sqrt((resid**2).sum() / (n - 2) / sxx))
    t = t_quantile(df=n - 2)
    return ElasticityFit(eps, a, se, eps - t * se, eps + t * se, n, r2)


@maps_numeric_errors
def fit_elasticity_from_arms(*, arms: Sequence[ArmStats]) -> ElasticityFit:
    """ε across experiment arms: each arm's effective price (revenue per unit / mean usage) vs its mean usage.

    Needs at least two arms with different effective prices; with exactly two the fit is exact
    (no standard error). Plan-change data fits the same way with `fit_elasticity` on
    (price, quantity) pairs before and after.
    """
    prices, qty = [], []
    for a in arms:
        if a.usage_mean is not None and a.usage_mean > 0 and a.units > 0:
            prices.append(float(a.revenue_per_unit) / a.usage_mean)
            qty.append(a.usage_mean)
    return fit_elasticity(prices=prices, quantities=qty)
