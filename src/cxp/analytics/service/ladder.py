"""Smart-capability ladder per product and segment, from the rollups and the catalogue's capability levels."""

from __future__ import annotations

import pandas as pd
import psycopg

from cxp.analytics.core._frames import finite_or_none
from cxp.analytics.core.ladder import LEVELS, climber_contrast, device_ladder, level_shares
from cxp.analytics.errors import maps_numeric_errors
from cxp.analytics.models import EffectComparison
from cxp.analytics.models_measures import LadderContrast, LadderLevel, LadderReport
from cxp.analytics.queries._base import concurrently, own_connection, shared_reads
from cxp.analytics.queries.ladder import capability_catalogue, first_capability_uses
from cxp.analytics.queries.registry import churn_exits, devices
from cxp.analytics.queries.usage import last_use_before
from cxp.analytics.query import ALL_DEVICES, AnalyticsQuery
from cxp.analytics.service._common import CHURN_INACTIVE_DAYS, empty_window, resolve_window
from cxp.analytics.service.health import device_scores
from cxp.core.stats import Difference

DEFINITIONS = {
    "reached": "first successful use of a touchpoint of that capability level (occasion touchpoints such as"
    " pairing, updates and support carry no level)",
    "climber": "reached every capability level the product's catalogue offers",
    "health": "mean Experience Health Score of the device over the window's weeks",
    "churned": f"cancelled or returned, or no use in the last {CHURN_INACTIVE_DAYS} days of the window",
}


def _comparison(metric: str, d: Difference) -> EffectComparison:
    return EffectComparison(
        metric=metric,
        a="climbers",
        b="others",
        difference=finite_or_none(d.estimate),
        ci_low=finite_or_none(d.low),
        ci_high=finite_or_none(d.high),
        n_a=d.n_a,
        n_b=d.n_b,
        reason=d.reason,
    )


@maps_numeric_errors
@shared_reads()  # the health scores read the same devices and exits
def get_capability_ladder(
    *, conn: psycopg.Connection, query: AnalyticsQuery = ALL_DEVICES, weeks: int = 8, min_n: int = 10
) -> LadderReport:
    """Share of devices per product × segment that reached each capability level, the median days from
    activation to it, and climbers vs the others on health and churn (95% CIs; "not enough data" below min_n)."""
    window = resolve_window(conn, query=query, default_days=7 * weeks)
    if window is None:
        return LadderReport(empty_window(), (), (), DEFINITIONS, reason="not enough data: nothing stored yet")
    offered = capability_catalogue(conn, product=query.product)
    scoped = devices(conn, scope=query)
    if scoped.empty or offered.empty:
        reason = "no devices in scope" if scoped.empty else "no touchpoint carries a capability level"
        return LadderReport(window, (), (), DEFINITIONS, reason=f"not enough data: {reason}")
    # the longest first; while the database answers one part, Python computes another. The health scores read
    # the most on their own: on a lent connection when there is one.
    with own_connection(conn) as apart:
        read = concurrently(
            # Only each device's mean score is needed: no HealthScore object per device-week.
            scores=lambda: device_scores(conn=apart, query=query, weeks=weeks),
            first_uses=lambda: first_capability_uses(conn, scope=query, end=window.end),
            exits=lambda: churn_exits(conn, scope=query, end=window.end),
            last=lambda: last_use_before(conn, scope=query, end=window.end),
        )
    ladder = device_ladder(devices=scoped, first_uses=read["first_uses"], offered=offered)
    ladder = ladder.merge(scoped[["device_key", "device_id", "segment"]], on="device_key")
    ladder["segment"] = ladder["segment"].fillna("unknown").astype(str)

    ladder = ladder.merge(read["exits"], on="device_key", how="left").merge(read["last"], on="device_key", how="left")
    idle_days = (pd.Timestamp(window.end) - pd.to_datetime(ladder["last_use_on"])).dt.days
    ladder["churned"] = ladder["exit_at"].notna() | ~(idle_days < CHURN_INACTIVE_DAYS)

    mean_health = read["scores"].dropna().groupby("device_id")["score"].mean()
    ladder["health"] = ladder["device_id"].map(mean_health).astype(float)

    levels = []
    for by in (["product_id"], ["product_id", "segment"]):
        for s in level_shares(ladder=ladder, by=by, offered=offered):
            levels.append(
                LadderLevel(
                    product_id=s.group[0],
                    segment=s.group[1] if len(s.group) > 1 else None,
                    level=s.level,
                    devices=s.devices,
                    reached=s.reached,
                    share=s.share,
                    median_days_to_reach=s.median_days,
                )
            )
    levels.sort(key=lambda x: (x.product_id, x.segment or "", LEVELS.index(x.level)))
    contrasts = []
    for product, group in ladder.groupby("product_id", sort=True):
        health_diff, churn_diff = climber_contrast(ladder=group, min_n=min_n)
        contrasts.append(
            LadderContrast(
                product_id=str(product),
                climbers=int(group["climber"].sum()),
                others=int((~group["climber"]).sum()),
                health=_comparison("health", health_diff),
                churn=_comparison("churn", churn_diff),
            )
        )
    return LadderReport(window, tuple(levels), tuple(contrasts), DEFINITIONS)
