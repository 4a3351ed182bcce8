-- Batches and several instances (docs/protocol.md).
--
-- An envelope is now one transaction of one or more payouts: the envelope log holds the
-- bytes, the bounds and the member list; each payout row points at its envelope and its
-- operation index. Channel accounts are leased to instances (fenced by an epoch), not to
-- payouts; instances heartbeat; accepted payouts have an owner instance. Existing rows
-- are carried over: an old envelope is a batch of one.

-- Envelopes: from one per payout to one per transaction.
ALTER TABLE envelopes
    ADD COLUMN fee          integer,
    ADD COLUMN min_ledger   integer,
    ADD COLUMN max_ledger   integer,
    -- The ledger head when it was built: it can be in no ledger up to this one. 0 for
    -- envelopes built before this migration (unknown: only proofs that need no history
    -- can declare them dead).
    ADD COLUMN built_ledger integer NOT NULL DEFAULT 0,
    -- The payouts of the transaction, in operation order.
    ADD COLUMN member_ids   text[],
    ADD COLUMN ledger       integer,
    ADD COLUMN fee_charged  bigint,
    -- How it ended (the proof of death, the result codes).
    ADD COLUMN note         text,
    ADD COLUMN updated_at   timestamptz NOT NULL DEFAULT now();

UPDATE envelopes e SET member_ids = ARRAY[e.payout_id],
                       fee = p.tx_fee, min_ledger = p.min_ledger, max_ledger = p.max_ledger
FROM payouts p WHERE p.payout_id = e.payout_id;
UPDATE envelopes SET member_ids = ARRAY[payout_id] WHERE member_ids IS NULL;
UPDATE envelopes SET fee = 100 WHERE fee IS NULL;

ALTER TABLE envelopes
    ALTER COLUMN member_ids SET NOT NULL,
    ALTER COLUMN fee SET NOT NULL,
    DROP COLUMN payout_id,
    DROP COLUMN attempt;

-- A channel's sequence number is held by at most one envelope that is not dead: two
-- instances can never journal two envelopes that could both apply for one sequence.
CREATE UNIQUE INDEX envelopes_one_per_sequence ON envelopes (source, sequence)
    WHERE status <> 'dead';
-- A channel worker reads its channel's live envelopes when it starts.
CREATE INDEX envelopes_live ON envelopes (source) WHERE status = 'live';

-- Instances sharing the database: alive while `expires_at` is in the future (database
-- clock). Rows are kept: ownership of old payouts names them.
CREATE TABLE instances (
    instance_id  text PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);

-- Channel accounts: leased to an instance, fenced by `lease_epoch` (bumped by every claim).
ALTER TABLE channel_accounts
    DROP COLUMN leased_to,
    ADD COLUMN owner text,
    -- Whether the holder has the key (a holder without it only settles old envelopes and
    -- gives way to one that has it).
    ADD COLUMN owner_can_sign boolean NOT NULL DEFAULT false;

-- Payouts: an owner while accepted; a place in an envelope instead of a copy of it.
ALTER TABLE payouts
    ADD COLUMN owner    text,
    ADD COLUMN op_index integer;
UPDATE payouts SET op_index = 0 WHERE tx_hash IS NOT NULL;
ALTER TABLE payouts
    DROP COLUMN channel,
    DROP COLUMN envelope_xdr,
    DROP COLUMN tx_source,
    DROP COLUMN tx_sequence,
    DROP COLUMN tx_fee,
    DROP COLUMN max_time,
    DROP COLUMN min_ledger,
    DROP COLUMN max_ledger,
    DROP COLUMN next_fee;

DROP INDEX payouts_active;
-- Recovery reads an instance's accepted payouts; the sweep adopts those of dead owners.
CREATE INDEX payouts_ready ON payouts (owner, payout_id) WHERE state = 'accepted';

-- The outbox points at its event (one payload, built from the event log when published).
ALTER TABLE outbox ADD COLUMN version bigint;
UPDATE outbox SET version = reverse(split_part(reverse(event_id), ':', 1))::bigint;
ALTER TABLE outbox
    ALTER COLUMN version SET NOT NULL,
    DROP COLUMN kind,
    DROP COLUMN payload;

-- The event log, lean for batches: one index, (payout_id, version), which is also the
-- rule "one event per version"; no foreign key (every event is written in the same
-- statement as the payout row it belongs to, and the check cost a lookup per event).
ALTER TABLE payout_events
    DROP CONSTRAINT payout_events_payout_id_fkey,
    DROP CONSTRAINT payout_events_pkey;
ALTER TABLE payout_events
    DROP CONSTRAINT payout_events_payout_id_version_key,
    DROP COLUMN id,
    ADD CONSTRAINT payout_events_pkey PRIMARY KEY (payout_id, version);
