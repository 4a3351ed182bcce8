-- One event row per batch step instead of one per member (docs/performance.md, "One event
-- row per batch step"). A batch's prepare, its submission and its settlement each moved up
-- to 100 payouts and wrote up to 100 rows into `payout_events`, each with its primary-key
-- entry; now, when the journal writes no outbox rows, each writes one row here that lists
-- what every member's event would have held. With the outbox on (the NATS publisher or
-- webhooks), the steps still write one `payout_events` row per member: the publisher and
-- the webhook fan-out read an event by (payout_id, version).
--
-- A payout's history is its `payout_events` rows and its entries in the rows here of the
-- envelopes it was in. Those are found without a new column (a wider payout row would make
-- fewer of its updates HOT, migrations/0011): the envelope it is in or was paid by is
-- `payouts.tx_hash`, and every step that takes a payout out of an envelope (requeued,
-- parked, rerouted) is its own `payout_events` row whose detail names the envelope
-- (`tx_hash`), as the `prepared` events logged per payout always did. Every version of a
-- payout is logged once, in one of the two tables.

CREATE TABLE envelope_events (
    id          bigserial PRIMARY KEY,
    tx_hash     text NOT NULL REFERENCES envelopes (tx_hash),
    -- Member k's event is (payout_ids[k], versions[k], kinds[k], states[k], and as its
    -- detail `detail || details[k]`), as a payout_events row would hold it.
    payout_ids  text[] NOT NULL,
    versions    bigint[] NOT NULL,
    kinds       text[] NOT NULL,
    states      text[] NOT NULL,
    -- What every member's detail holds (a prepare's envelope hash, a settlement's ledger).
    detail      jsonb NOT NULL,
    -- What each member's detail adds (a prepare's operation index); NULL: nothing.
    details     jsonb[],
    at          timestamptz NOT NULL DEFAULT now()
-- A step of 80 members with short ids is about 6 kB. Up to 8 kB a row stays on its page
-- whole, neither compressed nor moved to the TOAST table: compressing it cost more than the
-- rows it replaces (docs/performance.md).
) WITH (toast_tuple_target = 8160);
CREATE INDEX envelope_events_by_envelope ON envelope_events (tx_hash, id);
