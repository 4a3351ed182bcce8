//! Reconciliation: proves that the journal and the ledger agree over a range of ledgers
//! (docs/reconcile.md). `payoutd reconcile` runs it once ([`cli`]); the service runs it on
//! a schedule ([`schedule`]), one instance at a time.
//!
//! A run: take the advisory lock → resolve the range against the server's history window
//! → open a read-only snapshot of the journal (after the range's end is fixed, so every
//! envelope that can be in the range is in the snapshot: envelopes are journaled before
//! they are submitted) → read the window again (every dead envelope of the snapshot was
//! proven by then) → page through the accounts' history → load the envelopes and payouts
//! the ledger names → [`compare::compare`] → journal the run.
//!
//! The ledger is read through [`payoutd_stellar::history::LedgerHistory`]; Horizon is the
//! implementation today, and a Stellar RPC one plugs in at [`history_for`].

pub mod cli;
pub mod compare;
pub mod report;
pub mod schedule;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use payoutd_actors::domain::AccountId;
use payoutd_stellar::history::{
    HistoryError, HistoryWindow, LedgerHistory, PAGE_RECORDS_MAX, scan_operations,
    scan_transactions,
};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPool;

use crate::reconcile::compare::{Findings, LedgerFacts};
use crate::storage::reconcile as store;

/// The first ledger of a Stellar network's history.
pub const GENESIS_LEDGER: u32 = 1;
/// The shortest schedule accepted, in milliseconds (a run reads several history pages).
pub const INTERVAL_MS_MIN: u64 = 100;

/// `[reconcile]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSettings {
    /// How often the service checks the ledgers closed since the last run, in
    /// milliseconds; 0 = never.
    pub interval_ms: u64,
    /// Ledgers one scheduled run checks at most; the next run goes on from there.
    pub ledgers_per_run_max: u32,
    /// Records per history page, 1 to 200.
    pub page_records: u32,
}

impl Default for ReconcileSettings {
    /// The built-in defaults (`config/default.toml`, the one place they are written).
    fn default() -> Self {
        crate::config::base::built_in(&["reconcile"])
    }
}

impl ReconcileSettings {
    /// The first setting that is wrong, by its key.
    pub fn validate(&self) -> Result<(), crate::config::base::InvalidSetting> {
        let bad = crate::config::base::InvalidSetting::new;
        if self.interval_ms != 0 && self.interval_ms < INTERVAL_MS_MIN {
            return Err(bad(
                "reconcile.interval_ms",
                format!("must be 0 (off) or at least {INTERVAL_MS_MIN}"),
            ));
        }
        if self.ledgers_per_run_max == 0 {
            return Err(bad(
                "reconcile.ledgers_per_run_max",
                "must be at least 1".into(),
            ));
        }
        if !(1..=PAGE_RECORDS_MAX).contains(&self.page_records) {
            return Err(bad(
                "reconcile.page_records",
                format!("must be 1 to {PAGE_RECORDS_MAX} (Horizon's largest page)"),
            ));
        }
        Ok(())
    }
}

/// Which ledgers to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// From where the furthest completed run stopped (the first run: from the first ledger
    /// any journaled envelope could be in) to the latest closed ledger.
    SinceLastRun,
    /// `from` (default: as `SinceLastRun`) to `to` (default: the latest), both included.
    Ledgers { from: Option<u32>, to: Option<u32> },
    /// The ledgers closed at `since` or later and before `until` (default: all since),
    /// unix seconds.
    Time { since: i64, until: Option<i64> },
}

impl RangeRequest {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SinceLastRun => "since_last_run",
            Self::Ledgers { .. } => "ledgers",
            Self::Time { .. } => "time",
        }
    }
}

/// Who started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Command,
    Schedule,
}

impl Trigger {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::Schedule => "schedule",
        }
    }
}

/// Why a run could not check. Nothing is concluded about agreement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    #[error("another reconciliation is running (it holds the advisory lock); try again later")]
    Busy,
    #[error("cannot read the ledger ({server}): {source}")]
    Ledger {
        server: String,
        #[source]
        source: HistoryError,
    },
    #[error("cannot read the journal: {0}")]
    Journal(String),
    #[error(
        "{server} serves the network {server_passphrase:?}, but payoutd is configured for {configured:?}"
    )]
    Network {
        server: String,
        configured: String,
        server_passphrase: String,
    },
    #[error("{0}")]
    Range(String),
    #[error("{0}")]
    Setup(String),
}

/// The accounts whose history is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accounts {
    /// The account that holds the money.
    pub distribution: AccountId,
    /// Channel accounts known from the configuration (the journal's `channel_accounts`
    /// and every envelope's source are added at each run).
    pub channels: Vec<AccountId>,
}

/// Shown while a long range is read: told the total work and each step.
pub trait Progress: Send + Sync {
    /// `scans` listings of `ledgers` ledgers each are about to be read.
    fn start(&self, ledgers: u64, scans: u64);
    /// Scan `scan` (0-based) has covered `done` of its ledgers.
    fn at(&self, scan: u64, done: u64, label: &str);
    fn finish(&self);
}

/// A progress that shows nothing (the scheduled check).
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: u64, _: u64) {}
    fn at(&self, _: u64, _: u64, _: &str) {}
    fn finish(&self) {}
}

/// The range a run checked and how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckedRange {
    /// `since_last_run`, `ledgers` or `time`.
    pub kind: &'static str,
    pub from_ledger: u32,
    pub to_ledger: u32,
    /// The time range asked for (RFC 3339), for `time`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Why the range is what it is, when that is not obvious (a first run, a start moved
    /// to the oldest ledger the server keeps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A finished check.
#[derive(Debug, Clone)]
pub struct Report {
    pub run_id: Option<i64>,
    pub range: CheckedRange,
    /// What may be shown of the server (no credentials).
    pub server: String,
    pub window: HistoryWindow,
    pub distribution: String,
    pub channels: Vec<String>,
    pub findings: Findings,
    pub started_at_unix_ms: i64,
    pub finished_at_unix_ms: i64,
}

impl Report {
    pub fn agrees(&self) -> bool {
        self.findings.mismatches.is_empty()
    }
}

/// What a run came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    Checked(Box<Report>),
    /// No ledger closed since the last run (a run without a range): nothing was checked
    /// nor recorded. `resume_ledger` is where the next run starts, `latest` the latest
    /// closed ledger.
    NothingNew {
        resume_ledger: u32,
        latest: u32,
    },
}

/// Options of one run.
pub struct RunOptions<'a> {
    pub trigger: Trigger,
    /// The instance running it (scheduled runs).
    pub instance: Option<&'a str>,
    /// A bound on the ledgers one run checks (scheduled runs).
    pub ledgers_max: Option<u32>,
    /// How long to wait for another run holding the lock.
    pub lock_wait: Duration,
    pub progress: &'a dyn Progress,
}

/// Everything a run needs.
pub struct Reconciler {
    pub pool: PgPool,
    pub history: Arc<dyn LedgerHistory>,
    pub accounts: Accounts,
    /// The configured network passphrase: the server must serve this network.
    pub network_passphrase: String,
    pub page_records: u32,
}

pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The ledger history reader for the configured ledger: Horizon at `url` (the configured
/// Horizon, or the built-in simulator's). A Stellar RPC reader (`getTransactions`) would be
/// chosen here for an RPC ledger mode.
pub fn history_for(
    url: &str,
    timeouts: payoutd_stellar::HorizonTimeouts,
) -> Result<Arc<dyn LedgerHistory>, ReconcileError> {
    let client = payoutd_stellar::HorizonClient::new(url, timeouts)
        .map_err(|e| ReconcileError::Setup(format!("the Horizon URL: {e}")))?;
    Ok(Arc::new(payoutd_stellar::history::HorizonHistory::new(
        client,
    )))
}

impl Reconciler {
    fn ledger_error(&self, source: HistoryError) -> ReconcileError {
        ReconcileError::Ledger {
            server: self.history.describe(),
            source,
        }
    }

    /// Runs one check under the advisory lock and journals it (a check that could not be
    /// done too, with its reason).
    pub async fn run(
        &self,
        request: RangeRequest,
        opts: RunOptions<'_>,
    ) -> Result<Outcome, ReconcileError> {
        let lock = store::Lock::acquire(&self.pool, opts.lock_wait)
            .await
            .map_err(ReconcileError::Journal)?
            .ok_or(ReconcileError::Busy)?;
        let started = now_unix_ms();
        let mut range_seen = None;
        let result = self.check(request, &opts, started, &mut range_seen).await;
        let row = |result: &'static str| store::RunRow {
            started_at_unix_ms: started,
            trigger: opts.trigger.as_str(),
            instance: opts.instance,
            range_kind: request.kind(),
            from_ledger: range_seen.map(|r: (u32, u32)| r.0),
            to_ledger: range_seen.map(|r| r.1),
            resume_ledger: None,
            result,
            mismatches: 0,
            counts: serde_json::json!({}),
            findings: serde_json::json!([]),
            error: None,
        };
        let recorded = match &result {
            Ok(Outcome::Checked(report)) => {
                let f = &report.findings;
                let findings: Vec<_> = f
                    .mismatches
                    .iter()
                    .take(store::RUN_FINDINGS_STORED_MAX)
                    .collect();
                store::record_run(
                    &self.pool,
                    &store::RunRow {
                        resume_ledger: Some(f.resume_ledger),
                        mismatches: f.counts.mismatches,
                        counts: serde_json::to_value(&f.counts).unwrap_or_default(),
                        findings: serde_json::to_value(findings).unwrap_or_default(),
                        ..row(if report.agrees() {
                            "clean"
                        } else {
                            "mismatches"
                        })
                    },
                )
                .await
                .map(Some)
            }
            Ok(Outcome::NothingNew { .. }) => Ok(None),
            Err(ReconcileError::Busy) => Ok(None),
            Err(e) => {
                let text = e.to_string();
                store::record_run(
                    &self.pool,
                    &store::RunRow {
                        error: Some(&text),
                        ..row("error")
                    },
                )
                .await
                .map(Some)
            }
        };
        lock.release().await;
        match (result, recorded) {
            (Ok(Outcome::Checked(mut report)), Ok(id)) => {
                report.run_id = id;
                Ok(Outcome::Checked(report))
            }
            (Ok(_), Err(e)) => Err(ReconcileError::Journal(format!(
                "the check ran but could not be journaled: {e}"
            ))),
            (other, _) => other,
        }
    }

    /// Resolves the range: `Ok(None)` when a run since the last one has nothing new.
    async fn resolve(
        &self,
        request: RangeRequest,
        window: &HistoryWindow,
        ledgers_max: Option<u32>,
    ) -> Result<Option<CheckedRange>, ReconcileError> {
        let mut note = None;
        let (from, to, since, until) = match request {
            RangeRequest::SinceLastRun => {
                let from = self.default_from(window, &mut note).await?;
                if from > window.latest {
                    return Ok(None);
                }
                let mut to = window.latest;
                if let Some(max) = ledgers_max {
                    to = to.min(from.saturating_add(max.saturating_sub(1)));
                }
                (from, to, None, None)
            }
            RangeRequest::Ledgers { from, to } => {
                let from = match from {
                    Some(f) => f,
                    None => self.default_from(window, &mut note).await?,
                };
                (from, to.unwrap_or(window.latest), None, None)
            }
            RangeRequest::Time { since, until } => {
                let (from, to) = self.time_range(window, since, until).await?;
                let show = |t: i64| u64::try_from(t).map(report::rfc3339).ok();
                (from, to, show(since), until.and_then(show))
            }
        };
        if from == 0 {
            return Err(ReconcileError::Range(
                "ledger 0 does not exist: ledgers start at 1".into(),
            ));
        }
        if from < window.elder {
            return Err(self.ledger_error(HistoryError::BeforeHistory {
                requested: from,
                elder: window.elder,
            }));
        }
        if to > window.latest {
            return Err(self.ledger_error(HistoryError::NotClosed {
                requested: to,
                latest: window.latest,
            }));
        }
        if from > to {
            return Err(ReconcileError::Range(format!(
                "the range holds no ledger (from {from} to {to})"
            )));
        }
        Ok(Some(CheckedRange {
            kind: request.kind(),
            from_ledger: from,
            to_ledger: to,
            since,
            until,
            note,
        }))
    }

    /// Where a run without a start begins: where the furthest completed run stopped; for the
    /// first run, the first ledger a journaled envelope could be in (`note` says so).
    async fn default_from(
        &self,
        window: &HistoryWindow,
        note: &mut Option<String>,
    ) -> Result<u32, ReconcileError> {
        if let Some(p) = store::resume_point(&self.pool)
            .await
            .map_err(ReconcileError::Journal)?
        {
            return Ok(p);
        }
        let first = store::first_envelope_ledger(&self.pool)
            .await
            .map_err(ReconcileError::Journal)?;
        Ok(match first {
            Some(first) if first < window.elder => {
                *note = Some(format!(
                    "first run: the first envelope could be in ledger {first}, but the server keeps ledgers from {} on; ledgers {first}..={} are not checked",
                    window.elder,
                    window.elder - 1
                ));
                window.elder
            }
            Some(first) => {
                *note = Some(
                    "first run: from the first ledger a journaled envelope could be in".to_owned(),
                );
                first
            }
            None => {
                *note = Some(
                    "first run and no envelope journaled yet: only the latest ledger".to_owned(),
                );
                window.latest
            }
        })
    }

    /// The ledgers closed in `[since, until)`: the first closed at or after `since`, to the
    /// last closed before `until` (the latest without `until`), found by binary search over
    /// the ledgers' close times.
    async fn time_range(
        &self,
        window: &HistoryWindow,
        since: i64,
        until: Option<i64>,
    ) -> Result<(u32, u32), ReconcileError> {
        if let Some(until) = until
            && until <= since
        {
            return Err(ReconcileError::Range(
                "--until must be after --since".into(),
            ));
        }
        let first_at_or_after = |t: i64| async move {
            let (mut lo, mut hi) = (window.elder, window.latest);
            if self.close_time(window, hi).await? < t {
                return Ok::<_, ReconcileError>(None);
            }
            // close(hi) >= t; find the smallest such ledger in [lo, hi].
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if self.close_time(window, mid).await? >= t {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            Ok(Some(lo))
        };
        let from = match first_at_or_after(since).await? {
            Some(from) => from,
            None => {
                return Err(ReconcileError::Range(format!(
                    "no ledger has closed since {} yet (the latest closed at {})",
                    report::rfc3339(u64::try_from(since).unwrap_or(0)),
                    report::rfc3339(window.latest_close_time)
                )));
            }
        };
        if from == window.elder
            && window.elder > GENESIS_LEDGER
            && self.close_time(window, from).await? > since
        {
            // Ledgers before the elder one may have closed after `since` too.
            return Err(self.ledger_error(HistoryError::BeforeHistory {
                requested: window.elder - 1,
                elder: window.elder,
            }));
        }
        let to = match until {
            None => window.latest,
            Some(until) => match first_at_or_after(until).await? {
                Some(l) => l.saturating_sub(1),
                None => window.latest,
            },
        };
        Ok((from, to))
    }

    async fn close_time(&self, window: &HistoryWindow, ledger: u32) -> Result<i64, ReconcileError> {
        match self.history.ledger_close_time(ledger).await {
            Ok(Some(t)) => Ok(i64::try_from(t).unwrap_or(i64::MAX)),
            Ok(None) => Err(self.ledger_error(HistoryError::Unusable(format!(
                "ledger {ledger} is within the server's history ({}..={}) but it has no record of it",
                window.elder, window.latest
            )))),
            Err(e) => Err(self.ledger_error(e)),
        }
    }

    // Long because it is one run read top to bottom: the journal's snapshot, the history's
    // window, the scans of every account, what the scope lacks, then the comparison; each step
    // uses what the one before read.
    async fn check(
        &self,
        request: RangeRequest,
        opts: &RunOptions<'_>,
        started: i64,
        range_seen: &mut Option<(u32, u32)>,
    ) -> Result<Outcome, ReconcileError> {
        let history = self.history.as_ref();
        let first = history.window().await.map_err(|e| self.ledger_error(e))?;
        if first.network_passphrase != self.network_passphrase {
            return Err(ReconcileError::Network {
                server: history.describe(),
                configured: self.network_passphrase.clone(),
                server_passphrase: first.network_passphrase,
            });
        }
        let Some(range) = self.resolve(request, &first, opts.ledgers_max).await? else {
            return Ok(Outcome::NothingNew {
                resume_ledger: first.latest.saturating_add(1),
                latest: first.latest,
            });
        };
        let (from, to) = (range.from_ledger, range.to_ledger);
        *range_seen = Some((from, to));

        // The snapshot is taken after `to` closed: every envelope that can be in the range
        // was journaled before it was first submitted, so it is in the snapshot.
        let mut snapshot = store::begin_snapshot(&self.pool)
            .await
            .map_err(ReconcileError::Journal)?;
        let mut scope = store::load_scope(&mut snapshot, from, to)
            .await
            .map_err(ReconcileError::Journal)?;
        // Read after the snapshot: every envelope it holds as dead was proven dead by a
        // ledger this window includes.
        let window = history.window().await.map_err(|e| self.ledger_error(e))?;

        let distribution = self.accounts.distribution.to_strkey();
        let mut sources: BTreeSet<String> = BTreeSet::new();
        sources.insert(distribution.clone());
        sources.extend(self.accounts.channels.iter().map(AccountId::to_strkey));
        sources.extend(scope.channels.iter().cloned());
        sources.extend(scope.facts.envelopes.values().map(|e| e.source.clone()));
        let accounts: Vec<(String, AccountId)> = sources
            .iter()
            .filter_map(|s| AccountId::parse(s).ok().map(|a| (s.clone(), a)))
            .collect();

        let ledgers = u64::from(to - from) + 1;
        let scans = accounts.len() as u64 + 1;
        opts.progress.start(ledgers, scans);
        let done = |ledger: u32| u64::from(ledger.saturating_sub(from)) + 1;
        let ledger_err = |e: HistoryError| self.ledger_error(e);
        let ops = scan_operations(
            history,
            &self.accounts.distribution,
            (from, to),
            self.page_records,
            &mut |l| {
                opts.progress
                    .at(0, done(l), "operations of the distribution account")
            },
        )
        .await
        .map_err(ledger_err)?;
        let mut txs = HashMap::new();
        for (i, (text, account)) in accounts.iter().enumerate() {
            let label = format!("transactions of {}", &text[..text.len().min(8)]);
            let scan = i as u64 + 1;
            for t in scan_transactions(history, account, (from, to), self.page_records, &mut |l| {
                opts.progress.at(scan, done(l), &label)
            })
            .await
            .map_err(ledger_err)?
            {
                txs.insert(t.hash.clone(), t);
            }
        }
        opts.progress.finish();
        // Dead envelopes whose fate the range does not settle: read their source's
        // transactions on to the latest ledger (only for the proof).
        let unresolved: HashSet<&str> = scope
            .facts
            .dead
            .iter()
            .filter_map(|h| scope.facts.envelopes.get(h))
            .filter(|e| !compare::dead_resolved(e, &txs))
            .map(|e| e.source.as_str())
            .collect();
        if to < window.latest {
            let proofs = accounts
                .iter()
                .filter(|(text, _)| unresolved.contains(text.as_str()));
            for (_, account) in proofs {
                for t in scan_transactions(
                    history,
                    account,
                    (to + 1, window.latest),
                    self.page_records,
                    &mut |_| {},
                )
                .await
                .map_err(ledger_err)?
                {
                    txs.entry(t.hash.clone()).or_insert(t);
                }
            }
        }

        // What the ledger names that the scope does not hold yet.
        let mut wanted: BTreeSet<String> = txs.keys().cloned().collect();
        wanted.extend(ops.iter().map(|o| o.tx_hash.clone()));
        let missing: Vec<String> = wanted
            .into_iter()
            .filter(|h| !scope.facts.envelopes.contains_key(h))
            .collect();
        for e in store::envelopes_by_hash(&mut snapshot, &missing)
            .await
            .map_err(ReconcileError::Journal)?
        {
            scope.facts.envelopes.insert(e.hash.clone(), e);
        }
        let members: BTreeSet<String> = scope
            .facts
            .envelopes
            .values()
            .flat_map(|e| e.member_ids.iter().cloned())
            .filter(|id| !scope.facts.payouts.contains_key(id))
            .collect();
        let members: Vec<String> = members.into_iter().collect();
        for p in store::payouts_by_id(&mut snapshot, &members)
            .await
            .map_err(ReconcileError::Journal)?
        {
            scope.facts.payouts.insert(p.payout_id.clone(), p);
        }
        snapshot
            .commit()
            .await
            .map_err(|e| ReconcileError::Journal(e.to_string()))?;

        let journal = scope.facts;
        let ledger = LedgerFacts {
            from,
            to,
            window: window.clone(),
            distribution: distribution.clone(),
            sources: sources.iter().cloned().collect(),
            txs,
            ops,
        };
        let findings = compare::compare(&journal, &ledger);
        Ok(Outcome::Checked(Box::new(Report {
            run_id: None,
            range,
            server: history.describe(),
            window,
            distribution,
            channels: sources
                .into_iter()
                .filter(|s| *s != ledger.distribution)
                .collect(),
            findings,
            started_at_unix_ms: started,
            finished_at_unix_ms: now_unix_ms(),
        })))
    }
}
