-- Issue 15: per product × touchpoint × hour, the devices that used the touchpoint (the exposure an hour's errors
-- are compared with when incidents are detected), kept by the rollup refresh: a dirty day recomputes that day's
-- hours for every product. A device moved to another product (with its history) queues the days it has hourly
-- rows for in `rollup_product_dirty`, which the next refresh recomputes too. The disruption views read ~products ×
-- touchpoints × hours rows instead of ~devices × touchpoints × hours.
CREATE TABLE rollup_product_hourly (
    product_id text NOT NULL,
    touchpoint text NOT NULL,
    bucket     timestamptz NOT NULL,
    users      integer NOT NULL,        -- devices of the product with a use of the touchpoint in the hour
    PRIMARY KEY (product_id, bucket, touchpoint)
);
CREATE INDEX rollup_product_hourly_bucket ON rollup_product_hourly (bucket);

-- Days whose product hours must be recomputed though no device-day of them is dirty (no unique key, like
-- rollup_dirty: writers never wait on the refresher, which de-duplicates on read).
CREATE TABLE rollup_product_dirty (
    day date NOT NULL
);

INSERT INTO rollup_product_hourly
SELECT d.product_id, h.touchpoint, h.bucket, count(*)::int
FROM rollup_hourly h JOIN devices d USING (device_key)
WHERE h.touchpoint <> '' AND h.usage_count > 0
GROUP BY 1, 2, 3;
