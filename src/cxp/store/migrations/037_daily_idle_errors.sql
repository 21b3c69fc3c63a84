-- Issue 15: errors on days without a use (a device that only failed) beside the covering index of active days
-- (029, 036), so the errors, uses and active devices per product × day are two index-only reads instead of every
-- device-day's heap row of the window (8 weeks at 10,000 devices: 0.30 → 0.10 s). Few rows: ~0.5 % of device-days.
CREATE INDEX rollup_daily_idle_errors ON rollup_daily (day) INCLUDE (device_key, error_count)
    WHERE NOT active AND error_count > 0;
