-- Issue 15: each touchpoint CSAT answer with the device's last use of that touchpoint on the answer's UTC day (at or
-- before the answer), precomputed by the rollup refresh for the device-days the writers mark dirty, so the Kano
-- grouping of answers reads one row per answer instead of every use on the answer days from raw events. Like the
-- rollups it outlives raw-data retention. `last_use` packs the use's time (µs since the epoch) and its success
-- (lowest bit), so the latest use and its outcome come out of one running max.
CREATE TABLE answer_context (
    device_key   integer NOT NULL,
    ts           timestamptz NOT NULL,
    seq          bigint NOT NULL,
    touchpoint   text NOT NULL,
    csat         smallint NOT NULL,
    last_use_at  timestamptz,   -- NULL: no use of the touchpoint earlier that day
    last_use_ok  boolean,
    PRIMARY KEY (device_key, ts, seq)
);
CREATE INDEX answer_context_ts ON answer_context (ts);

INSERT INTO answer_context (device_key, ts, seq, touchpoint, csat, last_use_at, last_use_ok)
SELECT device_key, ts, seq, touchpoint, csat,
       timestamptz 'epoch' + (last_use >> 1) * INTERVAL '1 microsecond', (last_use & 1) = 1
FROM (
    SELECT e.device_key, e.ts, e.seq, e.kind, e.touchpoint, e.csat,
           max(CASE WHEN e.kind = 'usage'
                    THEN ((extract(epoch FROM e.ts) * 1000000)::bigint << 1) | e.success::int END)
               OVER (PARTITION BY e.device_key, e.touchpoint, (e.ts AT TIME ZONE 'UTC')::date
                     ORDER BY e.ts, e.kind = 'feedback' ROWS UNBOUNDED PRECEDING) AS last_use
    FROM events e
    WHERE e.touchpoint IS NOT NULL AND (e.kind = 'usage' OR (e.kind = 'feedback' AND e.csat IS NOT NULL))
) x
WHERE kind = 'feedback';
