-- Issue 15: the costly per-device inputs of the Experience Health Score at the end of each whole Monday–Sunday week,
-- kept so a health view reads ~devices × weeks rows instead of recomputing every week's trailing 28 days from the
-- daily rollups. Written by analytics (the usage trend is a Theil–Sen fit, not SQL) for weeks already over; the
-- rollup refresh marks a row stale (or adds a stale row) for every week whose trailing 28 days hold a dirty
-- device-day, in the same transaction, so a writer that read the old rollups conflicts with the mark instead of
-- overwriting it. `activated_on` / `bucket_days` are the registry facts the trend was fitted with: a row whose facts
-- differ from the registry's at read time is recomputed; so is an efficiency scored against other latency
-- targets (`targets_key`).
CREATE TABLE health_weekly (
    device_key     integer NOT NULL,
    week           date NOT NULL,           -- the Monday; every value is as of the Sunday week + 6
    stale          boolean NOT NULL DEFAULT false,
    activated_on   date,                    -- the device's activation day the trend was fitted with
    bucket_days    smallint,                -- 1: daily points, 7: weekly points (devices expected < 3 days a week)
    points         smallint,                -- points of the usage trend in the trailing 28 days
    slope_per_day  float8,                  -- Theil–Sen slope of log(1 + uses) per day (NULL: too few points)
    last_active_on date,                    -- the last day of the week with a use (NULL: none)
    nps_n          integer, nps_promoters integer, nps_detractors integer,   -- answers in the trailing 28 days
    csat_n         integer, csat_top2 integer, ces_n integer, ces_sum float8,
    efficiency     float8,                  -- the week's efficiency component (NULL: no timed use with a target)
    targets_key    bigint,                  -- the product and latency targets it was scored against
    PRIMARY KEY (device_key, week),
    CHECK (stale OR (activated_on IS NOT NULL AND bucket_days IN (1, 7) AND points IS NOT NULL AND nps_n IS NOT NULL
                    AND targets_key IS NOT NULL))
);
