"""Analytics services: keyword-only functions that read aggregated frames (analytics.queries) and apply the pure core.

Every function takes a psycopg connection `conn` and one `AnalyticsQuery` (scope: product, account segment,
account, device; period: `start`/`end`, UTC days, inclusive, `end` defaulting to the last day with data), and
returns a typed result from analytics.models. No printing, no NaN: missing values are None with a reason. One
module per capability; this package re-exports the public functions so callers have one import place.
"""

from cxp.analytics.service.churn import get_churn_model_inputs, get_churn_risk_summary, list_churn_risk
from cxp.analytics.service.disruptions import get_disruptions, list_incidents
from cxp.analytics.service.engagement import get_engagement_rate
from cxp.analytics.service.health import get_health, health_frames, refresh_kept_health
from cxp.analytics.service.journey import get_journey
from cxp.analytics.service.journey_map import get_journey_map
from cxp.analytics.service.ladder import get_capability_ladder
from cxp.analytics.service.referrals import get_referrals
from cxp.analytics.service.report import get_fleet_report
from cxp.analytics.service.segments import get_segments
from cxp.analytics.service.touchpoints import get_touchpoints
from cxp.analytics.service.voice import get_voice

__all__ = [
    "get_capability_ladder",
    "get_disruptions",
    "get_engagement_rate",
    "get_fleet_report",
    "get_health",
    "get_journey",
    "get_journey_map",
    "get_referrals",
    "get_segments",
    "get_touchpoints",
    "get_voice",
    "health_frames",
    "refresh_kept_health",
    "get_churn_model_inputs",
    "get_churn_risk_summary",
    "list_churn_risk",
    "list_incidents",
]
