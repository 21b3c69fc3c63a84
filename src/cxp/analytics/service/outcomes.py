"""Per-device outcomes shared by touchpoints, personas and churn risk: retention status and satisfaction index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg

from cxp.analytics.core import voice as core_voice
from cxp.analytics.models import Window
from cxp.analytics.queries.feedback import device_feedback, feedback_histogram
from cxp.analytics.queries.registry import churn_exits
from cxp.analytics.queries.usage import last_use_before
from cxp.analytics.query import AnalyticsQuery
from cxp.analytics.service._common import CHURN_INACTIVE_DAYS, utc_days


def device_retention(
    conn: psycopg.Connection, *, scope: AnalyticsQuery, window: Window, devices: pd.DataFrame
) -> pd.DataFrame:
    """Per device: status at the end of the window (active / inactive ≥ 28 days / cancelled / returned),
    days idle and retained 0/1."""
    last = last_use_before(conn, scope=scope, end=window.end)
    exits = churn_exits(conn, scope=scope, end=window.end)
    frame = devices[["device_key", "device_id", "product_id", "account_id", "activated_at"]].merge(
        last, on="device_key", how="left"
    )
    frame = frame.merge(exits.rename(columns={"exit_stage": "stage"}), on="device_key", how="left")
    reference = pd.to_datetime(frame["last_use_on"]).fillna(utc_days(frame["activated_at"]))
    idle = (pd.Timestamp(window.end) - reference).dt.days
    status = np.where(
        frame["stage"].notna(),
        frame["stage"].astype(object),
        np.where(idle >= CHURN_INACTIVE_DAYS, "inactive", "active"),
    )
    frame["status"] = status
    frame["days_idle"] = idle
    frame["retained"] = (status == "active").astype(float)
    return frame


def device_satisfaction(conn: psycopg.Connection, *, scope: AnalyticsQuery, window: Window) -> pd.DataFrame:
    """Per device: device_key, satisfaction (mean z-score of its NPS, CSAT and CES answers in the window), answers."""
    feedback = device_feedback(conn, scope=scope, start=window.start, end=window.end)
    histogram = feedback_histogram(conn, scope=scope, start=window.start, end=window.end, by=[])
    return core_voice.satisfaction_index(device_feedback=feedback, histogram=histogram, key="device_key")
