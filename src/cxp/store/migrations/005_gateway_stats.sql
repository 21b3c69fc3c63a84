-- Gateway processes report their counters here every stats interval, so operators (and the API) see
-- throughput and lag without access to the gateway's process. Kept for a day.
CREATE TABLE gateway_stats (
    gateway_id  text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    snapshot    jsonb NOT NULL,
    PRIMARY KEY (gateway_id, at)
);
CREATE INDEX gateway_stats_at ON gateway_stats (at);
