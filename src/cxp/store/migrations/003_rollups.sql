-- Rollups maintained by the project (the Apache-2 TimescaleDB edition has no continuous aggregates).
-- The gateway marks each (device, day) it writes as dirty in the same transaction as the data;
-- `refresh_rollups` recomputes exactly those device-days from raw rows, so late and out-of-order
-- data land in the right buckets.

-- No unique key on purpose: writers never wait on the refresher, which de-duplicates on read.
CREATE TABLE rollup_dirty (
    device_key  integer NOT NULL,
    day         date NOT NULL
);

CREATE TABLE rollup_hourly (
    device_key      integer NOT NULL,
    bucket          timestamptz NOT NULL,
    touchpoint      text NOT NULL,          -- '' for errors not tied to a touchpoint
    usage_count     integer NOT NULL,
    success_count   integer NOT NULL,
    error_count     integer NOT NULL,
    duration_sum    double precision NOT NULL,
    quantity_sum    double precision NOT NULL,
    latency_count   integer NOT NULL,
    latency_sum     double precision NOT NULL,
    latency_sumsq   double precision NOT NULL,
    latency_max     real,
    PRIMARY KEY (device_key, bucket, touchpoint)
);
-- 30-day chunks: the rollup is ~20x smaller than raw events.
SELECT create_hypertable('rollup_hourly', by_range('bucket', INTERVAL '30 days'));
CREATE INDEX rollup_hourly_touchpoint ON rollup_hourly (touchpoint, bucket);

CREATE TABLE rollup_daily (
    device_key      integer NOT NULL,
    day             date NOT NULL,
    usage_count     integer NOT NULL,
    success_count   integer NOT NULL,
    error_count     integer NOT NULL,
    recovery_count  integer NOT NULL,
    feedback_count  integer NOT NULL,
    lifecycle_count integer NOT NULL,
    duration_sum    double precision NOT NULL,
    quantity_sum    double precision NOT NULL,
    latency_count   integer NOT NULL,
    latency_sum     double precision NOT NULL,
    latency_max     real,
    touchpoints_used integer NOT NULL,
    heartbeat_count integer NOT NULL,
    battery_min     real,
    energy_wh_max   double precision,
    active          boolean NOT NULL,
    PRIMARY KEY (device_key, day)
);
CREATE INDEX rollup_daily_day ON rollup_daily (day);
