"""Voice of the customer from stored feedback, checked against a hand computation over the raw rows."""

from __future__ import annotations

import math

import pytest

from cxp.analytics import service
from cxp.analytics.query import AnalyticsQuery
from tests.analytics.helpers import assert_no_nan

pytestmark = pytest.mark.integration


def _raw(conn, column: str, product: str | None = None) -> list[int]:
    """Every stored answer of one measure, straight from the events table."""
    sql = (
        f"SELECT e.{column} FROM events e JOIN devices d USING (device_key)"
        f" WHERE e.kind = 'feedback' AND e.{column} IS NOT NULL"
    )
    params: tuple = ()
    if product:
        sql += " AND d.product_id = %s"
        params = (product,)
    return [r[0] for r in conn.execute(sql, params).fetchall()]


def _hand_nps(scores: list[int]) -> tuple[float, float]:
    n = len(scores)
    p = sum(s >= 9 for s in scores) / n
    d = sum(s <= 6 for s in scores) / n
    return 100 * (p - d), 1.959963984540054 * math.sqrt(100**2 * (p + d - (p - d) ** 2) / n)


def test_nps_from_stored_feedback_equals_the_hand_computation(fleet_conn, loaded_fleet) -> None:
    report = service.get_voice(conn=fleet_conn, by=("product",), days=10_000)
    assert_no_nan(report)
    overall = _raw(fleet_conn, "nps")
    value, margin = _hand_nps(overall)
    assert report.overall.nps.n == len(overall) > 100
    assert report.overall.nps.value == pytest.approx(value, abs=1e-9)
    assert report.overall.nps.margin == pytest.approx(margin, abs=1e-9)
    for group in report.groups:
        scores = _raw(fleet_conn, "nps", group.key["product"])
        value, margin = _hand_nps(scores)
        assert group.nps.n == len(scores)
        assert group.nps.value == pytest.approx(value, abs=1e-9)
        assert group.nps.margin == pytest.approx(margin, abs=1e-9)


def test_csat_is_top_two_box_and_ces_a_mean_never_mixed(fleet_conn) -> None:
    report = service.get_voice(conn=fleet_conn, by=("product",), days=10_000)
    csat = _raw(fleet_conn, "csat")
    ces = _raw(fleet_conn, "ces")
    assert report.overall.csat.n == len(csat)
    assert report.overall.csat.value == pytest.approx(100 * sum(s >= 4 for s in csat) / len(csat))
    assert report.overall.ces.value == pytest.approx(sum(ces) / len(ces))
    assert report.overall.csat.scale != report.overall.ces.scale != report.overall.nps.scale
    assert 1 <= report.overall.ces.value <= 7 and 0 <= report.overall.csat.value <= 100


def test_error_prone_product_has_the_lowest_nps(fleet_conn, loaded_fleet) -> None:
    product, touchpoint = loaded_fleet.error_prone
    report = service.get_voice(conn=fleet_conn, by=("product",), days=10_000)
    nps = {g.key["product"]: g.nps.value for g in report.groups}
    assert min(nps, key=nps.get) == product
    by_tp = service.get_voice(conn=fleet_conn, by=("product", "touchpoint"), days=10_000)
    csat = {(g.key["product"], g.key["touchpoint"]): g.csat for g in by_tp.groups if g.csat and g.csat.n >= 30}
    core_csat = {k: v.value for k, v in csat.items() if k[1] in ("brew", "ride", "heating_cycle")}
    assert min(core_csat, key=core_csat.get) == (product, touchpoint)
    assert any(g.key["touchpoint"] == "(relationship)" for g in by_tp.groups)


def test_groups_by_segment_and_week_and_small_n_states(fleet_conn) -> None:
    report = service.get_voice(conn=fleet_conn, by=("segment", "week"), days=10_000)
    assert {g.key["segment"] for g in report.groups} <= {"consumer", "smb"}
    weeks = {g.key["week"] for g in report.groups}
    assert len(weeks) == 8
    one = service.get_voice(
        conn=fleet_conn, query=AnalyticsQuery(account="acct-000000"), by=("product",), days=10_000, min_n=5
    )
    for g in (one.overall, *one.groups):
        for m in (g.nps, g.csat, g.ces):
            if m is not None and m.n < 5:
                assert m.value is None and m.reason.startswith("not enough data")
