"""The alerts page: live alerts, then recent history (cleared included)."""

from __future__ import annotations

import json

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
