-- Alerts (issue 16): versioned rules, one live alert per rule × entity, history, a webhook outbox with its
-- delivery log, and the evaluator's incremental state (a watermark and each device's last-seen time).

CREATE TABLE alert_rules (
    name          text NOT NULL,
    version       integer NOT NULL CHECK (version > 0),
    kind          text NOT NULL,
    definition    jsonb NOT NULL,           -- the rule without its version; never a secret (secret_ref only)
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text,
    PRIMARY KEY (name, version)
);

CREATE TABLE alerts (
    alert_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_name     text NOT NULL,
    rule_version  integer NOT NULL,
    entity        text NOT NULL,
    state         text NOT NULL CHECK (state IN ('open', 'acknowledged', 'cleared')),
    severity      text NOT NULL,
    trigger_values jsonb NOT NULL,          -- the numbers that opened it (and, updated, the latest ones)
    first_seen    timestamptz NOT NULL,
    last_seen     timestamptz NOT NULL,
    false_since   timestamptz,              -- condition false since (hold-down running)
    acked_by      text,
    acked_at      timestamptz,
    cleared_at    timestamptz,
    FOREIGN KEY (rule_name, rule_version) REFERENCES alert_rules
);
-- Deduplication: at most one live alert per rule × entity.
CREATE UNIQUE INDEX alerts_live ON alerts (rule_name, entity) WHERE state <> 'cleared';
CREATE INDEX alerts_first_seen ON alerts (first_seen DESC);

CREATE TABLE alert_history (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id      bigint NOT NULL REFERENCES alerts ON DELETE CASCADE,
    at            timestamptz NOT NULL,
    event         text NOT NULL,
    actor         text,
    detail        jsonb
);
CREATE INDEX alert_history_alert ON alert_history (alert_id, id);

-- Written in the same transaction as the alert change it announces; delivered in id order per channel.
CREATE TABLE alert_outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id      bigint NOT NULL REFERENCES alerts ON DELETE CASCADE,
    event         text NOT NULL,
    channel_url   text NOT NULL,
    secret_ref    text NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    body          jsonb NOT NULL,
    severity      text NOT NULL,
    policy        jsonb NOT NULL DEFAULT '{}',  -- the channel's quiet hours / rate limit when it was written
    created_at    timestamptz NOT NULL DEFAULT now(),
    attempts      integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz
);
CREATE INDEX alert_outbox_pending ON alert_outbox (channel_url, id) WHERE delivered_at IS NULL;

CREATE TABLE alert_deliveries (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id     bigint NOT NULL REFERENCES alert_outbox ON DELETE CASCADE,
    at            timestamptz NOT NULL DEFAULT now(),
    attempt       integer NOT NULL,
    status        integer,                  -- HTTP status; NULL when no answer
    error         text
);
CREATE INDEX alert_deliveries_outbox ON alert_deliveries (outbox_id, id);

CREATE TABLE alert_eval_state (
    key           text PRIMARY KEY,
    watermark     timestamptz NOT NULL
);

-- Each device's newest event or heartbeat, advanced from rows newer than the watermark only.
CREATE TABLE alert_device_seen (
    device_key    integer PRIMARY KEY,
    last_seen     timestamptz NOT NULL
);
