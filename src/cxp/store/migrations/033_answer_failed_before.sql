-- Issue 15: each kept touchpoint answer also says whether its device had a failure (an error on the touchpoint) on
-- one of the 7 UTC days before the answer's day, from `rollup_touchpoint_daily`, so the Kano grouping of answers
-- reads it with the answer instead of every failure day of the window. The rollup refresh recomputes it for the
-- answers of a dirty device-day and of the 7 days after it.
ALTER TABLE answer_context ADD COLUMN failed_before boolean NOT NULL DEFAULT false;

UPDATE answer_context a SET failed_before = true
WHERE EXISTS (
    SELECT 1 FROM rollup_touchpoint_daily h
    WHERE h.device_key = a.device_key AND h.touchpoint = a.touchpoint AND h.error_count > 0
      AND h.day >= (a.ts AT TIME ZONE 'UTC')::date - 7 AND h.day < (a.ts AT TIME ZONE 'UTC')::date
);
