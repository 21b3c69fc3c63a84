"""Hourly exposure and errors read from the product-hourly rollups equal devices counted from raw events."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from cxp.analytics.queries._base import day_start, fetch_frame, with_scoped_devices
from cxp.analytics.queries.disruptions import daily_errors_by_product, hourly_errors, hourly_users
from cxp.analytics.query import AnalyticsQuery
from tests.fixtures.fleet import LoadedFleet

pytestmark = pytest.mark.integration


# Per product × touchpoint [× code] × hour from raw events: the devices that used the touchpoint or hit the code.
_RAW = {
    "users": "SELECT sel.product_id, e.touchpoint, time_bucket(INTERVAL '1 hour', e.ts) AS bucket,"
             " count(DISTINCT e.device_key)::int AS users FROM events e JOIN sel USING (device_key)"
             " WHERE e.kind = 'usage' AND e.touchpoint IS NOT NULL AND e.ts >= %(lo)s AND e.ts < %(hi)s"
             " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    "errors": "SELECT sel.product_id, e.touchpoint, e.code, date_trunc('hour', e.ts) AS bucket,"
              " count(DISTINCT e.device_key)::int AS devices FROM events e JOIN sel USING (device_key)"
              " WHERE e.kind = 'error' AND e.touchpoint IS NOT NULL AND e.ts >= %(lo)s AND e.ts < %(hi)s"
              " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
}
_READERS = {"users": hourly_users, "errors": hourly_errors}


@pytest.mark.parametrize("what", ["users", "errors"])
@pytest.mark.parametrize("product", [None, "ebike-s2"])
def test_hourly_users_and_errors_equal_raw_events_for_the_kept_and_the_per_device_read(
    fleet_conn, loaded_fleet: LoadedFleet, product, what
) -> None:
    first = loaded_fleet.params["start"].date()
    start, end = first + timedelta(days=2), first + timedelta(days=loaded_fleet.params["days"] - 2)
    kept_scope = AnalyticsQuery(product=product)
    statement, params = with_scoped_devices(kept_scope, _RAW[what], lo=day_start(start),
                                            hi=day_start(end + timedelta(days=1)))
    raw = fetch_frame(fleet_conn, statement, params)
    assert len(raw) > 0 and raw.iloc[:, -1].max() > 1
    if what == "errors":
        assert raw["code"].nunique() > 1
    kept = _READERS[what](fleet_conn, scope=kept_scope, start=start, end=end)
    pd.testing.assert_frame_equal(kept, raw, check_dtype=False)
    # The same devices named one by one take the per-device read (rollup_hourly or raw errors) instead.
    members = {row[0] for row in fleet_conn.execute(
        "SELECT device_id FROM devices WHERE %(p)s::text IS NULL OR product_id = %(p)s", {"p": product})}
    per_device = _READERS[what](fleet_conn, scope=AnalyticsQuery(devices=frozenset(members)), start=start, end=end)
    pd.testing.assert_frame_equal(per_device, raw, check_dtype=False)


_RAW_DAILY = (
    "SELECT sel.product_id, (e.ts AT TIME ZONE 'UTC')::date AS day,"
    " count(*) FILTER (WHERE e.kind = 'error')::int AS errors, count(*) FILTER (WHERE e.kind = 'usage')::int AS uses,"
    " count(DISTINCT e.device_key) FILTER (WHERE e.kind = 'usage')::int AS active_devices"
    " FROM events e JOIN sel USING (device_key) WHERE e.kind IN ('usage', 'error') AND e.ts >= %(lo)s AND e.ts < %(hi)s"
    " GROUP BY 1, 2 ORDER BY 1, 2"
)


@pytest.mark.parametrize("product", [None, "ebike-s2"])
def test_daily_errors_by_product_equal_raw_events(fleet_conn, loaded_fleet: LoadedFleet, product) -> None:
    first = loaded_fleet.params["start"].date()
    start, end = first + timedelta(days=1), first + timedelta(days=loaded_fleet.params["days"] - 2)
    scope = AnalyticsQuery(product=product)
    statement, params = with_scoped_devices(scope, _RAW_DAILY, lo=day_start(start),
                                            hi=day_start(end + timedelta(days=1)))
    raw = fetch_frame(fleet_conn, statement, params)
    idle_errors = fleet_conn.execute("SELECT count(*) FROM rollup_daily WHERE NOT active AND error_count > 0"
                                     " AND day BETWEEN %s AND %s", (start, end)).fetchone()[0]
    assert idle_errors > 0, "errors on days without a use count too"
    got = daily_errors_by_product(fleet_conn, scope=scope, start=start, end=end)
    assert len(raw) > 5
    pd.testing.assert_frame_equal(got, raw, check_dtype=False)
