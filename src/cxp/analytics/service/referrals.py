"""Referral behaviour per group beside its NPS: the analytics half of earned growth (issue 18).

Earned growth (pricing/core/growth.py) needs, per group, who referred and who came by referral; this service
counts them from the devices' lifecycle events and sets them beside the group's NPS, with the correlation across
groups (does the NPS predict who recommends?). Revenue (NRR, earned-new revenue) comes from pricing's bills and is
composed outside analytics (analytics ⟂ pricing)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import pandas as pd
import psycopg
from scipy import stats

from cxp.analytics.core.referrals import rate_interval
from cxp.analytics.core.voice import nps_from_counts
from cxp.analytics.errors import InvalidParameter, maps_numeric_errors
from cxp.analytics.models_measures import ReferralGroup, ReferralReport
from cxp.analytics.queries.referrals import referral_counts
from cxp.analytics.queries.registry import devices
from cxp.analytics.query import ALL_DEVICES, AnalyticsQuery
from cxp.analytics.service._common import empty_window, resolve_window

GROUPS = ("product", "segment", "cohort")
DEFINITIONS = {
    "referrals": "`referred` lifecycle events (a customer shared a referral) in the window",
    "customer_weeks": "weeks each device was a customer in the window (from activation on)",
    "rate_per_100_weeks": "referrals per 100 customer-weeks, exact 95 % Poisson interval",
    "earned_new_devices": "devices activated in the window whose activation names a referrer",
    "cohort": "activation month (UTC)",
    "nps": "NPS of the relationship and touchpoint answers of the group's devices in the window (n beside it)",
    "nps_rate_correlation": "Spearman rank correlation of NPS and referral rate across groups with ≥ min_n devices"
    " and ≥ min_n NPS answers",
}


@maps_numeric_errors
def get_referrals(
    *,
    conn: psycopg.Connection,
    query: AnalyticsQuery = ALL_DEVICES,
    by: Sequence[str] = ("product",),
    weeks: int = 6,
    min_n: int = 10,
) -> ReferralReport:
    """Per group of `by` (product, segment, cohort): referrals per 100 customer-weeks with a 95 % CI, earned new
    devices, NPS with n; and the rank correlation of NPS and referral rate across groups."""
    unknown = set(by) - set(GROUPS)
    if unknown or not by:
        raise InvalidParameter(f"by must be a non-empty subset of {', '.join(GROUPS)}; got {sorted(unknown)}")
    by = tuple(by)
    window = resolve_window(conn, query=query, default_days=7 * weeks)
    if window is None:
        return ReferralReport(empty_window(), by, (), None, 0, DEFINITIONS, "not enough data: nothing stored yet")
    scoped = devices(conn, scope=query)
    if scoped.empty:
        return ReferralReport(window, by, (), None, 0, DEFINITIONS, "not enough data: no devices in scope")
    counts = referral_counts(conn, scope=query, start=window.start, end=window.end)
    frame = scoped.merge(counts, on="device_key", how="left")
    activated = pd.to_datetime(frame["activated_at"], utc=True)
    lo = pd.Timestamp(window.start, tz="UTC")
    hi = pd.Timestamp(window.end + timedelta(days=1), tz="UTC")
    frame["customer_weeks"] = ((hi - activated.clip(lower=lo)).dt.total_seconds() / 604_800).clip(lower=0)
    frame["new"] = activated >= lo
    frame["earned"] = frame["earned"].fillna(False).astype(bool) & frame["new"]
    frame["product"] = frame["product_id"].astype(str)
    frame["segment"] = frame["segment"].fillna("(none)").astype(str)
    frame["cohort"] = activated.dt.strftime("%Y-%m")
    for col in ("referrals", "nps_n", "promoters", "detractors"):
        frame[col] = frame[col].fillna(0).astype(int)

    groups = []
    for key, g in frame.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        weeks_total = float(g["customer_weeks"].sum())
        rate, low, high = rate_interval(events=int(g["referrals"].sum()), exposure=weeks_total)
        score = nps_from_counts(
            n=int(g["nps_n"].sum()), promoters=int(g["promoters"].sum()), detractors=int(g["detractors"].sum())
        )
        groups.append(
            ReferralGroup(
                key=dict(zip(by, map(str, key), strict=True)),
                devices=len(g),
                customer_weeks=round(weeks_total, 3),
                referrals=int(g["referrals"].sum()),
                rate_per_100_weeks=rate,
                ci_low=low,
                ci_high=high,
                new_devices=int(g["new"].sum()),
                earned_new_devices=int(g["earned"].sum()),
                nps=score.nps,
                nps_n=score.n,
            )
        )
    usable = [g for g in groups if g.devices >= min_n and g.nps_n >= min_n and g.rate_per_100_weeks is not None]
    rho = None
    if len(usable) >= 3:
        nps = np.array([g.nps for g in usable], dtype=float)
        rate = np.array([g.rate_per_100_weeks for g in usable], dtype=float)
        if np.ptp(nps) > 0 and np.ptp(rate) > 0:
            rho = float(stats.spearmanr(nps, rate).statistic)
    reason = None if len(usable) >= 3 else f"not enough data: {len(usable)} groups with ≥ {min_n} devices and answers"
    return ReferralReport(window, by, tuple(groups), rho, len(usable), DEFINITIONS, reason if rho is None else None)
