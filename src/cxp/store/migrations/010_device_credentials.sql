-- Device credentials (issue 10): access tokens (only their Mosquitto `$7$` hash) and certificates (serial and
-- fingerprint, never a key), product provisioning keys (secret stored as SHA-256, like API keys) and the audit of
-- every provisioning attempt.
CREATE TABLE device_credentials (
    credential_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id       text NOT NULL REFERENCES devices ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('token', 'certificate')),
    -- tokens: the broker username (`<device id>` for generation 1, `<device id>~<n>` after rotations)
    username        text,
    generation      integer CHECK (generation >= 1),
    secret_hash     text CHECK (secret_hash LIKE '$7$%'),
    -- certificates: lowercase hex serial as `cxp pki sign` prints it, SHA-256 of the DER certificate
    serial_hex      text CHECK (serial_hex ~ '^[0-9a-f]+$'),
    fingerprint_sha256 text CHECK (fingerprint_sha256 ~ '^[0-9a-f]{64}$'),
    not_before      timestamptz,
    not_after       timestamptz,
    state           text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'superseded', 'revoked')),
    -- set on the old credential of a rotation: it stays valid until then, then the sweep supersedes it
    grace_until     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text,
    revoked_at      timestamptz,
    revoked_by      text,
    revoke_reason   text,
    CHECK ((kind = 'token') = (username IS NOT NULL AND generation IS NOT NULL AND secret_hash IS NOT NULL)),
    CHECK ((kind = 'certificate') = (serial_hex IS NOT NULL AND fingerprint_sha256 IS NOT NULL
                                     AND not_before IS NOT NULL AND not_after IS NOT NULL)),
    CHECK ((state = 'revoked') = (revoked_at IS NOT NULL))
);
-- A username or a generation is never issued twice, even after a revocation: a revoked login cannot come back.
CREATE UNIQUE INDEX device_credentials_username ON device_credentials (username) WHERE username IS NOT NULL;
CREATE UNIQUE INDEX device_credentials_generation ON device_credentials (device_id, generation)
    WHERE generation IS NOT NULL;
CREATE UNIQUE INDEX device_credentials_serial ON device_credentials (serial_hex) WHERE serial_hex IS NOT NULL;
CREATE INDEX device_credentials_device ON device_credentials (device_id);
CREATE INDEX device_credentials_live ON device_credentials (kind) WHERE state = 'active';

CREATE TABLE provisioning_keys (
    key_id          text PRIMARY KEY,           -- public part, in the presented key and in the audit
    product_id      text NOT NULL REFERENCES products ON DELETE CASCADE,
    name            text NOT NULL,
    secret_sha256   bytea NOT NULL,             -- 256 random bits: a plain hash cannot be brute-forced
    max_devices     integer NOT NULL CHECK (max_devices >= 1),
    used_count      integer NOT NULL DEFAULT 0 CHECK (used_count >= 0 AND used_count <= max_devices),
    expires_at      timestamptz,
    revoked_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text
);

CREATE TABLE provisioning_audit (
    audit_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    key_id          text,                       -- as presented (unknown ids too); NULL when none was readable
    device_id       text,
    client_address  text,
    outcome         text NOT NULL CHECK (outcome IN ('provisioned', 'refused')),
    reason          text NOT NULL
);
CREATE INDEX provisioning_audit_key ON provisioning_audit (key_id, at DESC);
CREATE INDEX provisioning_audit_at ON provisioning_audit (at DESC);
