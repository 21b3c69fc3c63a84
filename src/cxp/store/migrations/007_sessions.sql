-- Dashboard sign-in sessions: the browser holds a random 256-bit token, the database only its SHA-256.
-- A session is not a key: it is tied to the key it was opened with, ends at expires_at, on logout or when that
-- key is revoked (apikeys.revoke_key), and it authenticates dashboard pages only, never /v1.
CREATE TABLE dashboard_sessions (
    token_sha256    bytea PRIMARY KEY,
    key_id          text NOT NULL REFERENCES api_keys (key_id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('product', 'pricing', 'admin')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz
);
CREATE INDEX dashboard_sessions_key ON dashboard_sessions (key_id);
CREATE INDEX dashboard_sessions_expires ON dashboard_sessions (expires_at);
