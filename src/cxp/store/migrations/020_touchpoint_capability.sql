-- Smart-capability level of each touchpoint (issue 18): monitoring → control → optimisation → autonomy.
-- Nullable: catalogues registered before (or through the registry API without it) simply have no ladder.
ALTER TABLE touchpoints ADD COLUMN capability text
    CHECK (capability IN ('monitoring', 'control', 'optimisation', 'autonomy'));
