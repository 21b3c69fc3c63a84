-- Issue 15: per device × week (Monday–Sunday, UTC) the figures the Experience Health Score reads, kept by the rollup
-- refresh from the daily rollups (a dirty day recomputes its week), so a 12-week health view reads ~12 rows per device
-- instead of ~84 daily ones (and ~12 per touchpoint used instead of ~84). A week not yet over is read from the daily
-- rollups.
CREATE TABLE rollup_weekly (
    device_key       integer NOT NULL,
    week             date NOT NULL,             -- its Monday
    usage_count      integer NOT NULL,
    success_count    integer NOT NULL,
    active_days      integer NOT NULL,
    error_free_days  integer NOT NULL,          -- active days without an error
    heartbeat_count  integer NOT NULL,
    touchpoints_used integer NOT NULL,          -- distinct touchpoints used in the week
    PRIMARY KEY (device_key, week)
);
CREATE INDEX rollup_weekly_week ON rollup_weekly (week);

CREATE TABLE rollup_touchpoint_weekly (
    device_key          integer NOT NULL,
    week                date NOT NULL,
    touchpoint          text NOT NULL,
    usage_count         integer NOT NULL,
    clean_latency_count integer NOT NULL,
    clean_latency_sum   double precision NOT NULL,
    PRIMARY KEY (device_key, week, touchpoint)
);
CREATE INDEX rollup_touchpoint_weekly_week ON rollup_touchpoint_weekly (week);

INSERT INTO rollup_weekly
WITH d AS (
    SELECT r.device_key, time_bucket(INTERVAL '7 days', r.day, DATE '2000-01-03') AS week,
           sum(r.usage_count)::int AS usage_count, sum(r.success_count)::int AS success_count,
           count(*) FILTER (WHERE r.active)::int AS active_days,
           count(*) FILTER (WHERE r.active AND r.error_count = 0)::int AS error_free_days,
           sum(r.heartbeat_count)::int AS heartbeat_count
    FROM rollup_daily r
    GROUP BY 1, 2
), t AS (
    SELECT device_key, week, count(*)::int AS touchpoints_used
    FROM (SELECT DISTINCT h.device_key, time_bucket(INTERVAL '7 days', h.day, DATE '2000-01-03') AS week, h.touchpoint
          FROM rollup_touchpoint_daily h WHERE h.usage_count > 0) x
    GROUP BY 1, 2
)
SELECT d.*, coalesce(t.touchpoints_used, 0) FROM d LEFT JOIN t USING (device_key, week);

INSERT INTO rollup_touchpoint_weekly
SELECT h.device_key, time_bucket(INTERVAL '7 days', h.day, DATE '2000-01-03'), h.touchpoint,
       sum(h.usage_count)::int, sum(h.clean_latency_count)::int, sum(h.clean_latency_sum)
FROM rollup_touchpoint_daily h
GROUP BY 1, 2, 3;
