-- Issue 15: each device-day's first cancellation or return (its time and stage), kept on the daily rollup. The health
-- views, the capability ladder and the retention status read the devices' exits from raw lifecycle events (planning
-- over every chunk of `events` and an index scan of all lifecycle events: ~75 ms at 10,000 devices × 90 days); the
-- partial index below makes it an index-only read of ~devices rows. The refresh recomputes them with the rest of a
-- dirty day.
ALTER TABLE rollup_daily ADD COLUMN exit_at timestamptz, ADD COLUMN exit_stage text;

UPDATE rollup_daily r SET exit_at = x.exit_at, exit_stage = x.exit_stage
FROM (
    SELECT e.device_key, (e.ts AT TIME ZONE 'UTC')::date AS day, min(e.ts) AS exit_at,
           (array_agg(e.stage ORDER BY e.ts, e.seq))[1] AS exit_stage
    FROM events e
    WHERE e.kind = 'lifecycle' AND e.stage IN ('cancelled', 'returned')
    GROUP BY 1, 2
) x
WHERE r.device_key = x.device_key AND r.day = x.day;

CREATE INDEX rollup_daily_exits ON rollup_daily (device_key, day) INCLUDE (exit_at, exit_stage)
    WHERE exit_at IS NOT NULL;
