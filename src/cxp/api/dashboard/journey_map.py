"""The journey map as a wall chart: a server-rendered SVG (columns = journey stages, rows = the touchpoints met
there, each card with reach, performance, satisfaction and pain; the lifecycle funnel with its drop-off inside
post-purchase; the pain points per stage) and the dashboard page around it (pure: no database, no request)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from cxp.analytics.models_measures import JourneyMap, JourneyMapCell, JourneyMapStage
from cxp.api.dashboard.render import Html, el, join, num, pct, table

STAGES = ("pre_purchase", "purchase", "post_purchase")
STAGE_TITLES = {"pre_purchase": "Pre-purchase", "purchase": "Purchase", "post_purchase": "Post-purchase"}
CARD_W, CARD_H, GAP, PAD = 220, 78, 12, 16
POST_CARDS_PER_ROW = 3
PAIN_LINES = 8
HEADER_H, FUNNEL_H, TITLE_H = 44, 64, 70
FILL = {
    "concentrate here": "#fde2e0",
    "keep up the good work": "#e3f4ea",
    "possible overkill": "#fbf0d9",
    "low priority": "#eef0f3",
}
PAIN_STROKE, STROKE = "#d33a2f", "#98a2b3"
FONT = "font-family:Helvetica,Arial,sans-serif"


def _x(text: object) -> str:
    return escape(str(text), quote=True)


def _text(
    x: float,
    y: float,
    body: object,
    *,
    size: int = 12,
    weight: str = "normal",
    anchor: str = "start",
    fill: str = "#1d2939",
    cls: str | None = None,
) -> str:
    attrs = f' class="{cls}"' if cls else ""
    return (
        f'<text x="{x:.0f}" y="{y:.0f}" font-size="{size}" font-weight="{weight}" text-anchor="{anchor}" '
        f'fill="{fill}"{attrs}>{_x(body)}</text>'
    )


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _label(cell: JourneyMapCell, *, many_products: bool) -> str:
    return f"{cell.product_id} / {cell.touchpoint}" if many_products else cell.touchpoint


def _card(x: float, y: float, cell: JourneyMapCell, *, many_products: bool) -> str:
    """One touchpoint: name, reach and performance, success, satisfaction with its n; red border when a pain."""
    fill = FILL.get(cell.quadrant or "", "#ffffff")
    stroke, width = (PAIN_STROKE, 2.5) if cell.pain else (STROKE, 1)
    csat = f"CSAT {num(cell.csat)} % (n {cell.csat_n})" if cell.csat is not None else "CSAT – (no feedback)"
    parts = [
        f'<g class="touchpoint" data-stage="{_x(cell.stage)}" data-touchpoint="{_x(cell.touchpoint)}" '
        f'data-product="{_x(cell.product_id)}" data-pain="{str(cell.pain).lower()}">',
        f'<rect x="{x:.0f}" y="{y:.0f}" width="{CARD_W}" height="{CARD_H}" rx="6" fill="{fill}" stroke="{stroke}" '
        f'stroke-width="{width}"/>',
        _text(x + 8, y + 18, _short(_label(cell, many_products=many_products), 27), size=13, weight="bold"),
        _text(x + 8, y + 36, f"reach {pct(cell.reach)} · performance {num(cell.performance)}"),
        _text(x + 8, y + 52, f"success {pct(cell.success_rate, 1)} · {cell.devices:,} devices"),
        _text(
            x + 8, y + 68, csat + ("  ⚠ pain point" if cell.pain else ""), fill=PAIN_STROKE if cell.pain else "#1d2939"
        ),
        "</g>",
    ]
    return "".join(parts)


def _column_width(stage: str) -> int:
    cards = POST_CARDS_PER_ROW if stage == "post_purchase" else 1
    return cards * CARD_W + (cards - 1) * GAP + 2 * PAD


def _funnel(x: float, y: float, width: float, lifecycle: Sequence[JourneyMapStage]) -> list[str]:
    """The post-purchase lifecycle stages side by side with their devices and the drop-off to the next."""
    if not lifecycle:
        return [_text(x + PAD, y + 24, "no lifecycle funnel in this window", fill="#667085")]
    step = (width - 2 * PAD) / len(lifecycle)
    out = []
    for k, s in enumerate(lifecycle):
        left = x + PAD + k * step
        out.append(
            f'<g class="lifecycle" data-stage="{_x(s.lifecycle_stage)}" data-devices="{s.devices or 0}" '
            f'data-drop-off="{"" if s.drop_off_to_next is None else f"{s.drop_off_to_next:.4f}"}">'
        )
        out.append(
            f'<rect x="{left:.0f}" y="{y + 4:.0f}" width="{step - 8:.0f}" height="{FUNNEL_H - 12}" rx="4" '
            f'fill="#eef4ff" stroke="#84adff"/>'
        )
        out.append(_text(left + 6, y + 22, (s.lifecycle_stage or "").replace("_", " "), weight="bold"))
        out.append(_text(left + 6, y + 38, f"{num(s.devices)} devices"))
        drop = f"→ drop-off {pct(s.drop_off_to_next)}" if s.drop_off_to_next is not None else (s.note or "")
        out.append(
            _text(left + 6, y + 53, _short(drop, 26), size=11, fill="#b42318" if s.drop_off_to_next else "#475467")
        )
        out.append("</g>")
    return out


def journey_map_svg(m: JourneyMap, *, title: str) -> str:
    """The whole map as one standalone SVG document (no scripts, no external references)."""
    many = len({c.product_id for c in m.cells}) > 1
    widths = [_column_width(s) for s in STAGES]
    lefts = [PAD + sum(widths[:k]) + k * GAP for k in range(len(STAGES))]
    cells = {s: [c for c in m.cells if c.stage == s] for s in STAGES}
    rows = max(
        [len(cells[s]) for s in STAGES if s != "post_purchase"]
        + [-(-len(cells["post_purchase"]) // POST_CARDS_PER_ROW)]
    )
    top = TITLE_H + HEADER_H + FUNNEL_H
    cards_h = max(rows, 1) * (CARD_H + GAP)
    pains_top = top + cards_h + 24
    pains = {s: [p for st in m.stages if st.stage == s for p in st.pain_points] for s in STAGES}
    pain_h = 26 + 16 * min(PAIN_LINES + 1, max([len(v) for v in pains.values()] + [1]))
    defs_top = pains_top + pain_h + 24
    width = lefts[-1] + widths[-1] + PAD
    height = defs_top + 18 * (len(m.definitions) + 1) + PAD

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" style="{FONT}" class="journey-map" data-cells="{len(m.cells)}">',
        f"<title>{_x(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        _text(PAD, 30, title, size=20, weight="bold"),
        _text(
            PAD,
            52,
            f"{m.window.start:%d %b %Y} – {m.window.end:%d %b %Y}"
            + (f" · persona {m.persona}" if m.persona else "")
            + " · red border = pain point · fill = importance–performance quadrant",
            fill="#475467",
        ),
    ]
    if m.reason:
        out.append(_text(PAD, TITLE_H + 24, m.reason, size=14, fill="#b42318", cls="reason"))
    lifecycle = [s for s in m.stages if s.stage == "post_purchase" and s.lifecycle_stage is not None]
    for stage, left, w in zip(STAGES, lefts, widths, strict=True):
        out.append(f'<g class="stage" data-stage="{stage}">')
        out.append(
            f'<rect x="{left}" y="{TITLE_H}" width="{w}" height="{defs_top - TITLE_H - 24}" rx="8" '
            f'fill="#f9fafb" stroke="#d0d5dd"/>'
        )
        out.append(f'<rect x="{left}" y="{TITLE_H}" width="{w}" height="{HEADER_H}" rx="8" fill="#344054"/>')
        out.append(_text(left + PAD, TITLE_H + 28, STAGE_TITLES[stage], size=16, weight="bold", fill="#ffffff"))
        if stage == "post_purchase":
            out += _funnel(left, TITLE_H + HEADER_H, w, lifecycle)
        else:
            note = next((s.note for s in m.stages if s.stage == stage and s.note), None)
            if note:
                out.append(_text(left + PAD, TITLE_H + HEADER_H + 24, _short(note, 40), size=11, fill="#667085"))
        per_row = POST_CARDS_PER_ROW if stage == "post_purchase" else 1
        for k, cell in enumerate(cells[stage]):
            x = left + PAD + (k % per_row) * (CARD_W + GAP)
            y = top + (k // per_row) * (CARD_H + GAP)
            out.append(_card(x, y, cell, many_products=many))
        if not cells[stage]:
            out.append(_text(left + PAD, top + 20, "no touchpoint used here", fill="#667085"))
        out.append(_text(left + PAD, pains_top, "Pain points", size=13, weight="bold", fill=PAIN_STROKE))
        shown = pains[stage][:PAIN_LINES]
        for k, p in enumerate(shown):
            out.append(_text(left + PAD, pains_top + 18 + 16 * k, "• " + _short(p, w // 7), size=11, cls="pain"))
        if len(pains[stage]) > PAIN_LINES:
            out.append(
                _text(
                    left + PAD,
                    pains_top + 18 + 16 * len(shown),
                    f"… and {len(pains[stage]) - PAIN_LINES} more",
                    size=11,
                    fill="#667085",
                )
            )
        if not pains[stage]:
            out.append(_text(left + PAD, pains_top + 18, "none", size=11, fill="#667085"))
        out.append("</g>")
    out.append(_text(PAD, defs_top, "Definitions", size=12, weight="bold"))
    for k, (name, text) in enumerate(m.definitions.items()):
        out.append(_text(PAD, defs_top + 18 * (k + 1), _short(f"{name}: {text}", width // 6), size=11, fill="#475467"))
    out.append("</svg>")
    return "\n".join(out)


def journey_map_page(m: JourneyMap, *, svg: str, svg_href: str) -> Html:
    """The page body: the wall chart inline (no script: the CSP allows inline SVG), its download link, and the
    cells and stages as tables."""
    cell_rows = [
        (
            c.stage.replace("_", "-"),
            c.product_id,
            c.touchpoint,
            pct(c.reach),
            num(c.performance),
            pct(c.success_rate, 1),
            f"{num(c.csat)} % (n {c.csat_n})" if c.csat is not None else "–",
            c.quadrant or "–",
            "yes" if c.pain else "",
        )
        for c in m.cells
    ]
    stage_rows = [
        (
            s.stage.replace("_", "-"),
            (s.lifecycle_stage or "–").replace("_", " "),
            "; ".join(s.pain_points) or "–",
            s.note or "",
            num(s.devices),
            pct(s.drop_off_to_next),
        )
        for s in m.stages
    ]
    return join(
        [
            el(
                "p",
                el("a", "Download the map as SVG", href=svg_href, class_="button", download="journey-map.svg"),
                " — a standalone image to print or put on a wall.",
                class_="muted",
            ),
            el("p", m.reason, class_="empty") if m.reason else None,
            el("section", Html(svg), class_="card journey-map-card", style="overflow-x:auto"),
            table(
                ("Stage", "Lifecycle stage", "Pain points", "Note", "Devices", "Drop-off to next"),
                stage_rows,
                numeric_from=4,
                caption="Stages",
            ),
            table(
                ("Stage", "Product", "Touchpoint", "Reach", "Performance", "Success", "CSAT", "Quadrant", "Pain"),
                cell_rows,
                numeric_from=3,
                caption="Touchpoints",
            ),
        ]
    )
