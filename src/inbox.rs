//! The Postgres inbox: other systems insert payout requests into `payout_inbox` inside
//! their own transactions; this worker claims them, hands each to the payout core, and
//! removes it once its payout is durable (or once it is dead-lettered with its reason).
//!
//! How a round works (`drain_once`):
//! 1. In one transaction, lock up to `batch_max` rows in id order with
//!    `FOR UPDATE SKIP LOCKED`, so several instances can share the table and never claim
//!    the same row at the same time.
//! 2. Ingest the rows. Rows that name the same payout id are handed over one after the
//!    other in row order (the earlier row wins a conflict, as it would one at a time);
//!    different payouts go concurrently, so a batch costs about one accept, not one per row.
//! 3. Created or duplicate: the payout is already durable (`ingest` returns after the
//!    accept committed), so the row is deleted. Rejected: a dead letter is written and the
//!    row deleted, both in the round's transaction. Retry (database down, overloaded): the
//!    row stays, as do later rows for the same payout, and the worker backs off.
//! 4. Commit. If the commit is lost, the rows come back and are answered as duplicates:
//!    the payout core, not this table, is what makes a request count once.
//!
//! The worker (`run`) is woken by `LISTEN payout_inbox` (a trigger notifies on insert) and
//! polls every `poll_interval_ms` anyway, so a lost notification or a listener reconnect
//! never strands a row.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use payoutd_actors::Payouts;
use serde::Deserialize;
use sqlx::postgres::PgPool;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, warn};

use crate::ingress::{self, IngestOutcome};
use crate::storage::inbox::{self as store, InboxRow};

/// `source` of the inbox's rows in `dead_letters`.
pub const DEAD_LETTER_SOURCE: &str = "inbox";
/// Largest accepted `batch_max`: a round holds its row locks and one connection while the
/// batch is ingested, and hands up to this many requests to the core at once.
pub const BATCH_MAX_LIMIT: u32 = 1_000;
/// Shortest accepted `poll_interval_ms` and `retry_delay_ms`, in milliseconds.
pub const DELAY_MIN_MS: u64 = 10;
/// Longest accepted `poll_interval_ms` and `retry_delay_ms`, in milliseconds (one hour).
pub const DELAY_MAX_MS: u64 = 3_600_000;

/// The `[inbox]` configuration section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxSettings {
    /// Run the inbox worker. It holds two database connections while it runs (the
    /// listener, and the round's transaction).
    pub enabled: bool,
    /// Rows claimed per round (one transaction), 1..=`BATCH_MAX_LIMIT`.
    pub batch_max: u32,
    /// A round runs at least this often even without a notification, in milliseconds.
    pub poll_interval_ms: u64,
    /// Pause after the core asked to retry later, a database error, or a lost listener
    /// connection, in milliseconds.
    pub retry_delay_ms: u64,
}

impl Default for InboxSettings {
    /// The built-in defaults (`config/default.toml`, the one place they are written).
    fn default() -> Self {
        crate::config::base::built_in(&["inbox"])
    }
}

impl InboxSettings {
    /// Checks the bounds; the message names the offending key.
    pub fn validate(&self) -> Result<(), crate::config::base::InvalidSetting> {
        if !(1..=BATCH_MAX_LIMIT).contains(&self.batch_max) {
            return Err(crate::config::base::InvalidSetting::new(
                "inbox.batch_max",
                format!("must be 1 to {BATCH_MAX_LIMIT}, not {}", self.batch_max),
            ));
        }
        for (key, value) in [
            ("inbox.poll_interval_ms", self.poll_interval_ms),
            ("inbox.retry_delay_ms", self.retry_delay_ms),
        ] {
            if !(DELAY_MIN_MS..=DELAY_MAX_MS).contains(&value) {
                return Err(crate::config::base::InvalidSetting::new(
                    key,
                    format!("must be {DELAY_MIN_MS} to {DELAY_MAX_MS} milliseconds, not {value}"),
                ));
            }
        }
        Ok(())
    }

    /// The same settings forced into their bounds (the worker never runs unbounded, even
    /// if `validate` was skipped).
    fn bounded(&self) -> Self {
        Self {
            enabled: self.enabled,
            batch_max: self.batch_max.clamp(1, BATCH_MAX_LIMIT),
            poll_interval_ms: self.poll_interval_ms.clamp(DELAY_MIN_MS, DELAY_MAX_MS),
            retry_delay_ms: self.retry_delay_ms.clamp(DELAY_MIN_MS, DELAY_MAX_MS),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// The round's transaction failed; its rows stay for a later round.
    #[error("inbox database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// What one round did with the rows it claimed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Rows locked by this round.
    pub claimed: usize,
    /// Rows that created a new payout (deleted).
    pub created: usize,
    /// Rows for a payout that already existed with the same content (deleted).
    pub duplicate: usize,
    /// Rows refused for good: dead-lettered and deleted.
    pub dead_lettered: usize,
    /// Rows left in the table for a later round (the core asked to retry later, or an
    /// earlier row of the same payout did).
    pub deferred: usize,
}

impl Drained {
    /// Rows deleted from the inbox by this round.
    pub fn removed(&self) -> usize {
        self.created + self.duplicate + self.dead_lettered
    }

    fn add(&mut self, other: &Drained) {
        self.claimed += other.claimed;
        self.created += other.created;
        self.duplicate += other.duplicate;
        self.dead_lettered += other.dead_lettered;
        self.deferred += other.deferred;
    }
}

/// Runs one round: claims up to `batch_max` rows, ingests them, deletes or dead-letters
/// each, and commits. Several callers (instances) may run rounds on one table at once.
pub async fn drain_once(
    pool: &PgPool,
    payouts: &Payouts,
    settings: &InboxSettings,
) -> Result<Drained, InboxError> {
    let settings = settings.bounded();
    let mut tx = pool.begin().await?;
    let rows = store::claim(&mut tx, settings.batch_max).await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(Drained::default());
    }
    let mut drained = Drained {
        claimed: rows.len(),
        ..Drained::default()
    };
    let outcomes = ingest_rows(payouts, rows).await;
    let mut removed: Vec<i64> = Vec::with_capacity(outcomes.len());
    for (row, outcome) in &outcomes {
        match outcome {
            IngestOutcome::Created(_) => drained.created += 1,
            IngestOutcome::Duplicate(_) => drained.duplicate += 1,
            IngestOutcome::Rejected { code, reason } => {
                ingress::dead_letter(
                    &mut *tx,
                    DEAD_LETTER_SOURCE,
                    Some(&row.id.to_string()),
                    row.payload.as_bytes(),
                    *code,
                    reason,
                )
                .await?;
                drained.dead_lettered += 1;
            }
            IngestOutcome::Retry(_) => continue,
        }
        removed.push(row.id);
    }
    // Rows that were told to retry, rows queued behind them for the same payout, and rows
    // of a failed ingest task alike: they stay.
    drained.deferred = drained.claimed - removed.len();
    store::delete(&mut tx, &removed).await?;
    tx.commit().await?;
    Ok(drained)
}

/// Hands the rows to the core: one task per payout id, rows of one id in row order, and a
/// `Retry` ends that id's chain (its later rows wait for the next round, so they never
/// overtake it). Returns every row that got an answer, with the answer.
async fn ingest_rows(payouts: &Payouts, rows: Vec<InboxRow>) -> Vec<(InboxRow, IngestOutcome)> {
    // (payout id if the row parses, rows in id order)
    let mut chains: Vec<(Option<String>, Vec<InboxRow>)> = Vec::new();
    let mut chain_of: HashMap<String, usize> = HashMap::new();
    for row in rows {
        // Only the id is needed to group; a row that does not parse is a chain of its own
        // and `ingest` gives it its rejection.
        let key = ingress::parse_message(row.payload.as_bytes())
            .ok()
            .map(|r| r.payout_id().as_str().to_owned());
        let existing = key.as_ref().and_then(|k| chain_of.get(k).copied());
        let slot = match existing {
            Some(i) => i,
            None => {
                if let Some(k) = &key {
                    chain_of.insert(k.clone(), chains.len());
                }
                chains.push((key, Vec::new()));
                chains.len() - 1
            }
        };
        chains[slot].1.push(row);
    }
    let mut tasks = JoinSet::new();
    for (payout_id, chain) in chains {
        let payouts = payouts.clone();
        tasks.spawn(async move {
            let mut answered = Vec::with_capacity(chain.len());
            for row in chain {
                // A parsed id is safe to log; a raw payload never is (it may hold a seed).
                let span = tracing::info_span!(
                    "inbox_row",
                    row_id = row.id,
                    payout_id = payout_id.as_deref().unwrap_or("")
                );
                let outcome = ingest_one(&payouts, &row).instrument(span).await;
                let retry = !outcome.is_final();
                answered.push((row, outcome));
                if retry {
                    break;
                }
            }
            answered
        });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(answered) => outcomes.extend(answered),
            // A panicking ingest loses only its answers: those rows stay locked until the
            // commit and come back in a later round.
            Err(e) => {
                warn!(error = %e, "an inbox ingest task failed; its rows stay for a later round")
            }
        }
    }
    outcomes
}

async fn ingest_one(payouts: &Payouts, row: &InboxRow) -> IngestOutcome {
    let outcome = ingress::ingest(payouts, row.payload.as_bytes()).await;
    match &outcome {
        IngestOutcome::Created(state) => debug!(%state, "inbox row accepted: new payout"),
        IngestOutcome::Duplicate(state) => debug!(%state, "inbox row is a duplicate"),
        IngestOutcome::Rejected { code, reason } => {
            warn!(%code, %reason, "inbox row rejected; dead-lettered")
        }
        IngestOutcome::Retry(reason) => warn!(%reason, "inbox row deferred; retrying later"),
    }
    outcome
}

/// Runs the inbox worker until `shutdown` turns true (or its sender is dropped), finishing
/// the current round first. Returns what it did in total.
// Long because: the worker loop: listener, rounds, backoff and shutdown share their state
pub async fn run(
    pool: PgPool,
    payouts: Payouts,
    settings: InboxSettings,
    mut shutdown: watch::Receiver<bool>,
) -> Drained {
    if !settings.enabled {
        info!("inbox worker disabled (inbox.enabled = false)");
        return Drained::default();
    }
    let settings = settings.bounded();
    let poll = Duration::from_millis(settings.poll_interval_ms);
    let retry = Duration::from_millis(settings.retry_delay_ms);
    let wake = Arc::new(Notify::new());
    let listener = tokio::spawn(listen(pool.clone(), wake.clone(), retry));
    info!(
        batch_max = settings.batch_max,
        poll_interval_ms = settings.poll_interval_ms,
        "inbox worker started"
    );
    let mut total = Drained::default();
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        let pause = match drain_once(&pool, &payouts, &settings).await {
            Ok(round) => {
                total.add(&round);
                if round.claimed > 0 {
                    info!(
                        claimed = round.claimed,
                        created = round.created,
                        duplicate = round.duplicate,
                        dead_lettered = round.dead_lettered,
                        deferred = round.deferred,
                        "inbox round"
                    );
                }
                if round.deferred > 0 {
                    Pause::Backoff
                } else if round.claimed == settings.batch_max as usize {
                    // A full batch: more rows are likely waiting.
                    Pause::None
                } else {
                    Pause::Idle
                }
            }
            Err(e) => {
                warn!(error = %e, "inbox round failed; its rows stay for a later round");
                Pause::Backoff
            }
        };
        let stop = match pause {
            Pause::None => false,
            // Backing off: a notification must not cut the pause short.
            Pause::Backoff => tokio::select! {
                _ = tokio::time::sleep(retry) => false,
                changed = shutdown.changed() => changed.is_err() || *shutdown.borrow(),
            },
            Pause::Idle => tokio::select! {
                _ = wake.notified() => false,
                _ = tokio::time::sleep(poll) => false,
                changed = shutdown.changed() => changed.is_err() || *shutdown.borrow(),
            },
        };
        if stop {
            break;
        }
    }
    listener.abort();
    // Only a cancellation (or a panic) can end the listener; either way it is gone.
    let _ = listener.await;
    info!(
        created = total.created,
        duplicate = total.duplicate,
        dead_lettered = total.dead_lettered,
        "inbox worker stopped"
    );
    total
}

enum Pause {
    /// Run the next round at once.
    None,
    /// Wait `retry_delay_ms`, notifications or not.
    Backoff,
    /// Wait for a notification or `poll_interval_ms`.
    Idle,
}

/// Keeps a `LISTEN payout_inbox` connection and turns notifications into wake-ups. After
/// every (re)connect it wakes the worker once, since notifications sent while it was not
/// listening are gone. On errors it pauses `retry` and reconnects; polling covers the gap.
/// Runs until the worker aborts it.
async fn listen(pool: PgPool, wake: Arc<Notify>, retry: Duration) {
    loop {
        let Err(e) = listen_until_error(&pool, &wake).await;
        warn!(error = %e, "inbox listener lost its connection; polling until it is back");
        tokio::time::sleep(retry).await;
    }
}

async fn listen_until_error(pool: &PgPool, wake: &Notify) -> Result<Infallible, sqlx::Error> {
    let mut listener = store::listener(pool).await?;
    debug!("inbox listener ready");
    wake.notify_one();
    loop {
        // `Some`: a notification. `None`: the connection was lost and re-established, and
        // whatever was sent meanwhile is gone. Either way, a round should look.
        let _ = listener.try_recv().await?;
        wake.notify_one();
    }
}
