//! In-memory journal and ledger: test support for fast unit and property tests of the core,
//! and the ledger of the in-process benchmark (behind the `test-support` feature, never in
//! the service). Never a substitute for PostgreSQL or the simulator in integration tests.
//!
//! `MemJournal` keeps the Postgres journal's rules (fencing by version, steps allowed per
//! state, batches all or nothing, lease epochs, at most one non-dead envelope per channel
//! sequence); `MemLedger` keeps Stellar's (sequence numbers, time bounds by ledger close
//! time, one transaction per source per ledger, atomic transactions, the duplicate rule)
//! and can be told to lose answers, refuse, fail operations, lag and forget history.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::destinations::OpKind;
use crate::domain::{AccountId, Asset, Memo, PayoutId, PayoutRequest};
use crate::limits::{DAY_MS, HOUR_MS, Hold, Limits, Usage};
use crate::ports::journal::{
    Accepted, Batch, BatchStore, ChannelInfo, ChannelLease, ClusterStore, ControlStore,
    JournalError, Member, PayoutStore, PrepareError, Ready, Settled, Settlement,
};
use crate::ports::ledger::{
    Coverage, Envelope, Inclusion, Ledger, LedgerError, LedgerHead, Lookup, OpSpec, SequenceRead,
    SubmitOutcome, TxHash, TxSpec,
};
use crate::safety::Pause;
use crate::state::{EnvelopeRef, PayoutEvent, PayoutRecord, PayoutState, Step};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Test support only: a poisoned lock means another test thread panicked; the data is
    // still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct EnvelopeRow {
    batch: Batch,
    status: &'static str,
}

#[derive(Default)]
struct JournalInner {
    payouts: BTreeMap<PayoutId, PayoutRecord>,
    events: HashMap<PayoutId, Vec<PayoutEvent>>,
    envelopes: BTreeMap<TxHash, EnvelopeRow>,
    /// channel → (owner, epoch, owner can sign)
    channels: BTreeMap<AccountId, (Option<String>, i64, bool)>,
    /// instance → heartbeat expiry
    instances: HashMap<String, Instant>,
    pause: Option<Pause>,
    /// (who, action, reason) of every pause and resume.
    audit: Vec<(String, String, String)>,
    limits: Limits,
    /// (envelope, payout, asset, stroops, journaled at ms) of every prepared member.
    spends: Vec<(TxHash, PayoutId, String, i64, i64)>,
    /// When each held payout may be released (`None`: by an operator only).
    held_until: HashMap<PayoutId, Option<i64>>,
    /// Added to the wall clock: tests move time on by hand.
    clock_offset_ms: i64,
}

impl JournalInner {
    fn now_ms(&self) -> i64 {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        wall + self.clock_offset_ms
    }

    /// What is spent of `asset` in the windows: members of live or applied envelopes.
    fn usage(&self, asset: &str) -> Usage {
        let now = self.now_ms();
        let mut u = Usage {
            now_ms: now,
            ..Usage::default()
        };
        for (hash, _, a, amount, at) in &self.spends {
            let counted = a == asset
                && *at > now - DAY_MS
                && self
                    .envelopes
                    .get(hash)
                    .is_some_and(|e| matches!(e.status, "live" | "applied"));
            if !counted {
                continue;
            }
            u.day_amount = u.day_amount.saturating_add(*amount);
            u.day_count += 1;
            u.day_oldest_ms = Some(u.day_oldest_ms.map_or(*at, |o| o.min(*at)));
            if *at > now - HOUR_MS {
                u.hour_amount = u.hour_amount.saturating_add(*amount);
                u.hour_count += 1;
                u.hour_oldest_ms = Some(u.hour_oldest_ms.map_or(*at, |o| o.min(*at)));
            }
        }
        u
    }

    fn over_limit(&self, batch: &Batch) -> Vec<Hold> {
        if self.limits.is_empty() {
            return Vec::new();
        }
        let spends = batch.spends();
        let usage = self
            .limits
            .windowed_assets(&spends)
            .into_iter()
            .map(|a| (a.to_string(), self.usage(&a.to_string())))
            .collect();
        self.limits.check(&spends, &usage)
    }

    fn alive(&self, instance: &str) -> bool {
        self.instances
            .get(instance)
            .is_some_and(|until| *until > Instant::now())
    }

    fn event(&mut self, record: &PayoutRecord, kind: &str, detail: serde_json::Value) {
        self.events
            .entry(record.id().clone())
            .or_default()
            .push(PayoutEvent {
                version: record.version,
                kind: kind.to_owned(),
                state: record.state,
                detail,
                at: String::new(),
            });
    }

    fn step(&mut self, id: &PayoutId, step: &Step) -> Option<PayoutRecord> {
        let record = self.payouts.get_mut(id)?;
        step.apply_to(record);
        let record = record.clone();
        self.event(&record, step.event_kind(), step.detail());
        Some(record)
    }
}

/// A journal in a `Mutex`. Counts writes so tests can assert "no write for a duplicate".
#[derive(Default)]
pub struct MemJournal {
    inner: Mutex<JournalInner>,
    pub writes: AtomicU64,
    /// When set, every call fails as if the database were down.
    pub unavailable: AtomicBool,
}

impl MemJournal {
    pub fn new() -> Self {
        Self::default()
    }

    fn check(&self) -> Result<(), JournalError> {
        if self.unavailable.load(Ordering::SeqCst) {
            Err(JournalError::Unavailable("simulated outage".into()))
        } else {
            Ok(())
        }
    }

    fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
    }

    /// Every payout (for tests' checks; ignores outages).
    pub fn all(&self) -> Vec<PayoutRecord> {
        lock(&self.inner).payouts.values().cloned().collect()
    }

    /// Every journaled envelope with its status (for tests' checks; ignores outages).
    pub fn envelopes(&self) -> Vec<(Batch, &'static str)> {
        lock(&self.inner)
            .envelopes
            .values()
            .map(|e| (e.batch.clone(), e.status))
            .collect()
    }

    /// The spending limits its prepares check.
    pub fn set_limits(&self, limits: Limits) {
        lock(&self.inner).limits = limits;
    }

    /// Moves the journal's clock on by `ms` (windows and holds run out by it).
    pub fn advance_clock_ms(&self, ms: i64) {
        lock(&self.inner).clock_offset_ms += ms;
    }

    /// The heartbeat of `instance` expires now (a test's "the process died").
    pub fn expire(&self, instance: &str) {
        lock(&self.inner)
            .instances
            .insert(instance.to_owned(), Instant::now());
    }
}

#[async_trait]
impl PayoutStore for MemJournal {
    async fn accept(&self, request: &PayoutRequest, owner: &str) -> Result<Accepted, JournalError> {
        self.check()?;
        let mut inner = lock(&self.inner);
        if let Some(existing) = inner.payouts.get(request.payout_id()) {
            return Ok(Accepted::Existing(existing.clone()));
        }
        let record = PayoutRecord::accepted(request.clone(), owner);
        inner
            .payouts
            .insert(request.payout_id().clone(), record.clone());
        let detail = serde_json::json!({ "fingerprint": record.fingerprint.to_hex() });
        inner.event(&record, "accepted", detail);
        self.wrote();
        Ok(Accepted::Created(record))
    }

    async fn load(&self, id: &PayoutId) -> Result<Option<PayoutRecord>, JournalError> {
        self.check()?;
        Ok(lock(&self.inner).payouts.get(id).cloned())
    }

    async fn apply(
        &self,
        current: &PayoutRecord,
        step: &Step,
    ) -> Result<PayoutRecord, JournalError> {
        self.check()?;
        let id = current.id();
        let mut inner = lock(&self.inner);
        let stored = inner
            .payouts
            .get(id)
            .ok_or_else(|| JournalError::NotFound(id.to_string()))?;
        if stored.version != current.version || !step.allowed_from(stored) {
            return Err(JournalError::Stale(id.to_string()));
        }
        let record = inner
            .step(id, step)
            .ok_or_else(|| JournalError::NotFound(id.to_string()))?;
        self.wrote();
        Ok(record)
    }

    async fn events(&self, id: &PayoutId) -> Result<Vec<PayoutEvent>, JournalError> {
        self.check()?;
        Ok(lock(&self.inner)
            .events
            .get(id)
            .cloned()
            .unwrap_or_default())
    }
}

#[async_trait]
impl BatchStore for MemJournal {
    async fn prepare(&self, lease: &ChannelLease, batch: &Batch) -> Result<(), PrepareError> {
        self.check()?;
        let mut inner = lock(&self.inner);
        if inner.pause.is_some() {
            return Err(PrepareError::Paused);
        }
        match inner.channels.get(&lease.account) {
            Some((Some(owner), epoch, _)) if *owner == lease.owner && *epoch == lease.epoch => {}
            _ => return Err(PrepareError::LeaseLost),
        }
        let e = &batch.envelope;
        let taken = inner.envelopes.values().any(|row| {
            row.status != "dead"
                && row.batch.envelope.source == e.source
                && row.batch.envelope.sequence == e.sequence
        });
        if taken {
            return Err(PrepareError::SequenceTaken);
        }
        let stale: Vec<PayoutId> = batch
            .members
            .iter()
            .filter(|m| {
                inner.payouts.get(m.ready.id()).is_none_or(|r| {
                    r.version != m.ready.version || r.state != PayoutState::Accepted
                })
            })
            .map(|m| m.ready.id().clone())
            .collect();
        if !stale.is_empty() {
            return Err(PrepareError::Stale(stale));
        }
        let holds = inner.over_limit(batch);
        if !holds.is_empty() {
            return Err(PrepareError::OverLimit(holds));
        }
        let now = inner.now_ms();
        for m in &batch.members {
            let spend = (
                e.hash,
                m.ready.id().clone(),
                m.ready.request.asset().to_string(),
                m.ready.request.amount().stroops(),
                now,
            );
            inner.spends.push(spend);
        }
        for m in &batch.members {
            let step = Step::Prepared {
                envelope: EnvelopeRef {
                    hash: e.hash,
                    op_index: m.op_index,
                },
            };
            inner.step(m.ready.id(), &step);
        }
        inner.envelopes.insert(
            e.hash,
            EnvelopeRow {
                batch: batch.clone(),
                status: "live",
            },
        );
        self.wrote();
        Ok(())
    }

    async fn mark_submitted(
        &self,
        hash: &TxHash,
        note: &str,
    ) -> Result<Vec<(PayoutId, i64)>, JournalError> {
        self.check()?;
        let mut inner = lock(&self.inner);
        let ids: Vec<PayoutId> = inner
            .payouts
            .values()
            .filter(|r| {
                r.state == PayoutState::Prepared && r.envelope.map(|e| e.hash) == Some(*hash)
            })
            .map(|r| r.id().clone())
            .collect();
        let step = Step::Submitted {
            note: note.to_owned(),
        };
        let changed: Vec<(PayoutId, i64)> = ids
            .iter()
            .filter_map(|id| inner.step(id, &step).map(|r| (r.id().clone(), r.version)))
            .collect();
        if !changed.is_empty() {
            self.wrote();
        }
        Ok(changed)
    }

    async fn settle(
        &self,
        hash: &TxHash,
        settlement: &Settlement,
        owner: &str,
    ) -> Result<Vec<Settled>, JournalError> {
        self.check()?;
        let mut inner = lock(&self.inner);
        let Some(row) = inner.envelopes.get_mut(hash) else {
            return Ok(Vec::new());
        };
        if row.status == "live" {
            row.status = settlement.status.as_str();
        }
        let mut changed = Vec::new();
        for (id, step) in &settlement.members {
            let in_it = inner
                .payouts
                .get(id)
                .is_some_and(|r| r.envelope.map(|e| e.hash) == Some(*hash) && step.allowed_from(r));
            if !in_it {
                continue;
            }
            if let Some(mut record) = inner.step(id, step) {
                if record.state == PayoutState::Accepted {
                    record.owner = Some(owner.to_owned());
                    if let Some(r) = inner.payouts.get_mut(id) {
                        r.owner = Some(owner.to_owned());
                    }
                }
                changed.push(Settled::of(&record));
            }
        }
        self.wrote();
        Ok(changed)
    }

    async fn hold(&self, holds: &[(Ready, Hold)]) -> Result<Vec<PayoutId>, JournalError> {
        self.check()?;
        let mut inner = lock(&self.inner);
        let mut held = Vec::new();
        for (ready, hold) in holds {
            let fresh = inner
                .payouts
                .get(ready.id())
                .is_some_and(|r| r.version == ready.version && r.state == PayoutState::Accepted);
            if !fresh {
                continue;
            }
            let step = Step::Held {
                reason: hold.reason.clone(),
                until_unix_ms: hold.until_unix_ms,
            };
            inner.step(ready.id(), &step);
            inner
                .held_until
                .insert(ready.id().clone(), hold.until_unix_ms);
            held.push(ready.id().clone());
        }
        if !held.is_empty() {
            self.wrote();
        }
        Ok(held)
    }

    async fn open_batches(&self, channel: &AccountId) -> Result<Vec<Batch>, JournalError> {
        self.check()?;
        let inner = lock(&self.inner);
        let mut batches: Vec<Batch> = inner
            .envelopes
            .values()
            .filter(|row| row.status == "live" && row.batch.envelope.source == *channel)
            .map(|row| {
                let mut batch = row.batch.clone();
                // The members as they are now (the journal holds the truth, not the copy
                // taken at prepare).
                batch.members = batch
                    .members
                    .iter()
                    .filter_map(|m| {
                        let r = inner.payouts.get(m.ready.id())?;
                        let still = r.envelope.map(|e| e.hash) == Some(batch.envelope.hash)
                            && !r.state.is_terminal();
                        still.then(|| Member {
                            ready: Ready::of(r),
                            op_index: m.op_index,
                        })
                    })
                    .collect();
                batch
            })
            .collect();
        batches.sort_by_key(|b| b.envelope.sequence);
        Ok(batches)
    }
}

impl MemJournal {
    /// Every pause and resume: (who, action, reason).
    pub fn audit(&self) -> Vec<(String, String, String)> {
        lock(&self.inner).audit.clone()
    }
}

#[async_trait]
impl ControlStore for MemJournal {
    async fn pause_state(&self) -> Result<Option<Pause>, JournalError> {
        self.check()?;
        Ok(lock(&self.inner).pause.clone())
    }

    async fn set_pause(
        &self,
        pause: bool,
        by: &str,
        reason: &str,
    ) -> Result<Option<Pause>, JournalError> {
        self.check()?;
        let mut inner = lock(&self.inner);
        if pause && inner.pause.is_none() {
            let since_unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            inner.pause = Some(Pause {
                by: by.to_owned(),
                reason: reason.to_owned(),
                since_unix_ms,
            });
        } else if !pause {
            inner.pause = None;
        }
        let action = if pause { "pause" } else { "resume" };
        inner
            .audit
            .push((by.to_owned(), action.to_owned(), reason.to_owned()));
        self.wrote();
        Ok(inner.pause.clone())
    }
}

#[async_trait]
impl<J: ControlStore> ControlStore for Hooked<J> {
    async fn pause_state(&self) -> Result<Option<Pause>, JournalError> {
        self.inner.pause_state().await
    }
    async fn set_pause(
        &self,
        pause: bool,
        by: &str,
        reason: &str,
    ) -> Result<Option<Pause>, JournalError> {
        self.inner.set_pause(pause, by, reason).await
    }
}

#[async_trait]
impl ClusterStore for MemJournal {
    async fn register_channels(&self, accounts: &[AccountId]) -> Result<(), JournalError> {
        self.check()?;
        let mut inner = lock(&self.inner);
        for a in accounts {
            inner.channels.entry(*a).or_insert((None, 0, false));
        }
        Ok(())
    }

    async fn heartbeat(&self, instance: &str, ttl_ms: u64) -> Result<(), JournalError> {
        self.check()?;
        let until = Instant::now() + std::time::Duration::from_millis(ttl_ms);
        lock(&self.inner)
            .instances
            .insert(instance.to_owned(), until);
        Ok(())
    }

    async fn retire(&self, instance: &str, leases: &[ChannelLease]) -> Result<(), JournalError> {
        self.check()?;
        let mut inner = lock(&self.inner);
        inner.instances.insert(instance.to_owned(), Instant::now());
        for lease in leases {
            if let Some((owner, epoch, _)) = inner.channels.get_mut(&lease.account)
                && owner.as_deref() == Some(lease.owner.as_str())
                && *epoch == lease.epoch
            {
                *owner = None;
            }
        }
        Ok(())
    }

    async fn claim_channel(
        &self,
        instance: &str,
        account: &AccountId,
        can_sign: bool,
    ) -> Result<Option<ChannelLease>, JournalError> {
        self.check()?;
        let mut inner = lock(&self.inner);
        let Some((owner, _, holder_signs)) = inner.channels.get(account).cloned() else {
            return Ok(None);
        };
        let free = match &owner {
            None => true,
            Some(o) if o == instance => true,
            Some(o) => !inner.alive(o) || (can_sign && !holder_signs),
        };
        if !free {
            return Ok(None);
        }
        let entry = inner
            .channels
            .get_mut(account)
            .ok_or_else(|| JournalError::NotFound(account.to_string()))?;
        entry.0 = Some(instance.to_owned());
        entry.1 += 1;
        entry.2 = can_sign;
        Ok(Some(ChannelLease {
            account: *account,
            owner: instance.to_owned(),
            epoch: entry.1,
        }))
    }

    async fn release_channel(&self, lease: &ChannelLease) -> Result<(), JournalError> {
        self.check()?;
        let mut inner = lock(&self.inner);
        if let Some(entry) = inner.channels.get_mut(&lease.account)
            && entry.0.as_deref() == Some(lease.owner.as_str())
            && entry.1 == lease.epoch
        {
            entry.0 = None;
        }
        Ok(())
    }

    async fn channels(&self) -> Result<Vec<ChannelInfo>, JournalError> {
        self.check()?;
        let inner = lock(&self.inner);
        Ok(inner
            .channels
            .iter()
            .map(|(account, (owner, _, _))| ChannelInfo {
                account: *account,
                owner: owner.clone(),
                owner_alive: owner.as_deref().is_some_and(|o| inner.alive(o)),
                open_envelopes: inner
                    .envelopes
                    .values()
                    .filter(|r| r.status == "live" && r.batch.envelope.source == *account)
                    .count() as u32,
            })
            .collect())
    }

    async fn adopt_orphans(&self, instance: &str, limit: u32) -> Result<Vec<Ready>, JournalError> {
        self.check()?;
        let mut inner = lock(&self.inner);
        // An owner that is gone, or alive without a signing lease (it cannot pay them).
        let signs = |o: &str| {
            inner
                .channels
                .values()
                .any(|(owner, _, can_sign)| *can_sign && owner.as_deref() == Some(o))
        };
        let orphans: Vec<PayoutId> = inner
            .payouts
            .values()
            .filter(|r| {
                r.state == PayoutState::Accepted
                    && r.owner
                        .as_deref()
                        .is_none_or(|o| o != instance && (!inner.alive(o) || !signs(o)))
            })
            .take(limit as usize)
            .map(|r| r.id().clone())
            .collect();
        let step = Step::Adopted {
            owner: instance.to_owned(),
        };
        let adopted: Vec<Ready> = orphans
            .iter()
            .filter_map(|id| inner.step(id, &step))
            .map(|r| Ready::of(&r))
            .collect();
        if !adopted.is_empty() {
            self.wrote();
        }
        Ok(adopted)
    }

    async fn release_held(&self, instance: &str, limit: u32) -> Result<Vec<Ready>, JournalError> {
        self.check()?;
        let mut inner = lock(&self.inner);
        let now = inner.now_ms();
        let due: Vec<PayoutId> = inner
            .payouts
            .values()
            .filter(|r| {
                r.state == PayoutState::Held
                    && inner
                        .held_until
                        .get(r.id())
                        .copied()
                        .flatten()
                        .is_some_and(|until| until <= now)
            })
            .take(limit as usize)
            .map(|r| r.id().clone())
            .collect();
        let step = Step::Released {
            owner: instance.to_owned(),
        };
        let released: Vec<Ready> = due
            .iter()
            .filter_map(|id| inner.step(id, &step))
            .map(|r| Ready::of(&r))
            .collect();
        for id in &due {
            inner.held_until.remove(id);
        }
        if !released.is_empty() {
            self.wrote();
        }
        Ok(released)
    }

    async fn ready_of(
        &self,
        owner: &str,
        after: Option<&PayoutId>,
        limit: u32,
    ) -> Result<Vec<Ready>, JournalError> {
        self.check()?;
        let inner = lock(&self.inner);
        Ok(inner
            .payouts
            .values()
            .filter(|r| after.is_none_or(|a| r.id() > a))
            .filter(|r| r.state == PayoutState::Accepted && r.owner.as_deref() == Some(owner))
            .take(limit as usize)
            .map(Ready::of)
            .collect())
    }
}

/// The answer the next submission gets (then the ledger goes back to normal answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scripted {
    /// Applied (or included as failed), but the answer is lost: `Unknown`.
    LoseAnswer,
    /// A 5xx before the transaction reached the network: `Unknown`, nothing happens.
    ServerError,
    /// Refused before inclusion with this code; nothing happens.
    Reject(String),
    /// The submitting task panics (a bug in the worker's path): its supervisor restarts it.
    Panic,
}

/// One operation that applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemPayment {
    pub hash: TxHash,
    pub op_index: u32,
    pub op: OpSpec,
    pub memo: Memo,
    pub ledger: u32,
}

struct TxRec {
    spec: TxSpec,
    /// (ledger, successful, per-operation codes)
    result: Option<(u32, bool, Vec<String>)>,
}

struct LedgerInner {
    head: LedgerHead,
    /// Account sequences.
    accounts: HashMap<AccountId, i64>,
    /// Destinations that do not exist (`op_no_destination`).
    missing: HashSet<AccountId>,
    /// Destinations without a trustline for any credit asset (`op_no_trust`).
    untrusting: HashSet<AccountId>,
    /// Destinations whose payments fail `op_underfunded` (the payer is short for them).
    underfunded: HashSet<AccountId>,
    txs: HashMap<TxHash, TxRec>,
    pending: VecDeque<TxHash>,
    script: VecDeque<Scripted>,
    payments: Vec<MemPayment>,
    record_payments: bool,
    lookup_lag_ledgers: u32,
    history_elder_ledger: u32,
    /// Keep only this many closed ledgers of transactions (`None`: all), moving the elder
    /// ledger along, as a node that prunes its history does.
    retention_ledgers: Option<u32>,
    instant: bool,
    /// Seconds each closed ledger adds to the close time.
    close_time_step_s: u64,
}

/// A small consistent Stellar ledger. `build_and_sign` remembers each spec by a hash of it
/// (no XDR: this ledger never decodes envelopes).
pub struct MemLedger {
    inner: Arc<Mutex<LedgerInner>>,
    keys: HashSet<AccountId>,
    flags: Arc<Flags>,
}

#[derive(Default)]
pub struct Flags {
    pub submissions: AtomicU64,
    /// Every call fails as if the network were unreachable.
    pub unavailable: AtomicBool,
    /// Submissions get a 5xx (nothing reaches the network); reads work.
    pub submit_outage: AtomicBool,
}

impl MemLedger {
    /// A ledger where `sources` exist (sequence `1 << 32`) and this process holds their
    /// keys; ledgers close at every accepted submission.
    pub fn new(sources: &[AccountId]) -> Self {
        Self {
            inner: Arc::new(Mutex::new(LedgerInner {
                head: LedgerHead {
                    sequence: 1,
                    close_time: 1_000,
                },
                accounts: sources.iter().map(|a| (*a, 1i64 << 32)).collect(),
                missing: HashSet::new(),
                untrusting: HashSet::new(),
                underfunded: HashSet::new(),
                txs: HashMap::new(),
                pending: VecDeque::new(),
                script: VecDeque::new(),
                payments: Vec::new(),
                record_payments: true,
                lookup_lag_ledgers: 0,
                history_elder_ledger: 1,
                retention_ledgers: None,
                instant: true,
                close_time_step_s: 5,
            })),
            keys: sources.iter().copied().collect(),
            flags: Arc::default(),
        }
    }

    /// The same ledger as another process sees it: shared state, its own keys.
    pub fn view(&self, keys: &[AccountId]) -> Self {
        Self {
            inner: self.inner.clone(),
            keys: keys.iter().copied().collect(),
            flags: self.flags.clone(),
        }
    }

    pub fn flags(&self) -> &Flags {
        &self.flags
    }

    /// Ledgers close only on `close_ledger` (not at every submission).
    pub fn manual(self) -> Self {
        lock(&self.inner).instant = false;
        self
    }

    /// Keeps no list of payments (memory stays flat in long benchmarks).
    pub fn without_payment_log(self) -> Self {
        lock(&self.inner).record_payments = false;
        self
    }

    /// Forgets transactions more than `ledgers` closed ledgers old (a node with pruned
    /// history): what a long benchmark needs so that the stand-in network's memory does
    /// not grow with every payout and hide the service's own.
    pub fn with_history_retention(self, ledgers: u32) -> Self {
        lock(&self.inner).retention_ledgers = Some(ledgers.max(1));
        self
    }

    /// This process no longer holds the key of `account` (another instance does).
    pub fn without_key(mut self, account: &AccountId) -> Self {
        self.keys.remove(account);
        self
    }

    pub fn script(&self, answer: Scripted) {
        lock(&self.inner).script.push_back(answer);
    }

    pub fn set_missing(&self, destination: AccountId) {
        lock(&self.inner).missing.insert(destination);
    }

    /// Payments of credit assets to `destination` fail `op_no_trust` (claimable balances
    /// for it succeed).
    pub fn set_untrusting(&self, destination: AccountId) {
        lock(&self.inner).untrusting.insert(destination);
    }

    pub fn set_underfunded(&self, destination: AccountId, on: bool) {
        let mut inner = lock(&self.inner);
        if on {
            inner.underfunded.insert(destination);
        } else {
            inner.underfunded.remove(&destination);
        }
    }

    /// Lookups are answered by a server `ledgers` behind the head.
    pub fn set_lookup_lag(&self, ledgers: u32) {
        lock(&self.inner).lookup_lag_ledgers = ledgers;
    }

    /// The lookup server keeps history from this ledger on only.
    pub fn set_history_elder(&self, ledger: u32) {
        lock(&self.inner).history_elder_ledger = ledger;
    }

    /// Someone else consumed `account`'s sequence numbers up to `sequence`.
    pub fn bump_sequence(&self, account: &AccountId, sequence: i64) {
        let mut inner = lock(&self.inner);
        let s = inner.accounts.entry(*account).or_insert(0);
        *s = (*s).max(sequence);
    }

    pub fn head(&self) -> LedgerHead {
        lock(&self.inner).head
    }

    pub fn payments(&self) -> Vec<MemPayment> {
        lock(&self.inner).payments.clone()
    }

    /// Payments made with `request`'s destination, asset and amount.
    pub fn payments_for(&self, request: &PayoutRequest) -> usize {
        lock(&self.inner)
            .payments
            .iter()
            .filter(|p| {
                p.op.destination == *request.destination()
                    && p.op.asset == *request.asset()
                    && p.op.amount == request.amount()
            })
            .count()
    }

    /// Transactions in ledgers (successful or failed).
    pub fn included(&self) -> usize {
        lock(&self.inner)
            .txs
            .values()
            .filter(|t| t.result.is_some())
            .count()
    }

    /// Closes a ledger: applies the pending transactions that are still valid, in order.
    pub fn close_ledger(&self) -> LedgerHead {
        let mut inner = lock(&self.inner);
        close(&mut inner);
        inner.head
    }

    fn check(&self) -> Result<(), LedgerError> {
        if self.flags.unavailable.load(Ordering::SeqCst) {
            Err(LedgerError::Unavailable("simulated outage".into()))
        } else {
            Ok(())
        }
    }
}

fn spec_hash(spec: &TxSpec) -> TxHash {
    let mut h = Sha256::new();
    h.update(format!("{spec:?}").as_bytes());
    TxHash(h.finalize().into())
}

/// Why the transaction cannot be in the next ledger, if it cannot.
fn invalid(inner: &LedgerInner, spec: &TxSpec, close_time: u64) -> Option<&'static str> {
    let current = inner.accounts.get(&spec.source)?;
    if spec.sequence != current + 1 {
        return Some("tx_bad_seq");
    }
    if close_time > spec.max_time {
        return Some("tx_too_late");
    }
    None
}

fn close(inner: &mut LedgerInner) {
    let next = LedgerHead {
        sequence: inner.head.sequence + 1,
        close_time: inner.head.close_time + inner.close_time_step_s,
    };
    let mut used_sources = HashSet::new();
    let mut keep = VecDeque::new();
    for hash in std::mem::take(&mut inner.pending) {
        let Some(rec) = inner.txs.get(&hash) else {
            continue;
        };
        let spec = rec.spec.clone();
        if used_sources.contains(&spec.source) {
            keep.push_back(hash);
            continue;
        }
        if invalid(inner, &spec, next.close_time).is_some() {
            continue; // dropped from the pending set, nothing consumed
        }
        used_sources.insert(spec.source);
        inner.accounts.insert(spec.source, spec.sequence);
        let codes: Vec<String> = spec
            .operations
            .iter()
            .map(|op| {
                let dest = op.destination.account();
                let missing = inner.missing.contains(&dest);
                match op.kind {
                    _ if inner.underfunded.contains(&dest) => "op_underfunded",
                    OpKind::CreateAccount if missing => "op_success",
                    OpKind::CreateAccount => "op_already_exists",
                    OpKind::ClaimableBalance => "op_success",
                    OpKind::Payment if missing => "op_no_destination",
                    OpKind::Payment
                        if op.asset != Asset::Native && inner.untrusting.contains(&dest) =>
                    {
                        "op_no_trust"
                    }
                    OpKind::Payment => "op_success",
                }
                .to_owned()
            })
            .collect();
        let ok = codes.iter().all(|c| c == "op_success");
        if ok {
            for op in &spec.operations {
                if op.kind == OpKind::CreateAccount {
                    inner.missing.remove(&op.destination.account());
                }
            }
        }
        if ok && inner.record_payments {
            for (i, op) in spec.operations.iter().enumerate() {
                inner.payments.push(MemPayment {
                    hash,
                    op_index: i as u32,
                    op: op.clone(),
                    memo: spec.memo.clone(),
                    ledger: next.sequence,
                });
            }
        }
        if let Some(rec) = inner.txs.get_mut(&hash) {
            rec.result = Some((next.sequence, ok, codes));
        }
    }
    inner.pending = keep;
    inner.head = next;
    if let Some(keep_ledgers) = inner.retention_ledgers {
        let elder = next.sequence.saturating_sub(keep_ledgers - 1).max(1);
        if elder > inner.history_elder_ledger {
            inner.history_elder_ledger = elder;
            inner
                .txs
                .retain(|_, rec| rec.result.as_ref().is_none_or(|(l, _, _)| *l >= elder));
        }
    }
}

fn outcome(rec: &TxRec) -> Option<SubmitOutcome> {
    let (ledger, ok, codes) = rec.result.as_ref()?;
    let inclusion = Inclusion {
        ledger: *ledger,
        fee_charged: i64::from(rec.spec.fee_stroops),
    };
    Some(if *ok {
        SubmitOutcome::Applied(inclusion)
    } else {
        SubmitOutcome::Failed {
            inclusion,
            tx_code: "tx_failed".into(),
            op_codes: codes.clone(),
        }
    })
}

#[async_trait]
impl Ledger for MemLedger {
    fn build_and_sign(&self, spec: &TxSpec) -> Result<Envelope, LedgerError> {
        if !self.keys.contains(&spec.source) {
            return Err(LedgerError::NoKey(spec.source.to_strkey()));
        }
        if spec.operations.is_empty()
            || spec.operations.len() > crate::policy::OPERATIONS_PER_TX_MAX
        {
            return Err(LedgerError::Build("1 to 100 operations".into()));
        }
        let hash = spec_hash(spec);
        let envelope = Envelope {
            xdr: format!("mem:{}", hash.to_hex()),
            hash,
            source: spec.source,
            sequence: spec.sequence,
            fee_stroops: spec.fee_stroops,
            max_time: spec.max_time,
            ledger_bounds: spec.ledger_bounds,
        };
        lock(&self.inner).txs.entry(hash).or_insert(TxRec {
            spec: spec.clone(),
            result: None,
        });
        Ok(envelope)
    }

    fn can_sign(&self, account: &AccountId) -> bool {
        self.keys.contains(account)
    }

    async fn submit(&self, envelope: &Envelope) -> SubmitOutcome {
        self.flags.submissions.fetch_add(1, Ordering::SeqCst);
        if self.check().is_err() || self.flags.submit_outage.load(Ordering::SeqCst) {
            return SubmitOutcome::Unknown {
                detail: "simulated outage".into(),
            };
        }
        let mut inner = lock(&self.inner);
        let scripted = inner.script.pop_front();
        match &scripted {
            Some(Scripted::ServerError) => {
                return SubmitOutcome::Unknown {
                    detail: "HTTP 500".into(),
                };
            }
            Some(Scripted::Reject(code)) => {
                return SubmitOutcome::Rejected { code: code.clone() };
            }
            Some(Scripted::Panic) => {
                drop(inner);
                panic!("scripted panic in submit");
            }
            _ => {}
        }
        let lose = scripted == Some(Scripted::LoseAnswer);
        let answer = |o: SubmitOutcome| {
            if lose {
                SubmitOutcome::Unknown {
                    detail: "answer lost".into(),
                }
            } else {
                o
            }
        };
        let Some(rec) = inner.txs.get(&envelope.hash) else {
            return SubmitOutcome::Rejected {
                code: "tx_malformed".into(),
            };
        };
        if let Some(done) = outcome(rec) {
            return answer(done);
        }
        if inner.pending.contains(&envelope.hash) {
            return answer(SubmitOutcome::Pending);
        }
        let spec = rec.spec.clone();
        let next_close = inner.head.close_time + inner.close_time_step_s;
        if let Some(code) = invalid(&inner, &spec, next_close) {
            return SubmitOutcome::Rejected { code: code.into() };
        }
        let busy = inner.pending.iter().any(|h| {
            inner
                .txs
                .get(h)
                .is_some_and(|r| r.spec.source == spec.source)
        });
        if busy {
            return SubmitOutcome::Unknown {
                detail: "try again later".into(),
            };
        }
        inner.pending.push_back(envelope.hash);
        if !inner.instant {
            return answer(SubmitOutcome::Pending);
        }
        close(&mut inner);
        let done = inner.txs.get(&envelope.hash).and_then(outcome);
        answer(done.unwrap_or(SubmitOutcome::Unknown {
            detail: "dropped".into(),
        }))
    }

    async fn lookup(&self, hash: &TxHash) -> Result<Lookup, LedgerError> {
        self.check()?;
        let inner = lock(&self.inner);
        let latest = inner
            .head
            .sequence
            .saturating_sub(inner.lookup_lag_ledgers)
            .max(1);
        let oldest = inner.history_elder_ledger;
        let found = inner.txs.get(hash).and_then(|rec| {
            let (ledger, _, _) = rec.result.as_ref()?;
            (*ledger <= latest && *ledger >= oldest).then(|| outcome(rec))?
        });
        Ok(match found {
            Some(SubmitOutcome::Applied(i)) => Lookup::Applied(i),
            Some(SubmitOutcome::Failed {
                inclusion,
                tx_code,
                op_codes,
            }) => Lookup::Failed {
                inclusion,
                tx_code,
                op_codes,
            },
            _ => Lookup::NotFound(Some(Coverage { oldest, latest })),
        })
    }

    async fn account_sequence(&self, account: &AccountId) -> Result<SequenceRead, LedgerError> {
        self.check()?;
        let inner = lock(&self.inner);
        Ok(SequenceRead {
            sequence: inner.accounts.get(account).copied(),
            as_of_ledger: Some(inner.head.sequence),
        })
    }

    async fn latest_ledger(&self) -> Result<LedgerHead, LedgerError> {
        self.check()?;
        Ok(lock(&self.inner).head)
    }
}

/// What a test may do before the journal runs a call (fail it, panic, wait).
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    async fn before_accept(&self, _request: &PayoutRequest) -> Result<(), JournalError> {
        Ok(())
    }
    async fn before_apply(
        &self,
        _current: &PayoutRecord,
        _step: &Step,
    ) -> Result<(), JournalError> {
        Ok(())
    }
}

/// Any journal with test hooks in front of `accept` and `apply`; everything else passes
/// through.
pub struct Hooked<J> {
    pub inner: Arc<J>,
    pub hooks: Arc<dyn Hooks>,
}

impl<J> Hooked<J> {
    pub fn new(inner: Arc<J>, hooks: Arc<dyn Hooks>) -> Self {
        Self { inner, hooks }
    }
}

#[async_trait]
impl<J: PayoutStore> PayoutStore for Hooked<J> {
    async fn accept(&self, request: &PayoutRequest, owner: &str) -> Result<Accepted, JournalError> {
        self.hooks.before_accept(request).await?;
        self.inner.accept(request, owner).await
    }
    async fn load(&self, id: &PayoutId) -> Result<Option<PayoutRecord>, JournalError> {
        self.inner.load(id).await
    }
    async fn apply(
        &self,
        current: &PayoutRecord,
        step: &Step,
    ) -> Result<PayoutRecord, JournalError> {
        self.hooks.before_apply(current, step).await?;
        self.inner.apply(current, step).await
    }
    async fn events(&self, id: &PayoutId) -> Result<Vec<PayoutEvent>, JournalError> {
        self.inner.events(id).await
    }
}

#[async_trait]
impl<J: BatchStore> BatchStore for Hooked<J> {
    async fn prepare(&self, lease: &ChannelLease, batch: &Batch) -> Result<(), PrepareError> {
        self.inner.prepare(lease, batch).await
    }
    async fn mark_submitted(
        &self,
        hash: &TxHash,
        note: &str,
    ) -> Result<Vec<(PayoutId, i64)>, JournalError> {
        self.inner.mark_submitted(hash, note).await
    }
    async fn settle(
        &self,
        hash: &TxHash,
        settlement: &Settlement,
        owner: &str,
    ) -> Result<Vec<Settled>, JournalError> {
        self.inner.settle(hash, settlement, owner).await
    }
    async fn hold(&self, holds: &[(Ready, Hold)]) -> Result<Vec<PayoutId>, JournalError> {
        self.inner.hold(holds).await
    }
    async fn open_batches(&self, channel: &AccountId) -> Result<Vec<Batch>, JournalError> {
        self.inner.open_batches(channel).await
    }
}

#[async_trait]
impl<J: ClusterStore> ClusterStore for Hooked<J> {
    async fn register_channels(&self, accounts: &[AccountId]) -> Result<(), JournalError> {
        self.inner.register_channels(accounts).await
    }
    async fn heartbeat(&self, instance: &str, ttl_ms: u64) -> Result<(), JournalError> {
        self.inner.heartbeat(instance, ttl_ms).await
    }
    async fn retire(&self, instance: &str, leases: &[ChannelLease]) -> Result<(), JournalError> {
        self.inner.retire(instance, leases).await
    }
    async fn claim_channel(
        &self,
        instance: &str,
        account: &AccountId,
        can_sign: bool,
    ) -> Result<Option<ChannelLease>, JournalError> {
        self.inner.claim_channel(instance, account, can_sign).await
    }
    async fn release_channel(&self, lease: &ChannelLease) -> Result<(), JournalError> {
        self.inner.release_channel(lease).await
    }
    async fn channels(&self) -> Result<Vec<ChannelInfo>, JournalError> {
        self.inner.channels().await
    }
    async fn adopt_orphans(&self, instance: &str, limit: u32) -> Result<Vec<Ready>, JournalError> {
        self.inner.adopt_orphans(instance, limit).await
    }
    async fn release_held(&self, instance: &str, limit: u32) -> Result<Vec<Ready>, JournalError> {
        self.inner.release_held(instance, limit).await
    }
    async fn ready_of(
        &self,
        owner: &str,
        after: Option<&PayoutId>,
        limit: u32,
    ) -> Result<Vec<Ready>, JournalError> {
        self.inner.ready_of(owner, after, limit).await
    }
}
