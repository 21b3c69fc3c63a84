"""The pricing-decisions page: a revenue-neutral price, the trade-off curve as server-drawn SVG, a point side by side.

The family is `pricing.examples.solve_family()` (the device sale kept, a price per kWh instead of the
connectivity fee) against the example `hw-connect` plan, on a product's whole recorded span. Every point
of the curve links to its side-by-side with the baseline; the chart needs no script.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from urllib.parse import urlencode

import psycopg

from cxp.api.dashboard.render import Html, el, join, num, pct, table
from cxp.pricing.core.backtest import BacktestResult, backtest
from cxp.pricing.core.solve import RevenueTarget, SolveResult, apply_parameters, solve
from cxp.pricing.core.tradeoff import TradeoffCurve, tradeoff_curve
from cxp.pricing.examples import example_metrics, example_plans, solve_family
from cxp.pricing.metrics import BillingPeriod, Cohort
from cxp.pricing.service import get_data_span, get_usage_cube

BASELINE_ID = "hw-connect"
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 360, 78, 16, 16, 48


@dataclass(frozen=True)
class Decisions:
    """The page's data (None fields, with a reason, when the product has no usage)."""

    product: str
    period: BillingPeriod | None
    neutral: SolveResult | None
    curve: TradeoffCurve | None
    chosen: Decimal | None
    side: BacktestResult | None
    reason: str | None = None


def pricing_decisions(*, conn: psycopg.Connection, product: str, theta: Decimal, price: Decimal | None) -> Decisions:
    """Solve the neutral price, bill the family's curve and, for `price`, the side-by-side, on one usage cube."""
    span = get_data_span(conn=conn, product=product)
    if span.first_day is None or span.last_day is None:
        return Decisions(product, None, None, None, None, None, f"no recorded usage for {product} yet")
    until = datetime.combine(span.last_day + timedelta(days=1), time(0), UTC)
    period = BillingPeriod.covering(start=datetime.combine(span.first_day, time(0), UTC), end=until)
    baseline = next(p for p in example_plans() if p.plan_id == BASELINE_ID)
    plan, param = solve_family()
    cube = get_usage_cube(
        conn=conn,
        plans=[baseline, plan],
        period=period,
        cohort=Cohort(product=product),
        metrics=example_metrics(),
        until=until,
        with_health=False,
        with_coverage=False,
    )
    if not cube.active_mask().any():
        return Decisions(product, period, None, None, None, None, f"no active {product} accounts in the span")
    neutral = solve(cube=cube, baseline=baseline, plan=plan, parameters=[param], goal=RevenueTarget(), theta=theta)
    curve = tradeoff_curve(cube=cube, baseline=baseline, plan=plan, parameters=[param], theta=theta)
    chosen = price if price is not None else neutral.parameters[param.name]
    side = backtest(
        cube=cube,
        plans=[baseline, apply_parameters(plan=plan, parameters=[param], values=[chosen])],
        baseline=baseline.key,
        theta=theta,
    )
    return Decisions(product, period, neutral, curve, chosen, side)


def _href(product: str, theta: Decimal, price: Decimal) -> str:
    return "/dashboard/pricing/decisions?" + urlencode({"product": product, "theta": str(theta), "price": str(price)})


def frontier_svg(
    curve: TradeoffCurve,
    *,
    currency: str,
    link: callable,
    volatility: bool = False,  # type: ignore[valid-type]
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
        label = "baseline" if p.baseline else ", ".join(f"{v}" for v in p.parameters.values())
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


def decisions_page(d: Decisions, *, theta: Decimal) -> Html:
    """The page body: the neutral price in one line, the curve, the front as a table, the chosen point side by side."""
    if d.neutral is None or d.curve is None or d.side is None or d.period is None:
        return el("p", f"Not enough data: {d.reason or 'no recorded usage'}", class_="empty")
    n, res = d.neutral, d.side
    cur = res.currency
    name = next(iter(n.parameters))
    months = f"{d.period.month_starts[0]:%b %Y} – {d.period.month_starts[-1]:%b %Y}"
    verdict = (
        f"Revenue-neutral price: {n.parameters[name]} {cur}/kWh (revenue {n.metrics.revenue:,} vs "
        f"{n.baseline_revenue:,} {cur}; {pct(n.metrics.losers_share)} of customers pay more, "
        f"{pct(n.metrics.shock_share)} of account-months are shocks). {n.evaluations} plans billed; "
        f"{n.stop_reason}."
    )

    def link(p) -> str:
        return _href(d.product, theta, p.parameters[name])

    money = "{:,.2f}"
    front_rows = [
        (
            el("a", "baseline" if p.baseline else f"{p.parameters[name]}/kWh", href=None if p.baseline else link(p)),
            num(p.metrics.revenue, money),
            num(p.metrics.revenue_delta, "{:+,.2f}"),
            pct(p.metrics.losers_share, 1),
            pct(p.metrics.shock_share, 1),
            num(p.metrics.volatility_cv, "{:.2f}"),
        )
        for p in (d.curve.points[i] for i in d.curve.losers_front)
    ]
    s = res.summaries
    side_rows = [
        (
            k + (" (baseline)" if k == res.baseline else f" at {d.chosen}/kWh"),
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
                f"connectivity) against a family keeping the device sale and charging per kWh managed.",
                class_="muted",
            ),
            el("p", verdict, class_="verdict"),
            el(
                "section",
                el("h3", "Trade-off: revenue against customers paying more"),
                frontier_svg(d.curve, currency=cur, link=link),
                el(
                    "p",
                    "Red: the baseline. Blue, joined: the Pareto front (no other price earns more with fewer customers "
                    "paying more). Grey: dominated prices. Click a dot for its side-by-side.",
                    class_="note",
                ),
                class_="card",
            ),
            el(
                "section",
                el("h3", "Trade-off: revenue against bill volatility"),
                frontier_svg(d.curve, currency=cur, link=link, volatility=True),
                el(
                    "p",
                    "The same prices against how much customers' monthly bills swing (0 = the same bill every "
                    "month, as with a flat fee). Blue, joined: no other price earns more with steadier bills.",
                    class_="note",
                ),
                class_="card",
            ),
            table(
                ("Price", "Revenue", "Δ revenue", "Pay more", "Shock", "Volatility (CV)"),
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
                caption=f"Side by side at {d.chosen} {cur}/kWh",
            ),
        ]
    )
