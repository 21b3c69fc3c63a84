"""Page bodies: the service results turned into tables and plotly chart specs (pure: no database, no request)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from typing import Any

import numpy as np

from cxp.analytics.core.health import HealthConfig
from cxp.analytics.models import (
    DisruptionReport,
    FleetReport,
    HealthReport,
    HealthScore,
    JourneyReport,
    SurveyPoint,
    TouchpointInsight,
    TouchpointReport,
)
from cxp.api.dashboard.alerts import alert_marker_trace, touchpoint_marker_trace
from cxp.api.dashboard.comparison import Comparison
from cxp.api.dashboard.render import Charts, Html, el, join, num, pct, table, traces_have_points

BAND_COLORS = {"green": "#2e9e5b", "amber": "#d89b16", "red": "#d33a2f"}
QUADRANT_COLORS = {"concentrate here": "#d33a2f", "keep up the good work": "#2e9e5b",
                   "possible overkill": "#d89b16", "low priority": "#98a2b3"}
ARROWS = {"up": "↑", "down": "↓", "flat": "→"}
MAX_BILLS_PER_PLAN = 20_000  # a box plot needs the distribution's shape, not every account-month


def _spec(traces: list[dict], **layout: object) -> dict | None:
    """A chart spec, or None when no trace has a value (the page then says "not enough data")."""
    return {"data": traces, "layout": layout} if traces_have_points(traces) else None


def _grid(*cards: Html) -> Html:
    return el("div", *cards, class_="grid")


def _band(band: str | None) -> Html:
    return el("span", band or "–", class_=f"band-{band}" if band else None)


def _trend(arrow: str | None, delta: float | None) -> str:
    return f"{ARROWS.get(arrow or '', '')} {num(delta, '{:+.1f}')}".strip()


def _kpi(label: str, value: object, sub: object = "") -> Html:
    return el("div", el("div", label, class_="label"), el("div", value, class_="value"),
              el("div", sub, class_="muted") if sub else None, class_="kpi")


def _window_text(start: date, end: date) -> str:
    return f"{start:%d %b %Y} – {end:%d %b %Y}"


def _title(text: str) -> str:
    return text.replace("_", " ").capitalize()


# ---------------------------------------------------------------- overview


LINKS = (
    ("/dashboard/health", "Fleet health", "Experience Health Score over time, with its components and drivers.",
     "product"),
    ("/dashboard/touchpoints", "Touchpoints", "Importance–performance chart: where to concentrate.", "product"),
    ("/dashboard/journey", "Journey", "Funnel from registration to habitual use, by cohort; time to value.",
     "product"),
    ("/dashboard/journey-map", "Journey map", "Stages × touchpoints: reach, performance, satisfaction, pain, drop-off;"
     " SVG for the wall.", "product"),
    ("/dashboard/disruptions", "Disruptions", "Incidents, error spikes, recovery times and their effect.",
     "product"),
    ("/dashboard/measures", "CX measures", "Earned growth beside NPS, engagement rate, smart-capability ladder.",
     "product"),
    ("/dashboard/pricing", "Pricing models", "Revenue models side by side: revenue, bills, shock, winners/losers.",
     "pricing"),
)


def links(role: str | None) -> Html:
    """Cards linking the pages a key of `role` may open."""
    return el("div", *(el("a", el("strong", title), text, href=href) for href, title, text, needs in LINKS
                       if role == "admin" or needs == role), class_="links")


def overview(report: FleetReport | None, *, role: str) -> tuple[Html, Charts]:
    """The fleet report (top concerns first) and links; a pricing key sees the links only."""
    charts = Charts()
    if report is None:
        return join([el("h2", "Pages"), links(role)]), charts
    nps = report.nps
    kpis = el("div", _kpi("Fleet health", _band_value(report.fleet_score, report.fleet_band),
                          f"{report.fleet_band or 'no band'} {_trend(report.fleet_arrow, report.fleet_delta)}"),
              _kpi("Devices", num(report.devices)),
              _kpi("NPS", num(nps.value if nps else None, "{:+.0f}"),
                   f"± {num(nps.margin)} (n={nps.n})" if nps and nps.value is not None else "no answers"),
              _kpi("At churn risk", num(report.at_risk_devices), "devices with risk ≥ 50"),
              class_="kpis")
    concerns = el("ol", *(el("li", el("span", c.severity, class_="sev"), el("strong", c.area), ": ", c.message,
                             class_=c.severity) for c in report.concerns), class_="concerns") \
        if report.concerns else el("p", "No concerns.", class_="muted")
    components = sorted({k for p in report.products for k in p.components})
    comp_traces = [{"type": "bar", "name": p.product_id, "x": [_title(k) for k in components],
                    "y": [p.components.get(k) for k in components],
                    "hovertemplate": "%{x}: %{y:.0f}<extra>%{fullData.name}</extra>"} for p in report.products]
    bands = [b for b in ("green", "amber", "red") if b in report.band_shares]
    band_traces = [{"type": "pie", "hole": 0.55, "sort": False, "labels": bands,
                    "values": [report.band_shares[b] for b in bands], "textinfo": "label+percent",
                    "marker": {"colors": [BAND_COLORS[b] for b in bands]}}] if bands else []
    rows = [(p.product_id, num(p.devices), _band_value(p.score, p.band), _band(p.band), _trend(p.arrow, p.delta),
             num(p.nps.value if p.nps else None, "{:+.0f}"), ", ".join(p.top_negative_drivers) or "–")
            for p in report.products]
    body = join([
        kpis,
        el("section", el("h3", "Top concerns"), concerns, class_="card"),
        _grid(charts.chart("fleet-components", _spec(comp_traces, barmode="group", yaxis={"range": [0, 100],
                                                     "title": {"text": "Component score (0–100)"}}),
                           title="Health components per product", empty="no product has a health score yet"),
              charts.chart("fleet-bands", _spec(band_traces, showlegend=False), title="Devices by health band",
                           empty="no device has a health score yet")),
        table(("Product", "Devices", "Score", "Band", "Trend", "NPS", "Drags the score"), rows, numeric_from=1,
              caption=f"Latest week per product ({_window_text(report.window.start, report.window.end)})"),
        el("h2", "Pages"), links(role),
    ])
    return body, charts


def _band_value(score: float | None, band: str | None) -> Html:
    return el("span", num(score), class_=f"band-{band}" if band else None)


# ---------------------------------------------------------------- health


def _band_shapes(config: HealthConfig) -> list[dict]:
    """Coloured backgrounds behind the score axis: red, amber, green bands."""
    spans = (("red", 0, config.red_below), ("amber", config.red_below, config.green_from),
             ("green", config.green_from, 100))
    return [{"type": "rect", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": lo, "y1": hi, "layer": "below",
             "fillcolor": BAND_COLORS[band], "opacity": 0.07, "line": {"width": 0}} for band, lo, hi in spans]


def _score_trace(name: str, history: Sequence[HealthScore], **style: object) -> dict:
    # A week the window covers only in part shows as an open marker, so its dip is not read as a decline.
    return {"type": "scatter", "mode": "lines+markers", "name": name, "x": [s.period_start for s in history],
            "y": [s.score for s in history],
            "marker": {"symbol": ["circle-open" if s.partial else "circle" for s in history], "size": 8},
            "customdata": [[s.band or "no band", s.devices, " · partial week" if s.partial else ""] for s in history],
            "hovertemplate": "week of %{x|%d %b}: %{y:.1f} (%{customdata[0]}), %{customdata[1]} devices"
                             "%{customdata[2]}<extra>%{fullData.name}</extra>", **style}


def health(products: HealthReport, scope: HealthReport, *, scope_name: str, config: HealthConfig,
           markers: Sequence[dict] = ()) -> tuple[Html, Charts]:
    """Score per product over time (with the fleet), the scope's components over time, and each product's drivers;
    `markers`: the product alerts of the window (repository.list_markers), marked on the score chart."""
    charts = Charts()
    ids = sorted({s.entity_id for s in products.scores})
    score_traces = [_score_trace(p, products.history(p)) for p in ids]
    scope_hist = scope.scores if scope is not products else products.history(scope_name)
    if scope is not products:
        score_traces.append(_score_trace("fleet", scope_hist, line={"color": "#1d2430", "dash": "dash", "width": 3}))
    components = sorted({k for s in scope_hist for k in s.components})
    comp_traces = [{"type": "scatter", "mode": "lines+markers", "name": _title(k),
                    "x": [s.period_start for s in scope_hist], "y": [s.components.get(k) for s in scope_hist],
                    "hovertemplate": "week of %{x|%d %b}: %{y:.1f}<extra>%{fullData.name}</extra>"}
                   for k in components]
    latest = [s for s in products.latest() if s.drivers]
    driver_traces = []
    if len(latest) >= 2:
        for k in components:
            contrib = {s.entity_id: next((d.contribution for d in s.drivers if d.component == k), None)
                       for s in latest}
            driver_traces.append({"type": "bar", "orientation": "h", "name": _title(k),
                                  "y": list(contrib), "x": list(contrib.values()),
                                  "hovertemplate": "%{x:+.1f} points<extra>%{fullData.name}</extra>"})
    reason = products.reason or "no scores in the window"
    axis = {"title": {"text": "Score (0–100)"}, "range": [0, 100]}
    scores = [s.score for s in (*products.scores, *scope_hist) if s.score is not None]
    # Start the score axis near the data (whole tens, showing at least the green band's edge): weekly moves
    # of a few points vanish on 0–100, and the coloured bands still say where the score stands.
    low = max(0.0, min(10 * math.floor((min(scores, default=0) - 5) / 10), config.green_from - 10))
    # Alert markers along the foot of the score axis (clear of the scores and of plotly's mode bar at the top).
    since = datetime.combine(products.window.start, time(0), tzinfo=UTC)
    marks = alert_marker_trace(list(markers), y=low + 1, since=since) if score_traces else None
    latest_all = products.latest()
    last_week = f"{_window_text(latest_all[0].period_start, latest_all[0].period_end)}" if latest_all else "none"
    rows = [(s.entity_id, num(s.devices), _band_value(s.score, s.band), _band(s.band), _trend(s.arrow, s.delta),
             *(num(s.components.get(k)) for k in components), ", ".join(s.top_negative_drivers) or "–")
            for s in latest_all]
    body = join([
        charts.chart("health-score", _spec(score_traces + ([marks] if marks else []),
                                           yaxis={**axis, "range": [low, 100]},
                                           shapes=_band_shapes(config),
                                           xaxis={"title": {"text": "Week starting"}}),
                     title="Experience Health Score per week", empty=reason,
                     note=f"Bands: red below {config.red_below:.0f}, green from {config.green_from:.0f}."
                          + (f" ▲ {len(markers)} alert(s) of the window at their opening time (red open, amber"
                             " acknowledged, grey cleared)." if marks else "")),
        _grid(charts.chart("health-components", _spec(comp_traces, yaxis=axis), title=f"Components: {scope_name}",
                           empty=reason, note="Reliability, efficiency, engagement, trajectory and voice, 0–100."),
              charts.chart("health-drivers", _spec(driver_traces, barmode="group", yaxis={"automargin": True},
                                                   xaxis={"title": {"text": "Points vs the median product"}}),
                           title="What pulls each product's latest score", empty="drivers compare products with each "
                           "other: needs at least two products in scope",
                           note="(component − median of the products) × its weight.")),
        table(("Product", "Devices", "Score", "Band", "Trend", *map(_title, components), "Drags"), rows,
              caption=f"Latest week per product ({last_week})"),
    ])
    return body, charts


# ---------------------------------------------------------------- touchpoints


def _notable(t: TouchpointInsight, crosshair: tuple[float | None, float | None]) -> bool:
    ix, py = crosshair
    return (ix is not None and (t.importance or 0) >= ix) or (py is not None and (t.performance or 100) < py)


def _survey_traces(survey: Sequence[SurveyPoint], crosshair: tuple[float | None, float | None]) -> tuple[list, list]:
    """The stated survey as diamonds on the top and right axes (its own scale), with its crosshairs dashed."""
    if not survey:
        return [], []
    traces = [{
        "type": "scatter", "mode": "markers+text", "name": "stated (survey)", "xaxis": "x2", "yaxis": "y2",
        "x": [p.importance for p in survey], "y": [p.quality for p in survey], "text": [p.touchpoint for p in survey],
        "textposition": "bottom center", "cliponaxis": False,
        "marker": {"symbol": "diamond-open", "size": 11, "color": "#7a4cc2"},
        "customdata": [[p.quadrant or "–", p.respondents] for p in survey],
        "hovertemplate": "<b>%{text}</b> (survey)<br>stated importance %{x:.2f}, quality %{y:.2f}<br>"
                         "%{customdata[0]}, %{customdata[1]:,} respondents<extra></extra>"}]
    ix, py = crosshair
    shapes = []
    if ix is not None:
        shapes.append({"type": "line", "xref": "x2", "x0": ix, "x1": ix, "yref": "paper", "y0": 0, "y1": 1,
                       "line": {"dash": "dash", "color": "#7a4cc2", "width": 1}})
    if py is not None:
        shapes.append({"type": "line", "yref": "y2", "y0": py, "y1": py, "xref": "paper", "x0": 0, "x1": 1,
                       "line": {"dash": "dash", "color": "#7a4cc2", "width": 1}})
    return traces, shapes


def _ipa_spec(points: Sequence[TouchpointInsight], crosshair: tuple[float | None, float | None],
              survey: Sequence[SurveyPoint] = (), survey_crosshair: tuple[float | None, float | None] = (None, None),
              survey_basis: str | None = None) -> dict | None:
    ok = [t for t in points if t.importance is not None and t.performance is not None]
    top = max((t.uses for t in ok), default=0) or 1
    traces = []
    for quadrant, color in QUADRANT_COLORS.items():
        sel = [t for t in ok if t.quadrant == quadrant]
        if not sel:
            continue
        traces.append({
            "type": "scatter", "mode": "markers+text", "name": quadrant, "textposition": "top center",
            "cliponaxis": False, "x": [t.importance for t in sel], "y": [t.performance for t in sel],
            # Labels on the important or under-performing ones; the crowd of minor touchpoints shows on hover.
            "text": [t.touchpoint if _notable(t, crosshair) else "" for t in sel],
            "hovertext": [t.touchpoint for t in sel],
            "marker": {"color": color, "size": [8 + 22 * math.sqrt(t.uses / top) for t in sel], "opacity": 0.8},
            "customdata": [[pct(t.success_rate, 1), num(t.latency_vs_target, "×{:.2f}"), pct(t.reach),
                            t.importance_basis, t.classification or "–", t.uses] for t in sel],
            "hovertemplate": "<b>%{hovertext}</b><br>importance %{x:.1f} (%{customdata[3]})<br>performance %{y:.1f}: "
                             "success %{customdata[0]}, latency %{customdata[1]} of target<br>reach %{customdata[2]},"
                             " %{customdata[5]:,} uses; %{customdata[4]}<extra>%{fullData.name}</extra>"})
    ix, py = crosshair
    shapes = []
    if ix is not None:
        shapes.append({"type": "line", "xref": "x", "x0": ix, "x1": ix, "yref": "paper", "y0": 0, "y1": 1,
                       "line": {"dash": "dot", "color": "#667085"}})
    if py is not None:
        shapes.append({"type": "line", "yref": "y", "y0": py, "y1": py, "xref": "paper", "x0": 0, "x1": 1,
                       "line": {"dash": "dot", "color": "#667085"}})
    corners = (("possible overkill", 0, 1, "left", "top"), ("keep up the good work", 1, 1, "right", "top"),
               ("low priority", 0, 0, "left", "bottom"), ("concentrate here", 1, 0, "right", "bottom"))
    notes = [{"text": q, "xref": "paper", "yref": "paper", "x": x, "y": y, "xanchor": xa, "yanchor": ya,
              "showarrow": False, "font": {"color": QUADRANT_COLORS[q], "size": 11}} for q, x, y, xa, ya in corners]
    extra_traces, extra_shapes = _survey_traces(survey, survey_crosshair)
    axes: dict[str, Any] = {}
    if extra_traces:
        scale = (min(p.scale_min for p in survey), max(p.scale_max for p in survey))
        axes = {"xaxis2": {"overlaying": "x", "side": "top", "range": list(scale), "showgrid": False,
                           "title": {"text": f"Stated importance (survey; {survey_basis})"}},
                "yaxis2": {"overlaying": "y", "side": "right", "range": list(scale), "showgrid": False,
                           "title": {"text": "Stated quality (survey)"}}}
    if not traces and not extra_traces:
        return None
    return _spec([*traces, *extra_traces], shapes=[*shapes, *extra_shapes], annotations=notes,
                 xaxis={"title": {"text": "Derived importance: CSAT spread between a failed and a successful use"},
                        "zeroline": False},
                 yaxis={"title": {"text": "Performance (success and latency, 0–100)"}}, **axes)


def touchpoints(report: TouchpointReport, markers: Sequence[dict] = ()) -> tuple[Html, Charts]:
    """One importance–performance chart per product, the touchpoint table and the outcome models behind importance;
    `markers`: the touchpoint alerts of the window, ringed on their product's chart."""
    charts = Charts()
    products = sorted({t.product_id for t in report.touchpoints})
    survey_note = (f" Diamonds, top and right axes: the stated importance × quality survey, dashed"
                   f" {report.survey_crosshair_basis}." if report.survey else "")
    cards = []
    for p in products:
        spec = _ipa_spec(report.for_product(p), report.crosshairs.get(p, (None, None)),
                         [s for s in report.survey if s.product_id == p], report.survey_crosshairs.get(p, (None, None)),
                         report.survey_crosshair_basis)
        positions = {t.touchpoint: (t.importance, t.performance) for t in report.for_product(p)
                     if t.importance is not None and t.performance is not None}
        ring = touchpoint_marker_trace([m for m in markers if m["product_id"] == p], positions)
        if spec is not None and ring is not None:
            spec["data"].append(ring)
        cards.append(charts.chart(f"ipa-{p}", spec, title=f"Importance vs performance: {p}", height=440,
                                  empty="no touchpoint has both an importance and a performance",
                                  note="Dotted lines: the means of the placed touchpoints. Marker size: uses."
                                  " Touchpoints with too few answers for a derived importance are not placed (table)."
                                  + survey_note
                                  + (" Rings: touchpoints with alerts in the window (red: one still live)."
                                     if ring is not None else "")))
    if not cards:
        cards = [charts.chart("ipa", None, title="Importance vs performance", empty="no touchpoint use in the window")]
    rows = [(f"{t.product_id} / {t.touchpoint}", t.journey_stage, "yes" if t.is_core else "", pct(t.reach), num(t.uses),
             pct(t.success_rate, 1), num(t.latency_vs_target, "×{:.2f}"), num(t.performance, "{:.1f}"),
             num(t.importance, "{:.1f}"), t.importance_basis, t.quadrant or "–", t.classification or "–")
            for t in sorted(report.touchpoints, key=lambda t: (t.product_id, -(t.importance or 0)))]
    models = [(m.product_id, m.outcome, num(m.n_devices), num(m.r2, "{:.3f}"), num(m.p_value, "{:.3g}"),
               "yes" if m.significant else "no") for m in report.models]
    body = join([
        _grid(*cards),
        table(("Touchpoint", "Stage", "Core", "Reach", "Uses", "Success", "Latency", "Performance", "Importance",
               "Importance from", "Quadrant", "Class"), rows, numeric_from=3,
              caption=f"Touchpoints ({_window_text(report.window.start, report.window.end)})"),
        el("h2", "Outcome models behind derived importance"),
        table(("Product", "Outcome", "Devices", "R²", "p", "Significant"), models, numeric_from=2),
    ])
    return body, charts


# ---------------------------------------------------------------- journey


def journey(report: JourneyReport) -> tuple[Html, Charts]:
    """The lifecycle funnel, conversions per activation cohort and time to first value."""
    charts = Charts()
    funnel = [{"type": "funnel", "name": "devices", "y": [_title(s.stage) for s in report.stages],
               "x": [s.devices for s in report.stages], "textinfo": "value+percent initial",
               "marker": {"color": "#2557d6"}}]
    cohorts = report.cohorts
    labels = [c.cohort for c in cohorts]
    maturity = [("mature" if c.mature else "not yet mature") + f", {c.registered} registered" for c in cohorts]
    series = (("Activated", "conv_activated"), ("First core use", "conv_first_core_use"),
              ("Habitual", "conv_habitual"), ("Churned", "churn_rate"))
    cohort_traces = [{"type": "scatter", "mode": "lines+markers", "name": name, "x": labels,
                      "y": [None if getattr(c, attr) is None else 100 * getattr(c, attr) for c in cohorts],
                      "customdata": maturity,
                      "hovertemplate": "%{x}: %{y:.0f} % (%{customdata})<extra>%{fullData.name}</extra>"}
                     for name, attr in series]
    ttv = [t for t in report.time_to_value if t.median_h is not None]
    ttv_traces = [{"type": "bar", "orientation": "h", "name": name, "y": [t.product_id for t in ttv],
                   "x": [getattr(t, attr) for t in ttv],
                   "customdata": [[pct(t.share_reached), t.n_reached, t.n_activated] for t in ttv],
                   "hovertemplate": "%{x:.1f} h; %{customdata[0]} reached it (%{customdata[1]} of %{customdata[2]})"
                                    "<extra>%{fullData.name}</extra>"}
                  for name, attr in (("median", "median_h"), ("p90", "p90_h"))]
    reason = report.reason or "no device came online in the window"
    stage_rows = [(_title(s.stage), num(s.devices), pct(s.conversion_from_previous, 1), pct(s.conversion_from_start, 1))
                  for s in report.stages]
    churn = f"Churned afterwards: {num(report.churned)} devices ({pct(report.churn_rate, 1)})." \
        if report.churned is not None else ""
    body = join([
        _grid(charts.chart("journey-funnel", _spec(funnel, margin={"l": 120, "r": 20, "t": 20, "b": 30}),
                           title="Lifecycle funnel", empty=reason, note=churn),
              charts.chart("journey-cohorts", _spec(cohort_traces, yaxis={"title": {"text": "% of the cohort"},
                                                                          "range": [0, 105]},
                                                    xaxis={"title": {"text": "Activation week"}}),
                           title="Conversion per activation cohort", empty=reason,
                           note="Young cohorts have not had time to become habitual (see 'mature' on hover).")),
        charts.chart("journey-ttv", _spec(ttv_traces, barmode="group", yaxis={"automargin": True},
                                          xaxis={"title": {"text": "Hours from activation to first core use"}}),
                     title="Time to first value", empty="no device reached its first successful core use",
                     height=260),
        table(("Stage", "Devices", "From previous", "From start"), stage_rows, caption="Funnel"),
        el("h2", "Definitions"),
        el("dl", *(x for k, v in report.definitions.items() for x in (el("dt", _title(k)), el("dd", v))),
           class_="defs"),
    ])
    return body, charts


# ---------------------------------------------------------------- disruptions


GROUP_LABELS = {"none": "no disruption", "fast": "fast recovery", "slow": "slow recovery"}


def _hours(seconds: float | None) -> str:
    return num(None if seconds is None else seconds / 3600, "{:.1f} h")


def disruptions(report: DisruptionReport) -> tuple[Html, Charts]:
    """Incidents on a timeline, error spikes, recovery times and what disruption and recovery did afterwards."""
    charts = Charts()
    inc_traces = []
    for p in sorted({i.product_id for i in report.incidents}):
        sel = [i for i in report.incidents if i.product_id == p]
        inc_traces.append({
            "type": "bar", "orientation": "h", "name": p,
            "y": [f"{i.product_id} · {i.touchpoint} · {i.code}" for i in sel],
            "base": [i.start for i in sel], "x": [(i.end - i.start).total_seconds() * 1000 for i in sel],
            # An incident lasts hours on a weeks-long axis: the outline keeps it visible.
            "marker": {"line": {"width": 4, "color": BAND_COLORS["red"]}, "color": BAND_COLORS["red"]},
            "customdata": [[i.devices_affected, pct(i.share_of_product), i.errors, _hours(i.median_recovery_s),
                            "open" if i.open else "closed"] for i in sel],
            "hovertemplate": "%{base|%d %b %H:%M}: %{customdata[0]} devices (%{customdata[1]} of the product), "
                             "%{customdata[2]} errors; median recovery %{customdata[3]}, %{customdata[4]}"
                             "<extra>%{fullData.name}</extra>"})
    window = [report.window.start.isoformat(), report.window.end.isoformat() + "T23:59:59"]
    spike_traces = []
    for p in sorted({s.product_id for s in report.spikes}):
        sel = [s for s in report.spikes if s.product_id == p]
        spike_traces.append({"type": "bar", "name": f"{p} errors", "x": [s.day for s in sel],
                             "y": [s.errors for s in sel],
                             "customdata": [[round(s.baseline, 1), round(s.threshold, 1)] for s in sel],
                             "hovertemplate": "%{x|%d %b}: %{y} errors (baseline %{customdata[0]}, threshold "
                                              "%{customdata[1]})<extra>%{fullData.name}</extra>"})
    rec = [r for r in report.recovery if r.median_s is not None]
    rec_traces = [{"type": "bar", "name": name, "x": [r.scope for r in rec],
                   "y": [getattr(r, attr) / 60 for r in rec],
                   "customdata": [[r.recovered, r.episodes] for r in rec],
                   "hovertemplate": "%{y:.0f} min (%{customdata[0]} of %{customdata[1]} episodes recovered)"
                                    "<extra>%{fullData.name}</extra>"}
                  for name, attr in (("median", "median_s"), ("p90", "p90_s"))]
    groups = report.effect_groups
    effect_traces = [{"type": "bar", "name": name, "x": [GROUP_LABELS.get(g.group, g.group) for g in groups],
                      "y": [getattr(g, attr) for g in groups],
                      "error_y": {"type": "data", "array": [getattr(g, f"{attr}_margin") for g in groups]},
                      "customdata": [getattr(g, f"{attr}_n") for g in groups],
                      "hovertemplate": "%{y:.0f} (n=%{customdata})<extra>%{fullData.name}</extra>"}
                     for name, attr in (("NPS", "nps"), ("CSAT %", "csat"))]
    fast = f"Fast recovery = within {_hours(report.fast_recovery_s)}." if report.fast_recovery_s else ""
    incident_rows = [(f"{i.product_id} / {i.touchpoint}", i.code, f"{i.start:%d %b %H:%M} – {i.end:%d %b %H:%M}",
                      num(i.devices_affected), pct(i.share_of_product), num(i.errors), _hours(i.median_recovery_s),
                      _hours(i.p90_recovery_s)) for i in report.incidents]
    group_rows = [(GROUP_LABELS.get(g.group, g.group), num(g.devices), pct(g.usage_change_mean),
                   num(g.nps, "{:+.0f}"), num(g.nps_margin, "± {:.0f}"), num(g.csat, "{:.0f} %"))
                  for g in report.effect_groups]
    comparison_rows = [(c.metric, f"{GROUP_LABELS.get(c.a, c.a)} − {GROUP_LABELS.get(c.b, c.b)}",
                        num(c.difference, "{:+.2f}"), f"{num(c.ci_low, '{:+.2f}')} … {num(c.ci_high, '{:+.2f}')}",
                        f"{c.n_a} / {c.n_b}") for c in report.effect_comparisons]
    reason = report.reason or "nothing found in the window"
    body = join([
        el("p", el("strong", "Recovery paradox: "), report.recovery_paradox, class_="card"),
        charts.chart("disruptions-incidents", _spec(inc_traces, showlegend=False, yaxis={"automargin": True},
                                                    xaxis={"type": "date", "range": window}),
                     title="Incidents", empty=report.reason or "no incident in the window", height=280),
        _grid(charts.chart("disruptions-spikes", _spec(spike_traces, xaxis={"type": "date", "range": window},
                                                       yaxis={"title": {"text": "Errors that day"}}),
                           title="Daily error spikes", empty=report.reason or "no error spike in the window",
                           note="Days whose errors exceeded the product's trailing baseline."),
              charts.chart("disruptions-recovery", _spec(rec_traces, barmode="group", yaxis={
                  "type": "log", "dtick": 1, "title": {"text": "Minutes to recovery (log)"}}),
                  title="Time to recovery", empty=reason)),
        charts.chart("disruptions-effects", _spec(effect_traces, barmode="group"),
                     title="Later satisfaction after a disruption", empty=reason, note=fast),
        table(("Incident", "Code", "When (UTC)", "Devices", "Share", "Errors", "Median recovery", "p90 recovery"),
              incident_rows, numeric_from=3, caption="Incidents"),
        table(("Group", "Devices", "Usage change", "NPS", "± (95 %)", "CSAT"), group_rows,
              caption=f"After a disruption (usage over the following days, feedback afterwards). {fast}"),
        table(("Metric", "Difference", "a − b", "95 % CI", "n a / b"), comparison_rows, numeric_from=2,
              caption="Differences between the groups"),
    ])
    return body, charts


# ---------------------------------------------------------------- pricing


def _sample(values: np.ndarray, limit: int) -> np.ndarray:
    """Evenly spaced order statistics: the distribution's shape in at most `limit` values."""
    values = np.sort(values)
    if values.size <= limit:
        return values
    return values[np.linspace(0, values.size - 1, limit).round().astype(np.int64)]


def _whisker_top(samples: Sequence[np.ndarray]) -> float | None:
    """An axis top just above every box's upper whisker, when outliers lie far beyond it (else None: autorange)."""
    whiskers, highest = [], 0.0
    for v in samples:
        if v.size == 0:
            continue
        q1, q3 = np.percentile(v, [25, 75])
        whiskers.append(float(v[v <= q3 + 1.5 * (q3 - q1)].max()))
        highest = max(highest, float(v.max()))
    top = 1.15 * max(whiskers, default=0.0)
    return top if top > 0 and highest > 2 * top else None


def pricing(cmp: Comparison) -> tuple[Html, Charts]:
    """Revenue models side by side: revenue, bill distribution, bill shock and winners/losers vs the baseline."""
    charts = Charts()
    res = cmp.result
    if res is None:
        empty = cmp.reason or "no recorded usage"
        return join([charts.chart(n, None, title=t, empty=empty) for n, t in (
            ("pricing-revenue", "Revenue"), ("pricing-bills", "Monthly bills"), ("pricing-shock", "Bill shock"),
            ("pricing-winners", "Winners and losers"))]), charts
    s = res.summaries
    keys, others = list(res.plan_keys), [k for k in res.plan_keys if k != res.baseline]
    cur = res.currency
    revenue = [{"type": "bar", "name": "revenue", "x": keys, "y": [s[k].revenue for k in keys],
                "text": ["baseline" if k == res.baseline else f"{s[k].revenue_delta:+,.0f}" for k in keys],
                "textposition": "outside", "customdata": [s[k].arpu_month for k in keys],
                "marker": {"color": ["#98a2b3" if k == res.baseline else "#2557d6" for k in keys]},
                "hovertemplate": f"%{{y:,.2f}} {cur}; ARPU %{{customdata:.2f}} {cur}/month<extra></extra>"}]
    act = res.cube.active_mask()
    quantum = float(res.rule.quantum)
    bills = [{"type": "box", "name": k, "y": _sample(res.bills[k][act] * quantum, MAX_BILLS_PER_PLAN).tolist(),
              "boxpoints": "outliers", "boxmean": True,
              "hovertemplate": f"%{{y:.2f}} {cur}<extra>%{{fullData.name}}</extra>"}
             for k in keys]
    top = _whisker_top([np.asarray(b["y"]) for b in bills])
    bill_axis = {"title": {"text": f"Bill ({cur})"}} | ({"range": [0, top]} if top else {})
    shock = [{"type": "bar", "name": "bill shock", "x": others, "y": [100 * s[k].shock_rate for k in others],
              "text": [f"{s[k].shock_count} account-months" for k in others], "textposition": "outside",
              "marker": {"color": BAND_COLORS["red"]}, "hovertemplate": "%{y:.1f} %: %{text}<extra></extra>"}]
    win = [{"type": "bar", "orientation": "h", "name": name, "y": others, "x": [getattr(s[k], attr) for k in others],
            "marker": {"color": color}, "hovertemplate": "%{x} accounts<extra>%{fullData.name}</extra>"}
           for name, attr, color in (("pay less (winners)", "winners", BAND_COLORS["green"]),
                                     ("unchanged", "unchanged", "#98a2b3"),
                                     ("pay more (losers)", "losers", BAND_COLORS["red"]))]
    money = "{:,.2f}"
    rows = [(k + (" (baseline)" if k == res.baseline else ""), num(s[k].revenue, money),
             num(s[k].revenue_delta, "{:+,.2f}"), num(s[k].arpu_month, money), num(s[k].bill.p10, money),
             num(s[k].bill.p50, money), num(s[k].bill.p90, money), pct(s[k].shock_rate, 1),
             f"{s[k].winners} / {s[k].losers}", num(s[k].volatility_cv, "{:.2f}"))
            for k in keys]
    s0 = s[res.baseline]
    months = f"{cmp.period.month_starts[0]:%b %Y} – {cmp.period.month_starts[-1]:%b %Y}" if cmp.period else ""
    theta = f"{float(res.theta):.0%}"
    body = join([
        el("p", f"{s0.accounts} {cmp.product} accounts, {s0.customer_periods} account-months ({months}, usage to "
                f"{cmp.span.last_day}); baseline {res.baseline}; amounts in {cur}. One-time device sales fall in an "
                "account's first month.", class_="muted"),
        _grid(charts.chart("pricing-revenue", _spec(revenue, yaxis={"title": {"text": f"Revenue ({cur})"}}),
                           title="Revenue over the period", empty="no bills", note="Labels: change vs the baseline."),
              charts.chart("pricing-bills", _spec(bills, showlegend=False, yaxis=bill_axis),
                           title="Monthly bill per account", empty="no bills",
                           note="Box: quartiles, dashed: mean; whiskers: 1.5 × IQR; dots: outliers. "
                           + ("The axis stops above the whiskers (months with a device sale are far higher): "
                              "double-click the chart to see every bill." if top else "")),
              charts.chart("pricing-shock", _spec(shock, yaxis={"title": {"text": "% of account-months"}}),
                           title=f"Bill shock: bill more than {theta} above the baseline's",
                           empty="only the baseline plan"),
              charts.chart("pricing-winners", _spec(win, barmode="stack", yaxis={"automargin": True},
                                                    xaxis={"title": {"text": "Accounts"}}),
                           title="Winners and losers vs the baseline (over the period)",
                           empty="only the baseline plan")),
        table(("Model", "Revenue", "Δ revenue", "ARPU / month", "Bill p10", "p50", "p90", "Shock", "Win / lose",
               "Bill volatility (CV)"), rows, caption=f"Side by side ({cur})"),
    ])
    return body, charts


def error_body(message: str, details: Sequence[str] = (), *, other_key: bool = False) -> Html:
    """The body of an error page (`other_key`: offer to sign in with a different key)."""
    return join([el("p", message, class_="error"), el("ul", *(el("li", d) for d in details)) if details else None,
                 el("p", el("a", "Back to the overview", href="/dashboard"),
                    *((" · ", el("a", "Sign in with another key", href="/dashboard/login")) if other_key else ()))])

