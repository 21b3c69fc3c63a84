-- Issue 15: per device × UTC month sums of the daily rollups, for pricing. The model comparison read every
-- device-day of its months from rollup_touchpoint_daily (417,000 rows for one product of 10,000 devices × 90 days,
-- 0.4 s), rollup_daily and uptime_daily (268,000 rows, 0.35 s); billing periods are whole months, so these ~devices ×
-- months rows give the same sums. The rollup refresh recomputes the months holding a dirty day
-- (store/rollups_monthly.py holds the same SELECTs).
CREATE TABLE rollup_monthly (
    device_key integer NOT NULL,
    month date NOT NULL,
    usage_count bigint NOT NULL,
    success_count bigint NOT NULL,
    duration_sum double precision NOT NULL,
    quantity_sum double precision NOT NULL,
    active_days integer NOT NULL,
    covered_us bigint NOT NULL,
    PRIMARY KEY (device_key, month)
);

CREATE TABLE rollup_touchpoint_monthly (
    device_key integer NOT NULL,
    month date NOT NULL,
    touchpoint text NOT NULL,
    usage_count bigint NOT NULL,
    success_count bigint NOT NULL,
    duration_sum double precision NOT NULL,
    quantity_sum double precision NOT NULL,
    PRIMARY KEY (device_key, month, touchpoint)
);

INSERT INTO rollup_monthly (device_key, month, usage_count, success_count, duration_sum, quantity_sum, active_days,
                            covered_us)
WITH d AS (
    SELECT r.device_key, time_bucket('1 month', r.day) AS month, sum(r.usage_count)::bigint AS usage_count,
           sum(r.success_count)::bigint AS success_count, sum(r.duration_sum) AS duration_sum,
           sum(r.quantity_sum) AS quantity_sum, count(*) FILTER (WHERE r.active)::int AS active_days
    FROM rollup_daily r
    GROUP BY 1, 2
), c AS (
    SELECT u.device_key, time_bucket('1 month', u.day) AS month, sum(u.covered_us)::bigint AS covered_us
    FROM uptime_daily u
    GROUP BY 1, 2
)
SELECT coalesce(d.device_key, c.device_key), coalesce(d.month, c.month), coalesce(d.usage_count, 0),
       coalesce(d.success_count, 0), coalesce(d.duration_sum, 0), coalesce(d.quantity_sum, 0),
       coalesce(d.active_days, 0), coalesce(c.covered_us, 0)
FROM d FULL JOIN c ON c.device_key = d.device_key AND c.month = d.month;

INSERT INTO rollup_touchpoint_monthly (device_key, month, touchpoint, usage_count, success_count, duration_sum,
                                       quantity_sum)
SELECT h.device_key, time_bucket('1 month', h.day), h.touchpoint, sum(h.usage_count)::bigint,
       sum(h.success_count)::bigint, sum(h.duration_sum), sum(h.quantity_sum)
FROM rollup_touchpoint_daily h
GROUP BY 1, 2, 3;
