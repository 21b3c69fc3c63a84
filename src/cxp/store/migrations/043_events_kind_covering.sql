-- Issue 15: the error and recovery events of a window (the disruptions view's episodes, churn risk's unrecovered
-- episodes, the fleet report's incidents) as an index-only read instead of one heap visit per event, scattered over
-- the chunks' pages: at 10,000 devices, 140,000 events of 8 weeks read 138,000 heap pages. The same partial index
-- with the columns those reads need; it serves every read the old one did (feedback and lifecycle events too).
CREATE INDEX events_kind_ts_covering ON events (kind, ts) INCLUDE (device_key, code, touchpoint)
    WHERE kind IN ('feedback', 'lifecycle', 'error', 'recovery');
DROP INDEX events_kind_ts;
