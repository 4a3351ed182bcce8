-- Ingress and egress around the journal: a Postgres inbox other systems write into, the
-- dead letters of every ingress, and a transactional outbox of payout state changes.

-- Other systems insert payout requests here inside their own transactions. payoutd claims
-- rows with FOR UPDATE SKIP LOCKED, deletes each row in the same transaction that makes
-- its payout durable (or dead-letters it), woken by NOTIFY with a polling fallback.
CREATE TABLE payout_inbox (
    id          bigserial PRIMARY KEY,
    -- A JSON payout request as text (the same shape as the HTTP body).
    payload     text NOT NULL,
    inserted_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION payout_inbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('payout_inbox', '');
    RETURN NULL;
END $$;

CREATE TRIGGER payout_inbox_notify AFTER INSERT ON payout_inbox
    FOR EACH STATEMENT EXECUTE FUNCTION payout_inbox_notify();

-- Rejected messages from any ingress: kept with their reason, never silently dropped.
-- Payloads are stored with anything that looks like a secret seed redacted.
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    source      text NOT NULL,            -- 'nats', 'inbox', 'csv'
    source_ref  text,                     -- stream sequence, inbox row id, file:line
    payload     text NOT NULL,
    code        text NOT NULL,
    reason      text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- State changes to publish (at least once). `event_id` = payout_id:version, stable across
-- retries, so consumers (and JetStream's duplicate window) can deduplicate on it.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    event_id     text NOT NULL UNIQUE,
    payout_id    text NOT NULL,
    kind         text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
