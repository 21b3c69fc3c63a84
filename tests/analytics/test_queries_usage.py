"""Usage queries on a simulated fleet against raw events: core uses per day, the last core use (migration 036) and
the personas' usage features."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cxp.analytics.queries._base import day_start
from cxp.analytics.queries.usage import daily_usage, last_use_before, usage_features
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


_FEATURES_FROM_RAW = (
    "WITH d AS (SELECT d.device_key, d.product_id FROM devices d WHERE %(product)s::text IS NULL"
    "  OR d.product_id = %(product)s),"
    " u AS (SELECT e.device_key, (e.ts AT TIME ZONE 'UTC')::date AS day, e.kind, e.success, e.touchpoint"
    "  FROM events e WHERE e.kind IN ('usage', 'error') AND e.ts >= %(lo)s AND e.ts < %(hi)s),"
    " days AS (SELECT device_key, day, count(*) FILTER (WHERE kind = 'usage') AS uses,"
    "  count(*) FILTER (WHERE kind = 'error') AS errors, count(*) FILTER (WHERE kind = 'usage' AND success) AS ok"
    "  FROM u GROUP BY 1, 2)"
    " SELECT d.device_key,"
    " (SELECT count(*) FROM days x WHERE x.device_key = d.device_key AND x.uses > 0)::int,"
    " (SELECT count(*) FROM days x WHERE x.device_key = d.device_key AND x.uses > 0"
    "   AND extract(isodow FROM x.day) >= 6)::int,"
    " (SELECT coalesce(sum(uses), 0) FROM days x WHERE x.device_key = d.device_key)::int,"
    " (SELECT coalesce(sum(errors), 0) FROM days x WHERE x.device_key = d.device_key)::int,"
    " (SELECT coalesce(sum(ok), 0) FROM days x WHERE x.device_key = d.device_key)::int,"
    " (SELECT count(*) FROM u JOIN touchpoints t ON t.product_id = d.product_id AND t.touchpoint = u.touchpoint"
    "   AND t.is_core WHERE u.device_key = d.device_key AND u.kind = 'usage')::int,"
    " (SELECT count(DISTINCT u.touchpoint) FROM u JOIN touchpoints t ON t.product_id = d.product_id"
    "   AND t.touchpoint = u.touchpoint WHERE u.device_key = d.device_key AND u.kind = 'usage')::int"
    " FROM d ORDER BY 1"
)


@pytest.mark.parametrize(("offset", "days"), [(0, 28), (3, 40)])  # whole weeks; from and to mid-week
def test_persona_usage_features_equal_raw_events(fleet_conn, loaded_fleet: LoadedFleet, offset: int,
                                                 days: int) -> None:
    first = loaded_fleet.params["start"].date()
    start = first + timedelta(days=(7 - first.weekday()) % 7 + offset)
    end = start + timedelta(days=days - 1)
    for product in (None, "ebike-s2"):
        raw = fleet_conn.execute(_FEATURES_FROM_RAW, {"product": product, "lo": day_start(start),
                                                      "hi": day_start(end + timedelta(days=1))}).fetchall()
        got = usage_features(fleet_conn, scope=AnalyticsQuery(product=product), start=start, end=end)
        assert list(got.itertuples(index=False, name=None)) == raw
        assert got["touchpoints_used"].max() > 1 and (got["weekend_active_days"] > 0).any()
    # a scope of a few devices (joined before the sums, not after): their rows of the whole fleet's answer
    fleet = usage_features(fleet_conn, scope=AnalyticsQuery(), start=start, end=end)
    some = fleet_conn.execute("SELECT device_key, device_id FROM devices ORDER BY device_key LIMIT 7").fetchall()
    few = usage_features(fleet_conn, scope=AnalyticsQuery(devices=frozenset(i for _, i in some)), start=start, end=end)
    expected = fleet[fleet["device_key"].isin([k for k, _ in some])].reset_index(drop=True)
    assert len(few) == 7 and few.equals(expected)
