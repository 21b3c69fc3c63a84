"""Touchpoints: reach, success, latency, derived importance, IPA quadrant and satisfier class per product."""

from __future__ import annotations

from typing import Literal

import pandas as pd
import psycopg

from cxp.analytics.core import kano as core_kano
from cxp.analytics.core import touchpoints as core_touchpoints
from cxp.analytics.core._frames import finite_or_none, member_of
from cxp.analytics.core.priorities import CROSSHAIRS, device_performance, survey_quadrants, touchpoint_priorities
from cxp.analytics.core.stats import proportion_ci
from cxp.analytics.errors import maps_numeric_errors
from cxp.analytics.models import OutcomeModel, SurveyPoint, TouchpointInsight, TouchpointReport, Window
from cxp.analytics.queries._base import concurrently, shared_reads, shared_value
from cxp.analytics.queries.registry import devices, touchpoint_catalogue
from cxp.analytics.queries.touchpoints import (
    device_touchpoints,
    touchpoint_answers,
    touchpoint_totals,
)
from cxp.analytics.query import ALL_DEVICES, AnalyticsQuery
from cxp.analytics.service._common import count_or_zero, empty_window, resolve_window
from cxp.analytics.service.outcomes import device_retention, device_satisfaction
from cxp.store.survey import list_survey

DEFINITIONS = {
    "performance": "mean of success rate ×100 and latency_score(mean latency / target) (core touchpoint_summary)",
    "importance": "derived importance (IPA x-axis): the satisfaction spread between a failed and a successful use of"
    " the touchpoint, CSAT points, from a regression of CSAT answers on low/high dummies with a device intercept"
    " (core kano); a lower bound (penalty or reward alone) when one side has too few answers; not placed without"
    " either. Crosshairs at the product's means",
    "classification": "Kano class from the penalty share π = penalty / (penalty + reward): basic ≥ 0.8, attractive"
    " ≤ 0.35, else performance; indifferent when the spread's 95 % interval lies within ±0.5; n per group",
    "importance_usage": "share of the product's uses going through the touchpoint, %",
    "importance_retention": "Shapley share of R² of retained (0/1: not cancelled/returned, used in the last"
    " 28 days) on per-device touchpoint performance; None unless the model's F test has p < alpha",
    "importance_feedback": "same for the device's satisfaction index (mean z-score of its NPS, CSAT and CES answers)",
}


def touchpoint_classes(conn: psycopg.Connection, *, scope: AnalyticsQuery, window: Window) -> core_kano.KanoFit:
    """Penalty, reward, derived importance and Kano class per product × touchpoint from the window's CSAT answers
    (core kano): each answer grouped by the day's last use of its touchpoint before it and the failures of the week
    before (both kept per answer by the rollup refresh)."""
    return shared_value(("touchpoint_classes", scope, window), lambda: _touchpoint_classes(conn, scope, window))


def _touchpoint_classes(conn: psycopg.Connection, scope: AnalyticsQuery, window: Window) -> core_kano.KanoFit:
    answers = touchpoint_answers(conn, scope=scope, start=window.start, end=window.end)
    product_of = devices(conn, scope=scope).set_index("device_key")["product_id"]
    # the device key identifies an answer's device as well as its id does
    answers = answers.assign(product_id=answers["device_key"].map(product_of), device_id=answers["device_key"])
    if answers.empty:
        return core_kano.kano_classes(answers=answers.assign(group=pd.Series(dtype=object)))
    answers["group"] = core_kano.answer_groups(answers=answers)
    return core_kano.kano_classes(answers=answers)


def _outcome_inputs(
    conn: psycopg.Connection, *, query: AnalyticsQuery, window: Window, scoped: pd.DataFrame,
    catalogue: pd.DataFrame, min_device_uses: int,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Per-device touchpoint performance and the outcomes (retention, feedback) it is modelled against."""
    per_device = device_touchpoints(conn, scope=query, start=window.start, end=window.end)
    per_device = per_device.merge(scoped[["device_key", "device_id", "product_id"]], on="device_key")
    per_device = per_device.merge(
        catalogue[["product_id", "touchpoint", "target_latency_ms"]], on=["product_id", "touchpoint"], how="left"
    )
    per_device = per_device[per_device["uses"] >= min_device_uses]
    per_device["performance"] = device_performance(frame=per_device)

    retention = device_retention(conn, scope=query, window=window, devices=scoped)
    satisfaction = device_satisfaction(conn, scope=query, window=window).merge(
        scoped[["device_key", "device_id"]], on="device_key"
    )
    used = per_device["device_id"].drop_duplicates()  # a Series: matched in Arrow, not a Python set of every id
    outcomes = {
        "retention": retention[member_of(retention["device_id"], used)][["device_id", "retained"]].rename(
            columns={"retained": "outcome"}
        ),
        "feedback": satisfaction[["device_id", "satisfaction"]].rename(columns={"satisfaction": "outcome"}),
    }
    return per_device[["device_id", "product_id", "touchpoint", "performance"]], outcomes


@maps_numeric_errors
@shared_reads()  # the totals and the per-device rows come from one read
def get_touchpoints(
    *,
    conn: psycopg.Connection,
    query: AnalyticsQuery = ALL_DEVICES,
    days: int = 56,
    min_device_uses: int = 3,
    alpha: float = 0.05,
    survey_crosshairs: Literal["data", "midpoint"] = "data",
    outcome_models: bool = True,
) -> TouchpointReport:
    """Per touchpoint: reach, usage share, success rate (Wilson CI), latency vs target, journey stage and owner,
    derived importance from satisfaction answers, IPA quadrant and Kano class with the n behind them, and the
    Shapley importances vs retention and feedback (significant at `alpha`) beside them.

    IPA importance = the satisfaction spread between a failed and a successful use (core kano via
    `touchpoint_classes`; `importance_basis` says what it rests on); touchpoints without enough answers are not
    placed rather than ranked by usage share. IPA crosshairs: means within each product (docs/analytics.md).
    The stored stated importance × quality survey (store.survey) comes beside, with its quadrants on its own scale
    and `survey_crosshairs` at the survey's means ("data") or the scale midpoint ("midpoint").
    `outcome_models=False` (views that show only reach, success, performance and quadrant) leaves the retention and
    feedback models out: no models, their importances and rhos None and their n 0; everything else is the same.
    """
    window = resolve_window(conn, query=query, default_days=days)
    if window is None:
        return TouchpointReport(window=empty_window(), touchpoints=(), models=(), crosshairs={})
    catalogue = touchpoint_catalogue(conn, product=query.product)
    scoped = devices(conn, scope=query)

    def outcome_inputs() -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
        if not outcome_models:
            return pd.DataFrame(columns=["device_id", "product_id", "touchpoint", "performance"]), {}
        return _outcome_inputs(conn, query=query, window=window, scoped=scoped, catalogue=catalogue,
                               min_device_uses=min_device_uses)

    read = concurrently(  # while the database answers one part, Python computes another
        totals=lambda: touchpoint_totals(conn, scope=query, start=window.start, end=window.end,
                                         per_device=outcome_models),
        outcomes=outcome_inputs,
        kano=lambda: touchpoint_classes(conn, scope=query, window=window).table,
    )
    totals, (performance, outcomes) = read["totals"], read["outcomes"]
    if totals.empty:
        return TouchpointReport(window=window, touchpoints=(), models=(), crosshairs={})
    totals = totals.merge(catalogue, on=["product_id", "touchpoint"], how="left")
    summary = core_touchpoints.touchpoint_summary(frame=totals, group_cols=["product_id"])
    summary = summary.merge(
        totals[["product_id", "touchpoint", "errors", "successes", "journey_stage", "owner", "is_core"]],
        on=["product_id", "touchpoint"],
    )

    priorities = touchpoint_priorities(
        summary=summary,
        performance=performance,
        outcomes=outcomes,
        devices=scoped[["device_id", "product_id"]],
        kano=read["kano"],
        alpha=alpha,
    )
    table = priorities.table
    for name in ("retention", "feedback"):
        if name not in outcomes:
            table = table.assign(**{f"importance_{name}": None, f"rho_{name}": None, f"n_{name}": 0})
    models = tuple(
        OutcomeModel(
            product_id=str(fit.product_id),
            outcome=fit.outcome,
            n_devices=fit.n_devices,
            r2=fit.r2,
            p_value=fit.p_value,
            significant=fit.significant,
            method=fit.method,
            reason=fit.reason,
        )
        for fit in priorities.models
    )
    items = []
    for row in table.itertuples(index=False):
        uses, successes = count_or_zero(row.uses), count_or_zero(row.successes)
        interval = proportion_ci(successes=successes, n=uses) if uses > 0 else None
        items.append(
            TouchpointInsight(
                product_id=str(row.product_id),
                touchpoint=str(row.touchpoint),
                journey_stage=str(row.journey_stage),
                owner=str(row.owner),
                is_core=bool(row.is_core),
                devices=count_or_zero(row.devices),
                reach=finite_or_none(row.reach),
                uses=uses,
                usage_share=finite_or_none(row.usage_share),
                success_rate=finite_or_none(row.success_rate),
                success_ci_low=interval.low if interval else None,
                success_ci_high=interval.high if interval else None,
                errors=count_or_zero(row.errors),
                mean_latency_ms=finite_or_none(row.mean_latency_ms),
                target_latency_ms=finite_or_none(row.target_latency_ms),
                latency_vs_target=finite_or_none(row.latency_vs_target),
                performance=finite_or_none(row.performance),
                importance_usage=finite_or_none(row.importance_usage),
                importance_retention=row.importance_retention,
                importance_feedback=row.importance_feedback,
                rho_retention=row.rho_retention,
                rho_feedback=row.rho_feedback,
                n_retention=row.n_retention,
                n_feedback=row.n_feedback,
                importance=finite_or_none(row.importance),
                importance_basis=str(row.importance_basis),
                quadrant=row.quadrant,
                classification=row.classification,
                penalty=row.penalty,
                reward=row.reward,
                n_low=row.n_low,
                n_high=row.n_high,
                reason=row.classification_reason or row.reason,
                n_middle=row.n_middle,
                spread=row.spread,
                spread_ci_low=row.spread_ci_low,
                spread_ci_high=row.spread_ci_high,
            )
        )
    survey, survey_lines = _survey(conn, product=query.product, crosshairs=survey_crosshairs)
    return TouchpointReport(
        window=window,
        touchpoints=tuple(items),
        models=models,
        crosshairs=priorities.crosshairs,
        definitions=DEFINITIONS,
        survey=survey,
        survey_crosshairs=survey_lines,
        survey_crosshair_basis=CROSSHAIRS[survey_crosshairs] if survey else None,
    )


def _survey(
    conn: psycopg.Connection, *, product: str | None, crosshairs: str
) -> tuple[tuple[SurveyPoint, ...], dict[str, tuple[float | None, float | None]]]:
    """The stored survey rows with their quadrants (core survey_quadrants) and crosshairs per product."""
    rows = list_survey(conn, product=product)
    if not rows:
        return (), {}
    placed, lines = survey_quadrants(survey=pd.DataFrame([r.__dict__ for r in rows]), crosshairs=crosshairs)
    points = tuple(
        SurveyPoint(
            product_id=str(r.product_id),
            touchpoint=str(r.touchpoint),
            importance=float(r.importance),
            quality=float(r.quality),
            respondents=int(r.respondents),
            scale_min=float(r.scale_min),
            scale_max=float(r.scale_max),
            quadrant=r.quadrant,
        )
        for r in placed.itertuples(index=False)
    )
    return points, lines
