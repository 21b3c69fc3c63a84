"""Price experiments: deterministic salted-hash assignment of units to arms (= plans) and their analysis.

Assignment: a unit (account or device id) lands in arm k when sha256(salt ␟ unit)[:8] / 2^64 falls
in arm k's slice of [0, 1) (slices in arm order, sized by the arms' weights, compared in exact
integers). Same salt, same assignment; a new salt reshuffles.

Analysis per arm: mean usage, revenue per account (exact Decimal), experience health, conversion
and churn shares. Differences against the control arm: Welch's t (means) or the two-proportion z
test (shares), each with a 95% CI and a two-sided p-value. Sample-ratio mismatch: chi-square of the
arm sizes against the design's split (flagged at p < 0.001). Guardrail: an arm whose health
difference is significantly negative (p < α) and worse than the tolerated drop is flagged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Annotated

import numpy as np
from pydantic import Field, model_validator
from scipy import stats as sps

from cxp.pricing.errors import PricingError
from cxp.pricing.money import RoundingRule
from cxp.pricing.plans import ComponentId, _Model

SRM_ALPHA = 0.001


class Arm(_Model):
    """One arm: a name, the plan it bills with (plan key `id@vN`) and its share weight."""

    name: ComponentId
    plan_key: str
    weight: Annotated[Decimal, Field(gt=0)] = Decimal(1)


class ExperimentDesign(_Model):
    """A price experiment: arms (first = control), salt, assignment unit, window [start, end)."""

    experiment_id: ComponentId
    salt: Annotated[str, Field(min_length=1)]
    arms: Annotated[tuple[Arm, ...], Field(min_length=2)]
    start: datetime
    end: datetime
    unit: str = "account"
    guardrail_health_drop: Annotated[float, Field(ge=0)] = 0.0  # tolerated drop in health points

    @model_validator(mode="after")
    def _check(self) -> ExperimentDesign:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique, got {names}")
        if self.unit not in ("account", "device"):
            raise ValueError("unit must be 'account' or 'device'")
        return self

    @property
    def shares(self) -> tuple[Fraction, ...]:
        """Each arm's exact share of units."""
        total = sum(Fraction(a.weight) for a in self.arms)
        return tuple(Fraction(a.weight) / total for a in self.arms)


def unit_hash(*, unit_id: str, salt: str) -> int:
    """A uniform integer in [0, 2^64) from (salt, unit id)."""
    return int.from_bytes(hashlib.sha256(f"{salt}\x1f{unit_id}".encode()).digest()[:8], "big")


def assign_arms(*, design: ExperimentDesign, unit_ids: Sequence[str]) -> np.ndarray:
    """Arm index per unit (deterministic, exact cut points)."""
    cuts: list[int] = []
    acc = Fraction(0)
    for s in design.shares[:-1]:
        acc += s
        cuts.append(int(acc * 2**64))  # floor: a unit goes to arm k iff cuts[k-1] ≤ h < cuts[k]
    h = [unit_hash(unit_id=u, salt=design.salt) for u in unit_ids]
    return np.array([sum(x >= c for c in cuts) for x in h], dtype=np.intp)


@dataclass(frozen=True, slots=True)
class Difference:
    """Treatment − control with a 95% CI and a two-sided p-value; None where not computable."""

    metric: str
    arm: str
    control: str
    diff: float | None
    low: float | None
    high: float | None
    p_value: float | None
    test: str

    @property
    def significant(self) -> bool:
        """p < 0.05."""
        return self.p_value is not None and self.p_value < 0.05


def welch(*, a: np.ndarray, b: np.ndarray, metric: str = "", arm: str = "", control: str = "") -> Difference:
    """mean(a) − mean(b) with Welch's t: 95% CI and p-value (a = treatment, b = control)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size < 2 or b.size < 2:
        return Difference(metric, arm, control, None, None, None, None, "welch")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    d = float(a.mean() - b.mean())
    se = float(np.sqrt(va + vb))
    if se == 0:
        return Difference(metric, arm, control, d, d, d, None if d == 0 else 0.0, "welch")
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    t = d / se
    q = float(sps.t.ppf(0.975, df))
    return Difference(metric, arm, control, d, d - q * se, d + q * se, float(2 * sps.t.sf(abs(t), df)), "welch")


def two_proportions(
    *, x_a: int, n_a: int, x_b: int, n_b: int, metric: str = "", arm: str = "", control: str = ""
) -> Difference:
    """p_a − p_b: pooled two-proportion z test p-value, unpooled (Wald) 95% CI."""
    if n_a == 0 or n_b == 0:
        return Difference(metric, arm, control, None, None, None, None, "two_proportion_z")
    pa, pb = x_a / n_a, x_b / n_b
    d = pa - pb
    pool = (x_a + x_b) / (n_a + n_b)
    se0 = np.sqrt(pool * (1 - pool) * (1 / n_a + 1 / n_b))
    se = np.sqrt(pa * (1 - pa) / n_a + pb * (1 - pb) / n_b)
    p = float(2 * sps.norm.sf(abs(d) / se0)) if se0 > 0 else None
    z = 1.959963984540054
    return Difference(metric, arm, control, d, d - z * se, d + z * se, p, "two_proportion_z")


@dataclass(frozen=True, slots=True)
class SampleRatio:
    """Chi-square test of the arm sizes against the design's split; `mismatch` at p < 0.001."""

    counts: tuple[int, ...]
    expected: tuple[float, ...]
    chi2: float
    p_value: float
    mismatch: bool


def sample_ratio_check(*, counts: Sequence[int], shares: Sequence[Fraction | float]) -> SampleRatio:
    """Sample-ratio-mismatch check: chi-square goodness of fit of `counts` to `shares`."""
    n = sum(counts)
    exp = [float(s) * n for s in shares]
    if n == 0:
        return SampleRatio(tuple(counts), tuple(exp), 0.0, 1.0, False)
    chi2 = float(sum((c - e) ** 2 / e for c, e in zip(counts, exp, strict=True) if e > 0))
    p = float(sps.chi2.sf(chi2, len(counts) - 1))
    return SampleRatio(tuple(int(c) for c in counts), tuple(exp), chi2, p, p < SRM_ALPHA)


@dataclass(frozen=True, slots=True)
class ArmStats:
    """One arm's figures."""

    arm: str
    plan_key: str
    units: int
    usage_mean: float | None
    revenue_per_unit: Decimal
    revenue: Decimal
    health_mean: float | None
    conversion: float | None
    churn: float | None


@dataclass(frozen=True)
class ExperimentResult:
    """Per-arm figures, differences against the control, SRM check and guardrail flags."""

    design: ExperimentDesign
    arms: tuple[ArmStats, ...]
    differences: tuple[Difference, ...]
    sample_ratio: SampleRatio
    guardrail_flags: tuple[str, ...]  # arms that hurt experience health

    def difference(self, *, metric: str, arm: str) -> Difference:
        """The difference of `metric` for `arm` against the control."""
        for d in self.differences:
            if d.metric == metric and d.arm == arm:
                return d
        raise PricingError(f"no difference for {metric!r} in arm {arm!r}")


def analyse_experiment(
    *,
    design: ExperimentDesign,
    arm_index: np.ndarray,
    usage: np.ndarray,
    revenue_quanta: np.ndarray,
    rule: RoundingRule,
    health: np.ndarray | None = None,
    converted: np.ndarray | None = None,
    churned: np.ndarray | None = None,
    alpha: float = 0.05,
) -> ExperimentResult:
    """Analyse per-unit outcomes (arrays aligned with `arm_index`): per-arm stats and differences vs arm 0."""
    arm_index = np.asarray(arm_index)
    k = len(design.arms)
    if arm_index.size and (arm_index.min() < 0 or arm_index.max() >= k):
        raise PricingError("arm_index holds an arm outside the design")
    usage = np.asarray(usage, dtype=np.float64)
    rev = np.asarray(revenue_quanta)
    stats: list[ArmStats] = []
    masks = [arm_index == i for i in range(k)]
    for i, a in enumerate(design.arms):
        m = masks[i]
        n = int(m.sum())
        tot = int(rev[m].sum())
        stats.append(
            ArmStats(
                arm=a.name,
                plan_key=a.plan_key,
                units=n,
                usage_mean=float(usage[m].mean()) if n else None,
                revenue_per_unit=rule.round(rule.from_quanta(tot) / Decimal(n)) if n else rule.from_quanta(0),
                revenue=rule.from_quanta(tot),
                health_mean=float(np.nanmean(health[m]))
                if health is not None and n and np.isfinite(health[m]).any()
                else None,
                conversion=float(np.mean(converted[m])) if converted is not None and n else None,
                churn=float(np.mean(churned[m])) if churned is not None and n else None,
            )
        )
    diffs: list[Difference] = []
    flags: list[str] = []
    c = masks[0]
    cname = design.arms[0].name
    revf = rev.astype(np.float64) * float(rule.quantum)
    for i in range(1, k):
        m, name = masks[i], design.arms[i].name
        diffs.append(welch(a=usage[m], b=usage[c], metric="usage", arm=name, control=cname))
        diffs.append(welch(a=revf[m], b=revf[c], metric="revenue_per_unit", arm=name, control=cname))
        if health is not None:
            h = np.asarray(health, dtype=np.float64)
            d = welch(a=h[m], b=h[c], metric="health", arm=name, control=cname)
            diffs.append(d)
            if (
                d.diff is not None
                and d.p_value is not None
                and d.p_value < alpha
                and d.diff < -design.guardrail_health_drop
            ):
                flags.append(name)
        for metric, arr in (("conversion", converted), ("churn", churned)):
            if arr is not None:
                arr = np.asarray(arr, dtype=bool)
                diffs.append(
                    two_proportions(
                        x_a=int(arr[m].sum()),
                        n_a=int(m.sum()),
                        x_b=int(arr[c].sum()),
                        n_b=int(c.sum()),
                        metric=metric,
                        arm=name,
                        control=cname,
                    )
                )
    srm = sample_ratio_check(counts=[int(m.sum()) for m in masks], shares=design.shares)
    return ExperimentResult(design, tuple(stats), tuple(diffs), srm, tuple(flags))


def arms_by_plan(*, design: ExperimentDesign, plans: Mapping[str, object]) -> None:
    """Check every arm's plan key is among `plans` (raise PricingError otherwise)."""
    missing = [a.plan_key for a in design.arms if a.plan_key not in plans]
    if missing:
        raise PricingError(f"arms bill with unknown plans {missing}; known: {sorted(plans)}")
