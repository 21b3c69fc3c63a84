"""Hourly exposure and errors read from the product-hourly rollups equal devices counted from raw events."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from cxp.analytics.queries._base import day_start, fetch_frame, with_scoped_devices
from cxp.analytics.queries.disruptions import hourly_errors, hourly_users
from cxp.analytics.query import AnalyticsQuery
from tests.fixtures.fleet import LoadedFleet

pytestmark = pytest.mark.integration


def _raw_users(conn, scope: AnalyticsQuery, start, end) -> pd.DataFrame:
    statement, params = with_scoped_devices(
        scope,
        "SELECT sel.product_id, e.touchpoint, time_bucket(INTERVAL '1 hour', e.ts) AS bucket,"
        " count(DISTINCT e.device_key)::int AS users FROM events e JOIN sel USING (device_key)"
        " WHERE e.kind = 'usage' AND e.touchpoint IS NOT NULL AND e.ts >= %(lo)s AND e.ts < %(hi)s"
        " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        lo=day_start(start), hi=day_start(end + timedelta(days=1)),
    )
    return fetch_frame(conn, statement, params)


@pytest.mark.parametrize("product", [None, "ebike-s2"])
def test_hourly_users_equal_raw_usage_for_the_kept_and_the_joined_read(fleet_conn, loaded_fleet: LoadedFleet,
                                                                       product) -> None:
    first = loaded_fleet.params["start"].date()
    start, end = first + timedelta(days=2), first + timedelta(days=loaded_fleet.params["days"] - 2)
    kept_scope = AnalyticsQuery(product=product)
    raw = _raw_users(fleet_conn, kept_scope, start, end)
    assert len(raw) > 0 and raw["users"].max() > 1
    kept = hourly_users(fleet_conn, scope=kept_scope, start=start, end=end)
    pd.testing.assert_frame_equal(kept, raw, check_dtype=False)
    # The same devices named one by one take the rollup_hourly join instead of the kept rows.
    members = {row[0] for row in fleet_conn.execute(
        "SELECT device_id FROM devices WHERE %(p)s::text IS NULL OR product_id = %(p)s", {"p": product})}
    joined = hourly_users(fleet_conn, scope=AnalyticsQuery(devices=frozenset(members)), start=start, end=end)
    pd.testing.assert_frame_equal(joined, raw, check_dtype=False)


def _raw_errors(conn, scope: AnalyticsQuery, start, end) -> pd.DataFrame:
    statement, params = with_scoped_devices(
        scope,
        "SELECT sel.product_id, e.touchpoint, e.code, date_trunc('hour', e.ts) AS bucket,"
        " count(DISTINCT e.device_key)::int AS devices FROM events e JOIN sel USING (device_key)"
        " WHERE e.kind = 'error' AND e.touchpoint IS NOT NULL AND e.ts >= %(lo)s AND e.ts < %(hi)s"
        " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
        lo=day_start(start), hi=day_start(end + timedelta(days=1)),
    )
    return fetch_frame(conn, statement, params)


@pytest.mark.parametrize("product", [None, "ebike-s2"])
def test_hourly_errors_equal_raw_errors_for_the_kept_and_the_scanned_read(fleet_conn, loaded_fleet: LoadedFleet,
                                                                         product) -> None:
    first = loaded_fleet.params["start"].date()
    start, end = first + timedelta(days=2), first + timedelta(days=loaded_fleet.params["days"] - 2)
    kept_scope = AnalyticsQuery(product=product)
    raw = _raw_errors(fleet_conn, kept_scope, start, end)
    assert len(raw) > 0 and raw["code"].nunique() > 1
    kept = hourly_errors(fleet_conn, scope=kept_scope, start=start, end=end)
    pd.testing.assert_frame_equal(kept, raw, check_dtype=False)
    # The same devices named one by one count raw errors instead of reading the kept rows.
    members = {row[0] for row in fleet_conn.execute(
        "SELECT device_id FROM devices WHERE %(p)s::text IS NULL OR product_id = %(p)s", {"p": product})}
    scanned = hourly_errors(fleet_conn, scope=AnalyticsQuery(devices=frozenset(members)), start=start, end=end)
    pd.testing.assert_frame_equal(scanned, raw, check_dtype=False)
