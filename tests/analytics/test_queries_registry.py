"""Registry queries on a simulated fleet: the devices' exits kept on the daily rollup (migration 039) equal the
first cancellation or return (time and stage) read from raw lifecycle events."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cxp.analytics.queries.registry import churn_exits
from cxp.analytics.query import AnalyticsQuery
from tests.fixtures.fleet import LoadedFleet

pytestmark = pytest.mark.integration


def _rows(frame) -> list[tuple]:
    return sorted(zip(frame["device_key"], frame["exit_at"], frame["exit_stage"], strict=True))


def test_exits_from_the_rollups_equal_raw_lifecycle_events(fleet_conn, loaded_fleet: LoadedFleet) -> None:
    first = loaded_fleet.params["start"].date()
    last = first + timedelta(days=loaded_fleet.params["days"] - 1)
    product = fleet_conn.execute("SELECT product_id FROM products ORDER BY 1 LIMIT 1").fetchone()[0]
    counts = []
    for end in (first + timedelta(days=20), last - timedelta(days=7), last):
        for scope in (AnalyticsQuery(), AnalyticsQuery(product=product)):
            kept = churn_exits(fleet_conn, scope=scope, end=end)
            raw = churn_exits(fleet_conn, scope=scope, end=end, source="raw")
            assert _rows(kept) == _rows(raw)
            counts.append(len(kept))
    assert 0 < counts[0] < counts[-2], "exits accrue over the window and the fleet has some"
    assert set(churn_exits(fleet_conn, scope=AnalyticsQuery(), end=last)["exit_stage"]) == {"cancelled", "returned"}
