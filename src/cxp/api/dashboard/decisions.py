"""The pricing-decisions page: a family of plans solved for a goal, its trade-off curves as server-drawn SVG, a point
side by side.

The families are `pricing.examples.solve_families()` (the device sale kept, the connectivity fee replaced by
a price per kWh, a base fee with an allowance, or a free allowance) against the example `hw-connect` plan,
on a product's whole recorded span (`pricing.decisions.get_decision_view`). Every point of a curve links to
its side-by-side with the baseline; the chart needs no script.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from urllib.parse import urlencode

from cxp.api.dashboard.render import Html, el, join, num, pct, table
from cxp.pricing.core.tradeoff import TradeoffCurve
from cxp.pricing.decisions import DecisionView

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 360, 78, 16, 16, 48


def decisions_href(view: DecisionView, *, theta: Decimal, values: Mapping[str, Decimal]) -> str:
    """The page's address showing `values` side by side, with the same family, goal and limits."""
    query: list[tuple[str, str]] = [
        ("product", view.product),
        ("family", view.family.key),
        ("goal", view.goal),
        ("theta", str(theta)),
    ]
    c = view.constraints
    if c is not None and c.max_losers_share is not None:
        query.append(("max_losers", str(c.max_losers_share)))
    if c is not None and c.max_shock_share is not None:
        query.append(("max_shock", str(c.max_shock_share)))
    query += [("price", str(values[p.name])) for p in view.family.parameters]
    return "/dashboard/pricing/decisions?" + urlencode(query)


def frontier_svg(
    curve: TradeoffCurve,
    *,
    currency: str,
    link: callable,  # type: ignore[valid-type]
    labeller: callable = lambda values: ", ".join(f"{v}" for v in values.values()),  # type: ignore[valid-type]
    volatility: bool = False,
) -> Html:
    """Revenue (y) against the share of customers paying more (or bill volatility) (x): linked dots, the front a line.

    Plans without a volatility figure are left out of the volatility chart.
    """
    front_ix = curve.volatility_front if volatility else curve.losers_front
    keep = [i for i, p in enumerate(curve.points) if not volatility or p.metrics.volatility_cv is not None]
    pts = [curve.points[i] for i in keep]
    xs = [(p.metrics.volatility_cv if volatility else p.metrics.losers_share) or 0.0 for p in pts]
    x_max = max(max(xs) * 1.05, 1e-9) if volatility else 1.0
    xs = [x / x_max for x in xs]
    ys = [float(p.metrics.revenue) for p in pts]
    y0, y1 = min(ys), max(ys)
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def sx(x: float) -> float:
        return PAD_L + x * pw

    def sy(y: float) -> float:
        return PAD_T + (1 - (y - y0) / (y1 - y0)) * ph

    grid = []
    for i in range(6):
        x = i / 5
        grid.append(el("line", x1=f"{sx(x):.1f}", x2=f"{sx(x):.1f}", y1=PAD_T, y2=PAD_T + ph, class_="grid"))
        tick = f"{x * x_max:.2f}" if volatility else f"{x:.0%}"
        grid.append(el("text", tick, x=f"{sx(x):.1f}", y=H - PAD_B + 18, text_anchor="middle"))
        y = y0 + (y1 - y0) * i / 5
        grid.append(el("line", x1=PAD_L, x2=PAD_L + pw, y1=f"{sy(y):.1f}", y2=f"{sy(y):.1f}", class_="grid"))
        grid.append(el("text", f"{y:,.0f}", x=PAD_L - 6, y=f"{sy(y) + 4:.1f}", text_anchor="end"))
    pos = {k: j for j, k in enumerate(keep)}
    front = " ".join(f"{sx(xs[pos[i]]):.1f},{sy(ys[pos[i]]):.1f}" for i in front_ix)
    dots = []
    on_front = {pos[i] for i in front_ix}
    for i, p in enumerate(pts):
        label = "baseline" if p.baseline else labeller(p.parameters)
        tip = (
            f"{label}: revenue {p.metrics.revenue:,} {currency} ({p.metrics.revenue_delta:+,}), "
            f"{p.metrics.losers_share:.0%} pay more, shock {p.metrics.shock_share:.0%}"
        )
        cls = "dot base" if p.baseline else ("dot front" if i in on_front else "dot")
        circle = el(
            "circle",
            el("title", tip),
            cx=f"{sx(xs[i]):.1f}",
            cy=f"{sy(ys[i]):.1f}",
            r=7 if p.baseline else 5,
            class_=cls,
        )
        dots.append(circle if p.baseline else el("a", circle, href=link(p)))
    axes = [
        el(
            "text",
            "Bill volatility (mean per-customer CV of monthly bills)"
            if volatility
            else "Share of customers paying more over the period",
            x=PAD_L + pw / 2,
            y=H - 6,
            text_anchor="middle",
            class_="axis",
        ),
        el(
            "text",
            f"Revenue ({currency})",
            x=14,
            y=PAD_T + ph / 2,
            text_anchor="middle",
            class_="axis",
            transform=f"rotate(-90 14 {PAD_T + ph / 2:.0f})",
        ),
    ]
    style = el(
        "style",
        ".grid{stroke:#e4e7ec}.dot{fill:#98a2b3}.front{fill:#2557d6}.base{fill:#d92d20}"
        "text{font:11px sans-serif;fill:#475467}.axis{font-size:12px}polyline{fill:none;"
        "stroke:#2557d6;stroke-width:2}a:hover circle{stroke:#101828;stroke-width:2}",
    )
    return el(
        "svg",
        style,
        *grid,
        el("polyline", points=front),
        *dots,
        *axes,
        viewBox=f"0 0 {W} {H}",
        role="img",
        aria_label="Trade-off curve: revenue against "
        + ("bill volatility" if volatility else "the share of customers paying more"),
        class_="frontier",
        width="100%",
        style=f"max-width:{W}px",
    )


def _verdict(d: DecisionView) -> str:
    """The answer in one line: the neutral price, the best plan within the limits, or why none meets them."""
    n, fam, cur = d.solved, d.family, d.family.plan.currency
    assert n is not None
    figures = (
        f"revenue {n.metrics.revenue:,} vs {n.baseline_revenue:,} {cur}; {pct(n.metrics.losers_share)} of "
        f"customers pay more, {pct(n.metrics.shock_share)} of account-months are shocks"
    )
    how = f"{n.evaluations} plans billed; {n.stop_reason}."
    if d.constraints is None:
        named = {**d.held, **n.parameters}
        parts = fam.label(named).split(", ")
        held = f" (with {', '.join(parts[:-1])} held)" if d.held else ""
        return f"Revenue-neutral price: {parts[-1]}{held} ({figures}). {how}"
    limits = [
        f"≤ {lim:.0%} {what}"
        for lim, what in (
            (d.constraints.max_losers_share, "of customers paying more"),
            (d.constraints.max_shock_share, "bill shocks"),
        )
        if lim is not None
    ]
    within = f"within {' and '.join(limits)}" if limits else "with no limit"
    if not n.feasible:
        return (
            f"No plan of the family earns revenue {within}: the nearest is {fam.label(n.parameters)} "
            f"({'; '.join(n.violations)}). {how}"
        )
    return f"Most revenue {within}: {fam.label(n.parameters)} ({figures}). {how}"


def decisions_page(d: DecisionView, *, theta: Decimal) -> Html:
    """The page body: the answer in one line, the curves, the front as a table, the chosen point side by side."""
    if d.solved is None or d.curve is None or d.side is None or d.period is None or d.chosen is None:
        return el("p", f"Not enough data: {d.reason or 'no recorded usage'}", class_="empty")
    res, fam = d.side, d.family
    cur = res.currency
    months = f"{d.period.month_starts[0]:%b %Y} – {d.period.month_starts[-1]:%b %Y}"

    def link(p) -> str:
        return decisions_href(d, theta=theta, values=p.parameters)

    money = "{:,.2f}"
    front_rows = [
        (
            el("a", "baseline" if p.baseline else fam.label(p.parameters), href=None if p.baseline else link(p)),
            num(p.metrics.revenue, money),
            num(p.metrics.revenue_delta, "{:+,.2f}"),
            pct(p.metrics.losers_share, 1),
            pct(p.metrics.shock_share, 1),
            num(p.metrics.volatility_cv, "{:.2f}"),
        )
        for p in (d.curve.points[i] for i in d.curve.losers_front)
    ]
    s = res.summaries
    chosen = fam.label(d.chosen)
    side_rows = [
        (
            k + (" (baseline)" if k == res.baseline else f" at {chosen}"),
            num(s[k].revenue, money),
            num(s[k].revenue_delta, "{:+,.2f}"),
            num(s[k].arpu_month, money),
            num(s[k].bill.p50, money),
            num(s[k].bill.p90, money),
            pct(s[k].shock_rate, 1),
            f"{s[k].winners} / {s[k].losers}",
            num(s[k].volatility_cv, "{:.2f}"),
        )
        for k in res.plan_keys
    ]
    return join(
        [
            el(
                "p",
                f"{s[res.baseline].accounts} {d.product} accounts, {months}; baseline {res.baseline} (device sale + "
                f"connectivity) against the family “{fam.title}” ({fam.plan.key}), which keeps the device sale.",
                class_="muted",
            ),
            el("p", _verdict(d), class_="verdict"),
            el(
                "section",
                el("h3", "Trade-off: revenue against customers paying more"),
                frontier_svg(d.curve, currency=cur, link=link, labeller=fam.label),
                el(
                    "p",
                    "Red: the baseline. Blue, joined: the Pareto front (no other plan of the family earns more with "
                    "fewer customers paying more). Grey: dominated plans. Click a dot for its side-by-side.",
                    class_="note",
                ),
                class_="card",
            ),
            el(
                "section",
                el("h3", "Trade-off: revenue against bill volatility"),
                frontier_svg(d.curve, currency=cur, link=link, labeller=fam.label, volatility=True),
                el(
                    "p",
                    "The same plans against how much customers' monthly bills swing (0 = the same bill every "
                    "month, as with a flat fee). Blue, joined: no other plan earns more with steadier bills.",
                    class_="note",
                ),
                class_="card",
            ),
            table(
                ("Plan", "Revenue", "Δ revenue", "Pay more", "Shock", "Volatility (CV)"),
                front_rows,
                caption=f"The front, by rising revenue ({cur})",
            ),
            table(
                (
                    "Plan",
                    "Revenue",
                    "Δ revenue",
                    "ARPU / month",
                    "Bill p50",
                    "p90",
                    "Shock",
                    "Win / lose",
                    "Volatility (CV)",
                ),
                side_rows,
                caption=f"Side by side at {chosen}",
            ),
        ]
    )
