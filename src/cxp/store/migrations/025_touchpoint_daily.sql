-- Issue 15: per device × touchpoint × UTC day, the hourly rollup summed, kept by the rollup refresh beside
-- rollup_daily. Views that need touchpoints but not hours (core-only usage, touchpoints used per period, latency
-- per touchpoint, errors per touchpoint and day, first use of a capability) read one row per device-day-touchpoint
-- instead of one per hour. `clean_latency_*` sum only hours in which every use succeeded and nothing failed (the
-- rollup cannot split an hour by outcome; analytics' latency is that of successful uses); `first_success_at` is the
-- day's first hour with a successful use.
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
    first_success_at    timestamptz,
    PRIMARY KEY (device_key, day, touchpoint)
);
CREATE INDEX rollup_touchpoint_daily_day ON rollup_touchpoint_daily (day);

INSERT INTO rollup_touchpoint_daily
SELECT r.device_key, (r.bucket AT TIME ZONE 'UTC')::date, r.touchpoint,
       sum(r.usage_count)::int, sum(r.success_count)::int, sum(r.error_count)::int,
       sum(r.duration_sum), sum(r.quantity_sum), sum(r.latency_count)::int, sum(r.latency_sum),
       coalesce(sum(r.latency_count) FILTER (WHERE r.success_count = r.usage_count AND r.error_count = 0), 0)::int,
       coalesce(sum(r.latency_sum) FILTER (WHERE r.success_count = r.usage_count AND r.error_count = 0), 0),
       min(r.bucket) FILTER (WHERE r.success_count > 0)
FROM rollup_hourly r
GROUP BY 1, 2, 3;
