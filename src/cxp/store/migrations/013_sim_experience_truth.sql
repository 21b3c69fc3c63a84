-- The simulator's planted experience truth (issue 14), beside 006_sim_truth: only simulated fleets fill it and
-- only checks against the simulator read it, never the analytics.

-- Each touchpoint's planted Kano class and effect sizes: CSAT points lost by a failure and gained by a success,
-- and the daily churn hazard one recent failure adds.
CREATE TABLE IF NOT EXISTS sim_touchpoint_truth (
    product_id      text NOT NULL,
    touchpoint      text NOT NULL,
    kano_class      text NOT NULL CHECK (kano_class IN ('basic', 'performance', 'attractive', 'indifferent')),
    fail_penalty    double precision NOT NULL CHECK (fail_penalty >= 0),
    success_reward  double precision NOT NULL CHECK (success_reward >= 0),
    churn_hazard    double precision NOT NULL CHECK (churn_hazard >= 0),
    PRIMARY KEY (product_id, touchpoint)
);

-- Why a device churned: `persona` (drawn up front) or `experience` (the hazard fired on decided_at), with the
-- hazard terms that day (touchpoint names, `incidents`, `support`).
ALTER TABLE sim_ground_truth
    ADD COLUMN IF NOT EXISTS churn_cause text CHECK (churn_cause IN ('persona', 'experience')),
    ADD COLUMN IF NOT EXISTS decided_at timestamptz,
    ADD COLUMN IF NOT EXISTS churn_drivers jsonb NOT NULL DEFAULT '{}';
