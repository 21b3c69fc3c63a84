"""SQL that turns the stored telemetry into the small aggregated frames the pure core expects.

Rollups first (`rollup_daily`, `rollup_touchpoint_daily`, `rollup_hourly` where hours matter, `answer_context`)
and the registry; raw `events`/`device_state` only for what the
rollups cannot answer (feedback scores, lifecycle events, error/recovery episodes, exact heartbeat uptime), and
then always filtered by time window and aggregated in SQL. Every function takes the devices in scope (the device
filters of an `AnalyticsQuery`) and explicit UTC days; names go through `psycopg.sql.Identifier`, values through
parameters. Modules: `registry`, `usage`, `health`, `feedback`, `touchpoints`, `disruptions`.
"""

from cxp.analytics.queries._base import lending_connections

__all__ = ["lending_connections"]  # what a caller lends the views: connections for their parts that read apart
