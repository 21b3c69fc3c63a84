"""HTML building with escaping by construction, safe JSON embedding, and the page layout shared by every page."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from cxp.api.dashboard import assets


class Html(str):
    """Markup that is already safe to emit: everything else passes through `esc`."""

    __slots__ = ()


def esc(value: object) -> Html:
    """`value` as safe markup: Html passes through, anything else is escaped text."""
    return value if isinstance(value, Html) else Html(html.escape(str(value), quote=True))


def join(parts: Iterable[object], sep: str = "") -> Html:
    """Concatenate, escaping whatever is not already markup."""
    return Html(sep.join(esc(p) for p in parts if p is not None))


def el(tag: str, *children: object, **attrs: object) -> Html:
    """`<tag attrs>children</tag>`; `class_` → class, `data_x` → data-x; None/False attributes are left out."""
    out = [f"<{tag}"]
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        name = name.rstrip("_").replace("_", "-")
        out.append(f" {name}" if value is True else f' {name}="{esc(value)}"')
    out.append(">")
    if tag in ("input", "meta", "link", "br"):
        return Html("".join(out))
    return Html("".join(out) + join(c for c in children if c is not None) + f"</{tag}>")


def plain(value: Any) -> Any:
    """JSON-ready plain values: Decimal → float, dates → ISO text, NaN/inf → None, numpy → Python."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [plain(v) for v in value]
    if isinstance(value, Decimal | np.floating):
        value = float(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def json_script(element_id: str, data: Any) -> Html:
    """A `<script type="application/json">` holding `data`; `<`, `>`, `&` are escaped so no text can end it early."""
    text = json.dumps(plain(data), separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return Html(f'<script type="application/json" id="{esc(element_id)}">{text}</script>')


# ---------------------------------------------------------------- formatting


def num(x: float | Decimal | None, fmt: str = "{:,.0f}") -> str:
    """A number for a table cell; an en dash when unknown."""
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def pct(x: float | None, digits: int = 0) -> str:
    """A 0–1 share as a percentage."""
    return num(None if x is None else 100 * x, f"{{:.{digits}f}} %")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, numeric_from: int = 1,
          caption: str = "") -> Html:
    """A table; columns from `numeric_from` on are right-aligned."""
    head = el("tr", *(el("th", h, class_="num" if i >= numeric_from else None) for i, h in enumerate(headers)))
    body = [el("tr", *(el("td", c, class_="num" if i >= numeric_from else None) for i, c in enumerate(r)))
            for r in rows]
    if not body:
        body = [el("tr", el("td", "none", colspan=len(headers), class_="muted"))]
    return el("table", el("caption", caption) if caption else None, el("thead", head), el("tbody", *body))


# ---------------------------------------------------------------- charts


@dataclass
class Charts:
    """The chart specs of one page (plotly traces and layout per chart name), embedded as JSON."""

    specs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def chart(self, name: str, spec: dict[str, Any] | None, *, title: str, empty: str, height: int = 380,
              note: str = "") -> Html:
        """A titled chart container; without data (spec None) a clear "not enough data" message instead."""
        head = el("h3", title)
        foot = el("p", note, class_="note") if note else None
        if spec is None:
            return el("section", head, el("div", f"Not enough data: {empty}", class_="empty", data_chart=name,
                                          data_empty=True), foot, class_="card")
        self.specs[name] = spec
        return el("section", head, el("div", class_="chart", data_chart=name, style=f"height:{height}px"), foot,
                  class_="card")


def traces_have_points(traces: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any trace carries at least one value."""
    return any(t.get(k) is not None and len(t[k]) > 0 for t in traces for k in ("x", "y", "values"))


# ---------------------------------------------------------------- the page


NAV = (
    ("overview", "/dashboard", "Overview", None),
    ("health", "/dashboard/health", "Health", "product"),
    ("touchpoints", "/dashboard/touchpoints", "Touchpoints", "product"),
    ("journey", "/dashboard/journey", "Journey", "product"),
    ("journey-map", "/dashboard/journey-map", "Journey map", "product"),
    ("disruptions", "/dashboard/disruptions", "Disruptions", "product"),
    ("measures", "/dashboard/measures", "CX measures", "product"),
    ("alerts", "/dashboard/alerts", "Alerts", "product"),
    ("pricing", "/dashboard/pricing", "Pricing", "pricing"),
    ("decisions", "/dashboard/pricing/decisions", "Pricing decisions", "pricing"),
)

# Inline scripts are refused: the page data is JSON in a non-executed script element. Plotly sets inline styles.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Page URLs carry filters: they stay on this site. Not "no-referrer": under it a browser sends `Origin: null`
    # even on a same-origin form post, and the sign-in form refuses a post whose origin is not this site's.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages hold data behind a key
}


def may_see(role: str | None, needs: str | None) -> bool:
    """Whether a key of `role` may open a page needing `needs` (None: any key; unknown role: show every link)."""
    return needs is None or role in (None, "admin", needs)


@dataclass(frozen=True)
class Viewer:
    """Who is looking: the key's name and role (None on pages shown before sign-in)."""

    name: str | None = None
    role: str | None = None
    csrf: str | None = None  # the session's CSRF token, carried by every form that changes state (sign out)


def page(*, title: str, active: str, body: Html, viewer: Viewer, charts: Charts | None = None,
         filters: Html | None = None, subtitle: str = "") -> Html:
    """A whole HTML document: nav bar, heading, filters, body; plotly is loaded only when there are charts."""
    links = [el("a", label, href=href, class_="active" if key == active else None, aria_current="page"
                if key == active else None) for key, href, label, needs in NAV if may_see(viewer.role, needs)]
    who = None
    if viewer.name is not None:
        who = el("span", el("span", viewer.name, class_="who"), " ", el("span", viewer.role, class_="badge"),
                 el("form", el("input", type="hidden", name="csrf", value=viewer.csrf) if viewer.csrf else None,
                    el("button", "Sign out", type="submit"), method="post", action="/dashboard/logout")
                 if viewer.csrf else None,  # signed in by a header (a script): no session to end
                 class_="user")
    elif active != "login":
        who = el("span", el("a", "Sign in", href="/dashboard/login"), class_="user")
    nav = el("nav", el("span", "CXP", class_="brand"), *links, who)
    scripts: list[Html] = []
    if charts is not None and charts.specs:
        scripts = [el("script", src=f"/dashboard/static/plotly.min.js?v={assets.plotly_version()}", defer=True),
                   el("script", src=f"/dashboard/static/dashboard.js?v={assets.asset_version()}", defer=True)]
    head = el("head", el("meta", charset="utf-8"), el("meta", name="viewport", content="width=device-width"),
              el("title", f"{title} · CXP dashboard"), el("link", rel="icon", href="data:,"),  # no favicon request
              el("link", rel="stylesheet", href=f"/dashboard/static/dashboard.css?v={assets.asset_version()}"),
              *scripts)
    main = el("main", el("h1", title), el("p", subtitle, class_="subtitle") if subtitle else None, filters, body)
    data = json_script("dashboard-data", {"charts": charts.specs}) if charts is not None and charts.specs else None
    return Html("<!doctype html>\n" + el("html", head, el("body", nav, main, data, data_page=active), lang="en"))


def safe_next(target: str | None) -> str:
    """A post-login destination on this site's dashboard only (no open redirect)."""
    if not target or any(c in target for c in "\\\r\n\t") or not target.startswith("/dashboard"):
        return "/dashboard"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/dashboard"


# ---------------------------------------------------------------- filter forms


def filter_form(*, products: Sequence[str], product: str | None, span_name: str | None = None,
                span_value: int | None = None, span_label: str = "", extra: Sequence[Html] = (),
                all_label: str | None = "All products") -> Html:
    """A GET form with a product choice, a window length and page-specific fields."""
    options = [el("option", all_label, value="", selected=product is None)] if all_label else []
    options += [el("option", p, value=p, selected=p == product) for p in products]
    if product is not None and product not in products:
        options.append(el("option", f"{product} (unknown)", value=product, selected=True))
    fields = [el("label", "Product ", el("select", *options, name="product"))]
    if span_name is not None:
        fields.append(el("label", f"{span_label} ", el("input", type="number", name=span_name, value=span_value,
                                                         min=1, max=3660, class_="short")))
    fields += list(extra)
    return el("form", *fields, el("button", "Apply", type="submit"), method="get", class_="filters")
