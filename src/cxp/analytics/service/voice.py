"""Voice of the customer: NPS, CSAT and CES per group and overall, counted in SQL, scored by core.voice."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import psycopg

from cxp.analytics.core import voice as core_voice
from cxp.analytics.core._frames import finite_or_none
from cxp.analytics.errors import maps_numeric_errors
from cxp.analytics.models import Measure, VoiceGroup, VoiceReport
from cxp.analytics.queries.feedback import feedback_histogram
from cxp.analytics.query import ALL_DEVICES, AnalyticsQuery
from cxp.analytics.service._common import count_or_zero, empty_window, resolve_window

NO_ANSWERS = VoiceGroup(key={}, nps=None, csat=None, ces=None)


def _measure(row: pd.Series) -> Measure:
    return Measure(
        measure=str(row["measure"]),  # type: ignore[arg-type]
        scale=str(row["scale"]),
        n=count_or_zero(row["n"]),
        value=finite_or_none(row["value"]),
        margin=finite_or_none(row["margin"]),
        ci_low=finite_or_none(row["ci_low"]),
        ci_high=finite_or_none(row["ci_high"]),
        promoters_pct=finite_or_none(row.get("promoters_pct")),
        detractors_pct=finite_or_none(row.get("detractors_pct")),
        reason=row.get("reason"),
    )


def _voice_groups(histogram: pd.DataFrame, by: Sequence[str], min_n: int) -> list[VoiceGroup]:
    if histogram.empty:
        return []
    result = core_voice.voice_by_group(histogram=histogram, group_cols=list(by), min_n=min_n)
    groups: dict[tuple, dict[str, Measure]] = {}
    for _, row in result.iterrows():
        key = tuple(str(row[c]) for c in by)
        groups.setdefault(key, {})[str(row["measure"])] = _measure(row)
    return [
        VoiceGroup(
            key=dict(zip(by, key, strict=True)),
            nps=measures.get("nps"),
            csat=measures.get("csat"),
            ces=measures.get("ces"),
        )
        for key, measures in groups.items()
    ]


@maps_numeric_errors
def get_voice(
    *,
    conn: psycopg.Connection,
    query: AnalyticsQuery = ALL_DEVICES,
    by: Sequence[str] = ("product",),
    days: int = 90,
    min_n: int = 2,
) -> VoiceReport:
    """NPS (with n and 95% margin), CSAT top-2-box and CES per group and overall, from the stored feedback.

    `by`: any of product, touchpoint (relationship NPS answers are '(relationship)'), segment, week, month, day.
    Counting happens in SQL (a histogram per group × measure × score); the formulas are analytics.core.voice.
    """
    window = resolve_window(conn, query=query, default_days=days)
    if window is None:
        return VoiceReport(window=empty_window(), by=tuple(by), overall=NO_ANSWERS, groups=())
    histogram = feedback_histogram(conn, scope=query, start=window.start, end=window.end, by=list(by))
    overall_histogram = (
        histogram.groupby(["measure", "score"], as_index=False)["responses"].sum() if len(histogram) else histogram
    )
    overall = _voice_groups(overall_histogram, (), min_n)
    return VoiceReport(
        window=window,
        by=tuple(by),
        overall=overall[0] if overall else NO_ANSWERS,
        groups=tuple(_voice_groups(histogram, by, min_n)),
    )
