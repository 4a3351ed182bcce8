-- A spend is now one row per envelope and asset (the sum and the count of the members
-- paying that asset) instead of one row per payout: the limits' windows only ever add
-- spends up per asset, and a batch of 100 payouts wrote 100 rows, 200 index entries and
-- 100 foreign-key checks for it. The spends journaled so far are carried over, summed.
CREATE TABLE envelope_spends (
    tx_hash    text NOT NULL REFERENCES envelopes (tx_hash),
    -- 'native' or 'CODE:ISSUER'
    asset      text NOT NULL,
    -- stroops: the members' sum (numeric, so that no sum can overflow)
    amount     numeric NOT NULL CHECK (amount > 0),
    -- the members paying this asset in this envelope
    payouts    integer NOT NULL CHECK (payouts > 0),
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tx_hash, asset)
);
INSERT INTO envelope_spends (tx_hash, asset, amount, payouts, at)
    SELECT tx_hash, asset, sum(amount), count(*), min(at) FROM limit_spends GROUP BY tx_hash, asset;
DROP TABLE limit_spends;
ALTER TABLE envelope_spends RENAME TO limit_spends;
ALTER TABLE limit_spends RENAME CONSTRAINT envelope_spends_pkey TO limit_spends_pkey;
CREATE INDEX limit_spends_by_asset ON limit_spends (asset, at);
