"""Voice of the customer: NPS (notes' variance), CSAT top-2-box, CES; single and grouped, never mixing scales."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from cxp.analytics.core._frames import clean_values, float_column, require_columns, to_nullable
from cxp.analytics.core.stats import Z95, mean_ci_from_moments, proportion_ci
from cxp.analytics.errors import InvalidInput, InvalidParameter

SCALES: dict[str, tuple[int, int]] = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}
RESULT_SCALE: dict[str, str] = {"nps": "-100..100", "csat": "0..100 (% top-2-box)", "ces": "1..7 (mean)"}


@dataclass(frozen=True)
class NpsResult:
    """NPS = %promoters (9–10) − %detractors (0–6) with n and the 95% margin 1.96·√(100²(p+d−(p−d)²)/n)."""

    n: int
    promoters: int
    passives: int
    detractors: int
    nps: float | None
    margin: float | None
    ci_low: float | None
    ci_high: float | None
    reason: str | None = None

    @property
    def variance(self) -> float | None:
        """Var(NPS) per the domain notes, or None without enough data."""
        return (
            nps_variance(n=self.n, promoters=self.promoters, detractors=self.detractors)
            if self.nps is not None
            else None
        )


@dataclass(frozen=True)
class CsatResult:
    """CSAT = share of 4s and 5s ×100, with the Wald margin (±) and Wilson 95% bounds (×100)."""

    n: int
    top2: int
    csat: float | None
    margin: float | None
    ci_low: float | None
    ci_high: float | None
    reason: str | None = None


@dataclass(frozen=True)
class CesResult:
    """CES = mean agreement that something was easy (1–7), with SD and a t-based 95% CI."""

    n: int
    mean: float | None
    sd: float | None
    margin: float | None
    ci_low: float | None
    ci_high: float | None
    reason: str | None = None


def _scores(values: Iterable[float] | np.ndarray | pd.Series | None, measure: str) -> np.ndarray:
    lo, hi = SCALES[measure]
    v = clean_values(values)
    if v.size and (v.min() < lo or v.max() > hi or not np.all(v == np.round(v))):
        raise InvalidInput(f"{measure} scores must be integers in {lo}..{hi}")
    return v


def nps_variance(*, n: int, promoters: int, detractors: int) -> float | None:
    """Var(NPS) = 100² · (p + d − (p − d)²) / n, or None when n = 0."""
    if n <= 0:
        return None
    p, d = promoters / n, detractors / n
    return 100.0**2 * max(p + d - (p - d) ** 2, 0.0) / n


def nps_from_counts(*, n: int, promoters: int, detractors: int, min_n: int = 2) -> NpsResult:
    """NPS from response counts (promoters 9–10, detractors 0–6, n all answers)."""
    if promoters < 0 or detractors < 0 or promoters + detractors > n:
        raise InvalidInput("need 0 ≤ promoters + detractors ≤ n")
    passives = n - promoters - detractors
    if n < max(min_n, 1):
        return NpsResult(
            n,
            promoters,
            passives,
            detractors,
            None,
            None,
            None,
            None,
            reason=f"not enough data: n={n} < {max(min_n, 1)}",
        )
    value = 100.0 * (promoters - detractors) / n
    var = nps_variance(n=n, promoters=promoters, detractors=detractors) or 0.0
    margin = Z95 * math.sqrt(var)
    return NpsResult(
        n, promoters, passives, detractors, value, margin, max(-100.0, value - margin), min(100.0, value + margin)
    )


def nps(*, scores: Iterable[float] | np.ndarray | pd.Series, min_n: int = 2) -> NpsResult:
    """NPS of 0–10 answers (missing values ignored) with n and the 95% margin from the notes' variance."""
    v = _scores(scores, "nps")
    return nps_from_counts(n=int(v.size), promoters=int((v >= 9).sum()), detractors=int((v <= 6).sum()), min_n=min_n)


def csat_from_counts(*, n: int, top2: int, min_n: int = 2) -> CsatResult:
    """CSAT from counts: top2 = answers of 4 or 5 among n answers on 1–5."""
    if top2 < 0 or top2 > n:
        raise InvalidInput("need 0 ≤ top2 ≤ n")
    if n < max(min_n, 1):
        return CsatResult(n, top2, None, None, None, None, reason=f"not enough data: n={n} < {max(min_n, 1)}")
    ci = proportion_ci(successes=top2, n=n)
    assert ci.p is not None and ci.margin is not None and ci.low is not None and ci.high is not None
    return CsatResult(n, top2, 100.0 * ci.p, 100.0 * ci.margin, 100.0 * ci.low, 100.0 * ci.high)


def csat(*, scores: Iterable[float] | np.ndarray | pd.Series, min_n: int = 2) -> CsatResult:
    """CSAT top-2-box ×100 of 1–5 answers with n, Wald margin and Wilson bounds."""
    v = _scores(scores, "csat")
    return csat_from_counts(n=int(v.size), top2=int((v >= 4).sum()), min_n=min_n)


def ces(*, scores: Iterable[float] | np.ndarray | pd.Series, min_n: int = 2) -> CesResult:
    """CES mean of 1–7 answers with SD and a t-based 95% CI (needs n ≥ max(min_n, 2))."""
    v = _scores(scores, "ces")
    m = mean_ci_from_moments(n=v.size, total=float(v.sum()), total_sq=float((v * v).sum()), min_n=min_n)
    return CesResult(m.n, m.mean, m.sd, m.margin, m.low, m.high, m.reason)


def feedback_histogram(*, responses: pd.DataFrame, group_cols: Sequence[str] = ()) -> pd.DataFrame:
    """Raw feedback rows (group cols + nullable nps/csat/ces) → histogram: group cols, measure, score, responses."""
    require_columns(responses, group_cols, what="feedback_histogram")
    parts = []
    for measure in SCALES:
        if measure not in responses.columns:
            continue
        part = responses[list(group_cols)].copy()
        part["score"] = float_column(responses, measure)
        part = part[np.isfinite(part["score"].to_numpy())]
        part["measure"] = measure
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=[*group_cols, "measure", "score", "responses"])
    long = pd.concat(parts, ignore_index=True)
    return (
        long.groupby([*group_cols, "measure", "score"], dropna=False, sort=True)
        .size()
        .rename("responses")
        .reset_index()
    )


def voice_by_group(*, histogram: pd.DataFrame, group_cols: Sequence[str] = (), min_n: int = 2) -> pd.DataFrame:
    """NPS/CSAT/CES per group and measure from a response histogram; one row per group × measure, scales never mixed.

    Input columns: group cols, measure ('nps'|'csat'|'ces'), score, responses (count; 1 per row when absent).
    Output: group cols, measure, scale, n, value, margin, ci_low, ci_high, promoters_pct, detractors_pct (NPS only),
    reason — values <NA> with a reason when n < min_n (CES needs n ≥ 2 for its CI).
    """
    require_columns(histogram, [*group_cols, "measure", "score"], what="voice_by_group")
    h = histogram[[*group_cols, "measure"]].copy()
    h["measure"] = h["measure"].astype(str).str.lower()
    unknown = set(h["measure"].unique()) - set(SCALES)
    if unknown:
        raise InvalidParameter(f"unknown measure(s) {sorted(unknown)}; expected {sorted(SCALES)}")
    s = float_column(histogram, "score")
    c = float_column(histogram, "responses") if "responses" in histogram.columns else np.ones(len(h))
    c = np.nan_to_num(c, nan=0.0)
    if np.any(c < 0):
        raise InvalidInput("responses must be ≥ 0")
    keep = np.isfinite(s) & (c > 0)
    h, s, c = h[keep], s[keep], c[keep]
    meas = h["measure"].to_numpy()
    lo = np.array([SCALES[m][0] for m in meas]) if len(meas) else np.empty(0)
    hi = np.array([SCALES[m][1] for m in meas]) if len(meas) else np.empty(0)
    if np.any((s < lo) | (s > hi) | (s != np.round(s))):
        raise InvalidInput("scores out of range for their measure (nps 0..10, csat 1..5, ces 1..7; integers)")
    h = h.assign(
        n=c,
        prom=np.where(meas == "nps", (s >= 9) * c, 0.0),
        det=np.where(meas == "nps", (s <= 6) * c, 0.0),
        top2=np.where(meas == "csat", (s >= 4) * c, 0.0),
        sx=s * c,
        sxx=s * s * c,
    )
    g = h.groupby([*group_cols, "measure"], dropna=False, sort=True)[["n", "prom", "det", "top2", "sx", "sxx"]].sum()
    g = g.reset_index()
    n = g["n"].to_numpy()
    m = g["measure"].to_numpy()
    need = np.where(m == "ces", max(min_n, 2), max(min_n, 1))
    ok = n >= need
    nn = np.where(n > 0, n, 1.0)
    value = np.full(len(g), np.nan)
    margin = np.full(len(g), np.nan)
    low = np.full(len(g), np.nan)
    high = np.full(len(g), np.nan)
    # NPS
    p, d = g["prom"].to_numpy() / nn, g["det"].to_numpy() / nn
    is_n = ok & (m == "nps")
    nps_v = 100.0 * (p - d)
    nps_m = Z95 * np.sqrt(100.0**2 * np.clip(p + d - (p - d) ** 2, 0, None) / nn)
    value[is_n], margin[is_n] = nps_v[is_n], nps_m[is_n]
    low[is_n], high[is_n] = np.clip(nps_v - nps_m, -100, 100)[is_n], np.clip(nps_v + nps_m, -100, 100)[is_n]
    # CSAT
    q = g["top2"].to_numpy() / nn
    is_c = ok & (m == "csat")
    z2 = Z95 * Z95
    centre = (q + z2 / (2 * nn)) / (1 + z2 / nn)
    half = Z95 * np.sqrt(q * (1 - q) / nn + z2 / (4 * nn * nn)) / (1 + z2 / nn)
    value[is_c] = 100.0 * q[is_c]
    margin[is_c] = 100.0 * Z95 * np.sqrt(q * (1 - q) / nn)[is_c]
    low[is_c], high[is_c] = 100.0 * np.clip(centre - half, 0, 1)[is_c], 100.0 * np.clip(centre + half, 0, 1)[is_c]
    # Wilson bounds contain the estimate; rounding at 0 % / 100 % must not push them past it
    low[is_c], high[is_c] = np.minimum(low, value)[is_c], np.maximum(high, value)[is_c]
    # CES
    is_e = ok & (m == "ces")
    mean = g["sx"].to_numpy() / nn
    var = np.clip((g["sxx"].to_numpy() - nn * mean * mean) / np.where(nn > 1, nn - 1, 1.0), 0, None)
    tq = sps.t.ppf(0.975, np.where(n >= 2, n - 1, 1.0))
    ces_m = tq * np.sqrt(var) / np.sqrt(nn)
    value[is_e], margin[is_e] = mean[is_e], ces_m[is_e]
    low[is_e], high[is_e] = (mean - ces_m)[is_e], (mean + ces_m)[is_e]

    out = g[[*group_cols, "measure"]].copy()
    out["scale"] = g["measure"].map(RESULT_SCALE).to_numpy()
    out["n"] = n.astype(int)
    out["value"], out["margin"], out["ci_low"], out["ci_high"] = value, margin, low, high
    out["promoters_pct"] = np.where(is_n, 100.0 * p, np.nan)
    out["detractors_pct"] = np.where(is_n, 100.0 * d, np.nan)
    why = (
        "not enough data: n="
        + pd.Series(n, dtype=float).map("{:.0f}".format).astype(object)
        + " < "
        + pd.Series(need, dtype=object).astype(str).astype(object)
    )
    out["reason"] = np.where(ok, None, why.to_numpy(dtype=object))
    return to_nullable(out)


def satisfaction_index(
    *, device_feedback: pd.DataFrame, histogram: pd.DataFrame, key: str = "entity_id"
) -> pd.DataFrame:
    """Per entity: mean standardised feedback answer (each measure z-scored over all answers) and answer count.

    `device_feedback`: key, <measure>_n and <measure>_mean per measure. `histogram`: measure, score, responses over
    the same answers (the z-score reference). Measures with fewer than 2 answers or no spread are left out;
    entities without a counted answer are dropped. Returns key, satisfaction, answers.
    """
    if device_feedback.empty or histogram.empty:
        return pd.DataFrame(columns=[key, "satisfaction", "answers"])
    weighted_z = np.zeros(len(device_feedback))
    answers = np.zeros(len(device_feedback))
    for measure in SCALES:
        counts = histogram[histogram["measure"] == measure]
        n = float(counts["responses"].sum())
        if n < 2:
            continue
        mean = float((counts["score"] * counts["responses"]).sum() / n)
        sd = math.sqrt(float((counts["responses"] * (counts["score"] - mean) ** 2).sum() / (n - 1)))
        if sd <= 0:
            continue
        device_n = device_feedback[f"{measure}_n"].to_numpy(dtype=float)
        device_mean = device_feedback[f"{measure}_mean"].to_numpy(dtype=float, na_value=np.nan)
        answered = device_n > 0
        weighted_z[answered] += device_n[answered] * (device_mean[answered] - mean) / sd
        answers[answered] += device_n[answered]
    out = pd.DataFrame(
        {
            key: device_feedback[key],
            "satisfaction": np.where(answers > 0, weighted_z / np.where(answers > 0, answers, 1), np.nan),
            "answers": answers,
        }
    )
    return out[out["answers"] > 0]
