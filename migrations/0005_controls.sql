-- The cluster-wide pause (the kill switch) and the audit trail of admin actions
-- (docs/operations.md).
--
-- One row: while `paused`, no instance journals a new envelope (the prepare reads this row
-- FOR SHARE, a pause updates it, so a prepare either committed before the pause or sees
-- it). Envelopes already journaled keep being submitted and looked up.
CREATE TABLE controls (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    paused       boolean NOT NULL DEFAULT false,
    paused_by    text,
    pause_reason text,
    paused_at    timestamptz
);
INSERT INTO controls DEFAULT VALUES;

-- Every admin action: who (an admin token's name, `cli:<user>`, `circuit-breaker`), what,
-- why. Never a token or a secret.
CREATE TABLE admin_audit (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  text NOT NULL,
    action text NOT NULL,
    reason text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'
);
