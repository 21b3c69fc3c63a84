"""The fleet report the demo prints: a short summary whose top concern is the planted failing touchpoint."""

from __future__ import annotations

import pytest

from cxp.analytics import service
from tests.analytics.helpers import assert_no_nan

pytestmark = pytest.mark.integration


def test_fleet_report_names_the_planted_fault_first(fleet_conn, loaded_fleet) -> None:
    product, touchpoint = loaded_fleet.error_prone
    report = service.get_fleet_report(conn=fleet_conn)
    assert_no_nan(report)
    assert report.devices > 400 and report.fleet_score is not None
    assert {p.product_id for p in report.products} == {"brew-c3", "ebike-s2", "thermo-x1"}
    assert sum(report.band_shares.values()) == pytest.approx(1.0)
    assert report.concerns and f"{product}/{touchpoint}" in report.concerns[0].area
    assert report.concerns[0].severity == "high"
    brew = next(p for p in report.products if p.product_id == product)
    assert brew.top_negative_drivers[0] == "reliability"
    lines = report.render_text()
    assert all(isinstance(line, str) and "\n" not in line for line in lines)
    assert any("top concerns" in line for line in lines) and any(product in line for line in lines)
