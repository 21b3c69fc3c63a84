-- Device registry: products with their touchpoint catalogue, accounts (customers), devices.
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE products (
    product_id      text PRIMARY KEY,
    name            text NOT NULL,
    heartbeat_interval_s integer NOT NULL DEFAULT 3600 CHECK (heartbeat_interval_s > 0),
    expected_active_days_per_week real CHECK (expected_active_days_per_week BETWEEN 0 AND 7),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE touchpoints (
    product_id      text NOT NULL REFERENCES products ON DELETE CASCADE,
    touchpoint      text NOT NULL,
    journey_stage   text NOT NULL CHECK (journey_stage IN ('pre_purchase', 'purchase', 'post_purchase')),
    owner           text NOT NULL CHECK (owner IN ('brand', 'partner', 'customer', 'external')),
    is_core         boolean NOT NULL DEFAULT false,
    target_latency_ms real CHECK (target_latency_ms > 0),
    target_duration_s real CHECK (target_duration_s > 0),
    unit            text,
    PRIMARY KEY (product_id, touchpoint)
);

CREATE TABLE accounts (
    account_id      text PRIMARY KEY,
    name            text NOT NULL,
    segment         text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE devices (
    -- Telemetry rows carry this small integer, not the text id: 4 bytes a row instead of ~20.
    device_key      integer GENERATED ALWAYS AS IDENTITY UNIQUE,
    device_id       text PRIMARY KEY,
    product_id      text NOT NULL REFERENCES products,
    account_id      text REFERENCES accounts,
    activated_at    timestamptz NOT NULL,
    plan            text,
    experiment_arm  text,
    registered_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_product ON devices (product_id);
CREATE INDEX devices_account ON devices (account_id);
