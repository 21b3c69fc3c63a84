-- Issue 15: per device × touchpoint × UTC day, the hourly rollup summed, kept by the rollup refresh beside
-- rollup_daily. Views that need touchpoints but not hours (core-only usage, touchpoints used per period, latency
-- per touchpoint, errors per touchpoint and day, first use of a capability) read one row per device-day-touchpoint
-- instead of one per hour. `clean_latency_*` sum only hours in which every use succeeded and nothing failed (the
-- rollup cannot split an hour by outcome; analytics' latency is that of successful uses); `success_times` holds the
-- exact times of the day's successful uses (few per row), so what ends a failure (the next successful use of its
-- touchpoint) and a device's first successful use are found without reading raw events.
CREATE TABLE rollup_touchpoint_daily (
    device_key          integer NOT NULL,
    day                 date NOT NULL,
    touchpoint          text NOT NULL,          -- '' for errors not tied to a touchpoint
    usage_count         integer NOT NULL,
    success_count       integer NOT NULL,
    error_count         integer NOT NULL,
    duration_sum        double precision NOT NULL,
    quantity_sum        double precision NOT NULL,
    latency_count       integer NOT NULL,
    latency_sum         double precision NOT NULL,
    clean_latency_count integer NOT NULL,
    clean_latency_sum   double precision NOT NULL,
    success_times       timestamptz[] NOT NULL,
    PRIMARY KEY (device_key, day, touchpoint)
);
CREATE INDEX rollup_touchpoint_daily_day ON rollup_touchpoint_daily (day);

INSERT INTO rollup_touchpoint_daily
WITH h AS (
    SELECT r.device_key, (r.bucket AT TIME ZONE 'UTC')::date AS day, r.touchpoint,
           sum(r.usage_count)::int AS usage_count, sum(r.success_count)::int AS success_count,
           sum(r.error_count)::int AS error_count, sum(r.duration_sum) AS duration_sum,
           sum(r.quantity_sum) AS quantity_sum, sum(r.latency_count)::int AS latency_count,
           sum(r.latency_sum) AS latency_sum,
           coalesce(sum(r.latency_count) FILTER (WHERE r.success_count = r.usage_count AND r.error_count = 0), 0)::int
               AS clean_latency_count,
           coalesce(sum(r.latency_sum) FILTER (WHERE r.success_count = r.usage_count AND r.error_count = 0), 0)
               AS clean_latency_sum
    FROM rollup_hourly r
    GROUP BY 1, 2, 3
), s AS (
    SELECT e.device_key, (e.ts AT TIME ZONE 'UTC')::date AS day, e.touchpoint, array_agg(e.ts ORDER BY e.ts) AS times
    FROM events e
    WHERE e.kind = 'usage' AND e.success AND e.touchpoint IS NOT NULL
    GROUP BY 1, 2, 3
)
SELECT h.*, coalesce(s.times, '{}')
FROM h LEFT JOIN s ON s.device_key = h.device_key AND s.day = h.day AND s.touchpoint = h.touchpoint;
