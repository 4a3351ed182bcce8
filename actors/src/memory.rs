//! In-memory journal and ledger for fast unit tests of the actors and for the in-process
//! benchmark. Never a substitute for Postgres or the simulator in integration tests.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::domain::{AccountId, Fingerprint, PayoutId, PayoutRequest};
use crate::ports::{
    Accepted, Change, Envelope, Inclusion, Journal, JournalError, Ledger, LedgerError, LedgerHead,
    Lookup, PayoutEvent, PayoutRecord, PayoutState, SubmitOutcome, TxHash, TxSpec,
};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Tests only: a poisoned lock means another test thread panicked; the data is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct JournalInner {
    payouts: BTreeMap<PayoutId, PayoutRecord>,
    events: HashMap<PayoutId, Vec<PayoutEvent>>,
    /// channel → payout holding it
    leases: BTreeMap<AccountId, Option<PayoutId>>,
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
    pub fn with_channels(channels: &[AccountId]) -> Self {
        let j = Self::default();
        lock(&j.inner).leases = channels.iter().map(|c| (*c, None)).collect();
        j
    }

    /// The channel leased to this payout, if any (ignores outages: for tests' checks).
    pub fn lease_of(&self, id: &PayoutId) -> Option<AccountId> {
        lock(&self.inner)
            .leases
            .iter()
            .find(|(_, holder)| holder.as_ref() == Some(id))
            .map(|(channel, _)| *channel)
    }

    fn check(&self) -> Result<(), JournalError> {
        if self.unavailable.load(Ordering::SeqCst) {
            Err(JournalError::Unavailable("simulated outage".into()))
        } else {
            Ok(())
        }
    }

    fn event(
        inner: &mut JournalInner,
        record: &PayoutRecord,
        kind: &str,
        detail: serde_json::Value,
    ) {
        inner
            .events
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
}

#[async_trait]
impl Journal for MemJournal {
    async fn accept(
        &self,
        request: &PayoutRequest,
        fingerprint: Fingerprint,
    ) -> Result<Accepted, JournalError> {
        self.check()?;
        let mut inner = lock(&self.inner);
        if let Some(existing) = inner.payouts.get(request.payout_id()) {
            return Ok(Accepted::Existing(existing.clone()));
        }
        let record = PayoutRecord {
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
        };
        inner
            .payouts
            .insert(request.payout_id().clone(), record.clone());
        Self::event(&mut inner, &record, "accepted", serde_json::Value::Null);
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(Accepted::Created(record))
    }

    async fn load(&self, id: &PayoutId) -> Result<Option<PayoutRecord>, JournalError> {
        self.check()?;
        Ok(lock(&self.inner).payouts.get(id).cloned())
    }

    async fn apply(
        &self,
        current: &PayoutRecord,
        change: &Change,
    ) -> Result<PayoutRecord, JournalError> {
        self.check()?;
        let (id, expected_version) = (current.id(), current.version);
        let mut inner = lock(&self.inner);
        let record = inner
            .payouts
            .get_mut(id)
            .ok_or_else(|| JournalError::NotFound(id.to_string()))?;
        if record.version != expected_version {
            return Err(JournalError::Stale(id.to_string()));
        }
        let channel = record.channel;
        change.apply_to(record);
        let record = record.clone();
        if change.releases_channel()
            && let Some(c) = channel
        {
            inner.leases.insert(c, None);
        }
        Self::event(
            &mut inner,
            &record,
            change.event_kind(),
            serde_json::json!(format!("{change:?}")),
        );
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(record)
    }

    async fn park(&self, id: &PayoutId, reason: &str) -> Result<(), JournalError> {
        self.check()?;
        let mut inner = lock(&self.inner);
        let record = inner
            .payouts
            .get_mut(id)
            .ok_or_else(|| JournalError::NotFound(id.to_string()))?;
        // As the Postgres journal: a finished payout stays finished.
        if record.state.is_terminal() {
            return Ok(());
        }
        Change::Parked {
            reason: reason.to_owned(),
        }
        .apply_to(record);
        let record = record.clone();
        Self::event(&mut inner, &record, "parked", serde_json::json!(reason));
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn lease_channel(&self, id: &PayoutId) -> Result<Option<AccountId>, JournalError> {
        self.check()?;
        let mut inner = lock(&self.inner);
        if let Some((c, _)) = inner
            .leases
            .iter()
            .find(|(_, holder)| holder.as_ref() == Some(id))
        {
            return Ok(Some(*c));
        }
        // Same rules as the Postgres journal: only a payout waiting for an envelope gets a
        // channel, and a channel held by a finished payout counts as free.
        let waiting = inner
            .payouts
            .get(id)
            .is_some_and(|r| r.state == PayoutState::Accepted);
        if !waiting {
            return Ok(None);
        }
        let finished = |holder: &PayoutId| {
            inner
                .payouts
                .get(holder)
                .is_some_and(|r| r.state.is_terminal())
        };
        let free = inner
            .leases
            .iter()
            .find(|(_, h)| h.as_ref().is_none_or(finished))
            .map(|(c, _)| *c);
        if let Some(c) = free {
            inner.leases.insert(c, Some(id.clone()));
        }
        Ok(free)
    }

    async fn active_ids(
        &self,
        after: Option<&PayoutId>,
        limit: u32,
    ) -> Result<Vec<PayoutId>, JournalError> {
        self.check()?;
        let inner = lock(&self.inner);
        Ok(inner
            .payouts
            .iter()
            .filter(|(id, r)| after.is_none_or(|a| *id > a) && r.state.is_active())
            .take(limit as usize)
            .map(|(id, _)| id.clone())
            .collect())
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

/// A scripted answer the fake ledger gives instead of its normal behaviour.
#[derive(Debug, Clone)]
pub enum Scripted {
    /// Apply the transaction, then answer `Unknown` (the answer is lost).
    ApplyThenLose,
    /// Answer this without applying.
    Answer(SubmitOutcome),
    /// Panic inside `submit` (tests supervision).
    Panic,
    /// Include the transaction in a ledger as failed with these operation codes: its
    /// sequence number and fee are consumed and nothing is paid; resubmitting it or looking
    /// it up reports the same failure (the duplicate rule). An envelope that the ledger
    /// would refuse anyway (bad sequence, too late) gets that refusal instead.
    IncludeFailed { op_codes: Vec<String> },
}

#[derive(Default)]
struct LedgerInner {
    head: Option<LedgerHead>,
    sequences: HashMap<AccountId, i64>,
    /// Applied transactions by hash.
    applied: HashMap<TxHash, (Inclusion, TxSpec)>,
    script: VecDeque<Scripted>,
    /// What each built envelope pays, by hash.
    specs: HashMap<TxHash, TxSpec>,
    /// Transactions included in a ledger as failed (`Scripted::IncludeFailed`), by hash.
    failed: HashMap<TxHash, (Inclusion, Vec<String>)>,
}

/// A ledger with just enough rules for the actor tests: sequence numbers, expiry against
/// its own close time, the duplicate rule and scripted faults. Every submission lands in
/// the ledger immediately (one ledger per transaction).
#[derive(Default)]
pub struct MemLedger {
    inner: Mutex<LedgerInner>,
    pub submissions: AtomicU64,
}

impl MemLedger {
    pub fn new(accounts: &[AccountId]) -> Self {
        let l = Self::default();
        {
            let mut inner = lock(&l.inner);
            inner.head = Some(LedgerHead {
                sequence: 1,
                close_time: 1_000,
            });
            for a in accounts {
                inner.sequences.insert(*a, 1 << 32);
            }
        }
        l
    }

    pub fn script(&self, step: Scripted) {
        lock(&self.inner).script.push_back(step);
    }

    /// Closes an empty ledger `seconds` after the last one.
    pub fn advance(&self, seconds: u64) {
        let mut inner = lock(&self.inner);
        if let Some(h) = inner.head.as_mut() {
            h.sequence += 1;
            h.close_time += seconds;
        }
    }

    /// Another transaction from `account`, not built by payoutd, consumed `count` sequence
    /// numbers (an operator used a channel account by hand, say).
    pub fn bump_sequence(&self, account: &AccountId, count: i64) {
        if let Some(s) = lock(&self.inner).sequences.get_mut(account) {
            *s += count;
        }
    }

    /// How many applied transactions pay this payout (by memo or destination match in spec).
    pub fn payments_for(&self, request: &PayoutRequest) -> usize {
        let memo = crate::actor::payment_memo(request);
        lock(&self.inner)
            .applied
            .values()
            .filter(|(_, s)| {
                s.memo == memo
                    && s.destination == *request.destination()
                    && s.amount == request.amount()
            })
            .count()
    }

    fn apply(
        inner: &mut LedgerInner,
        envelope: &Envelope,
        spec: TxSpec,
    ) -> Result<Inclusion, String> {
        let head = inner.head.unwrap_or(LedgerHead {
            sequence: 1,
            close_time: 0,
        });
        let next_close = head.close_time + 1;
        if next_close > envelope.max_time {
            return Err("tx_too_late".into());
        }
        let current = inner
            .sequences
            .get(&envelope.source)
            .copied()
            .ok_or("tx_no_source_account")?;
        if envelope.sequence != current + 1 {
            return Err("tx_bad_seq".into());
        }
        inner.sequences.insert(envelope.source, envelope.sequence);
        let inclusion = Inclusion {
            ledger: head.sequence + 1,
            fee_charged: i64::from(envelope.fee_stroops),
        };
        inner.head = Some(LedgerHead {
            sequence: head.sequence + 1,
            close_time: next_close,
        });
        inner.applied.insert(envelope.hash, (inclusion, spec));
        Ok(inclusion)
    }

    /// Includes the envelope in a new ledger as failed, under the same validity rules as
    /// `apply`: the sequence number and the fee are consumed, nothing is paid.
    fn include_failed(
        inner: &mut LedgerInner,
        envelope: &Envelope,
        op_codes: Vec<String>,
    ) -> SubmitOutcome {
        let head = inner.head.unwrap_or(LedgerHead {
            sequence: 1,
            close_time: 0,
        });
        let next_close = head.close_time + 1;
        let current = inner.sequences.get(&envelope.source).copied();
        let refusal = if next_close > envelope.max_time {
            Some("tx_too_late")
        } else if current.is_none() {
            Some("tx_no_source_account")
        } else if current.is_some_and(|c| envelope.sequence != c + 1) {
            Some("tx_bad_seq")
        } else {
            None
        };
        if let Some(code) = refusal {
            return SubmitOutcome::Rejected { code: code.into() };
        }
        inner.sequences.insert(envelope.source, envelope.sequence);
        let inclusion = Inclusion {
            ledger: head.sequence + 1,
            fee_charged: i64::from(envelope.fee_stroops),
        };
        inner.head = Some(LedgerHead {
            sequence: head.sequence + 1,
            close_time: next_close,
        });
        inner
            .failed
            .insert(envelope.hash, (inclusion, op_codes.clone()));
        SubmitOutcome::Failed {
            inclusion,
            tx_code: "tx_failed".into(),
            op_codes,
        }
    }
}

#[async_trait]
impl Ledger for MemLedger {
    fn build_and_sign(&self, spec: &TxSpec) -> Result<Envelope, LedgerError> {
        let fake = serde_json::json!({
            "source": spec.source.to_strkey(), "sequence": spec.sequence, "fee": spec.fee_stroops,
            "max_time": spec.max_time, "destination": spec.destination.to_strkey(),
            "asset": spec.asset.to_string(), "amount": spec.amount.stroops(), "memo": spec.memo.canonical(),
        });
        let xdr = fake.to_string();
        let hash = TxHash(Sha256::digest(xdr.as_bytes()).into());
        // Remember the spec so `submit` can apply it (keyed by hash).
        lock(&self.inner).specs.insert(hash, spec.clone());
        Ok(Envelope {
            xdr,
            hash,
            source: spec.source,
            sequence: spec.sequence,
            fee_stroops: spec.fee_stroops,
            max_time: spec.max_time,
            ledger_bounds: spec.ledger_bounds,
        })
    }

    async fn submit(&self, envelope: &Envelope) -> SubmitOutcome {
        self.submissions.fetch_add(1, Ordering::SeqCst);
        let scripted = lock(&self.inner).script.pop_front();
        let mut inner = lock(&self.inner);
        if let Some((inclusion, _)) = inner.applied.get(&envelope.hash) {
            return SubmitOutcome::Applied(*inclusion);
        }
        if let Some((inclusion, op_codes)) = inner.failed.get(&envelope.hash) {
            return SubmitOutcome::Failed {
                inclusion: *inclusion,
                tx_code: "tx_failed".into(),
                op_codes: op_codes.clone(),
            };
        }
        let Some(spec) = inner.specs.get(&envelope.hash).cloned() else {
            return SubmitOutcome::Rejected {
                code: "tx_malformed".into(),
            };
        };
        match scripted {
            Some(Scripted::Panic) => {
                drop(inner);
                panic!("scripted panic inside submit");
            }
            Some(Scripted::Answer(outcome)) => outcome,
            Some(Scripted::IncludeFailed { op_codes }) => {
                Self::include_failed(&mut inner, envelope, op_codes)
            }
            Some(Scripted::ApplyThenLose) => {
                let _ = Self::apply(&mut inner, envelope, spec);
                SubmitOutcome::Unknown {
                    detail: "answer lost".into(),
                }
            }
            None => match Self::apply(&mut inner, envelope, spec) {
                Ok(inclusion) => SubmitOutcome::Applied(inclusion),
                Err(code) => SubmitOutcome::Rejected { code },
            },
        }
    }

    async fn lookup(&self, hash: &TxHash) -> Result<Lookup, LedgerError> {
        let inner = lock(&self.inner);
        if let Some((inclusion, op_codes)) = inner.failed.get(hash) {
            return Ok(Lookup::Failed {
                inclusion: *inclusion,
                tx_code: "tx_failed".into(),
                op_codes: op_codes.clone(),
            });
        }
        Ok(match inner.applied.get(hash) {
            Some((inclusion, _)) => Lookup::Applied(*inclusion),
            None => Lookup::NotFound,
        })
    }

    async fn account_sequence(&self, account: &AccountId) -> Result<Option<i64>, LedgerError> {
        Ok(lock(&self.inner).sequences.get(account).copied())
    }

    async fn latest_ledger(&self) -> Result<LedgerHead, LedgerError> {
        lock(&self.inner)
            .head
            .ok_or_else(|| LedgerError::Unavailable("no ledger".into()))
    }
}
