"""Feedback read from the feedback-daily rollup equals the same figures counted from raw feedback events."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from cxp.analytics.queries._base import day_start, fetch_frame, with_scoped_devices
from cxp.analytics.queries.feedback import VOICE_GROUPS, device_feedback, feedback_histogram
from cxp.analytics.queries.health import feedback_counts_trailing
from cxp.analytics.query import AnalyticsQuery
from tests.fixtures.fleet import LoadedFleet

pytestmark = pytest.mark.integration

RAW_GROUPS = {
    "product": "sel.product_id",
    "touchpoint": "coalesce(e.touchpoint, '(relationship)')",
    "segment": "coalesce(sel.segment, '(none)')",
    "week": "time_bucket(INTERVAL '7 days', (e.ts AT TIME ZONE 'UTC')::date, DATE '2000-01-03')::text",
    "month": "to_char(e.ts AT TIME ZONE 'UTC', 'YYYY-MM')",
    "day": "((e.ts AT TIME ZONE 'UTC')::date)::text",
}
SCOPES = (AnalyticsQuery(), AnalyticsQuery(product="ebike-s2"))


def _raw(conn, scope, query: str, start, end) -> pd.DataFrame:
    statement, params = with_scoped_devices(scope, query, lo=day_start(start), hi=day_start(end + timedelta(days=1)))
    return fetch_frame(conn, statement, params)


def _window(fleet: LoadedFleet):
    first = fleet.params["start"].date()
    return first + timedelta(days=3), first + timedelta(days=fleet.params["days"] - 2)


@pytest.mark.parametrize("by", [["product"], ["touchpoint"], ["segment", "week"], ["month"], ["day", "product"]])
def test_histogram_per_grouping_equals_raw_events(fleet_conn, loaded_fleet: LoadedFleet, by) -> None:
    start, end = _window(loaded_fleet)
    assert set(RAW_GROUPS) == set(VOICE_GROUPS)
    groups = ", ".join(f"{RAW_GROUPS[g]} AS {g}" for g in by)
    keys = ", ".join(str(i) for i in range(1, len(by) + 3))
    for scope in SCOPES:
        raw = _raw(fleet_conn, scope, f"SELECT {groups}, m.measure, m.score::int AS score, count(*)::int AS responses"
                   " FROM events e JOIN sel USING (device_key) CROSS JOIN LATERAL (VALUES ('nps', e.nps),"
                   " ('csat', e.csat), ('ces', e.ces)) AS m(measure, score) WHERE e.kind = 'feedback'"
                   f" AND e.ts >= %(lo)s AND e.ts < %(hi)s AND m.score IS NOT NULL GROUP BY {keys} ORDER BY {keys}",
                   start, end)
        kept = feedback_histogram(fleet_conn, scope=scope, start=start, end=end, by=by)
        assert len(raw) > 0
        pd.testing.assert_frame_equal(kept, raw, check_dtype=False)


def test_device_feedback_and_trailing_counts_equal_raw_events(fleet_conn, loaded_fleet: LoadedFleet) -> None:
    start, end = _window(loaded_fleet)
    for scope in SCOPES:
        raw = _raw(fleet_conn, scope, "SELECT e.device_key, count(e.nps)::int AS nps_n, avg(e.nps)::float8 AS nps_mean,"
                   " count(e.csat)::int AS csat_n, avg(e.csat)::float8 AS csat_mean, count(e.ces)::int AS ces_n,"
                   " avg(e.ces)::float8 AS ces_mean FROM events e JOIN sel USING (device_key)"
                   " WHERE e.kind = 'feedback' AND e.ts >= %(lo)s AND e.ts < %(hi)s"
                   " GROUP BY 1 ORDER BY 1", start, end)
        kept = device_feedback(fleet_conn, scope=scope, start=start, end=end).sort_values("device_key",
                                                                                         ignore_index=True)
        assert len(raw) > 0
        pd.testing.assert_frame_equal(kept, raw, check_dtype=False)  # the means to the last digit

        ends = [end - timedelta(days=7 * k) for k in range(4)]
        trailing = feedback_counts_trailing(fleet_conn, scope=scope, period_ends=ends, lookback_days=28)
        daily = _raw(fleet_conn, scope, "SELECT e.device_key, (e.ts AT TIME ZONE 'UTC')::date AS day,"
                     " count(e.nps) AS nps_n, count(*) FILTER (WHERE e.nps >= 9) AS nps_promoters,"
                     " count(*) FILTER (WHERE e.nps <= 6) AS nps_detractors, count(e.csat) AS csat_n,"
                     " count(*) FILTER (WHERE e.csat >= 4) AS csat_top2, count(e.ces) AS ces_n,"
                     " coalesce(sum(e.ces), 0)::float8 AS ces_sum FROM events e JOIN sel USING (device_key)"
                     " WHERE e.kind = 'feedback' AND e.ts >= %(lo)s AND e.ts < %(hi)s GROUP BY 1, 2",
                     min(ends) - timedelta(days=27), max(ends))
        daily["day"] = pd.to_datetime(daily["day"])
        for period_end in ends:
            inside = daily[(daily["day"] > pd.Timestamp(period_end) - pd.Timedelta(days=28))
                           & (daily["day"] <= pd.Timestamp(period_end))]
            expected = inside.drop(columns="day").groupby("device_key").sum()
            got = trailing[pd.to_datetime(trailing["period_end"]) == pd.Timestamp(period_end)].set_index("device_key")
            got = got.loc[got.drop(columns="period_end").sum(axis=1) > 0, list(expected.columns)]
            assert len(expected) > 0
            pd.testing.assert_frame_equal(got.sort_index(), expected.sort_index(), check_dtype=False)
            # One end alone is summed in SQL: the same rows as among several ends (summed in numpy).
            alone = feedback_counts_trailing(fleet_conn, scope=scope, period_ends=[period_end], lookback_days=28)
            together = trailing[trailing["period_end"] == period_end].reset_index(drop=True)
            pd.testing.assert_frame_equal(alone, together)
