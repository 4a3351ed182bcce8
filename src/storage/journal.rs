//! The Postgres journal: the core's `Journal` port over sqlx.
//!
//! - A single payout's step is one statement (data-modifying CTEs): the state change, its
//!   event and its outbox row commit together, fenced by `version`.
//! - Accepts are group-committed: concurrent accepts from every ingress queue up and a
//!   writer task inserts them with one multi-row statement and one commit; each caller is
//!   answered once its own row is durable.
//! - A batch is prepared in one transaction (the channel lease checked and locked, the
//!   envelope inserted, every member moved from `accepted` at the version it names, all or
//!   nothing) and settled in one statement.
//! - The cluster tables (`instances`, `channel_accounts`) fence channel leases by epoch.
//!
//! Outbox rows (for the NATS publisher) are written only when the journal is built with the
//! outbox on; they point at their event, whose row holds the payload.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use payoutd_actors::destinations::OpKind;
use payoutd_actors::domain::{AccountId, Fingerprint, PayoutId, PayoutRequest, RawPayoutRequest};
use payoutd_actors::limits::{DAY_MS, HOUR_MS, Hold, Limits, Usage};
use payoutd_actors::ports::{
    Accepted, Batch, BatchStore, ChannelInfo, ChannelLease, ClusterStore, ControlStore, Envelope,
    Inclusion, JournalError, Member, PayoutStore, PrepareError, Ready, Settled, Settlement, TxHash,
};
use payoutd_actors::safety::Pause;
use payoutd_actors::state::{EnvelopeRef, PayoutEvent, PayoutRecord, PayoutState, Step};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};
use tokio::sync::{Mutex, mpsc, oneshot};

/// Group commit of accepts: how many writer tasks (each one connection at a time), how
/// many accepts one statement carries at most, and how many may wait.
#[derive(Debug, Clone, Copy)]
pub struct AcceptBatching {
    pub writers: usize,
    /// Rows per statement at most.
    pub rows_max: usize,
    /// Accepts waiting at most; past it callers wait for room (back-pressure).
    pub queue_max: usize,
}

impl Default for AcceptBatching {
    fn default() -> Self {
        Self {
            writers: 2,
            rows_max: 1_000,
            queue_max: 20_000,
        }
    }
}

struct AcceptJob {
    request: PayoutRequest,
    owner: String,
    reply: oneshot::Sender<Result<Accepted, JournalError>>,
}

pub struct PgJournal {
    pool: PgPool,
    /// Write outbox rows (the NATS event publisher is on).
    outbox: bool,
    accepts: mpsc::Sender<AcceptJob>,
    /// Checked by every prepare.
    limits: Limits,
    /// When spends past every window were last deleted (ms since the epoch; 0: never).
    spends_pruned_at_ms: std::sync::atomic::AtomicI64,
}

/// How often an instance deletes the limit spends no window counts any more, in ms.
pub const SPENDS_PRUNE_INTERVAL_MS: i64 = 60_000;
/// Spends older than the longest window (a day) plus this margin are deleted, in ms.
pub const SPENDS_KEEP_MARGIN_MS: i64 = HOUR_MS;
/// Rows one prune deletes at most (the next one goes on).
pub const SPENDS_PRUNE_ROWS_MAX: i64 = 10_000;

pub(super) fn unavailable(e: sqlx::Error) -> JournalError {
    JournalError::Unavailable(e.to_string())
}

pub(super) const COLUMNS: &str = "payout_id, fingerprint, request, state, version, attempt, reason, owner, tx_hash, op_index, ledger, fee_charged, op_kind, balance_id";

/// Inserts the new payouts of one group commit; returns the ids it inserted. Each accept's
/// event (version 1) is a `payout_events` row when the outbox is on (`$5`); otherwise the
/// payout row holds it, in `accepted_owner` (migrations/0013, [`accept_event!`]).
const ACCEPT_SQL: &str = "WITH input AS (
        SELECT * FROM unnest($1::text[], $2::bytea[], $3::jsonb[]) AS t(payout_id, fingerprint, request)
     ), ins AS (
        INSERT INTO payouts (payout_id, fingerprint, request, state, version, owner, accepted_owner)
        SELECT payout_id, fingerprint, request, 'accepted', 1, $4, CASE WHEN NOT $5 THEN $4 END
        FROM input
        ON CONFLICT (payout_id) DO NOTHING
        RETURNING payout_id, fingerprint
     ), w AS (
        INSERT INTO payouts_waiting (payout_id, owner) SELECT payout_id, $4 FROM ins
     ), ev AS (
        INSERT INTO payout_events (payout_id, version, kind, state, detail)
        SELECT payout_id, 1, 'accepted', 'accepted',
               jsonb_build_object('fingerprint', encode(fingerprint, 'hex'), 'owner', $4::text)
        FROM ins WHERE $5
     ), ob AS (
        INSERT INTO outbox (event_id, payout_id, version)
        SELECT payout_id || ':1', payout_id, 1 FROM ins WHERE $5
     )
     SELECT payout_id FROM ins";

/// One fenced step of one payout: the new columns, its event, its outbox row. A step that
/// takes it out of its envelope names the envelope in its event (`tx_hash`), as the
/// settlement does: its history finds the envelope's batch events that way.
const APPLY_SQL: &str = "WITH before AS (
        SELECT tx_hash FROM payouts WHERE payout_id = $1 AND version = $2
     ), u AS (
        UPDATE payouts SET state = $3, version = $4, attempt = $5, reason = $6, owner = $7,
            tx_hash = $8, op_index = $9, ledger = $10, fee_charged = $11,
            held_until = CASE WHEN $3 = 'held' THEN held_until END, updated_at = now()
        WHERE payout_id = $1 AND version = $2
        RETURNING payout_id
     ), wait AS (
        INSERT INTO payouts_waiting (payout_id, owner) SELECT payout_id, $7 FROM u WHERE $3 = 'accepted'
        ON CONFLICT (payout_id) DO UPDATE SET owner = EXCLUDED.owner
     ), unwait AS (
        DELETE FROM payouts_waiting WHERE payout_id = ANY(ARRAY(SELECT payout_id FROM u)) AND $3 <> 'accepted'
     ), ev AS (
        INSERT INTO payout_events (payout_id, version, kind, state, detail)
        SELECT u.payout_id, $4, $12, $3,
               CASE WHEN $8::text IS NULL AND b.tx_hash IS NOT NULL
                    THEN $13 || jsonb_build_object('tx_hash', b.tx_hash) ELSE $13 END
        FROM u LEFT JOIN before b ON true
     ), ob AS (
        INSERT INTO outbox (event_id, payout_id, version)
        SELECT payout_id || ':' || $4::bigint, payout_id, $4 FROM u WHERE $14 AND $12 <> 'noted'
     )
     SELECT count(*) AS n FROM u";

/// The envelopes payout `$1` was in (docs/protocol.md, "The event log"): the one it is in or
/// was paid by, and those its own events name. Its history and the console read its batch
/// events and envelopes through them.
#[macro_export]
macro_rules! envelopes_of_payout {
    () => {
        "SELECT tx_hash FROM payouts WHERE payout_id = $1 AND tx_hash IS NOT NULL
         UNION
         SELECT detail->>'tx_hash' FROM payout_events WHERE payout_id = $1 AND detail ? 'tx_hash'"
    };
}

/// The accept's event of each payout of `FROM payouts p …` whose row holds it (its
/// `accepted_owner` is set, migrations/0013) as `payout_id, version, kind, state, detail,
/// at`, the columns of a `payout_events` row; the statement goes on with its `WHERE`.
#[macro_export]
macro_rules! accept_event {
    () => {
        "SELECT p.payout_id, 1::bigint AS version, 'accepted' AS kind, 'accepted' AS state,
                jsonb_build_object('fingerprint', encode(p.fingerprint, 'hex'), 'owner', p.accepted_owner) AS detail,
                p.created_at AS at
         FROM payouts p WHERE p.accepted_owner IS NOT NULL"
    };
}

/// The end of a CTE chain whose `u` returns the `payout_id` and new `version` of each
/// payout it changed: the outbox row of each one's event, when the parameter `$on` (the
/// outbox is on) is true. The statement goes on with its final `SELECT`.
macro_rules! outbox_rows {
    ($on:literal) => {
        concat!(
            "), ob AS (
        INSERT INTO outbox (event_id, payout_id, version)
        SELECT payout_id || ':' || version, payout_id, version FROM u WHERE ",
            $on,
            "
     )
"
        )
    };
}

/// The events of a batch step, from the CTE `evs` (`payout_id, version, kind, state,
/// detail` of each member). Members for which `$own` holds get a `payout_events` row each:
/// all of them when the outbox is on, since the publisher and the webhooks read events by
/// (payout_id, version), and those that leave the envelope (their event names it, so their
/// history still finds it). So does the member of a batch of one, whose own row costs less
/// than a batch row (a caller's memo makes many such). The others share one
/// `envelope_events` row for envelope `$tx`
/// (migrations/0012), with `$common` as the detail they all hold and `$each` (an aggregate
/// over `evs`, or NULL) as what each adds to it; its arrays are in `payout_id` order. The
/// chain goes on with `outbox_rows!`.
macro_rules! step_events {
    ($own:literal, $tx:literal, $common:literal, $each:literal) => {
        concat!(
            "), ev AS (
        INSERT INTO payout_events (payout_id, version, kind, state, detail)
        SELECT payout_id, version, kind, state, detail FROM evs
        WHERE ",
            $own,
            " OR (SELECT count(*) FROM evs) = 1
     ), bev AS (
        INSERT INTO envelope_events (tx_hash, payout_ids, versions, kinds, states, detail, details)
        SELECT ",
            $tx,
            ", array_agg(payout_id ORDER BY payout_id), array_agg(version ORDER BY payout_id),
               array_agg(kind ORDER BY payout_id), array_agg(state ORDER BY payout_id), ",
            $common,
            ", ",
            $each,
            "
        FROM evs WHERE NOT (",
            $own,
            " OR (SELECT count(*) FROM evs) = 1) HAVING count(*) > 0
     "
        )
    };
}

// The statements that move the payouts they name (by id) guard their state as
// `(state …) IS TRUE`: the same test (state is NOT NULL), but one no index on state can
// answer, so the rows are found by primary key. Written plainly, the planner could read
// them through a partial index on state instead, and read every entry of it, the dead
// ones included: a settlement of 100 payouts that took 18 ms instead of 4 in a benchmark
// run (docs/performance.md). No index names `state` any more (migrations/0011, so that
// these updates can be HOT); the guards stay written so, and a new index on `state` could
// not change how these rows are found.
//
// Every statement that moves a payout into or out of `accepted` keeps `payouts_waiting`
// in step in the same statement: the ready queue's read-back and the adoption of orphans
// find the waiting payouts there. It names the rows it changes there as
// `payout_id = ANY(ARRAY(…))`, which the primary key answers whatever the table's
// statistics say: the table fills and empties faster than ANALYZE follows (a burst of
// 100,000 accepts is a table the planner still believes to be almost empty).

/// Every member of a batch from `accepted` (at its version) to `prepared`; returns those it
/// moved (the caller rolls back unless all moved).
const PREPARE_MEMBERS_SQL: &str = concat!(
    "WITH m AS (
        SELECT * FROM unnest($1::text[], $2::bigint[], $3::int[]) AS t(payout_id, version, op_index)
     ), u AS (
        UPDATE payouts p SET state = 'prepared', version = p.version + 1, attempt = p.attempt + 1,
            reason = NULL, tx_hash = $4, op_index = m.op_index, updated_at = now()
        FROM m WHERE p.payout_id = m.payout_id AND p.version = m.version AND (p.state = 'accepted') IS TRUE
        RETURNING p.payout_id, p.version, p.op_index
     ), w AS (
        DELETE FROM payouts_waiting WHERE payout_id = ANY(ARRAY(SELECT payout_id FROM u))
     ), evs AS (
        SELECT payout_id, version, 'prepared' AS kind, 'prepared' AS state, op_index,
               jsonb_build_object('tx_hash', $4::text, 'op_index', op_index) AS detail
        FROM u
     ",
    step_events!(
        "$5",
        "$4",
        "jsonb_build_object('tx_hash', $4::text)",
        "array_agg(jsonb_build_object('op_index', op_index) ORDER BY payout_id)"
    ),
    outbox_rows!("$5"),
    "     SELECT payout_id FROM u"
);

const MARK_SUBMITTED_SQL: &str = concat!(
    "WITH u AS (
        UPDATE payouts SET state = 'submitted', version = version + 1, updated_at = now()
        WHERE payout_id = ANY(SELECT unnest(member_ids) FROM envelopes WHERE tx_hash = $1)
          AND tx_hash = $1 AND (state = 'prepared') IS TRUE
        RETURNING payout_id, version
     ), evs AS (
        SELECT payout_id, version, 'submitted' AS kind, 'submitted' AS state,
               jsonb_build_object('note', $2::text) AS detail
        FROM u
     ",
    step_events!("$3", "$1", "jsonb_build_object('note', $2::text)", "NULL"),
    outbox_rows!("$3"),
    "     SELECT payout_id, version FROM u"
);

/// The envelope's end and each member's step, mirroring `Step::apply_to`: `kind` is
/// confirmed | failed | requeued | parked (requeued, parked instead); a parked payout stays
/// parked (without its envelope) and keeps its reason. `op_kind` (NULL: unchanged) is the
/// operation of a rerouted member's next envelope; `balance_id` that of a confirmed
/// claimable balance.
const SETTLE_SQL: &str = concat!(
    "WITH env AS (
        UPDATE envelopes SET status = $2, ledger = $3, fee_charged = $4, note = $5, updated_at = now()
        WHERE tx_hash = $1 AND status = 'live'
     ), s AS (
        SELECT * FROM unnest($6::text[], $7::text[], $8::text[], $9::text[], $10::jsonb[],
                             $13::text[], $14::text[])
            AS t(payout_id, kind, event_kind, reason, detail, op_kind, balance_id)
     ), u AS (
        UPDATE payouts p SET
            state = CASE
                WHEN s.kind IN ('confirmed', 'failed') THEN s.kind
                WHEN p.state = 'parked' OR s.kind = 'parked' THEN 'parked'
                ELSE 'accepted' END,
            version = p.version + 1,
            reason = CASE
                WHEN s.kind = 'confirmed' THEN NULL
                WHEN p.state = 'parked' AND s.kind IN ('requeued', 'parked') THEN p.reason
                ELSE s.reason END,
            tx_hash = CASE WHEN s.kind IN ('confirmed', 'failed') THEN p.tx_hash END,
            op_index = CASE WHEN s.kind IN ('confirmed', 'failed') THEN p.op_index END,
            ledger = CASE WHEN s.kind IN ('confirmed', 'failed') THEN $3 ELSE p.ledger END,
            fee_charged = CASE WHEN s.kind IN ('confirmed', 'failed') THEN $4 ELSE p.fee_charged END,
            owner = CASE WHEN s.kind = 'requeued' AND p.state <> 'parked' THEN $11 ELSE p.owner END,
            op_kind = COALESCE(s.op_kind, p.op_kind),
            balance_id = CASE WHEN s.kind = 'confirmed' THEN s.balance_id ELSE p.balance_id END,
            updated_at = now()
        FROM s
        WHERE p.payout_id = s.payout_id AND p.tx_hash = $1
          AND (p.state IN ('prepared', 'submitted', 'parked')) IS TRUE
        RETURNING p.payout_id, p.state, p.version, p.attempt, p.owner, p.tx_hash, p.reason,
            p.op_index, p.ledger, p.fee_charged, p.op_kind, p.balance_id
     ), w AS (
        INSERT INTO payouts_waiting (payout_id, owner)
        SELECT payout_id, owner FROM u WHERE state = 'accepted'
        ON CONFLICT (payout_id) DO UPDATE SET owner = EXCLUDED.owner
     ), evs AS (
        -- A member that leaves the envelope (requeued, parked, rerouted) names it.
        SELECT u.payout_id, u.version, s.event_kind AS kind, u.state,
               CASE WHEN u.tx_hash IS NULL THEN s.detail || jsonb_build_object('tx_hash', $1::text)
                    ELSE s.detail END AS detail,
               u.tx_hash IS NULL AS leaves
        FROM u JOIN s USING (payout_id)
     ",
    step_events!(
        "($12 OR leaves)",
        "$1",
        "coalesce($15, '{}')",
        "CASE WHEN $15 IS NULL THEN array_agg(detail ORDER BY payout_id) END"
    ),
    outbox_rows!("$12"),
    // Every column a step changes: the members' live actors take them into their caches.
    "     SELECT payout_id, state, version, attempt, owner, reason, tx_hash, op_index, ledger,
            fee_charged, op_kind, balance_id FROM u"
);

/// The end of a statement that hands payouts (the CTE `u`) back to `accepted` under owner
/// $1: the event `$kind` and its outbox row (when $3), then the rows as `COLUMNS` reads them.
macro_rules! owned_again {
    ($kind:literal) => {
        concat!(
            "), ev AS (
        INSERT INTO payout_events (payout_id, version, kind, state, detail)
        SELECT payout_id, version, '",
            $kind,
            "', 'accepted', jsonb_build_object('owner', $1::text) FROM u
",
            outbox_rows!("$3"),
            "     SELECT payout_id, fingerprint, request, state, version, attempt, reason, owner, tx_hash,
            op_index, ledger, fee_charged, op_kind, balance_id FROM u"
        )
    };
}

/// Accepted payouts without a living owner (none, gone, or unable to sign) become $1's.
const ADOPT_SQL: &str = concat!(
    "WITH dead AS (
        -- Gone, or alive without a signing lease (it cannot pay what it owns).
        SELECT instance_id FROM instances i WHERE instance_id <> $1
          AND (expires_at <= now() OR NOT EXISTS (
                SELECT 1 FROM channel_accounts c WHERE c.owner = i.instance_id AND c.owner_can_sign))
     ), pick AS (
        SELECT payout_id FROM payouts_waiting w
        WHERE owner IS DISTINCT FROM $1
          AND (owner IS NULL OR owner IN (SELECT instance_id FROM dead)
               OR NOT EXISTS (SELECT 1 FROM instances i WHERE i.instance_id = w.owner))
        ORDER BY payout_id LIMIT $2
        FOR UPDATE SKIP LOCKED
     ), u AS (
        UPDATE payouts p SET owner = $1, version = p.version + 1, updated_at = now()
        FROM pick WHERE p.payout_id = pick.payout_id AND (p.state = 'accepted') IS TRUE
        RETURNING p.*
     ), w AS (
        UPDATE payouts_waiting SET owner = $1 WHERE payout_id = ANY(ARRAY(SELECT payout_id FROM u))
",
    owned_again!("adopted")
);

/// What is spent of asset $1 in the last $2 and $3 seconds (hour, day), by the database's
/// clock: payouts of live and applied envelopes.
const USAGE_SQL: &str = "SELECT
        LEAST(coalesce(sum(s.amount) FILTER (WHERE s.at > now() - make_interval(secs => $2)), 0),
              9223372036854775807)::bigint AS hour_amount,
        coalesce(sum(s.payouts) FILTER (WHERE s.at > now() - make_interval(secs => $2)), 0)
            AS hour_count,
        LEAST(coalesce(sum(s.amount), 0), 9223372036854775807)::bigint AS day_amount,
        coalesce(sum(s.payouts), 0) AS day_count,
        (extract(epoch FROM min(s.at) FILTER (WHERE s.at > now() - make_interval(secs => $2))) * 1000)::bigint
            AS hour_oldest_ms,
        (extract(epoch FROM min(s.at)) * 1000)::bigint AS day_oldest_ms,
        (extract(epoch FROM now()) * 1000)::bigint AS now_ms
     FROM limit_spends s JOIN envelopes e ON e.tx_hash = s.tx_hash
     WHERE s.asset = $1 AND s.at > now() - make_interval(secs => $3)
       AND e.status IN ('live', 'applied')";

/// The batch's members as spends (for the limits' windows): one row per asset, with the
/// members' sum and count.
const SPENDS_SQL: &str = "INSERT INTO limit_spends (tx_hash, asset, amount, payouts)
     SELECT $1, asset, sum(amount), count(*)
     FROM unnest($2::text[], $3::bigint[]) AS t(asset, amount) GROUP BY asset";

/// Payouts still `accepted` at the version read become `held` with their reason.
const HOLD_SQL: &str = concat!(
    "WITH h AS (
        SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[])
            AS t(payout_id, version, reason, until_ms)
     ), u AS (
        UPDATE payouts p SET state = 'held', version = p.version + 1, reason = h.reason,
            held_until = CASE WHEN h.until_ms IS NULL THEN NULL
                              ELSE to_timestamp(h.until_ms / 1000.0) END,
            updated_at = now()
        FROM h WHERE p.payout_id = h.payout_id AND p.version = h.version
          AND (p.state = 'accepted') IS TRUE AND p.tx_hash IS NULL
        RETURNING p.payout_id, p.version, h.reason, h.until_ms
     ), w AS (
        DELETE FROM payouts_waiting WHERE payout_id = ANY(ARRAY(SELECT payout_id FROM u))
     ), ev AS (
        INSERT INTO payout_events (payout_id, version, kind, state, detail)
        SELECT payout_id, version, 'held', 'held',
               jsonb_build_object('reason', reason, 'until_unix_ms', until_ms) FROM u
",
    outbox_rows!("$5"),
    "     SELECT payout_id FROM u"
);

/// Held payouts whose hold ran out go back to `accepted`, owned by $1.
const RELEASE_SQL: &str = concat!(
    "WITH pick AS (
        SELECT payout_id FROM payouts
        WHERE state = 'held' AND held_until IS NOT NULL AND held_until <= now()
        ORDER BY held_until, payout_id LIMIT $2
        FOR UPDATE SKIP LOCKED
     ), u AS (
        UPDATE payouts p SET state = 'accepted', owner = $1, reason = NULL, held_until = NULL,
            version = p.version + 1, updated_at = now()
        FROM pick WHERE p.payout_id = pick.payout_id
        RETURNING p.*
     ), w AS (
        INSERT INTO payouts_waiting (payout_id, owner) SELECT payout_id, $1 FROM u
        ON CONFLICT (payout_id) DO UPDATE SET owner = EXCLUDED.owner
",
    owned_again!("released")
);

const CLAIM_SQL: &str = "UPDATE channel_accounts c
        SET owner = $1, lease_epoch = c.lease_epoch + 1, owner_can_sign = $3, leased_at = now()
        WHERE c.account = $2 AND (
            c.owner IS NULL OR c.owner = $1
            OR NOT EXISTS (SELECT 1 FROM instances i WHERE i.instance_id = c.owner AND i.expires_at > now())
            OR ($3 AND NOT c.owner_can_sign))
        RETURNING lease_epoch";

impl PgJournal {
    /// The journal with default group commit and the outbox off.
    pub async fn new(pool: PgPool) -> Self {
        Self::with_options(pool, false, AcceptBatching::default())
    }

    /// `outbox`: write outbox rows for the event publisher.
    pub fn with_options(pool: PgPool, outbox: bool, batching: AcceptBatching) -> Self {
        let (tx, rx) = mpsc::channel(batching.queue_max.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..batching.writers.max(1) {
            tokio::spawn(accept_writer(
                pool.clone(),
                rx.clone(),
                batching.rows_max.max(1),
                outbox,
            ));
        }
        Self {
            pool,
            outbox,
            accepts: tx,
            limits: Limits::NONE,
            spends_pruned_at_ms: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Deletes the limit spends older than the longest window (a day, plus a margin), at
    /// most every `SPENDS_PRUNE_INTERVAL_MS` and `SPENDS_PRUNE_ROWS_MAX` rows at a time;
    /// returns how many it deleted. Every payout leaves one spend, so without this the
    /// table would grow for ever.
    pub async fn prune_spends(&self) -> Result<u64, JournalError> {
        use std::sync::atomic::Ordering;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let last = self.spends_pruned_at_ms.load(Ordering::Relaxed);
        if now - last < SPENDS_PRUNE_INTERVAL_MS
            || self
                .spends_pruned_at_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return Ok(0);
        }
        let done = sqlx::query(
            "DELETE FROM limit_spends WHERE ctid IN (
                SELECT ctid FROM limit_spends
                WHERE at < now() - make_interval(secs => $1::bigint / 1000.0) LIMIT $2)",
        )
        .bind(DAY_MS + SPENDS_KEEP_MARGIN_MS)
        .bind(SPENDS_PRUNE_ROWS_MAX)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected())
    }

    /// The spending limits every prepare checks.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits of `batch`'s assets, read under a lock per asset held until the prepare
    /// commits (so two instances cannot both spend the same room); the members they refuse.
    async fn over_limit(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        batch: &Batch,
    ) -> Result<Vec<Hold>, JournalError> {
        if self.limits.is_empty() {
            return Ok(Vec::new());
        }
        let spends = batch.spends();
        let mut usage = BTreeMap::new();
        for asset in self.limits.windowed_assets(&spends) {
            let key = asset.to_string();
            sqlx::query(
                "SELECT pg_advisory_xact_lock(hashtextextended('payoutd.limit:' || $1, 0))",
            )
            .bind(&key)
            .execute(&mut **tx)
            .await
            .map_err(unavailable)?;
            let row = sqlx::query(USAGE_SQL)
                .bind(&key)
                .bind(HOUR_MS as f64 / 1000.0)
                .bind(DAY_MS as f64 / 1000.0)
                .fetch_one(&mut **tx)
                .await
                .map_err(unavailable)?;
            let count = |c: &str| -> Result<u64, JournalError> {
                Ok(row.try_get::<i64, _>(c).map_err(unavailable)?.max(0) as u64)
            };
            usage.insert(
                key,
                Usage {
                    hour_amount: row.try_get("hour_amount").map_err(unavailable)?,
                    hour_count: count("hour_count")?,
                    day_amount: row.try_get("day_amount").map_err(unavailable)?,
                    day_count: count("day_count")?,
                    hour_oldest_ms: row.try_get("hour_oldest_ms").map_err(unavailable)?,
                    day_oldest_ms: row.try_get("day_oldest_ms").map_err(unavailable)?,
                    now_ms: row.try_get("now_ms").map_err(unavailable)?,
                },
            );
        }
        Ok(self.limits.check(&spends, &usage))
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn load_many(&self, ids: &[String]) -> Result<Vec<PayoutRecord>, JournalError> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!("SELECT {COLUMNS} FROM payouts WHERE payout_id = ANY($1)")
        });
        let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.as_str()))
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(parse_row).collect()
    }
}

/// One group-commit writer: takes every accept waiting (up to `rows_max`), inserts them in
/// one statement, answers each. While a statement runs, the next accepts queue up, so the
/// batch grows with the load.
async fn accept_writer(
    pool: PgPool,
    queue: Arc<Mutex<mpsc::Receiver<AcceptJob>>>,
    rows_max: usize,
    outbox: bool,
) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut queue = queue.lock().await;
            match queue.recv().await {
                Some(job) => jobs.push(job),
                None => return,
            }
            while jobs.len() < rows_max {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        accept_jobs(&pool, jobs, outbox).await;
    }
}

/// A statement carries one owner; the jobs of one instance all name the same one, so this
/// is one group in practice.
async fn accept_jobs(pool: &PgPool, jobs: Vec<AcceptJob>, outbox: bool) {
    let mut by_owner: std::collections::BTreeMap<String, Vec<AcceptJob>> = Default::default();
    for job in jobs {
        by_owner.entry(job.owner.clone()).or_default().push(job);
    }
    for (owner, jobs) in by_owner {
        accept_group(pool, &owner, jobs, outbox).await;
    }
}

// Long because it is one group commit read top to bottom: bind the batch, run the one
// statement, answer every caller from its rows (or every caller with the error).
async fn accept_group(pool: &PgPool, owner: &str, jobs: Vec<AcceptJob>, outbox: bool) {
    // One row per id per statement (the actors make this so; a repeat is answered after).
    let mut seen = std::collections::HashSet::new();
    let (first, repeats): (Vec<AcceptJob>, Vec<AcceptJob>) = jobs
        .into_iter()
        .partition(|j| seen.insert(j.request.payout_id().clone()));
    let mut ids = Vec::with_capacity(first.len());
    let mut fingerprints = Vec::with_capacity(first.len());
    let mut requests = Vec::with_capacity(first.len());
    for job in &first {
        ids.push(job.request.payout_id().to_string());
        fingerprints.push(job.request.fingerprint().0.to_vec());
        requests.push(serde_json::to_value(job.request.raw()).unwrap_or_default());
    }
    let inserted = sqlx::query(ACCEPT_SQL)
        .bind(&ids)
        .bind(&fingerprints)
        .bind(&requests)
        .bind(owner)
        .bind(outbox)
        .fetch_all(pool)
        .await;
    let mut inserted: std::collections::HashSet<String> = match inserted {
        Ok(rows) => rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>("payout_id").ok())
            .collect(),
        Err(e) => {
            let err = unavailable(e);
            for job in first.into_iter().chain(repeats) {
                let _ = job.reply.send(Err(err.clone()));
            }
            return;
        }
    };
    let mut existing = Vec::new();
    for job in first.into_iter().chain(repeats) {
        let id = job.request.payout_id().to_string();
        // `remove`: a second accept of an id inserted by this statement is a duplicate.
        if inserted.remove(&id) {
            let record = PayoutRecord::accepted(job.request.clone(), owner);
            let _ = job.reply.send(Ok(Accepted::Created(record)));
        } else {
            existing.push(job);
        }
    }
    if existing.is_empty() {
        return;
    }
    let ids: Vec<String> = existing
        .iter()
        .map(|j| j.request.payout_id().to_string())
        .collect();
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!("SELECT {COLUMNS} FROM payouts WHERE payout_id = ANY($1)")
    });
    let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.as_str()))
        .bind(&ids)
        .fetch_all(pool)
        .await;
    let records: Result<Vec<PayoutRecord>, JournalError> = match rows {
        Ok(rows) => rows.iter().map(parse_row).collect(),
        Err(e) => Err(unavailable(e)),
    };
    match records {
        Ok(records) => {
            for job in existing {
                let found = records
                    .iter()
                    .find(|r| r.id() == job.request.payout_id())
                    .cloned();
                let answer = found
                    .map(Accepted::Existing)
                    .ok_or_else(|| JournalError::NotFound(job.request.payout_id().to_string()));
                let _ = job.reply.send(answer);
            }
        }
        Err(e) => {
            for job in existing {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

pub(super) fn parse_row(row: &PgRow) -> Result<PayoutRecord, JournalError> {
    let id: String = row.try_get("payout_id").map_err(unavailable)?;
    let corrupt = |detail: String| JournalError::Corrupt {
        id: id.clone(),
        detail,
    };
    let get = |e: sqlx::Error| corrupt(e.to_string());
    let request: serde_json::Value = row.try_get("request").map_err(get)?;
    let raw: RawPayoutRequest =
        serde_json::from_value(request).map_err(|e| corrupt(e.to_string()))?;
    let request = raw.parse().map_err(|e| corrupt(e.to_string()))?;
    let fp: Vec<u8> = row.try_get("fingerprint").map_err(get)?;
    let fingerprint = Fingerprint(
        fp.try_into()
            .map_err(|_| corrupt("fingerprint length".into()))?,
    );
    let s = step_columns(row, request.payout_id().clone())?;
    Ok(s.into_record(request, fingerprint))
}

fn parse_settled(row: &PgRow) -> Result<Settled, JournalError> {
    step_columns(row, row_id(row)?)
}

/// The row's `payout_id`.
fn row_id(row: &PgRow) -> Result<PayoutId, JournalError> {
    let id: String = row.try_get("payout_id").map_err(unavailable)?;
    PayoutId::parse(&id).map_err(|e| JournalError::Corrupt {
        id: id.clone(),
        detail: e.to_string(),
    })
}

/// The columns of payout `id`'s row that its steps change (all but the request and the
/// fingerprint), as `COLUMNS` and the settlement's statement return them.
fn step_columns(row: &PgRow, id: PayoutId) -> Result<Settled, JournalError> {
    let corrupt = |detail: String| JournalError::Corrupt {
        id: id.to_string(),
        detail,
    };
    let get = |e: sqlx::Error| corrupt(e.to_string());
    let state: String = row.try_get("state").map_err(get)?;
    let state =
        PayoutState::parse(&state).ok_or_else(|| corrupt(format!("unknown state {state}")))?;
    let hash: Option<String> = row.try_get("tx_hash").map_err(get)?;
    let op_index: Option<i32> = row.try_get("op_index").map_err(get)?;
    let envelope = match hash {
        None => None,
        Some(h) => Some(EnvelopeRef {
            hash: TxHash::from_hex(&h).ok_or_else(|| corrupt("tx_hash".into()))?,
            op_index: u32::try_from(op_index.unwrap_or(0)).map_err(|e| corrupt(e.to_string()))?,
        }),
    };
    let ledger: Option<i32> = row.try_get("ledger").map_err(get)?;
    let fee_charged: Option<i64> = row.try_get("fee_charged").map_err(get)?;
    let op_kind: String = row.try_get("op_kind").map_err(get)?;
    let op_kind =
        OpKind::parse(&op_kind).ok_or_else(|| corrupt(format!("unknown op_kind {op_kind}")))?;
    Ok(Settled {
        id: id.clone(),
        state,
        version: row.try_get("version").map_err(get)?,
        attempt: u32::try_from(row.try_get::<i32, _>("attempt").map_err(get)?)
            .map_err(|e| corrupt(e.to_string()))?,
        reason: row.try_get("reason").map_err(get)?,
        owner: row.try_get("owner").map_err(get)?,
        envelope,
        inclusion: match (ledger, fee_charged) {
            (Some(l), Some(f)) => Some(Inclusion {
                ledger: u32::try_from(l).map_err(|e| corrupt(e.to_string()))?,
                fee_charged: f,
            }),
            _ => None,
        },
        op_kind,
        balance_id: row.try_get("balance_id").map_err(get)?,
    })
}

fn parse_ready(row: &PgRow) -> Result<Ready, JournalError> {
    parse_row(row).map(|r| Ready::of(&r))
}

fn account(text: &str, what: &str) -> Result<AccountId, JournalError> {
    AccountId::parse(text).map_err(|e| JournalError::Corrupt {
        id: what.to_owned(),
        detail: e.to_string(),
    })
}

/// The detail the events of a settlement's members that stay in the envelope (confirmed or
/// failed) hold, when they all hold the same: the batch's event row then stores it once.
fn shared_detail<'a>(
    details: &'a [serde_json::Value],
    kinds: &[&str],
) -> Option<&'a serde_json::Value> {
    let mut staying = details
        .iter()
        .zip(kinds)
        .filter(|(_, k)| matches!(**k, "confirmed" | "failed"))
        .map(|(d, _)| d);
    let first = staying.next()?;
    staying.all(|d| d == first).then_some(first)
}

/// `(kind, event kind, reason)` of a settlement step, as SETTLE_SQL takes it.
fn settle_kind(step: &Step) -> Result<(&'static str, &'static str, Option<String>), JournalError> {
    Ok(match step {
        Step::Confirmed { .. } => ("confirmed", "confirmed", None),
        Step::Failed { reason, .. } => ("failed", "failed", Some(reason.clone())),
        Step::Requeued {
            reason, park: None, ..
        } => ("requeued", "requeued", Some(reason.clone())),
        Step::Requeued {
            park: Some(why), ..
        } => ("parked", "parked", Some(why.clone())),
        Step::Rerouted { reason, .. } => ("requeued", "rerouted", Some(reason.clone())),
        other => {
            return Err(JournalError::Unavailable(format!(
                "{} is not a settlement step",
                other.event_kind()
            )));
        }
    })
}

#[async_trait]
impl PayoutStore for PgJournal {
    async fn accept(&self, request: &PayoutRequest, owner: &str) -> Result<Accepted, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.accepts
            .send(AcceptJob {
                request: request.clone(),
                owner: owner.to_owned(),
                reply,
            })
            .await
            .map_err(|_| JournalError::Unavailable("journal writers stopped".into()))?;
        answer
            .await
            .map_err(|_| JournalError::Unavailable("journal writer dropped the accept".into()))?
    }

    async fn load(&self, id: &PayoutId) -> Result<Option<PayoutRecord>, JournalError> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!("SELECT {COLUMNS} FROM payouts WHERE payout_id = $1")
        });
        let row = sqlx::query(sqlx::AssertSqlSafe(SQL.as_str()))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(parse_row).transpose()
    }

    async fn apply(
        &self,
        current: &PayoutRecord,
        step: &Step,
    ) -> Result<PayoutRecord, JournalError> {
        if !step.allowed_from(current) {
            return Err(JournalError::Stale(current.id().to_string()));
        }
        let mut next = current.clone();
        step.apply_to(&mut next);
        let row = sqlx::query(APPLY_SQL)
            .bind(current.id().as_str())
            .bind(current.version)
            .bind(next.state.as_str())
            .bind(next.version)
            .bind(next.attempt as i32)
            .bind(next.reason.clone())
            .bind(next.owner.clone())
            .bind(next.envelope.map(|e| e.hash.to_hex()))
            .bind(next.envelope.map(|e| e.op_index as i32))
            .bind(next.inclusion.map(|i| i.ledger as i32))
            .bind(next.inclusion.map(|i| i.fee_charged))
            .bind(step.event_kind())
            .bind(step.detail())
            .bind(self.outbox)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        let n: i64 = row.try_get("n").map_err(unavailable)?;
        if n == 1 {
            return Ok(next);
        }
        match self.load(current.id()).await? {
            Some(_) => Err(JournalError::Stale(current.id().to_string())),
            None => Err(JournalError::NotFound(current.id().to_string())),
        }
    }

    async fn events(&self, id: &PayoutId) -> Result<Vec<PayoutEvent>, JournalError> {
        let rows = sqlx::query(
            // Its own rows, its accept when its row holds it (migrations/0013), and its
            // entries in the batch steps of the envelopes it was in (migrations/0012): the
            // one it is in, and those its own events name.
            concat!(
                "WITH own AS (
                 SELECT version, kind, state, detail, at FROM payout_events WHERE payout_id = $1
                 UNION ALL
                 SELECT version, kind, state, detail, at FROM (",
                crate::accept_event!(),
                " AND p.payout_id = $1) a
             ), envs AS (",
                crate::envelopes_of_payout!(),
                "), log AS (
                 SELECT * FROM own
                 UNION ALL
                 SELECT b.versions[i], b.kinds[i], b.states[i],
                        b.detail || coalesce(b.details[i], '{}'), b.at
                 FROM envs JOIN envelope_events b USING (tx_hash)
                 CROSS JOIN LATERAL array_position(b.payout_ids, $1::text) AS i
                 WHERE i IS NOT NULL
             )
             SELECT version, kind, state, detail,
                    to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS at
             FROM log ORDER BY version"
            ),
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state").map_err(unavailable)?;
                Ok(PayoutEvent {
                    version: r.try_get("version").map_err(unavailable)?,
                    kind: r.try_get("kind").map_err(unavailable)?,
                    state: PayoutState::parse(&state).ok_or_else(|| JournalError::Corrupt {
                        id: id.to_string(),
                        detail: format!("state {state}"),
                    })?,
                    detail: r.try_get("detail").map_err(unavailable)?,
                    at: r.try_get("at").map_err(unavailable)?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl BatchStore for PgJournal {
    // Long because it is one database transaction whose order of statements is the protocol
    // (docs/protocol.md, "Batches"): fence the lease, check the pause and the limits, journal
    // the envelope and move every member, commit. Cut up, the order would no longer be seen.
    async fn prepare(&self, lease: &ChannelLease, batch: &Batch) -> Result<(), PrepareError> {
        let e = &batch.envelope;
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // FOR SHARE: a pause (an UPDATE of this row) waits for prepares in flight, and
        // every prepare after it sees it.
        let paused: bool = sqlx::query_scalar("SELECT paused FROM controls FOR SHARE")
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
            .unwrap_or(false);
        if paused {
            return Err(PrepareError::Paused);
        }
        let held = sqlx::query(
            "SELECT 1 FROM channel_accounts WHERE account = $1 AND owner = $2 AND lease_epoch = $3 FOR UPDATE",
        )
        .bind(lease.account.to_strkey())
        .bind(&lease.owner)
        .bind(lease.epoch)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        if held.is_none() {
            return Err(PrepareError::LeaseLost);
        }
        let ids: Vec<String> = batch
            .members
            .iter()
            .map(|m| m.ready.id().to_string())
            .collect();
        let inserted = sqlx::query(
            "INSERT INTO envelopes (tx_hash, source, sequence, fee, max_time, min_ledger, max_ledger,
                                    built_ledger, envelope_xdr, member_ids, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'live')",
        )
        .bind(e.hash.to_hex())
        .bind(e.source.to_strkey())
        .bind(e.sequence)
        .bind(e.fee_stroops as i32)
        .bind(e.max_time as i64)
        .bind(e.ledger_bounds.map(|b| b.0 as i32))
        .bind(e.ledger_bounds.map(|b| b.1 as i32))
        .bind(batch.built_ledger as i32)
        .bind(&e.xdr)
        .bind(&ids)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                return Err(PrepareError::SequenceTaken);
            }
            Err(e) => return Err(unavailable(e).into()),
        }
        let versions: Vec<i64> = batch.members.iter().map(|m| m.ready.version).collect();
        let indexes: Vec<i32> = batch.members.iter().map(|m| m.op_index as i32).collect();
        let moved = sqlx::query(PREPARE_MEMBERS_SQL)
            .bind(&ids)
            .bind(&versions)
            .bind(&indexes)
            .bind(e.hash.to_hex())
            .bind(self.outbox)
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        if moved.len() != ids.len() {
            let moved: std::collections::HashSet<String> = moved
                .iter()
                .filter_map(|r| r.try_get::<String, _>("payout_id").ok())
                .collect();
            // Nothing of the batch may be journaled without all of it.
            tx.rollback().await.map_err(unavailable)?;
            let stale = batch
                .members
                .iter()
                .map(|m| m.ready.id().clone())
                .filter(|id| !moved.contains(id.as_str()))
                .collect();
            return Err(PrepareError::Stale(stale));
        }
        let holds = self.over_limit(&mut tx, batch).await?;
        if !holds.is_empty() {
            tx.rollback().await.map_err(unavailable)?;
            return Err(PrepareError::OverLimit(holds));
        }
        let assets: Vec<String> = batch
            .members
            .iter()
            .map(|m| m.ready.request.asset().to_string())
            .collect();
        let amounts: Vec<i64> = batch
            .members
            .iter()
            .map(|m| m.ready.request.amount().stroops())
            .collect();
        sqlx::query(SPENDS_SQL)
            .bind(e.hash.to_hex())
            .bind(&assets)
            .bind(&amounts)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(())
    }

    async fn mark_submitted(
        &self,
        hash: &TxHash,
        note: &str,
    ) -> Result<Vec<(PayoutId, i64)>, JournalError> {
        let rows = sqlx::query(MARK_SUBMITTED_SQL)
            .bind(hash.to_hex())
            .bind(note)
            .bind(self.outbox)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| Ok((row_id(r)?, r.try_get("version").map_err(unavailable)?)))
            .collect()
    }

    async fn settle(
        &self,
        hash: &TxHash,
        settlement: &Settlement,
        owner: &str,
    ) -> Result<Vec<Settled>, JournalError> {
        let n = settlement.members.len();
        let (mut ids, mut kinds, mut event_kinds, mut reasons, mut details) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut op_kinds, mut balance_ids) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (id, step) in &settlement.members {
            let (kind, event_kind, reason) = settle_kind(step)?;
            ids.push(id.to_string());
            kinds.push(kind);
            event_kinds.push(event_kind);
            reasons.push(reason);
            details.push(step.detail());
            op_kinds.push(match step {
                Step::Rerouted { op_kind, .. } => Some(op_kind.as_str()),
                _ => None,
            });
            balance_ids.push(match step {
                Step::Confirmed { balance_id, .. } => balance_id.as_deref(),
                _ => None,
            });
        }
        let inclusion = settlement.inclusion;
        let rows = sqlx::query(SETTLE_SQL)
            .bind(hash.to_hex())
            .bind(settlement.status.as_str())
            .bind(inclusion.map(|i| i.ledger as i32))
            .bind(inclusion.map(|i| i.fee_charged))
            .bind(&settlement.note)
            .bind(&ids)
            .bind(&kinds)
            .bind(&event_kinds)
            .bind(&reasons)
            .bind(&details)
            .bind(owner)
            .bind(self.outbox)
            .bind(&op_kinds)
            .bind(&balance_ids)
            .bind(shared_detail(&details, &kinds))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(parse_settled).collect()
    }

    async fn hold(&self, holds: &[(Ready, Hold)]) -> Result<Vec<PayoutId>, JournalError> {
        if holds.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = holds.iter().map(|(r, _)| r.id().as_str()).collect();
        let versions: Vec<i64> = holds.iter().map(|(r, _)| r.version).collect();
        let reasons: Vec<&str> = holds.iter().map(|(_, h)| h.reason.as_str()).collect();
        let until: Vec<Option<i64>> = holds.iter().map(|(_, h)| h.until_unix_ms).collect();
        let rows: Vec<String> = sqlx::query_scalar(HOLD_SQL)
            .bind(&ids)
            .bind(&versions)
            .bind(&reasons)
            .bind(&until)
            .bind(self.outbox)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|id| {
                PayoutId::parse(id).map_err(|e| JournalError::Corrupt {
                    id: id.clone(),
                    detail: e.to_string(),
                })
            })
            .collect()
    }

    async fn open_batches(&self, channel: &AccountId) -> Result<Vec<Batch>, JournalError> {
        let rows = sqlx::query(
            "SELECT tx_hash, envelope_xdr, source, sequence, fee, max_time, min_ledger, max_ledger,
                    built_ledger, member_ids
             FROM envelopes WHERE source = $1 AND status = 'live' ORDER BY sequence",
        )
        .bind(channel.to_strkey())
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let mut batches = Vec::with_capacity(rows.len());
        for row in rows {
            let hash_text: String = row.try_get("tx_hash").map_err(unavailable)?;
            let corrupt = |detail: String| JournalError::Corrupt {
                id: hash_text.clone(),
                detail,
            };
            let hash = TxHash::from_hex(&hash_text).ok_or_else(|| corrupt("tx_hash".into()))?;
            let min_ledger: Option<i32> = row.try_get("min_ledger").map_err(unavailable)?;
            let max_ledger: Option<i32> = row.try_get("max_ledger").map_err(unavailable)?;
            let source: String = row.try_get("source").map_err(unavailable)?;
            let envelope = Envelope {
                xdr: row.try_get("envelope_xdr").map_err(unavailable)?,
                hash,
                source: account(&source, &hash_text)?,
                sequence: row.try_get("sequence").map_err(unavailable)?,
                fee_stroops: u32::try_from(row.try_get::<i32, _>("fee").map_err(unavailable)?)
                    .map_err(|e| corrupt(e.to_string()))?,
                max_time: u64::try_from(row.try_get::<i64, _>("max_time").map_err(unavailable)?)
                    .map_err(|e| corrupt(e.to_string()))?,
                ledger_bounds: match (min_ledger, max_ledger) {
                    (Some(a), Some(b)) => Some((a as u32, b as u32)),
                    _ => None,
                },
            };
            let built: i32 = row.try_get("built_ledger").map_err(unavailable)?;
            let member_ids: Vec<String> = row.try_get("member_ids").map_err(unavailable)?;
            let members = self
                .load_many(&member_ids)
                .await?
                .into_iter()
                .filter(|r| r.envelope.map(|e| e.hash) == Some(hash) && !r.state.is_terminal())
                .map(|r| Member {
                    op_index: r.envelope.map(|e| e.op_index).unwrap_or(0),
                    ready: Ready::of(&r),
                })
                .collect();
            batches.push(Batch {
                envelope,
                built_ledger: u32::try_from(built).unwrap_or(0),
                members,
            });
        }
        Ok(batches)
    }
}

impl PgJournal {
    /// Appends an admin action to the audit trail.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        reason: &str,
        detail: serde_json::Value,
    ) -> Result<(), JournalError> {
        sqlx::query(
            "INSERT INTO admin_audit (actor, action, reason, detail) VALUES ($1, $2, $3, $4)",
        )
        .bind(actor)
        .bind(action)
        .bind(reason)
        .bind(detail)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}

fn pause_of(row: &PgRow) -> Result<Option<Pause>, JournalError> {
    let paused: bool = row.try_get("paused").map_err(unavailable)?;
    if !paused {
        return Ok(None);
    }
    Ok(Some(Pause {
        by: row
            .try_get::<Option<String>, _>("paused_by")
            .map_err(unavailable)?
            .unwrap_or_default(),
        reason: row
            .try_get::<Option<String>, _>("pause_reason")
            .map_err(unavailable)?
            .unwrap_or_default(),
        since_unix_ms: row
            .try_get::<Option<i64>, _>("since_ms")
            .map_err(unavailable)?
            .unwrap_or(0),
    }))
}

const PAUSE_COLUMNS: &str = "paused, paused_by, pause_reason,
    (extract(epoch FROM paused_at) * 1000)::bigint AS since_ms";

#[async_trait]
impl ControlStore for PgJournal {
    async fn pause_state(&self) -> Result<Option<Pause>, JournalError> {
        static SQL: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| format!("SELECT {PAUSE_COLUMNS} FROM controls"));
        let row = sqlx::query(sqlx::AssertSqlSafe(SQL.as_str()))
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        pause_of(&row)
    }

    async fn set_pause(
        &self,
        pause: bool,
        by: &str,
        reason: &str,
    ) -> Result<Option<Pause>, JournalError> {
        static PAUSE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "UPDATE controls SET paused = true,
                    paused_by = CASE WHEN paused THEN paused_by ELSE $1 END,
                    pause_reason = CASE WHEN paused THEN pause_reason ELSE $2 END,
                    paused_at = CASE WHEN paused THEN paused_at ELSE now() END
                 RETURNING {PAUSE_COLUMNS}"
            )
        });
        static RESUME: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "UPDATE controls SET paused = false, paused_by = NULL, pause_reason = NULL, paused_at = NULL
                 RETURNING {PAUSE_COLUMNS}"
            )
        });
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let query = if pause {
            sqlx::query(sqlx::AssertSqlSafe(PAUSE.as_str()))
                .bind(by)
                .bind(reason)
        } else {
            sqlx::query(sqlx::AssertSqlSafe(RESUME.as_str()))
        };
        let row = query.fetch_one(&mut *tx).await.map_err(unavailable)?;
        sqlx::query("INSERT INTO admin_audit (actor, action, reason) VALUES ($1, $2, $3)")
            .bind(by)
            .bind(if pause { "pause" } else { "resume" })
            .bind(reason)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        pause_of(&row)
    }
}

#[async_trait]
impl ClusterStore for PgJournal {
    async fn register_channels(&self, accounts: &[AccountId]) -> Result<(), JournalError> {
        let accounts: Vec<String> = accounts.iter().map(AccountId::to_strkey).collect();
        sqlx::query(
            "INSERT INTO channel_accounts (account) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&accounts)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn heartbeat(&self, instance: &str, ttl_ms: u64) -> Result<(), JournalError> {
        sqlx::query(
            "INSERT INTO instances (instance_id, heartbeat_at, expires_at)
             VALUES ($1, now(), now() + $2 * interval '1 millisecond')
             ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = now(), expires_at = EXCLUDED.expires_at",
        )
        .bind(instance)
        .bind(ttl_ms as f64)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn retire(&self, instance: &str, leases: &[ChannelLease]) -> Result<(), JournalError> {
        let accounts: Vec<String> = leases.iter().map(|l| l.account.to_strkey()).collect();
        let epochs: Vec<i64> = leases.iter().map(|l| l.epoch).collect();
        sqlx::query(
            "WITH i AS (UPDATE instances SET expires_at = now() WHERE instance_id = $1)
             UPDATE channel_accounts c SET owner = NULL
             FROM unnest($2::text[], $3::bigint[]) AS l(account, epoch)
             WHERE c.account = l.account AND c.owner = $1 AND c.lease_epoch = l.epoch",
        )
        .bind(instance)
        .bind(&accounts)
        .bind(&epochs)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn claim_channel(
        &self,
        instance: &str,
        account: &AccountId,
        can_sign: bool,
    ) -> Result<Option<ChannelLease>, JournalError> {
        let row = sqlx::query(CLAIM_SQL)
            .bind(instance)
            .bind(account.to_strkey())
            .bind(can_sign)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(match row {
            Some(r) => Some(ChannelLease {
                account: *account,
                owner: instance.to_owned(),
                epoch: r.try_get("lease_epoch").map_err(unavailable)?,
            }),
            None => None,
        })
    }

    async fn release_channel(&self, lease: &ChannelLease) -> Result<(), JournalError> {
        sqlx::query(
            "UPDATE channel_accounts SET owner = NULL WHERE account = $1 AND owner = $2 AND lease_epoch = $3",
        )
        .bind(lease.account.to_strkey())
        .bind(&lease.owner)
        .bind(lease.epoch)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn channels(&self) -> Result<Vec<ChannelInfo>, JournalError> {
        let rows = sqlx::query(
            "SELECT c.account, c.owner,
                    EXISTS (SELECT 1 FROM instances i WHERE i.instance_id = c.owner AND i.expires_at > now()) AS alive,
                    (SELECT count(*) FROM envelopes e WHERE e.source = c.account AND e.status = 'live') AS open
             FROM channel_accounts c ORDER BY c.account",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("account").map_err(unavailable)?;
                Ok(ChannelInfo {
                    account: account(&text, &text)?,
                    owner: r.try_get("owner").map_err(unavailable)?,
                    owner_alive: r.try_get("alive").map_err(unavailable)?,
                    open_envelopes: r.try_get::<i64, _>("open").map_err(unavailable)? as u32,
                })
            })
            .collect()
    }

    async fn adopt_orphans(&self, instance: &str, limit: u32) -> Result<Vec<Ready>, JournalError> {
        let rows = sqlx::query(ADOPT_SQL)
            .bind(instance)
            .bind(i64::from(limit))
            .bind(self.outbox)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(parse_ready).collect()
    }

    async fn release_held(&self, instance: &str, limit: u32) -> Result<Vec<Ready>, JournalError> {
        // The sweep that releases held payouts also forgets spends no window counts.
        self.prune_spends().await?;
        let rows = sqlx::query(RELEASE_SQL)
            .bind(instance)
            .bind(i64::from(limit))
            .bind(self.outbox)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(parse_ready).collect()
    }

    async fn ready_of(
        &self,
        owner: &str,
        after: Option<&PayoutId>,
        limit: u32,
    ) -> Result<Vec<Ready>, JournalError> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT {COLUMNS} FROM (
                    SELECT p.* FROM payouts_waiting w JOIN payouts p ON p.payout_id = w.payout_id
                    WHERE w.owner = $1 AND w.payout_id > $2 AND p.state = 'accepted'
                    ORDER BY w.payout_id LIMIT $3) t
                 ORDER BY payout_id"
            )
        });
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        follow_the_indexes(&mut tx).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.as_str()))
            .bind(owner)
            .bind(after.map(PayoutId::as_str).unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        rows.iter().map(parse_ready).collect()
    }
}

/// Plans the rest of the transaction `tx` along the indexes: no sequential or bitmap scan,
/// and a sort only where no index gives the order. For the pages of reads whose tables fill
/// and empty faster than ANALYZE follows (`payouts_waiting`): right after a burst the
/// planner takes 100,000 waiting payouts for a few hundred, sorts all of them for every
/// page of a read-back, and a restart took 26 s instead of 1.3 to have them back in hand
/// (docs/performance.md).
pub(super) async fn follow_the_indexes(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
) -> Result<(), JournalError> {
    sqlx::raw_sql(
        "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off",
    )
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(())
}
