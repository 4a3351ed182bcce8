-- Spending limits (see docs/operations.md): a payout a limit refuses is `held`, with the
-- reason, until `held_until` (or an operator when NULL). Every payout journaled into an
-- envelope is a spend; the windows count the spends of live and applied envelopes.
ALTER TABLE payouts DROP CONSTRAINT payouts_state_check;
ALTER TABLE payouts ADD CONSTRAINT payouts_state_check CHECK (state IN
    ('accepted','prepared','submitted','confirmed','failed','parked','cancelled','held'));
ALTER TABLE payouts ADD COLUMN held_until timestamptz;
CREATE INDEX payouts_held ON payouts (held_until) WHERE state = 'held';

CREATE TABLE limit_spends (
    tx_hash    text NOT NULL REFERENCES envelopes (tx_hash),
    payout_id  text NOT NULL,
    -- 'native' or 'CODE:ISSUER'
    asset      text NOT NULL,
    -- stroops
    amount     bigint NOT NULL CHECK (amount > 0),
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tx_hash, payout_id)
);
CREATE INDEX limit_spends_by_asset ON limit_spends (asset, at);
