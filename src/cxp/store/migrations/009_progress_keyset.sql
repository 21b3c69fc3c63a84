-- A job's progress while it writes its output: rows done of rows to write (null until the job knows its total).
ALTER TABLE jobs ADD COLUMN progress_done bigint, ADD COLUMN progress_total bigint;

-- Keyset pages of the device list filtered by product or account: one index range scan from the cursor on.
-- (The single-column indexes are prefixes of these.)
CREATE INDEX devices_product_device ON devices (product_id, device_id);
CREATE INDEX devices_account_device ON devices (account_id, device_id);
DROP INDEX devices_product;
DROP INDEX devices_account;

-- Jobs newest first with the id breaking ties, as their keyset cursor orders them.
CREATE INDEX jobs_created_id ON jobs (created_at DESC, job_id DESC);
DROP INDEX jobs_created;
