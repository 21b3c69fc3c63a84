"""Usage queries on a simulated fleet against raw events: core uses per day and the last core use (migration 036)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cxp.analytics.queries._base import day_start
from cxp.analytics.queries.usage import daily_usage, last_use_before
from cxp.analytics.query import AnalyticsQuery
from tests.fixtures.fleet import LoadedFleet

pytestmark = pytest.mark.integration

_CORE_USES = (
    "SELECT e.device_key, (e.ts AT TIME ZONE 'UTC')::date AS day, count(*)::int FROM events e"
    " JOIN devices d USING (device_key)"
    " JOIN touchpoints t ON t.product_id = d.product_id AND t.touchpoint = e.touchpoint AND t.is_core"
    " WHERE e.kind = 'usage' AND e.ts >= %s AND e.ts < %s GROUP BY 1, 2 ORDER BY 1, 2"
)


def test_core_uses_per_day_and_the_last_core_use_equal_raw_events(fleet_conn, loaded_fleet: LoadedFleet) -> None:
    first = loaded_fleet.params["start"].date()
    start, end = first + timedelta(days=2), first + timedelta(days=loaded_fleet.params["days"] - 4)
    raw = fleet_conn.execute(_CORE_USES, (day_start(start), day_start(end + timedelta(days=1)))).fetchall()
    core = daily_usage(fleet_conn, scope=AnalyticsQuery(), start=start, end=end, core_only=True)
    assert len(raw) > 20
    assert list(core.itertuples(index=False, name=None)) == raw
    beside = daily_usage(fleet_conn, scope=AnalyticsQuery(), start=start, end=end, core_uses=True)
    assert (beside["core_uses"] <= beside["uses"]).all() and (beside["core_uses"] == 0).any()
    with_core = beside[beside["core_uses"] > 0]
    assert list(zip(with_core["device_key"], with_core["day"], with_core["core_uses"], strict=True)) == raw

    history = fleet_conn.execute(_CORE_USES, (day_start(first - timedelta(days=400)),
                                              day_start(end + timedelta(days=1)))).fetchall()
    last_raw = {}
    for key, day, _ in history:
        last_raw[key] = max(day, last_raw.get(key, day))
    last = last_use_before(fleet_conn, scope=AnalyticsQuery(), end=end, core_only=True)
    assert dict(zip(last["device_key"], last["last_use_on"], strict=True)) == last_raw
