"""The experience guardrail of a running price experiment, checked at recorded looks (keyword-only service).

Each look analyses the experiment on the usage recorded so far (`service.get_experiment_results` up to
`as_of`), turns each treatment arm's health difference into a z (from its Welch p-value, signed by the
estimate) and compares it with a group-sequential boundary that accounts for every earlier look
(`core.sequential`): an arm is stopped when it is significantly worse than control at the spent α and
by more than the design's tolerated drop. Looks are recorded, so the boundary of the next one is right
whoever asks and however often; a look closer than `MIN_STEP` of information to the last returns the last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from scipy import stats as sps

from cxp.pricing import repository
from cxp.pricing.core.plans import BillableMetric, Plan
from cxp.pricing.core.sequential import SPENDING, GuardrailCheck, Spending, guardrail_check
from cxp.pricing.errors import PricingError, maps_numeric_errors
from cxp.pricing.metrics import ALL_ACCOUNTS, Cohort
from cxp.pricing.service import get_experiment_results

MIN_STEP = 0.01  # information fraction between recorded looks


@dataclass(frozen=True)
class GuardrailReport:
    """One look: per treatment arm, the check; `recorded` False when the last look was returned instead."""

    experiment_id: str
    look: int
    as_of: datetime
    information_fraction: float
    spending: str
    alpha: float
    checks: dict[str, GuardrailCheck]
    recorded: bool

    @property
    def stop(self) -> bool:
        """Whether any arm crossed its boundary."""
        return any(c.stop for c in self.checks.values())

    @property
    def final(self) -> bool:
        """Whether the whole window has been seen."""
        return self.information_fraction >= 1.0


def _z(estimate: float | None, p_value: float | None) -> float | None:
    """The normal z with the same two-sided p-value, signed like the estimate."""
    if estimate is None or p_value is None or not math.isfinite(p_value):
        return None
    magnitude = float(sps.norm.isf(max(p_value, 1e-300) / 2))
    return math.copysign(magnitude, estimate) if estimate != 0 else 0.0


def _report(experiment_id: str, rows: list[dict]) -> GuardrailReport:
    """The report of the last recorded look in `rows` (ordered by look)."""
    last = rows[-1]["look"]
    mine = [r for r in rows if r["look"] == last]
    checks = {
        r["arm"]: GuardrailCheck(
            look=last,
            information_fraction=r["information_fraction"],
            alpha_spent=r["alpha_spent"],
            boundary_z=r["boundary_z"],
            z=r["z"],
            estimate=r["estimate"],
            tolerated_drop=r["tolerated_drop"],
            stop=r["stop"],
        )
        for r in mine
    }
    head = mine[0]
    return GuardrailReport(
        experiment_id,
        last,
        head["as_of"],
        head["information_fraction"],
        head["spending"],
        head["alpha"],
        checks,
        recorded=False,
    )


def _looks(rows: list[dict]) -> list[dict]:
    """One row per recorded look."""
    seen: dict[int, dict] = {}
    for r in rows:
        seen.setdefault(r["look"], r)
    return [seen[k] for k in sorted(seen)]


@maps_numeric_errors
def check_guardrail(
    *,
    conn: psycopg.Connection,
    experiment_id: str,
    plans: Sequence[Plan],
    as_of: datetime | None = None,
    spending: Spending = "obrien-fleming",
    alpha: float = 0.05,
    cohort: Cohort = ALL_ACCOUNTS,
    metrics: Sequence[BillableMetric] = (),
) -> GuardrailReport:
    """Take (and record) the next look at `experiment_id` as of `as_of` (default: now)."""
    if spending not in SPENDING:
        raise PricingError(f"unknown spending function {spending!r}; one of {', '.join(SPENDING)}")
    if not 0 < alpha < 0.5:
        raise PricingError("alpha must be in (0, 0.5)")
    stored = repository.get_experiment(conn, experiment_id=experiment_id)
    if stored is None:
        raise PricingError(f"no experiment {experiment_id!r}")
    design = stored.design
    as_of = as_of or datetime.now(UTC)
    if as_of.tzinfo is None:
        raise PricingError("as_of must be timezone-aware")
    if as_of <= design.start:
        raise PricingError(f"the experiment starts at {design.start.isoformat()}: nothing to look at before")
    t = min(1.0, (as_of - design.start) / (design.end - design.start))
    with conn.transaction():
        repository.lock_experiment(conn, experiment_id=experiment_id)
        rows = repository.list_guardrail_checks(conn, experiment_id=experiment_id)
        looks = _looks(rows)
        if looks:
            first = looks[0]
            if (first["spending"], first["alpha"]) != (spending, alpha):
                raise PricingError(
                    f"this experiment's looks spend α = {first['alpha']} by {first['spending']}: "
                    "the spending function is fixed at the first look"
                )
            if as_of < looks[-1]["as_of"]:
                raise PricingError(f"a later look was recorded as of {looks[-1]['as_of'].isoformat()}")
            last_t = looks[-1]["information_fraction"]
            if last_t >= 1.0 or (t - last_t < MIN_STEP and t < 1.0):
                return _report(experiment_id, rows)
        fractions = [r["information_fraction"] for r in looks] + [t]
        result = get_experiment_results(
            conn=conn, design=design, plans=plans, cohort=cohort, metrics=metrics, until=min(as_of, design.end)
        )
        checks: dict[str, GuardrailCheck] = {}
        for arm in design.arms[1:]:
            d = result.difference(metric="health", arm=arm.name)
            checks[arm.name] = guardrail_check(
                fractions=fractions,
                z=_z(d.estimate, d.p_value),
                estimate=d.estimate,
                tolerated_drop=design.guardrail_health_drop,
                alpha=alpha,
                spending=spending,
            )
        look = len(fractions)
        repository.insert_guardrail_checks(
            conn,
            experiment_id=experiment_id,
            rows=[
                {
                    "look": look,
                    "arm": name,
                    "as_of": as_of,
                    "information_fraction": t,
                    "spending": spending,
                    "alpha": alpha,
                    "alpha_spent": c.alpha_spent,
                    "boundary_z": c.boundary_z,
                    "z": c.z,
                    "estimate": c.estimate,
                    "tolerated_drop": c.tolerated_drop,
                    "stop": c.stop,
                }
                for name, c in checks.items()
            ],
        )
    return GuardrailReport(experiment_id, look, as_of, t, spending, alpha, checks, recorded=True)


@maps_numeric_errors
def list_guardrail_looks(*, conn: psycopg.Connection, experiment_id: str) -> list[GuardrailReport]:
    """Every recorded look at the experiment, oldest first."""
    rows = repository.list_guardrail_checks(conn, experiment_id=experiment_id)
    out = []
    for look in sorted({r["look"] for r in rows}):
        out.append(_report(experiment_id, [r for r in rows if r["look"] <= look]))
    return out
