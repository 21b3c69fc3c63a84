-- Issue 15: feedback answers counted per device × UTC day × touchpoint × measure × score, kept by the rollup refresh
-- beside the other daily rollups (a dirty device-day recomputes its rows). The voice views, per-device feedback and
-- the health score's trailing answer counts read these compact rows instead of the sparse feedback events scattered
-- over every daily chunk of `events`.
CREATE TABLE rollup_feedback_daily (
    device_key integer NOT NULL,
    day        date NOT NULL,
    touchpoint text NOT NULL,        -- '' for an answer about the relationship (no touchpoint)
    measure    text NOT NULL CHECK (measure IN ('nps', 'csat', 'ces')),
    score      smallint NOT NULL,
    responses  integer NOT NULL,
    PRIMARY KEY (device_key, day, touchpoint, measure, score)
);
CREATE INDEX rollup_feedback_daily_day ON rollup_feedback_daily (day);

INSERT INTO rollup_feedback_daily
SELECT e.device_key, (e.ts AT TIME ZONE 'UTC')::date, coalesce(e.touchpoint, ''), m.measure, m.score, count(*)::int
FROM events e
CROSS JOIN LATERAL (VALUES ('nps', e.nps), ('csat', e.csat), ('ces', e.ces)) AS m(measure, score)
WHERE e.kind = 'feedback' AND m.score IS NOT NULL
GROUP BY 1, 2, 3, 4, 5;
