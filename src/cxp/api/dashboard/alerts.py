"""The alerts page: live alerts, then recent history (cleared included)."""

from __future__ import annotations

import html
import json
from datetime import datetime

from cxp.api.dashboard.render import Html, el, table


def _when(value) -> str:  # noqa: ANN001 - a datetime or None
    return f"{value:%Y-%m-%d %H:%M:%S} UTC" if value is not None else ""


def _row(a: dict) -> list[object]:
    values = json.dumps(a["trigger_values"], sort_keys=True, default=str)
    return [a["alert_id"], el("span", a["state"], class_=f"state-{a['state']}"), a["severity"], a["rule_name"],
            a["entity"], _when(a["first_seen"]), _when(a["last_seen"]), a["acked_by"] or "", _when(a["cleared_at"]),
            el("code", values[:200])]


HEADERS = ("Id", "State", "Severity", "Rule", "Entity", "First seen", "Last seen", "Acknowledged by", "Cleared",
           "Values")


def alerts_page(live: list[dict], recent: list[dict]) -> Html:
    """Two tables; acknowledging is done through the API or `cxp alerts ack`."""
    return el("div",
              el("section", el("h3", f"Open and acknowledged ({len(live)})"),
                 table(HEADERS, [_row(a) for a in live], numeric_from=99), class_="card"),
              el("section", el("h3", "History (latest 100)"),
                 table(HEADERS, [_row(a) for a in recent], numeric_from=99), class_="card"),
              el("p", "Acknowledge with POST /v1/alerts/{id}/ack (role product) or `cxp alerts ack ID --by NAME`.",
                 class_="note"))


# ---------------------------------------------------------------- markers on the health and touchpoint charts

MARKER_COLORS = {"open": "#d33a2f", "acknowledged": "#d89b16", "cleared": "#98a2b3"}


def _label(a: dict) -> str:
    """Hover text (plotly reads a few tags: the names are escaped)."""
    until = f"cleared {_when(a['cleared_at'])}" if a["cleared_at"] is not None else a["state"]
    what = html.escape(f"{a['severity']} · {a['rule_name']} ({a['kind']}): {a['entity']}")
    return f"{what}<br>opened {_when(a['first_seen'])}, {until}"


def alert_marker_trace(markers: list[dict], *, y: float, since: datetime | None = None) -> dict | None:
    """Alerts of the chart's window as markers on a time axis at their opening time (colour: open, acknowledged,
    cleared), at height `y`; one opened before the window (`since`) and still live then sits at its start. None
    when there are none."""
    if not markers:
        return None
    ordered = sorted(markers, key=lambda a: a["first_seen"])
    return {"type": "scatter", "mode": "markers", "name": "alerts", "meta": "alerts", "cliponaxis": False,
            "x": [max(a["first_seen"], since) if since else a["first_seen"] for a in ordered], "y": [y] * len(ordered),
            "marker": {"symbol": "triangle-up", "size": 13, "line": {"width": 1, "color": "#1d2430"},
                       "color": [MARKER_COLORS[a["state"]] for a in ordered]},
            "text": [_label(a) for a in ordered], "hovertemplate": "%{text}<extra>alert</extra>"}


def touchpoint_marker_trace(markers: list[dict], positions: dict[str, tuple[float, float]]) -> dict | None:
    """A ring around each touchpoint of the importance–performance chart that had alerts in the window (red while
    one is live, grey when all cleared), the alerts in its hover text; None when there are none."""
    by_tp: dict[str, list[dict]] = {}
    for a in markers:
        if a["touchpoint"] in positions:
            by_tp.setdefault(a["touchpoint"], []).append(a)
    if not by_tp:
        return None
    tps = sorted(by_tp)
    live = [any(a["state"] != "cleared" for a in by_tp[t]) for t in tps]
    return {"type": "scatter", "mode": "markers", "name": "alerts", "meta": "alerts", "cliponaxis": False,
            "x": [positions[t][0] for t in tps], "y": [positions[t][1] for t in tps],
            "marker": {"symbol": "circle-open", "size": 34, "line": {"width": 3},
                       "color": [MARKER_COLORS["open" if lv else "cleared"] for lv in live]},
            "text": [f"<b>{html.escape(t)}</b>: {len(by_tp[t])} alert(s)<br>"
                     + "<br>".join(_label(a) for a in by_tp[t][:5]) for t in tps],
            "hovertemplate": "%{text}<extra>alerts</extra>"}
