-- Issue 15: each device × touchpoint × day with errors on the touchpoint also keeps the first successful use of
-- the touchpoint on a later day (`next_success_at`, NULL: none yet), so what ends an error episode is read in one
-- range scan of the window's error rows (the day's `success_times` and this) instead of two index lookups per
-- error day. The rollup refresh recomputes it, for each device with dirty days, on its error rows whose next success
-- is unknown or on or after its first dirty day. The partial index serves both that and the views' window read.
ALTER TABLE rollup_touchpoint_daily ADD COLUMN next_success_at timestamptz;
CREATE INDEX rollup_touchpoint_daily_errors ON rollup_touchpoint_daily (device_key, day)
    WHERE error_count > 0 AND touchpoint <> '';

UPDATE rollup_touchpoint_daily t SET next_success_at = (
    SELECT n.success_times[1] FROM rollup_touchpoint_daily n
    WHERE n.device_key = t.device_key AND n.touchpoint = t.touchpoint AND n.day > t.day AND n.success_count > 0
    ORDER BY n.day LIMIT 1)
WHERE t.error_count > 0 AND t.touchpoint <> '';
