"""Pure condition tests of the rule types."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from cxp.alerts.core.rules import HealthParams, TouchpointParams, VoiceParams

BAND_RANK = {"red": 0, "amber": 1, "green": 2}


@dataclass(frozen=True)
class Verdict:
    """Whether a condition fires and the numbers that decided it.

    `product_id` / `touchpoint`: what the alert is about when it concerns a product or one of its touchpoints as a
    whole (not one device): the dashboard's health and touchpoint charts mark those alerts.
    """

    firing: bool
    values: dict
    product_id: str | None = None
    touchpoint: str | None = None


def period_start(kind: str, now: datetime) -> datetime:
    """The start of the period a cadence rule looks at: the hour for incidents, the UTC day for the others."""
    if kind == "incident":
        return now.replace(minute=0, second=0, microsecond=0)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def due(kind: str, *, last: datetime | None, now: datetime, every_s: float) -> bool:
    """Whether a cadence rule is evaluated in this pass: never before, its period changed since, `every_s` passed,
    or the clock went back (another leader's clock: evaluating once more is harmless)."""
    if last is None or now < last:
        return True
    return period_start(kind, now) != period_start(kind, last) or now - last >= timedelta(seconds=every_s)


def drop_p_value(*, successes: int, n: int, base_successes: int, base_n: int) -> float:
    """One-sided pooled two-proportion z-test p-value that the window's rate is below the baseline's."""
    if n == 0 or base_n == 0:
        return 1.0
    pooled = (successes + base_successes) / (n + base_n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / base_n))
    if se == 0:
        return 1.0
    z = (successes / n - base_successes / base_n) / se
    return 0.5 * math.erfc(-z / math.sqrt(2))


def touchpoint_verdict(
    p: TouchpointParams, *, n: int, successes: int, latency_n: int, latency_sum: float, base_n: int, base_successes: int
) -> Verdict:
    """Judge one touchpoint's window against the rule's thresholds and baseline; below min_n never fires."""
    rate = successes / n if n else None
    values: dict = {"n": n, "success_rate": rate}
    if n < p.min_n:
        return Verdict(False, values | {"reason": "below min_n"})
    reasons = []
    if p.max_failure_rate is not None and 1 - rate > p.max_failure_rate:
        reasons.append("failure_rate")
    if p.max_mean_latency_ms is not None and latency_n:
        mean = latency_sum / latency_n
        values["mean_latency_ms"] = round(mean, 3)
        if mean > p.max_mean_latency_ms:
            reasons.append("latency")
    if p.baseline_h and base_n >= p.min_n:
        base_rate = base_successes / base_n
        pv = drop_p_value(successes=successes, n=n, base_successes=base_successes, base_n=base_n)
        values |= {"baseline_n": base_n, "baseline_success_rate": base_rate, "p_value": pv}
        if pv < p.alpha and base_rate - rate >= p.min_drop:
            reasons.append("baseline_drop")
    return Verdict(bool(reasons), values | {"reasons": reasons})


def health_verdict(
    p: HealthParams, *, score: float | None, previous_score: float | None, band: str | None, previous_band: str | None
) -> Verdict:
    """Judge one entity's latest whole-week health score against the band, the weekly drop and the band change."""
    values: dict = {"score": score, "previous_score": previous_score, "band": band, "previous_band": previous_band}
    if score is None:
        return Verdict(False, values | {"reason": "no score"})
    reasons = []
    if p.min_score is not None and score < p.min_score:
        reasons.append("below_band")
    if p.max_score is not None and score > p.max_score:
        reasons.append("above_band")
    if previous_score is not None:
        values["delta"] = round(score - previous_score, 3)
        if p.max_weekly_drop is not None and previous_score - score >= p.max_weekly_drop:
            reasons.append("weekly_drop")
    if p.band_drop and band in BAND_RANK and previous_band in BAND_RANK and BAND_RANK[band] < BAND_RANK[previous_band]:
        reasons.append("band_drop")
    return Verdict(bool(reasons), values | {"reasons": reasons})


def voice_verdict(
    p: VoiceParams,
    *,
    value: float | None,
    margin: float | None,
    n: int,
    previous_value: float | None,
    previous_margin: float | None,
    previous_n: int,
) -> Verdict:
    """A fall of the measure by more than the 95 % margin of error of the difference of two independent periods."""
    values: dict = {
        "measure": p.measure,
        "value": value,
        "margin": margin,
        "n": n,
        "previous_value": previous_value,
        "previous_margin": previous_margin,
        "previous_n": previous_n,
    }
    if n < p.min_n or previous_n < p.min_n:
        return Verdict(False, values | {"reason": "below min_n"})
    if value is None or previous_value is None or margin is None or previous_margin is None:
        return Verdict(False, values | {"reason": "no value"})
    drop = previous_value - value
    diff_margin = math.sqrt(margin**2 + previous_margin**2)
    values |= {"drop": round(drop, 3), "difference_margin": round(diff_margin, 3)}
    return Verdict(drop > diff_margin, values)
