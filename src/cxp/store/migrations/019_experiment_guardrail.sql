-- Guardrail looks at running price experiments (issue 17): one row per look × treatment arm, kept so that
-- the group-sequential boundary of the next look accounts for every earlier one.
CREATE TABLE experiment_guardrail_checks (
    experiment_id        text NOT NULL REFERENCES experiments (experiment_id) ON DELETE CASCADE,
    look                 integer NOT NULL CHECK (look >= 1),
    arm                  text NOT NULL,
    checked_at           timestamptz NOT NULL DEFAULT now(),
    as_of                timestamptz NOT NULL,
    information_fraction double precision NOT NULL CHECK (information_fraction > 0 AND information_fraction <= 1),
    spending             text NOT NULL,
    alpha                double precision NOT NULL,
    alpha_spent          double precision NOT NULL,
    boundary_z           double precision NOT NULL,
    z                    double precision,
    estimate             double precision,
    tolerated_drop       double precision NOT NULL,
    stop                 boolean NOT NULL,
    PRIMARY KEY (experiment_id, look, arm)
);
