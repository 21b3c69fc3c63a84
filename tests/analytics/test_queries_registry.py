"""Registry queries on a simulated fleet: the devices' exits kept on the daily rollup (migration 039) equal the
first cancellation or return (time and stage) read from raw lifecycle events."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from cxp.analytics.queries.registry import churn_exits, with_device_ids
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


def test_with_device_ids_keeps_the_scoped_rows_in_order_with_their_ids_and_products() -> None:
    scoped = pd.DataFrame({"device_key": [3, 7, 9], "device_id": ["c", "g", "i"], "product_id": ["p", "q", "p"]})
    frame = pd.DataFrame({"device_key": [9, 4, 3, 9, 7], "ts": [1, 2, 3, 4, 5]}, index=[10, 11, 12, 13, 14])
    out = with_device_ids(frame, scoped=scoped)
    assert list(out.columns) == ["device_id", "device_key", "product_id", "ts"]
    assert out["device_key"].tolist() == [9, 3, 9, 7]  # key 4 is not in the scope: left out, as a join would
    assert out["device_id"].tolist() == ["i", "c", "i", "g"]
    assert out["product_id"].tolist() == ["p", "p", "p", "q"]
    assert out["ts"].tolist() == [1, 3, 4, 5]
    assert list(frame.columns) == ["device_key", "ts"]  # the input is not changed
    empty = with_device_ids(frame.iloc[:0], scoped=scoped)
    assert empty.empty and list(empty.columns) == ["device_id", "device_key", "product_id", "ts"]
