-- The simulator's planted recovery truth (issue 14), beside 006/013: only simulated fleets fill it and only checks
-- against the simulator read it, never the analytics.

-- Each incident's planted recovery quality ('excellent': fixed within 4 h, else 'slow') and whether its recovery
-- lifts the satisfaction of mildly hit devices (the fleet plants the service recovery paradox and the recovery is
-- excellent).
ALTER TABLE sim_incidents
    ADD COLUMN IF NOT EXISTS recovery_quality text CHECK (recovery_quality IN ('excellent', 'slow')),
    ADD COLUMN IF NOT EXISTS paradox boolean NOT NULL DEFAULT false;
