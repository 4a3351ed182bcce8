//! The Postgres journal: the `Journal` port over sqlx. Each step is one statement (data-
//! modifying CTEs), so the state change, its event, the envelope log and the channel
//! release commit together or not at all, in one round trip.

use async_trait::async_trait;
use payoutd_actors::domain::{AccountId, Fingerprint, PayoutId, PayoutRequest, RawPayoutRequest};
use payoutd_actors::ports::{
    Accepted, Change, Envelope, Inclusion, Journal, JournalError, PayoutEvent, PayoutRecord,
    PayoutState, TxHash,
};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Executor, Row};
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Embedded migrations (`migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

type PgQuery = sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Builds a statement; called again if its batch must be replayed one by one.
type BuildQuery = Box<dyn Fn() -> PgQuery + Send + Sync>;

/// A write waiting for its batch.
struct Job {
    build: BuildQuery,
    reply: oneshot::Sender<Result<PgRow, JobError>>,
}

#[derive(Debug)]
struct JobError {
    unique_violation: bool,
    message: String,
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        let unique_violation = matches!(&e, sqlx::Error::Database(db) if db.is_unique_violation());
        Self {
            unique_violation,
            message: e.to_string(),
        }
    }
}

/// Group commit: journal writes from many actors are queued and written by a few writer
/// tasks, each committing a batch in one transaction — one WAL flush for many steps. Every
/// statement keeps its own version check, so batching changes no outcome: a failing batch
/// is rolled back and replayed statement by statement, and an ambiguous commit is reported
/// as `Unavailable`, after which the actor re-reads the journal.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommit {
    /// Writer tasks, each with its own connection.
    pub writers: usize,
    /// Statements per transaction at most.
    pub batch_max: usize,
    /// Writes queued at most; past it writers push back on the actors.
    pub queue_max: usize,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self {
            writers: 4,
            batch_max: 256,
            queue_max: 8_192,
        }
    }
}

async fn writer(pool: PgPool, queue: Arc<Mutex<mpsc::Receiver<Job>>>, batch_max: usize) {
    loop {
        let mut batch = Vec::new();
        {
            let mut queue = queue.lock().await;
            match queue.recv().await {
                Some(job) => batch.push(job),
                None => return,
            }
            while batch.len() < batch_max {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        run_batch(&pool, batch).await;
    }
}

async fn run_batch(pool: &PgPool, batch: Vec<Job>) {
    if batch.len() > 1 {
        let attempt = async {
            let mut tx = pool.begin().await?;
            let mut rows = Vec::with_capacity(batch.len());
            for job in &batch {
                rows.push((job.build)().fetch_one(&mut *tx).await?);
            }
            Ok::<_, sqlx::Error>((tx, rows))
        };
        match attempt.await {
            Ok((tx, rows)) => {
                match tx.commit().await {
                    Ok(()) => {
                        for (job, row) in batch.into_iter().zip(rows) {
                            let _ = job.reply.send(Ok(row));
                        }
                    }
                    Err(e) => {
                        // The commit may or may not have happened: say so, never guess.
                        let message = format!("commit outcome unknown: {e}");
                        for job in batch {
                            let _ = job.reply.send(Err(JobError {
                                unique_violation: false,
                                message: message.clone(),
                            }));
                        }
                    }
                }
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, size = batch.len(), "batch failed; replaying its statements one by one")
            }
        }
    }
    for job in batch {
        let result = (job.build)().fetch_one(pool).await.map_err(JobError::from);
        let _ = job.reply.send(result);
    }
}

pub struct PgJournal {
    pool: PgPool,
    /// Queue of the group-commit writers; `None` writes each statement in its own commit.
    queue: Option<mpsc::Sender<Job>>,
    /// The channel accounts this instance may lease (public keys only). Several instances
    /// sharing one database split the channels by configuring disjoint lists.
    channels: Vec<String>,
}

fn unavailable(e: sqlx::Error) -> JournalError {
    JournalError::Unavailable(e.to_string())
}

const ACCEPT_SQL: &str = "WITH ins AS (
                INSERT INTO payouts (payout_id, fingerprint, request, state, version)
                VALUES ($1, $2, $3, 'accepted', 1)
                ON CONFLICT (payout_id) DO NOTHING
                RETURNING payout_id
             ), ev AS (
                INSERT INTO payout_events (payout_id, version, kind, state, detail)
                SELECT payout_id, 1, 'accepted', 'accepted', $4 FROM ins
             ), ob AS (
                INSERT INTO outbox (event_id, payout_id, kind, payload)
                SELECT payout_id || ':1', payout_id, 'accepted', jsonb_build_object(
                    'event_id', payout_id || ':1', 'payout_id', payout_id, 'kind', 'accepted',
                    'state', 'accepted', 'version', 1, 'detail', $4::jsonb, 'at', now())
                FROM ins
             )
             SELECT count(*) AS n FROM ins";

const APPLY_SQL: &str = "WITH u AS (
                UPDATE payouts SET state = $3, version = $4, attempt = $5, reason = $6, channel = $7,
                    envelope_xdr = $8, tx_hash = $9, tx_source = $10, tx_sequence = $11, tx_fee = $12,
                    max_time = $13, min_ledger = $14, max_ledger = $15, ledger = $16, fee_charged = $17,
                    next_fee = $18, updated_at = now()
                WHERE payout_id = $1 AND version = $2
                RETURNING payout_id
             ), ev AS (
                INSERT INTO payout_events (payout_id, version, kind, state, detail)
                SELECT payout_id, $4, $19, $3, $20 FROM u
             ), ob AS (
                INSERT INTO outbox (event_id, payout_id, kind, payload)
                SELECT payout_id || ':' || $4::bigint, payout_id, $19, jsonb_build_object(
                    'event_id', payout_id || ':' || $4::bigint, 'payout_id', payout_id, 'kind', $19::text,
                    'state', $3::text, 'version', $4::bigint, 'detail', $20::jsonb, 'at', now())
                FROM u WHERE $19 <> 'noted'
             ), env AS (
                INSERT INTO envelopes (tx_hash, payout_id, attempt, source, sequence, max_time, envelope_xdr)
                SELECT $9, payout_id, $5, $10, $11, $13, $8 FROM u WHERE $21
             ), old AS (
                UPDATE envelopes SET status = $22
                WHERE tx_hash = $23 AND $22 IS NOT NULL AND EXISTS (SELECT 1 FROM u)
             ), rel AS (
                UPDATE channel_accounts SET leased_to = NULL, leased_at = NULL
                WHERE leased_to = $1 AND $24 AND EXISTS (SELECT 1 FROM u)
             )
             SELECT count(*) AS n FROM u";

/// One row; `account` is NULL when every channel is busy.
const LEASE_SQL: &str = "WITH held AS (
                    SELECT account FROM channel_accounts WHERE leased_to = $1
                 ), pick AS (
                    -- Free: not leased, or leased to a finished payout (a confirmed, failed or
                    -- cancelled payout never needs its channel again; this heals a lease
                    -- taken by a stale instance after the payout finished elsewhere).
                    SELECT c.account FROM channel_accounts c
                    LEFT JOIN payouts h ON h.payout_id = c.leased_to
                    WHERE (c.leased_to IS NULL OR h.state IN ('confirmed', 'failed', 'cancelled'))
                      AND c.account = ANY($2) AND NOT EXISTS (SELECT 1 FROM held)
                      -- Only a payout that is waiting for an envelope gets a channel.
                      AND EXISTS (SELECT 1 FROM payouts p WHERE p.payout_id = $1 AND p.state = 'accepted')
                    ORDER BY c.lease_epoch, c.account LIMIT 1
                    FOR UPDATE OF c SKIP LOCKED
                 ), upd AS (
                    UPDATE channel_accounts c SET leased_to = $1, lease_epoch = c.lease_epoch + 1, leased_at = now()
                    FROM pick WHERE c.account = pick.account
                    RETURNING c.account
                 )
                 SELECT (SELECT account FROM held UNION ALL SELECT account FROM upd LIMIT 1) AS account";

const COLUMNS: &str = "payout_id, fingerprint, request, state, version, attempt, reason, channel, envelope_xdr, tx_hash, tx_source, tx_sequence, tx_fee, max_time, min_ledger, max_ledger, ledger, fee_charged, next_fee";

impl PgJournal {
    /// Registers the channel accounts (idempotent) and returns the journal. Each statement
    /// commits on its own: PostgreSQL already merges the WAL flushes of concurrent commits,
    /// and on the measurements in ARCHITECTURE.md this beat our own batching, whose longer
    /// transactions contend on the channel rows. `with_group_commit` opts in.
    pub async fn new(pool: PgPool, channels: &[AccountId]) -> Result<Self, JournalError> {
        Self::with_group_commit(pool, channels, None).await
    }

    /// As `new`; `None` commits every statement on its own (the naive baseline).
    pub async fn with_group_commit(
        pool: PgPool,
        channels: &[AccountId],
        group: Option<GroupCommit>,
    ) -> Result<Self, JournalError> {
        let mut journal = Self::register(pool, channels).await?;
        if let Some(g) = group {
            let (tx, rx) = mpsc::channel(g.queue_max.max(1));
            let rx = Arc::new(Mutex::new(rx));
            for _ in 0..g.writers.max(1) {
                tokio::spawn(writer(journal.pool.clone(), rx.clone(), g.batch_max.max(1)));
            }
            journal.queue = Some(tx);
        }
        Ok(journal)
    }

    /// Runs one write statement that returns one row: batched when group commit is on.
    async fn write(&self, build: BuildQuery) -> Result<PgRow, JobError> {
        match &self.queue {
            None => build().fetch_one(&self.pool).await.map_err(JobError::from),
            Some(queue) => {
                let (reply, answer) = oneshot::channel();
                queue
                    .send(Job { build, reply })
                    .await
                    .map_err(|_| JobError {
                        unique_violation: false,
                        message: "journal writers stopped".into(),
                    })?;
                answer.await.map_err(|_| JobError {
                    unique_violation: false,
                    message: "journal writer dropped the write".into(),
                })?
            }
        }
    }

    async fn register(pool: PgPool, channels: &[AccountId]) -> Result<Self, JournalError> {
        let channels: Vec<String> = channels.iter().map(AccountId::to_strkey).collect();
        sqlx::query("INSERT INTO channel_accounts (account) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING")
            .bind(&channels)
            .execute(&pool)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            pool,
            queue: None,
            channels,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Payouts in id order after `after`, optionally in one state (for the list endpoint).
    pub async fn list(
        &self,
        state: Option<PayoutState>,
        after: Option<&PayoutId>,
        limit: u32,
    ) -> Result<Vec<PayoutRecord>, JournalError> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT {COLUMNS} FROM payouts WHERE ($1::text IS NULL OR state = $1) AND payout_id > $2 ORDER BY payout_id LIMIT $3"
            )
        });
        let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.as_str()))
            .bind(state.map(|s| s.as_str()))
            .bind(after.map(PayoutId::as_str).unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(Self::parse_row).collect()
    }

    fn parse_row(row: &PgRow) -> Result<PayoutRecord, JournalError> {
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
        let state: String = row.try_get("state").map_err(get)?;
        let state =
            PayoutState::parse(&state).ok_or_else(|| corrupt(format!("unknown state {state}")))?;
        let account = |col: &str| -> Result<Option<AccountId>, JournalError> {
            let text: Option<String> = row.try_get(col).map_err(get)?;
            text.map(|t| AccountId::parse(&t).map_err(|e| corrupt(format!("{col}: {e}"))))
                .transpose()
        };
        let channel = account("channel")?;
        let xdr: Option<String> = row.try_get("envelope_xdr").map_err(get)?;
        let envelope = match xdr {
            None => None,
            Some(xdr) => {
                let hash: String = row.try_get("tx_hash").map_err(get)?;
                let min_ledger: Option<i32> = row.try_get("min_ledger").map_err(get)?;
                let max_ledger: Option<i32> = row.try_get("max_ledger").map_err(get)?;
                Some(Envelope {
                    xdr,
                    hash: TxHash::from_hex(&hash).ok_or_else(|| corrupt("tx_hash".into()))?,
                    source: account("tx_source")?
                        .ok_or_else(|| corrupt("tx_source missing".into()))?,
                    sequence: row.try_get("tx_sequence").map_err(get)?,
                    fee_stroops: u32::try_from(row.try_get::<i32, _>("tx_fee").map_err(get)?)
                        .map_err(|e| corrupt(e.to_string()))?,
                    max_time: u64::try_from(row.try_get::<i64, _>("max_time").map_err(get)?)
                        .map_err(|e| corrupt(e.to_string()))?,
                    ledger_bounds: match (min_ledger, max_ledger) {
                        (Some(a), Some(b)) => Some((a as u32, b as u32)),
                        _ => None,
                    },
                })
            }
        };
        let ledger: Option<i32> = row.try_get("ledger").map_err(get)?;
        let fee_charged: Option<i64> = row.try_get("fee_charged").map_err(get)?;
        let next_fee: Option<i32> = row.try_get("next_fee").map_err(get)?;
        Ok(PayoutRecord {
            request,
            fingerprint,
            state,
            version: row.try_get("version").map_err(get)?,
            attempt: row.try_get::<i32, _>("attempt").map_err(get)? as u32,
            reason: row.try_get("reason").map_err(get)?,
            channel,
            envelope,
            inclusion: match (ledger, fee_charged) {
                (Some(l), Some(f)) => Some(Inclusion {
                    ledger: l as u32,
                    fee_charged: f,
                }),
                _ => None,
            },
            next_fee_stroops: next_fee.map(|f| f as u32),
        })
    }
}

/// The JSON detail an event carries: what changed and why, never a secret.
fn event_detail(change: &Change) -> serde_json::Value {
    use serde_json::json;
    match change {
        Change::Prepared { channel, envelope } => json!({
            "channel": channel.to_strkey(), "tx_hash": envelope.hash.to_hex(),
            "sequence": envelope.sequence, "max_time": envelope.max_time, "fee": envelope.fee_stroops,
        }),
        Change::Submitted { note } | Change::Noted { note } => json!({ "note": note }),
        Change::Confirmed { inclusion } => {
            json!({ "ledger": inclusion.ledger, "fee_charged": inclusion.fee_charged })
        }
        Change::Failed { reason, inclusion } => json!({
            "reason": reason, "ledger": inclusion.map(|i| i.ledger), "fee_charged": inclusion.map(|i| i.fee_charged),
        }),
        Change::EnvelopeDead {
            reason,
            next_fee_stroops,
        } => json!({ "reason": reason, "next_fee": next_fee_stroops }),
        Change::Parked { reason } | Change::Cancelled { reason } | Change::Resumed { reason } => {
            json!({ "reason": reason })
        }
    }
}

/// What happens to the previous envelope's log row with this change.
fn envelope_status(change: &Change) -> Option<&'static str> {
    match change {
        Change::EnvelopeDead { .. } => Some("dead"),
        Change::Confirmed { .. } => Some("applied"),
        Change::Failed {
            inclusion: Some(_), ..
        } => Some("failed"),
        _ => None,
    }
}

#[async_trait]
impl Journal for PgJournal {
    async fn accept(
        &self,
        request: &PayoutRequest,
        fingerprint: Fingerprint,
    ) -> Result<Accepted, JournalError> {
        let raw = serde_json::to_value(request.raw())
            .map_err(|e| JournalError::Unavailable(e.to_string()))?;
        let id = request.payout_id().to_string();
        let detail = serde_json::json!({ "fingerprint": fingerprint.to_hex() });
        let fp = fingerprint.0.to_vec();
        let row = self
            .write(Box::new(move || {
                sqlx::query(ACCEPT_SQL)
                    .bind(id.clone())
                    .bind(fp.clone())
                    .bind(raw.clone())
                    .bind(detail.clone())
            }))
            .await
            .map_err(|e| JournalError::Unavailable(e.message))?;
        let n: i64 = row.try_get("n").map_err(unavailable)?;
        if n == 1 {
            // Exactly what was inserted: no need to read it back.
            return Ok(Accepted::Created(PayoutRecord {
                request: request.clone(),
                fingerprint,
                state: PayoutState::Accepted,
                version: 1,
                attempt: 0,
                reason: None,
                channel: None,
                envelope: None,
                inclusion: None,
                next_fee_stroops: None,
            }));
        }
        let record = self
            .load(request.payout_id())
            .await?
            .ok_or_else(|| JournalError::NotFound(request.payout_id().to_string()))?;
        Ok(Accepted::Existing(record))
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
        row.as_ref().map(Self::parse_row).transpose()
    }

    async fn apply(
        &self,
        current: &PayoutRecord,
        change: &Change,
    ) -> Result<PayoutRecord, JournalError> {
        let mut next = current.clone();
        change.apply_to(&mut next);
        let id = current.id().to_string();
        let expected = current.version;
        let env = next.envelope.clone();
        let new_envelope = matches!(change, Change::Prepared { .. });
        let old_hash = current.envelope.as_ref().map(|e| e.hash.to_hex());
        let status = envelope_status(change);
        let kind = change.event_kind();
        let detail = event_detail(change);
        let releases = change.releases_channel();
        let state = next.state.as_str();
        let (version, attempt, reason) = (next.version, next.attempt as i32, next.reason.clone());
        let channel = next.channel.map(|c| c.to_strkey());
        let inclusion = next.inclusion;
        let next_fee = next.next_fee_stroops.map(|f| f as i32);
        let build = move || {
            let env = env.as_ref();
            sqlx::query(APPLY_SQL)
                .bind(id.clone())
                .bind(expected)
                .bind(state)
                .bind(version)
                .bind(attempt)
                .bind(reason.clone())
                .bind(channel.clone())
                .bind(env.map(|e| e.xdr.clone()))
                .bind(env.map(|e| e.hash.to_hex()))
                .bind(env.map(|e| e.source.to_strkey()))
                .bind(env.map(|e| e.sequence))
                .bind(env.map(|e| e.fee_stroops as i32))
                .bind(env.map(|e| e.max_time as i64))
                .bind(env.and_then(|e| e.ledger_bounds).map(|b| b.0 as i32))
                .bind(env.and_then(|e| e.ledger_bounds).map(|b| b.1 as i32))
                .bind(inclusion.map(|i| i.ledger as i32))
                .bind(inclusion.map(|i| i.fee_charged))
                .bind(next_fee)
                .bind(kind)
                .bind(detail.clone())
                .bind(new_envelope)
                .bind(status)
                .bind(old_hash.clone())
                .bind(releases)
        };
        let row = self
            .write(Box::new(build))
            .await
            .map_err(|e| JournalError::Unavailable(e.message))?;
        let n: i64 = row.try_get("n").map_err(unavailable)?;
        if n == 1 {
            Ok(next)
        } else {
            match self.load(current.id()).await? {
                Some(_) => Err(JournalError::Stale(current.id().to_string())),
                None => Err(JournalError::NotFound(current.id().to_string())),
            }
        }
    }

    async fn park(&self, id: &PayoutId, reason: &str) -> Result<(), JournalError> {
        sqlx::query(
            "WITH u AS (
                UPDATE payouts SET state = 'parked', version = version + 1, reason = $2, updated_at = now()
                WHERE payout_id = $1 AND state NOT IN ('confirmed', 'failed', 'cancelled')
                RETURNING payout_id, version
             ), ev AS (
                INSERT INTO payout_events (payout_id, version, kind, state, detail)
                SELECT payout_id, version, 'parked', 'parked', jsonb_build_object('reason', $2::text) FROM u
             )
             INSERT INTO outbox (event_id, payout_id, kind, payload)
             SELECT payout_id || ':' || version, payout_id, 'parked', jsonb_build_object(
                 'event_id', payout_id || ':' || version, 'payout_id', payout_id, 'kind', 'parked',
                 'state', 'parked', 'version', version, 'detail', jsonb_build_object('reason', $2::text), 'at', now())
             FROM u",
        )
        .bind(id.as_str())
        .bind(reason)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn lease_channel(&self, id: &PayoutId) -> Result<Option<AccountId>, JournalError> {
        // Two instances may race to lease for the same payout; the loser hits the unique
        // `leased_to` constraint and simply reads the winner's lease on the second pass.
        for _ in 0..2 {
            let (payout, channels) = (id.to_string(), self.channels.clone());
            let result = self
                .write(Box::new(move || {
                    sqlx::query(LEASE_SQL)
                        .bind(payout.clone())
                        .bind(channels.clone())
                }))
                .await;
            match result {
                Ok(row) => {
                    let Some(text) = row
                        .try_get::<Option<String>, _>("account")
                        .map_err(unavailable)?
                    else {
                        return Ok(None);
                    };
                    let account = AccountId::parse(&text).map_err(|e| JournalError::Corrupt {
                        id: id.to_string(),
                        detail: format!("channel {e}"),
                    })?;
                    return Ok(Some(account));
                }
                Err(e) if e.unique_violation => continue,
                Err(e) => return Err(JournalError::Unavailable(e.message)),
            }
        }
        Err(JournalError::Unavailable("channel lease contention".into()))
    }

    async fn active_ids(
        &self,
        after: Option<&PayoutId>,
        limit: u32,
    ) -> Result<Vec<PayoutId>, JournalError> {
        let rows = sqlx::query(
            "SELECT payout_id FROM payouts
             WHERE state IN ('accepted','prepared','submitted') AND payout_id > $1
             ORDER BY payout_id LIMIT $2",
        )
        .bind(after.map(PayoutId::as_str).unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("payout_id").map_err(unavailable)?;
                PayoutId::parse(&text).map_err(|e| JournalError::Corrupt {
                    id: text.clone(),
                    detail: e.to_string(),
                })
            })
            .collect()
    }

    async fn events(&self, id: &PayoutId) -> Result<Vec<PayoutEvent>, JournalError> {
        let rows = sqlx::query(
            "SELECT version, kind, state, detail,
                    to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS at
             FROM payout_events WHERE payout_id = $1 ORDER BY version, id",
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

/// Runs the embedded migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Checks the database answers (for readiness).
pub async fn ping(pool: &PgPool) -> bool {
    pool.execute("SELECT 1").await.is_ok()
}
