-- Issue 14: the simulator's planted recovery truth (beside 006/013: only simulated fleets fill it and only checks
-- against the simulator read it, never the analytics.

-- Each incident's planted recovery quality ('excellent': fixed within 4 h, else 'slow') and whether its recovery
-- lifts the satisfaction of mildly hit devices (the fleet plants the service recovery paradox and the recovery is
-- excellent).
ALTER TABLE sim_incidents
    ADD COLUMN IF NOT EXISTS recovery_quality text CHECK (recovery_quality IN ('excellent', 'slow')),
    ADD COLUMN IF NOT EXISTS paradox boolean NOT NULL DEFAULT false;

-- A stated importance × quality table per touchpoint, from a classic importance–performance questionnaire
-- (issue 14): placed on the touchpoint IPA chart beside the telemetry's derived importance. One row per product ×
-- touchpoint, replaced by each upload of that product's table.
CREATE TABLE IF NOT EXISTS touchpoint_survey (
    product_id      text NOT NULL REFERENCES products ON DELETE CASCADE,
    touchpoint      text NOT NULL,
    importance      double precision NOT NULL,
    quality         double precision NOT NULL,
    respondents     integer NOT NULL CHECK (respondents > 0),
    scale_min       double precision NOT NULL,
    scale_max       double precision NOT NULL CHECK (scale_max > scale_min),
    uploaded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (product_id, touchpoint),
    CHECK (importance BETWEEN scale_min AND scale_max AND quality BETWEEN scale_min AND scale_max)
);
