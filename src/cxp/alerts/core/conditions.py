"""Pure condition tests of the rule types."""

from __future__ import annotations

import math
from dataclasses import dataclass

from cxp.alerts.core.rules import TouchpointParams


@dataclass(frozen=True)
class Verdict:
    """Whether a condition fires and the numbers that decided it."""

    firing: bool
    values: dict


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


def touchpoint_verdict(p: TouchpointParams, *, n: int, successes: int, latency_n: int, latency_sum: float,
                       base_n: int, base_successes: int) -> Verdict:
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
