-- A job's progress while it writes its output: rows done of rows to write (null until the job knows its total).
ALTER TABLE jobs ADD COLUMN progress_done bigint, ADD COLUMN progress_total bigint;
