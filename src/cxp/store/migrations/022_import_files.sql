-- History import (issue 15): one checkpoint per imported file, advanced in the transaction that stores its rows,
-- so an interrupted import resumes after the last committed chunk and never stores a row twice.
CREATE TABLE IF NOT EXISTS import_files (
    file_sha256   text PRIMARY KEY,
    name          text NOT NULL,
    format        text NOT NULL CHECK (format IN ('jsonl', 'csv', 'parquet')),
    size_bytes    bigint NOT NULL,
    position      bigint NOT NULL DEFAULT 0,   -- bytes (jsonl, csv) or rows (parquet) committed
    line          bigint NOT NULL DEFAULT 0,   -- the last line (jsonl, csv) or row (parquet) committed
    events_in     bigint NOT NULL DEFAULT 0,
    events_stored bigint NOT NULL DEFAULT 0,   -- events and heartbeats
    duplicates    bigint NOT NULL DEFAULT 0,
    dead_lettered bigint NOT NULL DEFAULT 0,
    status        text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done')),
    started_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
