"""Alert markers on the dashboard's health and touchpoint charts, in a real headless Chromium against a real uvicorn
server on the analytics fleet's database (the browser harness of tests/api/test_dashboard_browser.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from cxp.alerts import repository
from cxp.alerts.core.rules import parse_ruleset
from cxp.store.db import connect
from tests.api.test_dashboard_browser import (  # noqa: F401 - fixtures used by name
    SCREENSHOTS,
    Tab,
    admin_tab,
    browser,
    live_url,
    scan_charts,
    tokens,
)

pytestmark = pytest.mark.integration

RULES = [
    {"name": "mark-health", "params": {"kind": "health", "max_weekly_drop": 5}},
    {"name": "mark-incident", "params": {"kind": "incident"}},
    {"name": "mark-touchpoint", "params": {"kind": "touchpoint", "max_failure_rate": 0.2}},
    {"name": "mark-silence", "params": {"kind": "silence"}},
]


def _at(day: int, hour: int) -> datetime:
    return datetime(2025, 4, day, hour, tzinfo=UTC)  # inside the fleet's 8 weeks (2025-03-03 – 2025-04-27)


@pytest.fixture(scope="module")
def planted_alerts(fleet_settings, loaded_fleet) -> Iterator[None]:
    """Alerts in the fleet database for the duration of this module: a cleared health alert and a live incident on
    thermo-x1, a live touchpoint alert on brew-c3, a brew-c3 health alert opened before the window and acknowledged
    (still live), a device's silence alert (no product marker) and an alert opened and cleared long before."""
    with connect(fleet_settings.db) as conn:
        _remove(conn)
        rules = {r.name: r for r in parse_ruleset(json.dumps({"rules": RULES})).rules}
        repository.import_rules(conn, rules=list(rules.values()), by="test")
        rules = {r.name: r for r in repository.current_rules(conn) if r.name.startswith("mark-")}
        with conn.transaction():
            health = repository.open_alert(
                conn,
                rule=rules["mark-health"],
                entity="thermo-x1",
                values={"delta": -7},
                now=_at(8, 10),
                product_id="thermo-x1",
            )
            repository.clear_alert(conn, rule=rules["mark-health"], alert_id=health, now=_at(10, 10))
            repository.open_alert(
                conn,
                rule=rules["mark-incident"],
                entity="thermo-x1/heating_cycle/RELAY_FAULT",
                values={},
                now=_at(20, 9),
                product_id="thermo-x1",
                touchpoint="heating_cycle",
            )
            repository.open_alert(
                conn,
                rule=rules["mark-touchpoint"],
                entity="brew-c3/brew",
                values={},
                now=_at(25, 14),
                product_id="brew-c3",
                touchpoint="brew",
            )
            repository.open_alert(
                conn, rule=rules["mark-silence"], entity="thermo-x1-000001", values={}, now=_at(21, 3)
            )
            old = repository.open_alert(
                conn,
                rule=rules["mark-touchpoint"],
                entity="thermo-x1/set_temperature",
                values={},
                now=datetime(2024, 6, 1, tzinfo=UTC),
                product_id="thermo-x1",
                touchpoint="set_temperature",
            )
            repository.clear_alert(
                conn, rule=rules["mark-touchpoint"], alert_id=old, now=datetime(2024, 6, 2, tzinfo=UTC)
            )
            before = repository.open_alert(
                conn,
                rule=rules["mark-health"],
                entity="brew-c3",
                values={},
                now=datetime(2025, 1, 10, tzinfo=UTC),
                product_id="brew-c3",
            )
        repository.acknowledge_alert(conn, alert_id=before, by="pm", now=datetime(2025, 1, 11, tzinfo=UTC))
    try:
        yield
    finally:
        with connect(fleet_settings.db) as conn:
            _remove(conn)  # the other dashboard tests count the points of these charts


def _remove(conn) -> None:  # noqa: ANN001
    conn.execute("DELETE FROM alerts WHERE rule_name LIKE 'mark-%%'")
    conn.execute("DELETE FROM alert_rules WHERE name LIKE 'mark-%%'")


def _alert_trace(tab: Tab, chart: str) -> dict | None:
    """The chart's alert trace as plotly holds it, and how many of its markers were drawn in the SVG."""
    return tab.evaluate(f"""(() => {{
        const gd = document.querySelector('.chart[data-chart="{chart}"]');
        const i = gd.data.findIndex((t) => t.meta === 'alerts');
        if (i < 0) return null;
        const t = gd.data[i];
        const drawn = gd.querySelectorAll('.scatterlayer .trace')[i].querySelectorAll('path.point').length;
        return {{x: t.x, colors: t.marker.color, text: t.text, drawn: drawn}};
    }})()""")


def test_health_chart_marks_the_alerts_of_its_window(planted_alerts, admin_tab, live_url):  # noqa: F811
    page = admin_tab.open(f"{live_url}/dashboard/health")
    assert not page.errors and "data-js-errors" not in page.html
    marks = _alert_trace(admin_tab, "health-score")
    assert marks is not None and marks["drawn"] == 4  # the silence alert (one device) and the 2024 one are not
    # The alert opened before the window and still live then sits at the window's first day.
    assert [x[:10] for x in marks["x"]] == ["2025-03-03", "2025-04-08", "2025-04-20", "2025-04-25"]
    assert marks["colors"] == ["#d89b16", "#98a2b3", "#d33a2f", "#d33a2f"]  # acknowledged, cleared, open, open
    assert "mark-health (health): thermo-x1" in marks["text"][1] and "cleared 2025-04-10" in marks["text"][1]
    assert "opened 2025-01-10" in marks["text"][0]
    assert "alert(s) of the window" in page.html
    admin_tab.screenshot(SCREENSHOTS / "dashboard-health-alerts.png")

    one = admin_tab.open(f"{live_url}/dashboard/health?product=thermo-x1&weeks=8")
    assert not one.errors
    marks = _alert_trace(admin_tab, "health-score")
    assert marks["drawn"] == 2 and all("thermo-x1" in t for t in marks["text"])
    # The score's own points are unchanged: 8 weeks, plus the two markers.
    assert scan_charts(one.html)["health-score"].attrs["data-points"] == str(8 + 2)


def test_touchpoint_charts_ring_the_touchpoints_with_alerts(planted_alerts, admin_tab, live_url):  # noqa: F811
    page = admin_tab.open(f"{live_url}/dashboard/touchpoints")
    assert not page.errors and "data-js-errors" not in page.html
    thermo, brew = _alert_trace(admin_tab, "ipa-thermo-x1"), _alert_trace(admin_tab, "ipa-brew-c3")
    assert thermo["drawn"] == 1 and thermo["text"][0].startswith("<b>heating_cycle</b>: 1 alert(s)")
    assert brew["drawn"] == 1 and brew["text"][0].startswith("<b>brew</b>: 1 alert(s)")
    assert thermo["colors"] == brew["colors"] == ["#d33a2f"]  # live
    assert _alert_trace(admin_tab, "ipa-ebike-s2") is None
    # The ring sits on the touchpoint's own marker.
    position = admin_tab.evaluate("""(() => {
        const gd = document.querySelector('.chart[data-chart="ipa-brew-c3"]');
        for (const t of gd.data) { const i = (t.hovertext || []).indexOf('brew'); if (i >= 0) return [t.x[i], t.y[i]]; }
        return null; })()""")
    ring = admin_tab.evaluate("""(() => { const gd = document.querySelector('.chart[data-chart="ipa-brew-c3"]');
        const t = gd.data.find((t) => t.meta === 'alerts'); return [t.x[0], t.y[0]]; })()""")
    assert position is not None and ring == pytest.approx(position)
    admin_tab.screenshot(SCREENSHOTS / "dashboard-touchpoints-alerts.png")
