-- Issue 15: the touchpoint views (totals per product × touchpoint, per-device touchpoints) read whole weeks from
-- rollup_touchpoint_weekly instead of ~7 daily rows each, so the weekly rows carry the outcomes and all-use latency
-- too. Rebuilt from the daily rollup (the refresh keeps them from here on).
TRUNCATE rollup_touchpoint_weekly;
ALTER TABLE rollup_touchpoint_weekly
    ADD COLUMN success_count integer NOT NULL,
    ADD COLUMN error_count   integer NOT NULL,
    ADD COLUMN latency_count integer NOT NULL,
    ADD COLUMN latency_sum   double precision NOT NULL;

INSERT INTO rollup_touchpoint_weekly (device_key, week, touchpoint, usage_count, clean_latency_count, clean_latency_sum,
                                      success_count, error_count, latency_count, latency_sum)
SELECT h.device_key, time_bucket(INTERVAL '7 days', h.day, DATE '2000-01-03'), h.touchpoint,
       sum(h.usage_count)::int, sum(h.clean_latency_count)::int, sum(h.clean_latency_sum),
       sum(h.success_count)::int, sum(h.error_count)::int, sum(h.latency_count)::int, sum(h.latency_sum)
FROM rollup_touchpoint_daily h
GROUP BY 1, 2, 3;
