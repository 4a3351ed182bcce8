-- Signed webhooks (docs/webhooks.md). The outbox gains a second consumer: the webhook
-- fan-out, which turns each outbox row into one delivery per endpoint that wants its kind
-- and marks the row (or deletes it when the NATS publisher is off). Deliveries are retried
-- with backoff until delivered or dead; dead ones wait for an operator's replay.

ALTER TABLE outbox ADD COLUMN fanned_out_at timestamptz;
-- Rows written before webhooks existed are not delivered to endpoints configured later.
UPDATE outbox SET fanned_out_at = now();
CREATE INDEX outbox_unfanned ON outbox (id) WHERE fanned_out_at IS NULL;

CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    -- The endpoint's name in webhooks.endpoints (never its URL, which may hold a token).
    endpoint        text NOT NULL,
    event_id        text NOT NULL,
    payout_id       text NOT NULL,
    version         bigint NOT NULL,
    kind            text NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- The retry window runs from here (creation, or the last replay).
    window_from     timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    dead_at         timestamptz,
    UNIQUE (endpoint, event_id)
);
-- What is due, per endpoint; and the rule "a payout's events in version order".
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint, next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (endpoint, payout_id, version)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_dead ON webhook_deliveries (id) WHERE state = 'dead';
-- Listing one payout's deliveries.
CREATE INDEX webhook_deliveries_payout ON webhook_deliveries (payout_id, id);
CREATE INDEX webhook_deliveries_delivered ON webhook_deliveries (delivered_at)
    WHERE state = 'delivered';
