-- The payout journal: current state per payout, an append-only event log, every envelope
-- ever built, and the channel-account leases. Amounts are integer stroops.

CREATE TABLE payouts (
    payout_id     text PRIMARY KEY,
    -- sha256 of the canonical request: same id + same fingerprint = duplicate.
    fingerprint   bytea NOT NULL,
    -- The canonical request (strings), re-parsed on load.
    request       jsonb NOT NULL,
    state         text NOT NULL CHECK (state IN
                    ('accepted','prepared','submitted','confirmed','failed','parked','cancelled')),
    -- Bumped by every write; every write names the version it read (fencing).
    version       bigint NOT NULL CHECK (version >= 1),
    attempt       integer NOT NULL DEFAULT 0,
    reason        text,
    -- The source account leased to this payout (G...).
    channel       text,
    -- The current envelope: persisted before its first submission.
    envelope_xdr  text,
    tx_hash       text,
    tx_source     text,
    tx_sequence   bigint,
    tx_fee        integer,
    max_time      bigint,
    min_ledger    integer,
    max_ledger    integer,
    -- Where it landed.
    ledger        integer,
    fee_charged   bigint,
    next_fee      integer,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Recovery and the drivers only ever look for unfinished payouts.
CREATE INDEX payouts_active ON payouts (payout_id)
    WHERE state IN ('accepted','prepared','submitted');
CREATE INDEX payouts_by_state ON payouts (state, payout_id);

CREATE TABLE payout_events (
    id         bigserial PRIMARY KEY,
    payout_id  text NOT NULL REFERENCES payouts (payout_id),
    version    bigint NOT NULL,
    kind       text NOT NULL,
    state      text NOT NULL,
    detail     jsonb NOT NULL DEFAULT '{}'::jsonb,
    at         timestamptz NOT NULL DEFAULT now(),
    -- One event per version: a second writer of the same version cannot log twice.
    UNIQUE (payout_id, version)
);

-- Every envelope ever built, so reconciliation can account for each one on the ledger.
CREATE TABLE envelopes (
    tx_hash      text PRIMARY KEY,
    payout_id    text NOT NULL REFERENCES payouts (payout_id),
    attempt      integer NOT NULL,
    source       text NOT NULL,
    sequence     bigint NOT NULL,
    max_time     bigint NOT NULL,
    envelope_xdr text NOT NULL,
    status       text NOT NULL DEFAULT 'live' CHECK (status IN ('live','dead','applied','failed')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (payout_id, attempt)
);

-- Source accounts for transactions. Only public keys: seeds never reach the database.
CREATE TABLE channel_accounts (
    account     text PRIMARY KEY,
    -- The payout holding this channel until its envelope is applied or provably dead.
    leased_to   text UNIQUE REFERENCES payouts (payout_id),
    lease_epoch bigint NOT NULL DEFAULT 0,
    leased_at   timestamptz
);
