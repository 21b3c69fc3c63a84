"""`cxp bench analytics`: the targets summary, and one small run of every section end to end on the test stack."""

from __future__ import annotations

import re

import pytest

from cxp.tools.bench import analytics as bench_analytics
from cxp.tools.bench.analytics import Figures, targets


def _refresh(seconds: float, ratio: float) -> dict:
    return {"fleet": {"devices": 10_000}, "refresh_one_day": {"device_days": 8_242, "seconds": seconds},
            "ratio_beside_vs_alone": ratio}


def test_every_target_met_at_the_target_size():
    lines = targets(Figures(devices=10_000, days=90, seconds={"report": 1.62, "personas": 0.94, "voice": 0.3},
                            slopes={"report": 0.9, "personas": 0.98, "voice": None}, total_slope=0.91, ratio=68.6,
                            refresh=_refresh(1.94, 0.891)))
    assert lines == [
        "TARGET report view at 10,000 devices ≤ 2 s: 1.62 s — met",
        "TARGET slowest other view at 10,000 devices ≤ 1 s: personas 0.94 s — met",
        "TARGET slope (time ∝ devices^b) ≤ 1: max 0.98 (personas), all views 0.91 — met",
        "TARGET fleet health raw events / rollups ≥ 50×: 68.6× — met",
        "TARGET one day's refresh (10,000 devices, 8,242 device-days) ≤ 30 s: 1.94 s — met",
        "TARGET gateway beside the refresh loop / alone ≥ 0.8: 0.891 — met",
    ]


def test_each_target_missed_says_so_and_names_the_culprit():
    lines = targets(Figures(devices=10_000, days=90,
                            seconds={"report": 2.1, "personas": 1.34, "journey map": 1.06, "voice": 0.3},
                            slopes={"report": 1.2, "personas": 0.8}, ratio=42.6, refresh=_refresh(31.0, 0.767)))
    assert all(line.endswith("NOT MET") or "NOT MET (" in line for line in lines), lines
    assert "report view at 10,000 devices ≤ 2 s: 2.10 s" in lines[0]
    assert lines[1] == ("TARGET slowest other view at 10,000 devices ≤ 1 s: personas 1.34 s — NOT MET"
                        " (2 over: personas, journey map)")
    assert "max 1.20 (report) — NOT MET" in lines[2]


def test_the_bounds_themselves_meet_the_targets():
    lines = targets(Figures(devices=10_000, days=90, seconds={"report": 2.0, "voice": 1.0}, slopes={"voice": 1.0},
                            ratio=50.0, refresh=_refresh(30.0, 0.8)))
    assert all(line.endswith("— met") for line in lines), lines


def test_a_figure_is_judged_as_printed():
    lines = targets(Figures(devices=10_000, days=90, seconds={"voice": 1.004, "touchpoints": 0.2},
                            slopes={"voice": 1.004}, ratio=49.96, refresh=_refresh(30.004, 0.7996)))
    assert all(line.endswith("— met") for line in lines), lines
    lines = targets(Figures(devices=10_000, days=90, seconds={"voice": 1.006}, slopes={"voice": 1.006}, ratio=49.94,
                            refresh=_refresh(30.006, 0.7994)))
    assert all("NOT MET" in line for line in lines), lines


def test_only_measured_figures_are_given():
    lines = targets(Figures(devices=40, days=8, seconds={"voice": 0.01}, slopes={"voice": None}))
    assert lines[0].startswith("(the targets are for 10,000 devices × 90 days; this run's largest fleet: 40 devices")
    assert not any(line.startswith("TARGET report") for line in lines)  # the report was not timed
    assert not any("fleet health" in line for line in lines)  # no ratio measured
    assert "TARGET slope (time ∝ devices^b) ≤ 1: not measured (one fleet size)" in lines
    assert sum("not measured (--no-refresh)" in line for line in lines) == 2


def test_devices_and_sizes_are_one_or_the_other():
    with pytest.raises(SystemExit):
        bench_analytics.main(["--devices", "20", "--sizes", "20,40"])


NUMBER = r"-?\d[\d,]*(\.\d+)?"


@pytest.mark.integration
def test_a_small_run_prints_every_section_and_the_targets(stack, capsys):
    bench_analytics.main(["--sizes", "20,40", "--days", "8", "--workers", "1", "--only", "report,voice",
                          "--repeat", "1", "--refresh-devices", "20"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    # 1. the views per size, the table with a slope per view, the slowest
    assert "20 devices × 8 days" in out and "40 devices × 8 days" in out
    table = [line.split() for line in lines if line.startswith(("report ", "voice ", "all views "))]
    assert len(table) == 3 and all(re.fullmatch(NUMBER, cell) for row in table for cell in row[-3:])
    assert re.search(rf"RESULT slowest view at 40 devices: (report|voice) {NUMBER} s", out)
    # 2. fleet health on the largest size's views database, both ways
    assert re.search(rf"RESULT fleet health 40 devices × 8 days: rollups {NUMBER} s, raw events {NUMBER} s,"
                     rf" ratio {NUMBER}×", out)
    # 3. the refresh cost
    assert re.search(rf"refresh of one day: {NUMBER} device-days in {NUMBER} s", out)
    assert re.search(rf"RESULT refresh 20 devices: one day {NUMBER} s; gateway beside the refresh loop / alone"
                     rf" {NUMBER}", out)
    # 4. every target with a measured figure and a verdict
    marks = [line for line in lines if line.startswith("TARGET ")]
    assert len(marks) == 6 and all(re.search(rf"{NUMBER}.* — (met|NOT MET)", line) for line in marks), marks
