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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Annotated

import numpy as np
from pydantic import Field, model_validator
from scipy import stats as sps

from cxp.core.stats import Z95, Difference, welch_difference
from cxp.pricing.core.charges import account_hash
from cxp.pricing.core.money import RoundingRule
from cxp.pricing.core.plans import ComponentId
from cxp.pricing.core.validation import StrictModel
from cxp.pricing.errors import PricingError

SRM_ALPHA = 0.001


class Arm(StrictModel):
    """One arm: a name, the plan it bills with (plan key `id@vN`) and its share weight."""

    name: ComponentId
    plan_key: str
    weight: Annotated[Decimal, Field(gt=0)] = Decimal(1)


class ExperimentDesign(StrictModel):
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


def assign_arms(*, design: ExperimentDesign, unit_ids: Sequence[str]) -> np.ndarray:
    """Arm index per unit (deterministic, exact cut points)."""
    cuts: list[int] = []
    cumulative_share = Fraction(0)
    for share in design.shares[:-1]:
        cumulative_share += share
        cuts.append(int(cumulative_share * 2**64))  # floor: a unit goes to arm k iff cuts[k-1] ≤ h < cuts[k]
    # The same salted hash that decides freemium upgrades: sha256(salt ␟ unit id), first 8 bytes.
    hashes = [account_hash(account_id=u, salt=design.salt) for u in unit_ids]
    return np.array([sum(h >= c for c in cuts) for h in hashes], dtype=np.intp)


def two_proportions(
    *, x_a: int, n_a: int, x_b: int, n_b: int, metric: str = "", arm: str = "", control: str = ""
) -> Difference:
    """p_a − p_b: pooled two-proportion z test p-value, unpooled (Wald) 95% CI."""
    labels = {"test": "two_proportion_z", "metric": metric, "arm": arm, "control": control}
    if n_a == 0 or n_b == 0:
        return Difference(None, None, None, n_a, n_b, reason="no units in a group", **labels)
    p_a, p_b = x_a / n_a, x_b / n_b
    estimate = p_a - p_b
    pooled = (x_a + x_b) / (n_a + n_b)
    se_pooled = np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    se = np.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    p_value = float(2 * sps.norm.sf(abs(estimate) / se_pooled)) if se_pooled > 0 else None
    return Difference(estimate, estimate - Z95 * se, estimate + Z95 * se, n_a, n_b, p_value, **labels)


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
        revenue = int(rev[m].sum())
        stats.append(
            ArmStats(
                arm=a.name,
                plan_key=a.plan_key,
                units=n,
                usage_mean=float(usage[m].mean()) if n else None,
                revenue_per_unit=rule.round(rule.from_quanta(revenue) / Decimal(n)) if n else rule.from_quanta(0),
                revenue=rule.from_quanta(revenue),
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
    control_name = design.arms[0].name
    revenue_amounts = rev.astype(np.float64) * float(rule.quantum)
    for i in range(1, k):
        m, name = masks[i], design.arms[i].name
        labels = {"arm": name, "control": control_name}
        diffs.append(replace(welch_difference(a=usage[m], b=usage[c]), metric="usage", **labels))
        revenue_difference = welch_difference(a=revenue_amounts[m], b=revenue_amounts[c])
        diffs.append(replace(revenue_difference, metric="revenue_per_unit", **labels))
        if health is not None:
            h = np.asarray(health, dtype=np.float64)
            d = replace(welch_difference(a=h[m], b=h[c]), metric="health", **labels)
            diffs.append(d)
            if (
                d.estimate is not None
                and d.p_value is not None
                and d.p_value < alpha
                and d.estimate < -design.guardrail_health_drop
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
                        control=control_name,
                    )
                )
    srm = sample_ratio_check(counts=[int(m.sum()) for m in masks], shares=design.shares)
    return ExperimentResult(design, tuple(stats), tuple(diffs), srm, tuple(flags))


def arms_by_plan(*, design: ExperimentDesign, plans: Mapping[str, object]) -> None:
    """Check every arm's plan key is among `plans` (raise PricingError otherwise)."""
    missing = [a.plan_key for a in design.arms if a.plan_key not in plans]
    if missing:
        raise PricingError(f"arms bill with unknown plans {missing}; known: {sorted(plans)}")
