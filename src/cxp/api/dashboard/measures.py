"""The CX measures page (issue 18): earned growth beside NPS, engagement rate, smart-capability ladder (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from cxp.analytics.models_measures import EngagementReport, LadderReport
from cxp.api.dashboard.render import Charts, Html, el, join, num, pct, table
from cxp.api.routers.earned_growth import EarnedGrowthOut

LEVELS = ("monitoring", "control", "optimisation", "autonomy")


def _pp(value: object, fmt: str = "{:,.1f} %") -> str:
    return "–" if value is None else fmt.format(float(value))


def _definitions(items: dict[str, str]) -> Html:
    return el("dl", *(x for k, v in items.items() for x in (el("dt", k.replace("_", " ")), el("dd", v))),
              class_="defs")


def _growth(growth: EarnedGrowthOut | None, error: str | None, charts: Charts) -> Html:
    if growth is None:
        return el("p", error or "no plan chosen", class_="empty")
    head = (f"{growth.month:%B %Y} against {growth.base_month:%B %Y}, revenue = bills under {growth.plan_key}"
            f" ({growth.currency})" if growth.month and growth.base_month else "")
    rows = [(", ".join(g.key.values()), num(g.base_customers), _pp(g.nrr_pct), _pp(g.earned_new_pct),
             _pp(g.earned_growth_pct, "{:+,.1f} %"), _pp(g.revenue_growth_pct, "{:+,.1f} %"),
             _pp(g.earned_growth_ratio, "{:,.2f}"), "–" if g.nps is None else f"{g.nps:+.0f} (n {g.nps_n})",
             g.reason or "") for g in growth.groups]
    usable = [g for g in growth.groups if g.reason is None and g.earned_growth_pct is not None and g.nps is not None]
    scatter = [{"type": "scatter", "mode": "markers+text", "name": "groups",
                "x": [g.nps for g in usable], "y": [float(g.earned_growth_pct) for g in usable],
                "text": [", ".join(g.key.values()) for g in usable], "textposition": "top center",
                "marker": {"size": [8 + min(g.base_customers, 200) / 10 for g in usable], "color": "#2557d6"},
                "hovertemplate": "%{text}: NPS %{x:+.0f}, earned growth %{y:+.1f} %<extra></extra>"}]
    rho = growth.nps_growth_correlation
    note = (f"Spearman ρ(NPS, earned growth) = {rho:+.2f} over {growth.correlation_groups} groups" if rho is not None
            else f"no correlation: {growth.correlation_groups} groups with enough customers and answers")
    spec = {"data": scatter, "layout": {"xaxis": {"title": {"text": "NPS in the month"}},
                                        "yaxis": {"title": {"text": "Earned growth, %"}}}} if usable else None
    return join([
        el("p", head, " (a compared month is not wholly covered by the data)" if growth.partial else "",
           class_="subtitle"),
        el("p", growth.reason, class_="empty") if growth.reason else None,
        table(("Group", "Base customers", "NRR", "Earned new", "Earned growth", "Reported growth", "Ratio", "NPS",
               "Note"), rows, caption="Earned growth per group", numeric_from=1),
        charts.chart("earned-growth-nps", spec, title="Does the NPS predict earned growth?",
                     empty="fewer than one group with enough base customers and NPS answers", note=note),
    ])


def _engagement(report: EngagementReport) -> Html:
    latest: dict[tuple[str, str | None], object] = {}
    for r in report.rates:
        latest[(r.product_id, r.segment)] = r  # rates come in period order: the last one stays
    trends = {(t.product_id, t.segment): t for t in report.trends}
    rows = []
    for (product, segment), r in sorted(latest.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        t = trends.get((product, segment))
        rows.append((f"{product}, {segment or 'all segments'}", f"{r.period_start:%d %b}" + (" (partial)" if r.partial
                     else ""), num(r.reached), num(r.engaged), _pp(r.rate),
                     f"{_pp(r.ci_low)} – {_pp(r.ci_high)}", num(r.engagement_component, "{:.0f}"),
                     "–" if t is None or t.slope_pp_per_period is None else f"{t.slope_pp_per_period:+.1f} pp"))
    return join([
        el("p", report.reason, class_="empty") if report.reason else None,
        table(("Product, segment", "Period", "Reached", "Engaged", "Rate", "95 % CI", "Health engagement",
               "Trend / period"), rows, caption="Engagement rate, latest period", numeric_from=2),
    ])


def _ladder(report: LadderReport) -> Html:
    share: dict[str, dict[str, object]] = {}
    for lv in report.levels:
        if lv.segment is None:
            share.setdefault(lv.product_id, {})[lv.level] = lv
    rows = [(product, *(("–" if (x := levels.get(level)) is None else
                         f"{pct(x.share)} ({num(x.median_days_to_reach, '{:.0f}')} d)") for level in LEVELS))
            for product, levels in sorted(share.items())]
    contrasts = [(c.product_id, num(c.climbers), num(c.others),
                  _pp(c.health.difference, "{:+.1f}") + ("" if c.health.reason is None else f" ({c.health.reason})"),
                  "–" if c.churn.difference is None else f"{100 * c.churn.difference:+.1f} pp")
                 for c in report.contrasts]
    return join([
        el("p", report.reason, class_="empty") if report.reason else None,
        table(("Product", *(level.capitalize() for level in LEVELS)), rows,
              caption="Share of devices that reached each level (median days from activation)"),
        table(("Product", "Climbers", "Others", "Health, climbers − others", "Churn, climbers − others"), contrasts,
              caption="Do devices that climb the ladder do better?"),
    ])


def measures_page(*, growth: EarnedGrowthOut | None, growth_error: str | None, engagement: EngagementReport,
                  ladder: LadderReport, sections: Sequence[str] = ("growth", "engagement", "ladder")) -> tuple[Html,
                                                                                                           Charts]:
    """Earned growth beside NPS (with its scatter), the engagement rate and the capability ladder."""
    charts = Charts()
    parts = {
        "growth": (el("h2", "Earned growth (NPS checked against behaviour)"), _growth(growth, growth_error, charts)),
        "engagement": (el("h2", "Engagement rate"), _engagement(engagement)),
        "ladder": (el("h2", "Smart-capability ladder"), _ladder(ladder)),
    }
    definitions = {**(growth.definitions if growth else {}), **engagement.definitions, **ladder.definitions}
    body = join([x for s in sections for x in parts[s]] + [el("h2", "Definitions"), _definitions(definitions)])
    return body, charts
