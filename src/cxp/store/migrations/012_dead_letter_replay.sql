-- Dead letters can be replayed after a fix (`cxp dead-letters replay`), each at most once: the replay marks
-- the row in the transaction that stores its events. Nullable columns without a default: no table rewrite.
ALTER TABLE dead_letters ADD COLUMN replayed_at timestamptz, ADD COLUMN replay_outcome text;
CREATE INDEX dead_letters_pending ON dead_letters (id) WHERE replayed_at IS NULL;
