-- Issue 15: each device's first successful use of each touchpoint, kept by the rollup refresh from the dirty days'
-- touchpoint-daily rows (late data can only make it earlier). The capability ladder reads ~devices × touchpoints
-- rows instead of every touchpoint-day of the history; a first use after a view's end means none up to it.
CREATE TABLE touchpoint_first_success (
    device_key integer NOT NULL,
    touchpoint text NOT NULL,
    first_at   timestamptz NOT NULL,
    PRIMARY KEY (device_key, touchpoint)
);

INSERT INTO touchpoint_first_success
SELECT device_key, touchpoint, min(success_times[1]) FROM rollup_touchpoint_daily
WHERE success_count > 0 AND touchpoint <> ''
GROUP BY 1, 2;
