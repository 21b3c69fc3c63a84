-- The simulator's planted truth, kept apart from the production registry: only simulated fleets fill it,
-- and only checks against the simulator's truth read it. Until this migration existed these tables were part of
-- 001_registry, so databases migrated then already have them: IF NOT EXISTS makes this a no-op there.

-- What the simulator knows and analytics must rediscover (persona, churn, error proneness).
CREATE TABLE IF NOT EXISTS sim_ground_truth (
    device_id       text PRIMARY KEY REFERENCES devices ON DELETE CASCADE,
    persona         text NOT NULL,
    churns          boolean NOT NULL,
    churn_at        timestamptz,
    error_proneness double precision NOT NULL,
    extra           jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE IF NOT EXISTS sim_incidents (
    incident_id     text PRIMARY KEY,
    product_id      text NOT NULL,
    touchpoint      text NOT NULL,
    code            text NOT NULL,
    severity        text NOT NULL,
    start_at        timestamptz NOT NULL,
    end_at          timestamptz NOT NULL
);
