-- Raw telemetry: events (usage, error, recovery, feedback, lifecycle) and device state (heartbeats).
--
-- Chunk interval 1 day: a 10,000-device fleet writes ~0.5 M events and ~0.25 M heartbeats a day,
-- ~150 MB a day with indexes, so a day's chunk and its indexes stay well inside shared_buffers
-- (1 GB) while being written; analytics windows (days to 90 days) exclude whole chunks; and
-- retention drops whole days.
CREATE TYPE event_kind AS ENUM ('usage', 'error', 'recovery', 'feedback', 'lifecycle');

CREATE TABLE events (
    device_key  integer NOT NULL,
    ts          timestamptz NOT NULL,
    seq         bigint NOT NULL,
    kind        event_kind NOT NULL,
    touchpoint  text,
    success     boolean,
    duration_s  real,
    quantity    double precision,
    unit        text,
    latency_ms  real,
    code        text,
    severity    text,
    nps         smallint,
    csat        smallint,
    ces         smallint,
    stage       text,
    detail      jsonb
);
SELECT create_hypertable('events', by_range('ts', INTERVAL '1 day'));
-- Identity of an event: a redelivered message repeats (device, seq) with the same ts. TimescaleDB
-- requires the time column in unique indexes; the same index serves device × time scans.
CREATE UNIQUE INDEX events_identity ON events (device_key, ts, seq);
CREATE INDEX events_touchpoint_ts ON events (touchpoint, ts) WHERE touchpoint IS NOT NULL;
CREATE INDEX events_kind_ts ON events (kind, ts) WHERE kind IN ('feedback', 'lifecycle', 'error', 'recovery');

CREATE TABLE device_state (
    device_key  integer NOT NULL,
    ts          timestamptz NOT NULL,
    seq         bigint NOT NULL,
    battery_pct real,
    signal_dbm  real,
    uptime_s    double precision,
    energy_wh   double precision,
    metrics     jsonb
);
SELECT create_hypertable('device_state', by_range('ts', INTERVAL '1 day'));
CREATE UNIQUE INDEX device_state_identity ON device_state (device_key, ts, seq);

-- Messages that could not be stored, with the reason; the payload is capped.
CREATE TABLE dead_letters (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at   timestamptz NOT NULL DEFAULT now(),
    topic         text NOT NULL,
    device_id     text,
    reason        text NOT NULL,
    detail        text,
    payload       bytea,
    payload_bytes integer NOT NULL
);
CREATE INDEX dead_letters_received ON dead_letters (received_at);
CREATE INDEX dead_letters_reason ON dead_letters (reason, received_at);
