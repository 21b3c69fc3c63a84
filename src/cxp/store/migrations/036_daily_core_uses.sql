-- Issue 15: each device-day's uses of its product's core touchpoints, kept on the daily rollup. Churn risk read them by
-- joining every touchpoint-day of 8 weeks to the catalogue (0.48 s at 10,000 devices); with the covering index below
-- the core and all uses of a window are one index-only read (0.22 s for both). The refresh recounts dirty days from
-- rollup_touchpoint_daily; a changed core set, or a device moved to another product, recounts that product's or
-- device's days (store.registry), so the column always follows the current catalogue.
ALTER TABLE rollup_daily ADD COLUMN core_usage_count integer NOT NULL DEFAULT 0;

UPDATE rollup_daily r SET core_usage_count = c.uses
FROM (
    SELECT h.device_key, h.day, sum(h.usage_count)::int AS uses
    FROM rollup_touchpoint_daily h
    JOIN devices d ON d.device_key = h.device_key
    JOIN touchpoints t ON t.product_id = d.product_id AND t.touchpoint = h.touchpoint AND t.is_core
    WHERE h.usage_count > 0
    GROUP BY 1, 2
) c
WHERE r.device_key = c.device_key AND r.day = c.day;

DROP INDEX rollup_daily_active_day_usage;
CREATE INDEX rollup_daily_active_day_usage ON rollup_daily (day)
    INCLUDE (device_key, usage_count, success_count, error_count, core_usage_count) WHERE active;
