"""Capability-ladder inputs: first successful use per device × capability level, levels offered."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import psycopg
from psycopg import sql

from cxp.analytics.queries._base import day_start, fetch_frame, with_scoped_devices
from cxp.analytics.query import AnalyticsQuery


def first_capability_uses(conn: psycopg.Connection, *, scope: AnalyticsQuery, end: date) -> pd.DataFrame:
    """device_key, capability, first_at: the hour of each device's first successful use of a touchpoint of each
    capability level, up to the end of `end` (touchpoints without a level are left out), from the kept first
    successful use per device × touchpoint (`touchpoint_first_success`: a first use after `end` means none up to it).
    """
    statement, params = with_scoped_devices(
        scope,
        "SELECT f.device_key, t.capability, time_bucket(INTERVAL '1 hour', min(f.first_at)) AS first_at"
        " FROM touchpoint_first_success f"
        " JOIN sel USING (device_key)"
        " JOIN touchpoints t ON t.product_id = sel.product_id AND t.touchpoint = f.touchpoint"
        " WHERE f.first_at < %(until)s AND t.capability IS NOT NULL GROUP BY 1, 2",
        until=day_start(end + timedelta(days=1)),
    )
    return fetch_frame(conn, statement, params)


def capability_catalogue(conn: psycopg.Connection, *, product: str | None = None) -> pd.DataFrame:
    """product_id, capability: the levels each product's catalogue offers."""
    statement = sql.SQL(
        "SELECT DISTINCT product_id, capability FROM touchpoints WHERE capability IS NOT NULL {} ORDER BY 1, 2"
    ).format(sql.SQL("AND product_id = %(product)s") if product else sql.SQL(""))
    return fetch_frame(conn, statement, {"product": product})
