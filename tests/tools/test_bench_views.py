"""`cxp bench views`: the slope fit, the view list, and one small run end to end on the test stack's database."""

from __future__ import annotations

import pytest

from cxp.tools.bench import views as bench_views


def test_slope_is_the_power_law_exponent():
    assert bench_views.slope([1000, 2000, 4000], [1.0, 2.0, 4.0]) == pytest.approx(1.0)
    assert bench_views.slope([1000, 2000, 4000], [3.0, 3.0, 3.0]) == pytest.approx(0.0, abs=1e-12)
    assert bench_views.slope([100, 1000], [0.1, 10.0]) == pytest.approx(2.0)
    assert bench_views.slope([1000], [1.0]) is None


def test_every_product_manager_view_is_timed():
    names = set(bench_views.views())
    assert {"report", "touchpoints", "disruptions", "journey map", "pricing comparison"} <= names
    assert len(names) == 14


@pytest.mark.integration
def test_a_small_run_prints_every_view_and_the_slope(stack, capsys):
    bench_views.main(["--sizes", "20,40", "--days", "8", "--workers", "1", "--only", "report,voice"])
    out = capsys.readouterr().out
    assert "20 devices × 8 days" in out and "40 devices × 8 days" in out
    assert "RESULT slowest view at 40 devices:" in out
    table = [line.split() for line in out.splitlines() if line.startswith(("report ", "voice "))]
    assert len(table) == 2 and all(len(row) == 4 for row in table)  # name, a time per size, the slope
