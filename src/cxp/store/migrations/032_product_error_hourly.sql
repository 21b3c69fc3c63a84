-- Issue 15: per product × touchpoint × error code × hour, the devices with an error of that code on the touchpoint
-- (the incident test compares them with the hour's users in rollup_product_hourly), kept by the rollup refresh
-- with the product hours: a dirty day, or a day queued by a device move, recomputes that day's hours for every
-- product from the raw errors. The disruption views read these ~thousands of rows instead of counting distinct
-- devices over every raw error of the window and the 28 days before it.
CREATE TABLE rollup_product_error_hourly (
    product_id text NOT NULL,
    touchpoint text NOT NULL,
    code       text NOT NULL,
    bucket     timestamptz NOT NULL,
    devices    integer NOT NULL,        -- devices of the product with an error of the code on the touchpoint
    PRIMARY KEY (product_id, bucket, touchpoint, code)
);
CREATE INDEX rollup_product_error_hourly_bucket ON rollup_product_error_hourly (bucket);

INSERT INTO rollup_product_error_hourly
SELECT d.product_id, e.touchpoint, e.code, time_bucket(INTERVAL '1 hour', e.ts), count(DISTINCT e.device_key)::int
FROM events e JOIN devices d USING (device_key)
WHERE e.kind = 'error' AND e.touchpoint IS NOT NULL AND e.code IS NOT NULL
GROUP BY 1, 2, 3, 4;
