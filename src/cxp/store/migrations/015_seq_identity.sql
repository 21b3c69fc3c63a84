-- Sequence numbers are an identity (issue 12): a device's seq names one event, whatever its kind or time.
--
-- The events' unique index must include the time column (a TimescaleDB rule for hypertables), so it cannot say
-- "one seq per device". This plain table can: one row per (device, seq) stored, written in the transaction that
-- stores the event. A re-send with the same content (hash) is a duplicate; with other content, a conflict that the
-- gateway dead-letters as `seq_conflict` with both contents. `ts` and `kind` find the stored event again.
CREATE TABLE device_seq (
    device_key   integer NOT NULL,
    seq          bigint NOT NULL,
    ts           timestamptz NOT NULL,
    kind         text NOT NULL,
    content_hash bigint NOT NULL,
    PRIMARY KEY (device_key, seq)
);
-- Retention deletes by time; rows arrive roughly in time order, so a BRIN index is enough and costs nearly nothing.
CREATE INDEX device_seq_ts ON device_seq USING brin (ts);

-- The content of one event as stored (the contract's defaults applied, empty objects as NULL), hashed to 64 bits: it
-- is compared only with the one event stored under the same (device, seq), so a collision (2^-64) is negligible.
-- Times enter as epoch seconds: no dependence on the session time zone. STABLE, as its body is (a row's text form),
-- so that the planner inlines it: an IMMUTABLE declaration over a STABLE body is called per row, 4× slower.
CREATE FUNCTION event_content_hash(
    kind text, ts timestamptz, touchpoint text, success boolean, duration_s real, quantity double precision,
    unit text, latency_ms real, code text, severity text, nps smallint, csat smallint, ces smallint, stage text,
    detail jsonb, battery_pct real, signal_dbm real, uptime_s double precision, energy_wh double precision,
    metrics jsonb
) RETURNS bigint LANGUAGE sql STABLE PARALLEL SAFE
RETURN hashtextextended(row(kind, extract(epoch FROM ts), touchpoint,
               CASE WHEN kind = 'usage' THEN coalesce(success, true) END, duration_s, quantity, unit, latency_ms,
               code, CASE WHEN kind = 'error' THEN coalesce(severity, 'error') END, nps, csat, ces, stage,
               NULLIF(detail, '{}'::jsonb), battery_pct, signal_dbm, uptime_s, energy_wh,
               NULLIF(metrics, '{}'::jsonb))::text, 0);

-- What is already stored takes its seq (the earliest event, where the old key let a seq be stored twice).
INSERT INTO device_seq (device_key, seq, ts, kind, content_hash)
SELECT DISTINCT ON (device_key, seq) device_key, seq, ts, kind, h FROM (
    SELECT device_key, seq, ts, kind::text AS kind,
           event_content_hash(kind::text, ts, touchpoint, success, duration_s, quantity, unit, latency_ms, code,
                              severity, nps, csat, ces, stage, detail, NULL, NULL, NULL, NULL, NULL) AS h
    FROM events
    UNION ALL
    SELECT device_key, seq, ts, 'state',
           event_content_hash('state', ts, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                              NULL, battery_pct, signal_dbm, uptime_s, energy_wh, metrics)
    FROM device_state
) stored
ORDER BY device_key, seq, ts;

-- Loss detection: per device, the lowest and highest seq stored and how many distinct seqs are stored, updated in
-- the transaction that stores them. missing = max_seq - min_seq + 1 - seqs: seqs never received (lost at the
-- broker, dropped by the device, or not arrived yet). A late arrival fills its gap.
CREATE TABLE device_seq_stats (
    device_key  integer PRIMARY KEY,
    min_seq     bigint NOT NULL,
    max_seq     bigint NOT NULL,
    seqs        bigint NOT NULL,
    missing     bigint GENERATED ALWAYS AS (max_seq - min_seq + 1 - seqs) STORED,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX device_seq_stats_missing ON device_seq_stats (missing DESC) WHERE missing > 0;

INSERT INTO device_seq_stats (device_key, min_seq, max_seq, seqs)
SELECT device_key, min(seq), max(seq), count(*) FROM device_seq GROUP BY device_key;
