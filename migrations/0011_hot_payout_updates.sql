-- Payout updates that PostgreSQL can make HOT (heap-only tuples: the new row version goes on
-- the same page and no index gets a new entry). An update can be HOT only when it changes
-- no column an index names, in its key or in its predicate. `state` changes at every step,
-- and three indexes named it, so every step of every payout wrote new entries into the
-- primary key and the partial indexes (docs/performance.md, "CPU per payout").
--
-- Now no index on `payouts` names a column that the way accepted → prepared → submitted →
-- confirmed changes:
-- * The payouts waiting for an envelope (state `accepted`) are listed in `payouts_waiting`,
--   kept in step by every statement that moves a payout into or out of `accepted`. The ready
--   queue's read-back and the adoption of orphans read it.
-- * Held payouts are found by `held_until`, which only holds and releases change; a step
--   out of `held` clears it.
-- * The listing by state reads the states a payout rests in off that way (held, parked,
--   failed, cancelled) through `off_path_state`, which is NULL on the way.
--   Prepared and submitted payouts are found through their live envelope's members.
-- * `fillfactor = 30` leaves room on each page for the new versions of its rows: the three
--   updates of a payout's way fit beside it (at 50, a quarter of them did not). The price is
--   space: a page of settled payouts stays about a third full. `ALTER TABLE payouts SET
--   (fillfactor = …)` changes it for the pages written from then on.

CREATE TABLE payouts_waiting (
    payout_id text PRIMARY KEY,
    -- The instance whose ready queue holds it (payouts.owner).
    owner     text
);
INSERT INTO payouts_waiting (payout_id, owner)
    SELECT payout_id, owner FROM payouts WHERE state = 'accepted';
DROP INDEX payouts_ready;

UPDATE payouts SET held_until = NULL WHERE state <> 'held' AND held_until IS NOT NULL;
DROP INDEX payouts_held;
CREATE INDEX payouts_held ON payouts (held_until) WHERE held_until IS NOT NULL;

-- Set before the new column, whose stored values rewrite the table with this much room.
ALTER TABLE payouts SET (fillfactor = 30);
ALTER TABLE payouts ADD COLUMN off_path_state text GENERATED ALWAYS AS (
    CASE WHEN state IN ('held', 'parked', 'failed', 'cancelled') THEN state END) STORED;
DROP INDEX payouts_unsettled_by_state;
CREATE INDEX payouts_off_path ON payouts (off_path_state, payout_id)
    WHERE off_path_state IS NOT NULL;
