-- Issue 15: heartbeat-covered time per device and UTC day, kept by the rollup refresh, so uptime (pricing's
-- outcome metric) reads one row per device-day instead of every heartbeat of the billing period. A state sample
-- covers the time until the next one, at most 1.5 × its product's heartbeat interval (store.rollups
-- UPTIME_HOLD_FACTOR); a cover that crosses midnight counts on both days, so the refresh of a dirty day also
-- recomputes the next one. Exact microseconds, so sums over days and months are exact.
CREATE TABLE uptime_daily (
    device_key  integer NOT NULL,
    day         date NOT NULL,
    covered_us  bigint NOT NULL,
    PRIMARY KEY (device_key, day)
);
CREATE INDEX uptime_daily_day ON uptime_daily (day);

INSERT INTO uptime_daily (device_key, day, covered_us)
WITH held AS (
    SELECT d.device_key, make_interval(secs => p.heartbeat_interval_s * 1.5) AS hold
    FROM devices d JOIN products p ON p.product_id = d.product_id
), s AS (
    SELECT st.device_key, st.ts, (st.ts AT TIME ZONE 'UTC')::date AS day0,
           least(lead(st.ts) OVER (PARTITION BY st.device_key ORDER BY st.ts), st.ts + h.hold) AS t_end
    FROM device_state st JOIN held h ON h.device_key = st.device_key
), pieces AS (
    SELECT device_key, day0 AS day, ts AS a, least(t_end, (day0 + 1)::timestamp AT TIME ZONE 'UTC') AS b FROM s
    UNION ALL
    SELECT s.device_key, g.day::date, g.day AT TIME ZONE 'UTC', least(s.t_end, (g.day + interval '1 day') AT TIME ZONE 'UTC')
    FROM s CROSS JOIN LATERAL generate_series((s.day0 + 1)::timestamp,
                                              ((s.t_end - interval '1 microsecond') AT TIME ZONE 'UTC')::date::timestamp,
                                              interval '1 day') AS g(day)
    WHERE s.t_end > (s.day0 + 1)::timestamp AT TIME ZONE 'UTC'
)
SELECT p.device_key, p.day, sum((date_part('epoch', p.b - p.a) * 1000000)::bigint)
FROM pieces p
WHERE p.b > p.a
GROUP BY 1, 2;
