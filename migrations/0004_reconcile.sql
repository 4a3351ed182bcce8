-- Reconciliation runs (docs/reconcile.md): every run of `payoutd reconcile` and of the
-- scheduled check, with its range, its result and its counts. A run without a range starts
-- at the furthest `resume_ledger` of the completed runs (those that did not end in 'error').

CREATE TABLE reconcile_runs (
    id            bigserial PRIMARY KEY,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT now(),
    -- 'command' (payoutd reconcile) or 'schedule' (the check inside the service).
    trigger       text NOT NULL CHECK (trigger IN ('command', 'schedule')),
    -- The instance that ran it (cluster.instance_id), for scheduled runs.
    instance      text,
    -- How the range was chosen: 'since_last_run' (no range given), 'ledgers', 'time'.
    range_kind    text NOT NULL CHECK (range_kind IN ('since_last_run', 'ledgers', 'time')),
    -- The ledgers checked, both ends included; NULL when the run could not start.
    from_ledger   integer,
    to_ledger     integer,
    -- Where the next run without a range starts: after to_ledger, or at the first ledger
    -- holding a transaction whose envelope the journal had not settled yet.
    resume_ledger integer,
    -- 'clean' (everything agrees), 'mismatches', or 'error' (could not check).
    result        text NOT NULL CHECK (result IN ('clean', 'mismatches', 'error')),
    mismatches    integer NOT NULL DEFAULT 0 CHECK (mismatches >= 0),
    counts        jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- The mismatches found (at most a bounded number, see docs/reconcile.md), with evidence.
    findings      jsonb NOT NULL DEFAULT '[]'::jsonb,
    -- Why it could not check (no credentials: URLs are shown without them).
    error         text,
    CHECK ((result = 'error') = (error IS NOT NULL)),
    CHECK (result = 'error' OR (from_ledger IS NOT NULL AND to_ledger IS NOT NULL
                                AND resume_ledger IS NOT NULL))
);

-- The default start (the furthest resume point of a completed run), the last completed run
-- and the last clean one (for the gauges).
CREATE INDEX reconcile_runs_completed ON reconcile_runs (id) WHERE result <> 'error';
CREATE INDEX reconcile_runs_clean ON reconcile_runs (id) WHERE result = 'clean';
