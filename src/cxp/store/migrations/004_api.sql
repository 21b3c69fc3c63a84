-- What the API keeps: hashed API keys, versioned plan definitions, experiments and background jobs.
CREATE TABLE api_keys (
    key_id          text PRIMARY KEY,           -- public part of the key, shown in lists and logs
    name            text NOT NULL,
    role            text NOT NULL CHECK (role IN ('product', 'pricing', 'admin')),
    secret_sha256   bytea NOT NULL,             -- the secret is 256 random bits: a plain hash cannot be brute-forced
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    last_used_at    timestamptz
);

CREATE TABLE plan_versions (
    plan_id         text NOT NULL,
    version         integer NOT NULL CHECK (version >= 1),
    definition      jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text,
    PRIMARY KEY (plan_id, version)
);

CREATE TABLE experiments (
    experiment_id   text PRIMARY KEY,
    design          jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text
);

CREATE TABLE jobs (
    job_id          uuid PRIMARY KEY,
    kind            text NOT NULL,
    status          text NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    request         jsonb NOT NULL,
    result          jsonb,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    created_by      text
);
CREATE INDEX jobs_created ON jobs (created_at DESC);
