-- What the broker saw of each login (a device id, `<device id>~<n>` during a token rotation, or a service
-- account), from its log as the gateway follows it: last connection, connected now, refused publishes.
-- One row per broker username; written in batches by the log follower, read by the registry and status.
CREATE TABLE broker_clients (
    username              text PRIMARY KEY,
    device_id             text NOT NULL,
    last_connected_at     timestamptz,
    last_address          text,
    connected             boolean NOT NULL DEFAULT false,
    last_disconnected_at  timestamptz,
    denied_publishes      bigint NOT NULL DEFAULT 0,
    last_denied_at        timestamptz,
    last_denied_topic     text,
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX broker_clients_device ON broker_clients (device_id);
