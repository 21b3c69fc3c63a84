"""Referrals and the answers behind NPS, per device, for the earned-growth measure (raw lifecycle and feedback)."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import psycopg

from cxp.analytics.queries._base import day_start, fetch_frame, with_scoped_devices
from cxp.analytics.query import AnalyticsQuery


def referral_counts(conn: psycopg.Connection, *, scope: AnalyticsQuery, start: date, end: date) -> pd.DataFrame:
    """Per scoped device: `referred` lifecycle events in [start, end] (referrals), whether its activation named a
    referrer (earned), and its NPS answers counted (nps_n, promoters 9–10, detractors 0–6)."""
    statement, params = with_scoped_devices(
        scope,
        "SELECT sel.device_key,"
        " count(*) FILTER (WHERE e.kind = 'lifecycle' AND e.stage = 'referred')::int AS referrals,"
        " bool_or(e.kind = 'lifecycle' AND e.stage = 'activated' AND e.detail ? 'referred_by') AS earned,"
        " count(e.nps)::int AS nps_n, count(*) FILTER (WHERE e.nps >= 9)::int AS promoters,"
        " count(*) FILTER (WHERE e.nps <= 6)::int AS detractors"
        " FROM sel LEFT JOIN events e ON e.device_key = sel.device_key AND e.ts >= %(lo)s AND e.ts < %(hi)s"
        " AND e.kind IN ('lifecycle', 'feedback')"
        " GROUP BY 1",
        lo=day_start(start),
        hi=day_start(end + timedelta(days=1)),
    )
    return fetch_frame(conn, statement, params)
