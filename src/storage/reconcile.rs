//! What reconciliation reads from and writes to PostgreSQL: the journal in one read-only
//! snapshot, the runs journal (`reconcile_runs`, migration 0004), and the advisory lock that
//! lets one reconciliation run at a time across instances.

use std::collections::HashMap;
use std::time::Duration;

use payoutd_actors::domain::{Asset, Destination, RawPayoutRequest};
use serde::Serialize;
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::{Connection, Row};

// The journal's side of a reconciliation, as this module reads it (the comparison in
// `reconcile::compare` takes it as data).

/// How an envelope stands in the journal's envelope log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvelopeStatus {
    Live,
    Applied,
    Failed,
    Dead,
}

impl EnvelopeStatus {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "live" => Self::Live,
            "applied" => Self::Applied,
            "failed" => Self::Failed,
            "dead" => Self::Dead,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Applied => "applied",
            Self::Failed => "failed",
            Self::Dead => "dead",
        }
    }
}

/// One row of the envelope log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEnvelope {
    pub hash: String,
    pub source: String,
    pub sequence: i64,
    /// `TimeBounds.max_time`, unix seconds.
    pub max_time: u64,
    /// `LedgerBounds.max_ledger` (exclusive), if set.
    pub max_ledger: Option<u32>,
    /// The head when it was built (0: unknown, built before migration 0003).
    pub built_ledger: u32,
    /// Payout ids in operation order.
    pub member_ids: Vec<String>,
    pub status: EnvelopeStatus,
    pub ledger: Option<u32>,
    pub fee_charged: Option<i64>,
    /// Since it was journaled, by the database's clock, in milliseconds.
    pub age_ms: i64,
}

/// What a payout asked for, as the journal holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    pub destination: Destination,
    pub asset: Asset,
    pub amount_stroops: i64,
}

/// One payout row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalPayout {
    pub payout_id: String,
    pub state: String,
    /// The stored request, or why it does not read back.
    pub request: Result<Requested, String>,
    pub tx_hash: Option<String>,
    pub op_index: Option<u32>,
    pub ledger: Option<u32>,
    /// The operation that pays it (`payment`, `claimable_balance`, `create_account`).
    pub op_kind: String,
}

impl JournalPayout {
    /// Reads a stored request (`payouts.request`) strictly, as the service does.
    pub fn parse_request(value: serde_json::Value) -> Result<Requested, String> {
        let raw = RawPayoutRequest::from_json_value(value).map_err(|e| match e {
            payoutd_actors::domain::JsonRequestError::Body(_) => {
                "the stored request is not a payout request".to_owned()
            }
            payoutd_actors::domain::JsonRequestError::Field(v) => v.to_string(),
        })?;
        let request = raw.parse().map_err(|e| e.to_string())?;
        Ok(Requested {
            destination: *request.destination(),
            asset: request.asset().clone(),
            amount_stroops: request.amount().stroops(),
        })
    }
}

/// The journal's side of a range, read in one snapshot.
#[derive(Debug, Clone, Default)]
pub struct JournalFacts {
    /// Every envelope loaded: those in scope, and those the ledger's transactions name.
    pub envelopes: HashMap<String, JournalEnvelope>,
    /// Every payout loaded: those in scope, and the members of every envelope loaded.
    pub payouts: HashMap<String, JournalPayout>,
    /// Applied or failed envelopes whose ledger is in the range.
    pub settled: Vec<String>,
    /// Dead envelopes built in the range (their first possible ledger is in it).
    pub dead: Vec<String>,
    /// Every live envelope: in flight when the snapshot was taken, whatever the range.
    pub live: Vec<String>,
    /// Confirmed and failed payouts whose ledger is in the range.
    pub confirmed: Vec<String>,
    pub failed: Vec<String>,
}

/// The advisory lock key of reconciliation (the bytes of "payoutdR" as an integer): one
/// run at a time, whichever instance or command holds it.
pub const ADVISORY_LOCK_KEY: i64 = 0x7061_796f_7574_6452;
/// Pause between two tries of a held lock, in milliseconds.
const LOCK_RETRY_MS: u64 = 200;
/// Findings kept in a run's row at most (the report itself has them all).
pub const RUN_FINDINGS_STORED_MAX: usize = 1_000;

fn db(e: sqlx::Error) -> String {
    // sqlx's messages name tables and values, never the connection URL.
    format!("database: {e}")
}

/// The reconciliation lock: a session-level advisory lock on a connection of its own,
/// released by `release` or, if the holder dies or drops it, when that connection closes.
pub struct Lock {
    conn: PgConnection,
}

impl Lock {
    /// Takes the lock, waiting up to `wait` for another holder to let go; `None` if it
    /// is still held then.
    pub async fn acquire(pool: &PgPool, wait: Duration) -> Result<Option<Self>, String> {
        // Out of the pool: a dropped lock must close its session, not go back to the pool
        // still holding the lock.
        let mut conn = pool.acquire().await.map_err(db)?.detach();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(ADVISORY_LOCK_KEY)
                .fetch_one(&mut conn)
                .await
                .map_err(db)?;
            if got {
                return Ok(Some(Self { conn }));
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = conn.close().await;
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(LOCK_RETRY_MS)).await;
        }
    }

    pub async fn release(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(ADVISORY_LOCK_KEY)
            .execute(&mut self.conn)
            .await;
        let _ = self.conn.close().await;
    }
}

const ENVELOPE_COLUMNS: &str = "tx_hash, source, sequence, max_time, max_ledger, built_ledger,
    member_ids, status, ledger, fee_charged,
    (EXTRACT(EPOCH FROM (now() - created_at)) * 1000)::bigint AS age_ms";

fn envelope(row: &PgRow) -> Result<JournalEnvelope, String> {
    let hash: String = row.try_get("tx_hash").map_err(db)?;
    let status: String = row.try_get("status").map_err(db)?;
    let corrupt = |what: &str| format!("envelope {hash}: {what} does not read back");
    let max_time: i64 = row.try_get("max_time").map_err(db)?;
    let built: i32 = row.try_get("built_ledger").map_err(db)?;
    let ledger: Option<i32> = row.try_get("ledger").map_err(db)?;
    let max_ledger: Option<i32> = row.try_get("max_ledger").map_err(db)?;
    Ok(JournalEnvelope {
        source: row.try_get("source").map_err(db)?,
        sequence: row.try_get("sequence").map_err(db)?,
        max_time: u64::try_from(max_time).map_err(|_| corrupt("max_time"))?,
        max_ledger: max_ledger.and_then(|m| u32::try_from(m).ok()),
        built_ledger: u32::try_from(built).map_err(|_| corrupt("built_ledger"))?,
        member_ids: row.try_get("member_ids").map_err(db)?,
        status: EnvelopeStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        ledger: ledger.and_then(|l| u32::try_from(l).ok()),
        fee_charged: row.try_get("fee_charged").map_err(db)?,
        age_ms: row
            .try_get::<Option<i64>, _>("age_ms")
            .map_err(db)?
            .unwrap_or(0),
        hash,
    })
}

const PAYOUT_COLUMNS: &str = "payout_id, state, request, tx_hash, op_index, ledger, op_kind";

fn payout(row: &PgRow) -> Result<JournalPayout, String> {
    let request: serde_json::Value = row.try_get("request").map_err(db)?;
    let op_index: Option<i32> = row.try_get("op_index").map_err(db)?;
    let ledger: Option<i32> = row.try_get("ledger").map_err(db)?;
    Ok(JournalPayout {
        payout_id: row.try_get("payout_id").map_err(db)?,
        state: row.try_get("state").map_err(db)?,
        request: JournalPayout::parse_request(request),
        tx_hash: row.try_get("tx_hash").map_err(db)?,
        op_index: op_index.and_then(|i| u32::try_from(i).ok()),
        ledger: ledger.and_then(|l| u32::try_from(l).ok()),
        op_kind: row.try_get("op_kind").map_err(db)?,
    })
}

/// The journal's side of `from..=to`, from the connection's snapshot.
#[derive(Debug, Default)]
pub struct Scope {
    pub facts: JournalFacts,
    /// The registered channel accounts.
    pub channels: Vec<String>,
}

/// Starts the read-only snapshot every journal read of a run comes from.
pub async fn begin_snapshot(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, String> {
    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    Ok(tx)
}

pub async fn load_scope(conn: &mut PgConnection, from: u32, to: u32) -> Result<Scope, String> {
    let (from, to) = (i64::from(from), i64::from(to));
    let mut scope = Scope::default();
    let sql = format!(
        "SELECT {ENVELOPE_COLUMNS} FROM envelopes
         WHERE (status IN ('applied', 'failed') AND ledger BETWEEN $1 AND $2)
            OR (status = 'dead' AND built_ledger > 0 AND built_ledger + 1 BETWEEN $1 AND $2)
            OR status = 'live'"
    );
    for e in rows_in_range(conn, sql, (from, to), envelope).await? {
        match e.status {
            EnvelopeStatus::Applied | EnvelopeStatus::Failed => {
                scope.facts.settled.push(e.hash.clone())
            }
            EnvelopeStatus::Dead => scope.facts.dead.push(e.hash.clone()),
            EnvelopeStatus::Live => scope.facts.live.push(e.hash.clone()),
        }
        scope.facts.envelopes.insert(e.hash.clone(), e);
    }
    let sql = format!(
        "SELECT {PAYOUT_COLUMNS} FROM payouts
         WHERE state IN ('confirmed', 'failed') AND ledger BETWEEN $1 AND $2"
    );
    for p in rows_in_range(conn, sql, (from, to), payout).await? {
        match p.state.as_str() {
            "confirmed" => scope.facts.confirmed.push(p.payout_id.clone()),
            _ => scope.facts.failed.push(p.payout_id.clone()),
        }
        scope.facts.payouts.insert(p.payout_id.clone(), p);
    }
    scope.channels = sqlx::query_scalar("SELECT account FROM channel_accounts ORDER BY account")
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    Ok(scope)
}

/// The rows `sql` selects for the ledger range `$1..=$2`, parsed.
async fn rows_in_range<T>(
    conn: &mut PgConnection,
    sql: String,
    (from, to): (i64, i64),
    parse: fn(&PgRow) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(from)
        .bind(to)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?
        .iter()
        .map(parse)
        .collect()
}

/// Envelopes by hash (those the ledger's transactions name).
pub async fn envelopes_by_hash(
    conn: &mut PgConnection,
    hashes: &[String],
) -> Result<Vec<JournalEnvelope>, String> {
    let sql = format!("SELECT {ENVELOPE_COLUMNS} FROM envelopes WHERE tx_hash = ANY($1)");
    rows_for_keys(conn, sql, hashes, envelope).await
}

/// The rows `sql` selects for `keys` (bound as `$1`), parsed; no keys, no query.
async fn rows_for_keys<T>(
    conn: &mut PgConnection,
    sql: String,
    keys: &[String],
    parse: fn(&PgRow) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(keys)
        .fetch_all(conn)
        .await
        .map_err(db)?
        .iter()
        .map(parse)
        .collect()
}

pub async fn payouts_by_id(
    conn: &mut PgConnection,
    ids: &[String],
) -> Result<Vec<JournalPayout>, String> {
    let sql = format!("SELECT {PAYOUT_COLUMNS} FROM payouts WHERE payout_id = ANY($1)");
    rows_for_keys(conn, sql, ids, payout).await
}

/// Where the next run without a range starts: the furthest point a completed run
/// reached (`None`: no run has completed yet).
pub async fn resume_point(pool: &PgPool) -> Result<Option<u32>, String> {
    let point: Option<i32> =
        sqlx::query_scalar("SELECT max(resume_ledger) FROM reconcile_runs WHERE result <> 'error'")
            .fetch_one(pool)
            .await
            .map_err(db)?;
    Ok(point.and_then(|p| u32::try_from(p).ok()))
}

/// The first ledger any journaled envelope could be in (`None`: no envelope yet).
pub async fn first_envelope_ledger(pool: &PgPool) -> Result<Option<u32>, String> {
    let first: Option<i32> =
        sqlx::query_scalar("SELECT min(built_ledger) + 1 FROM envelopes WHERE built_ledger > 0")
            .fetch_one(pool)
            .await
            .map_err(db)?;
    Ok(first.and_then(|p| u32::try_from(p).ok()))
}

/// One run, as the runs journal keeps it.
#[derive(Debug, Clone)]
pub struct RunRow<'a> {
    pub started_at_unix_ms: i64,
    pub trigger: &'a str,
    pub instance: Option<&'a str>,
    pub range_kind: &'a str,
    pub from_ledger: Option<u32>,
    pub to_ledger: Option<u32>,
    pub resume_ledger: Option<u32>,
    /// `clean`, `mismatches` or `error`.
    pub result: &'a str,
    pub mismatches: u64,
    pub counts: serde_json::Value,
    pub findings: serde_json::Value,
    pub error: Option<&'a str>,
}

/// Journals a finished run; returns its id.
pub async fn record_run(pool: &PgPool, run: &RunRow<'_>) -> Result<i64, String> {
    let ledger = |l: Option<u32>| l.and_then(|l| i32::try_from(l).ok());
    sqlx::query_scalar(
        "INSERT INTO reconcile_runs (started_at, trigger, instance, range_kind, from_ledger,
                                     to_ledger, resume_ledger, result, mismatches, counts,
                                     findings, error)
         VALUES (to_timestamp($1::double precision / 1000), $2, $3, $4, $5, $6, $7, $8, $9,
                 $10, $11, $12)
         RETURNING id",
    )
    .bind(run.started_at_unix_ms as f64)
    .bind(run.trigger)
    .bind(run.instance)
    .bind(run.range_kind)
    .bind(ledger(run.from_ledger))
    .bind(ledger(run.to_ledger))
    .bind(ledger(run.resume_ledger))
    .bind(run.result)
    .bind(i32::try_from(run.mismatches).unwrap_or(i32::MAX))
    .bind(&run.counts)
    .bind(&run.findings)
    .bind(run.error)
    .fetch_one(pool)
    .await
    .map_err(db)
}

/// What the gauges show, from the runs journal (every instance reads the same).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Mismatches of the last completed run (`None`: none completed).
    pub mismatches: Option<u64>,
    /// How long ago the last clean run finished, by the database's clock, in ms.
    pub last_clean_age_ms: Option<i64>,
    /// The last ledger the last completed run checked.
    pub checked_ledger: Option<u32>,
}

pub async fn gauges(pool: &PgPool) -> Result<Gauges, String> {
    let row = sqlx::query(
        "SELECT
            (SELECT mismatches FROM reconcile_runs WHERE result <> 'error' ORDER BY id DESC LIMIT 1) AS mismatches,
            (SELECT max(to_ledger) FROM reconcile_runs WHERE result <> 'error') AS checked,
            (SELECT (EXTRACT(EPOCH FROM (now() - finished_at)) * 1000)::bigint
               FROM reconcile_runs WHERE result = 'clean' ORDER BY id DESC LIMIT 1) AS clean_age_ms",
    )
    .fetch_one(pool)
    .await
    .map_err(db)?;
    let mismatches: Option<i32> = row.try_get("mismatches").map_err(db)?;
    let checked: Option<i32> = row.try_get("checked").map_err(db)?;
    Ok(Gauges {
        mismatches: mismatches.and_then(|m| u64::try_from(m).ok()),
        last_clean_age_ms: row.try_get("clean_age_ms").map_err(db)?,
        checked_ledger: checked.and_then(|c| u32::try_from(c).ok()),
    })
}
