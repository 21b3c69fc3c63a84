"""Touchpoint queries on a simulated fleet against raw events: the first successful core use in a window."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from cxp.analytics.queries._base import day_start
from cxp.analytics.queries.touchpoints import first_core_success
from cxp.analytics.query import AnalyticsQuery
from tests.fixtures.fleet import LoadedFleet

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("offset_days", [0, 3])
def test_first_core_success_in_a_window_equals_raw_events(fleet_conn, loaded_fleet: LoadedFleet, offset_days) -> None:
    first = loaded_fleet.params["start"].date()
    start, end = first + timedelta(days=offset_days), first + timedelta(days=loaded_fleet.params["days"] - 3)
    keys = [row[0] for row in fleet_conn.execute("SELECT device_key FROM devices ORDER BY 1")]
    raw = pd.DataFrame(fleet_conn.execute(
        "SELECT e.device_key, min(e.ts) FROM events e JOIN devices d USING (device_key)"
        " JOIN touchpoints t ON t.product_id = d.product_id AND t.touchpoint = e.touchpoint AND t.is_core"
        " WHERE e.kind = 'usage' AND e.success AND e.ts >= %s AND e.ts < %s GROUP BY 1 ORDER BY 1",
        (day_start(start), day_start(end + timedelta(days=1))),
    ).fetchall(), columns=["device_key", "first_core_use_at"])
    got = first_core_success(fleet_conn, scope=AnalyticsQuery(), start=start, end=end, device_keys=keys)
    got = got.sort_values("device_key", ignore_index=True)
    assert len(raw) > 10
    assert got["device_key"].tolist() == raw["device_key"].tolist()
    got_at, raw_at = (pd.to_datetime(f["first_core_use_at"], utc=True) for f in (got, raw))
    assert (got_at == raw_at).all()
    some = keys[: len(keys) // 3]
    part = first_core_success(fleet_conn, scope=AnalyticsQuery(), start=start, end=end, device_keys=some)
    assert set(part["device_key"]) == set(raw["device_key"]) & set(some)
