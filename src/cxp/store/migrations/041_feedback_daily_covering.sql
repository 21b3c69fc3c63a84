-- Issue 15: the feedback answers of a window (the voice, the health score's answers, the devices' satisfaction in the
-- touchpoint, churn-risk and fleet-report views) as an index-only read instead of one heap visit per device-day row:
-- 236,000 rows of 8 weeks at 10,000 devices, the devices' means 0.19 → 0.15 s and the histogram 0.12 → 0.09 s.
-- It serves every range read by day the old index did.
CREATE INDEX rollup_feedback_daily_day_covering ON rollup_feedback_daily (day)
    INCLUDE (device_key, touchpoint, measure, score, responses);
DROP INDEX rollup_feedback_daily_day;
