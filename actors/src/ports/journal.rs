//! The journal port: persistence of payouts, their batches (envelopes) and the cluster's
//! bookkeeping (which instance is alive, which one owns which channel account). Traits
//! only; the service supplies PostgreSQL, the tests an in-memory fake.
//!
//! Three stores, each a question the core asks:
//! - [`PayoutStore`]: one payout at a time (accept, read, one fenced step);
//! - [`BatchStore`]: a batch at a time (every member prepared in one atomic write before
//!   the first submission; every member settled in one atomic write);
//! - [`ClusterStore`]: heartbeats, channel leases fenced by an epoch, orphaned payouts;
//! - [`ControlStore`]: the cluster-wide pause (the kill switch) and its audit trail.

use async_trait::async_trait;

use crate::destinations::OpKind;
use crate::domain::{AccountId, Fingerprint, PayoutId, PayoutRequest};
use crate::limits::{Hold, Spend};
use crate::ports::ledger::{Envelope, Inclusion, TxHash};
use crate::safety::Pause;
use crate::state::{PayoutEvent, PayoutRecord, PayoutState, Step};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// The record moved on since it was read: someone else wrote a newer version.
    #[error("stale write: payout {0} has a newer version")]
    Stale(String),
    #[error("payout {0} not found")]
    NotFound(String),
    /// The database is unreachable or failed; nothing is known to have been written.
    #[error("journal unavailable: {0}")]
    Unavailable(String),
    /// Stored data that does not parse back: a bug or manual tampering.
    #[error("corrupt journal row for {id}: {detail}")]
    Corrupt { id: String, detail: String },
}

/// The answer to `PayoutStore::accept`.
#[derive(Debug, Clone)]
pub enum Accepted {
    /// A new payout was stored, with its "accepted" event.
    Created(PayoutRecord),
    /// A payout with this id already exists (duplicate or conflict: compare fingerprints).
    Existing(PayoutRecord),
}

/// Persistence of single payouts.
#[async_trait]
pub trait PayoutStore: Send + Sync + 'static {
    /// Stores a new payout (state `accepted`, version 1, owned by `owner`, an "accepted"
    /// event) unless one with this id exists, in which case that one is returned untouched.
    /// Implementations may commit many concurrent accepts together; each caller is
    /// answered only once its own row is durable.
    async fn accept(&self, request: &PayoutRequest, owner: &str) -> Result<Accepted, JournalError>;
    async fn load(&self, id: &PayoutId) -> Result<Option<PayoutRecord>, JournalError>;
    /// Applies `step` to `current` if the stored version is still `current.version`
    /// (fencing) and the step is allowed from the stored state; returns the new record.
    async fn apply(
        &self,
        current: &PayoutRecord,
        step: &Step,
    ) -> Result<PayoutRecord, JournalError>;
    async fn events(&self, id: &PayoutId) -> Result<Vec<PayoutEvent>, JournalError>;
}

/// Which payouts a listing or a progress count takes (every part optional).
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<PayoutState>,
    /// Ids that start with this.
    pub id_prefix: Option<String>,
    /// Created at or after this, in milliseconds since the Unix epoch.
    pub since_unix_ms: Option<i64>,
    /// Created before this, in milliseconds since the Unix epoch.
    pub until_unix_ms: Option<i64>,
}

/// Listing payouts, for callers and operators (`GET /v1/payouts`, the console). Not used
/// by the core: a listing is a read of committed rows, never a step.
#[async_trait]
pub trait PayoutReads: Send + Sync + 'static {
    /// Up to `limit` payouts that `filter` takes, in id order, after `after`.
    async fn list(
        &self,
        filter: &ListFilter,
        after: Option<&PayoutId>,
        limit: u32,
    ) -> Result<Vec<PayoutRecord>, JournalError>;
}

/// A payout waiting for a batch: what is needed to build its operation and to fence the
/// write that puts it into an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub request: PayoutRequest,
    /// The version read; the prepare is refused for this member if it moved on.
    pub version: i64,
    pub attempt: u32,
    /// The operation that pays it.
    pub op_kind: OpKind,
}

impl Ready {
    pub fn id(&self) -> &PayoutId {
        self.request.payout_id()
    }

    pub fn of(record: &PayoutRecord) -> Self {
        Self {
            request: record.request.clone(),
            version: record.version,
            attempt: record.attempt,
            op_kind: record.op_kind,
        }
    }
}

/// One payout of a batch and the index of its operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The payout as its record is: in a journaled batch, after the prepare (its version
    /// and its attempt, which counts this envelope).
    pub ready: Ready,
    pub op_index: u32,
}

/// One transaction of one or more payouts, as journaled before its first submission.
#[derive(Debug, Clone)]
pub struct Batch {
    pub envelope: Envelope,
    /// The ledger head when the envelope was built: it cannot be in that ledger or an
    /// earlier one, so a history that reaches back to `built_ledger + 1` covers its life.
    pub built_ledger: u32,
    pub members: Vec<Member>,
}

impl Batch {
    /// The first ledger the envelope could have been included in.
    pub fn first_ledger(&self) -> u32 {
        self.built_ledger.saturating_add(1)
    }

    /// Its members as the spending limits see them, in operation order.
    pub fn spends(&self) -> Vec<Spend<'_>> {
        self.members
            .iter()
            .map(|m| Spend {
                id: m.ready.id(),
                asset: m.ready.request.asset(),
                amount: m.ready.request.amount(),
            })
            .collect()
    }
}

/// The right to build envelopes from a channel account (or, for an instance without its
/// key, to settle the envelopes already journaled for it). Every prepare is fenced by it:
/// a newer claim bumps the epoch and the older holder's writes are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelLease {
    pub account: AccountId,
    pub owner: String,
    pub epoch: i64,
}

/// Why a batch was not journaled. Nothing was written in any case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    /// These members moved on (cancelled, adopted, prepared elsewhere): build without them.
    #[error("{} members moved on", .0.len())]
    Stale(Vec<PayoutId>),
    /// The channel's lease was taken over (its epoch moved on): stop using the channel.
    #[error("the channel lease was taken over")]
    LeaseLost,
    /// The channel already has a non-dead envelope with this sequence number.
    #[error("another envelope holds this sequence number")]
    SequenceTaken,
    /// Paying is paused cluster-wide: no new envelope until an operator resumes.
    #[error("paying is paused")]
    Paused,
    /// A spending limit refuses these members (see [`crate::limits`]): hold them and build
    /// without them.
    #[error("{} members over a spending limit", .0.len())]
    OverLimit(Vec<Hold>),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// How an envelope ended, as the envelope log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeStatus {
    Applied,
    Failed,
    Dead,
}

impl EnvelopeStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Failed => "failed",
            Self::Dead => "dead",
        }
    }
}

/// The end of an envelope and what it means for each member.
#[derive(Debug, Clone)]
pub struct Settlement {
    pub status: EnvelopeStatus,
    pub inclusion: Option<Inclusion>,
    /// Why (the proof of death, the result codes), for the envelope log.
    pub note: String,
    /// One step per member: `Confirmed`, `Failed` or `Requeued`.
    pub members: Vec<(PayoutId, Step)>,
}

/// What a channel worker's write made of one payout, for its live actor's cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moved {
    /// A settlement: every column a step changes, as written.
    Settled(Settled),
    /// A prepare or a submission: `step` moved the row from `from_version` to the next one,
    /// and changed only what `Step::apply_to` changes. A cache at exactly `from_version`
    /// holds that row, so applying the step to it gives the row as written.
    Stepped { from_version: i64, step: Step },
}

impl Moved {
    /// Brings `record` to the row this write made, if it can say so exactly; `false`
    /// when the record is not the one the write started from (the caller forgets it).
    pub fn catch_up(&self, record: &mut PayoutRecord) -> bool {
        match self {
            Self::Settled(s) => s.catch_up(record),
            Self::Stepped { from_version, step } if *from_version == record.version => {
                step.apply_to(record);
                true
            }
            _ => false,
        }
    }
}

/// What a settlement made of one member: its record as the journal holds it at `version`,
/// but for the request and fingerprint (which no step changes). Its live actor takes it
/// into its cached record (`Settled::catch_up`) instead of reading the row again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub id: PayoutId,
    pub state: crate::state::PayoutState,
    pub version: i64,
    pub attempt: u32,
    pub owner: Option<String>,
    pub reason: Option<String>,
    pub envelope: Option<crate::state::EnvelopeRef>,
    pub inclusion: Option<Inclusion>,
    pub op_kind: OpKind,
    pub balance_id: Option<String>,
}

impl Settled {
    /// Brings `record` (of this payout) to the row this settlement wrote, unless it is as
    /// new or newer (`false`): every column a step changes is here, and no step changes
    /// the rest.
    pub fn catch_up(&self, record: &mut PayoutRecord) -> bool {
        if self.id != *record.id() || self.version <= record.version {
            return false;
        }
        record.state = self.state;
        record.version = self.version;
        record.attempt = self.attempt;
        record.owner.clone_from(&self.owner);
        record.reason.clone_from(&self.reason);
        record.envelope = self.envelope;
        record.inclusion = self.inclusion;
        record.op_kind = self.op_kind;
        record.balance_id.clone_from(&self.balance_id);
        true
    }

    /// The whole record: these columns with the payout's request and fingerprint.
    pub fn into_record(self, request: PayoutRequest, fingerprint: Fingerprint) -> PayoutRecord {
        PayoutRecord {
            request,
            fingerprint,
            state: self.state,
            version: self.version,
            attempt: self.attempt,
            reason: self.reason,
            owner: self.owner,
            envelope: self.envelope,
            inclusion: self.inclusion,
            op_kind: self.op_kind,
            balance_id: self.balance_id,
        }
    }

    pub fn of(record: &PayoutRecord) -> Self {
        Self {
            id: record.id().clone(),
            state: record.state,
            version: record.version,
            attempt: record.attempt,
            owner: record.owner.clone(),
            reason: record.reason.clone(),
            envelope: record.envelope,
            inclusion: record.inclusion,
            op_kind: record.op_kind,
            balance_id: record.balance_id.clone(),
        }
    }
}

/// Persistence of batches.
#[async_trait]
pub trait BatchStore: Send + Sync + 'static {
    /// In one atomic write: the envelope (status live), and every member from `accepted`
    /// (at the version it names) to `prepared` with its operation index; fenced by the
    /// channel lease, and checked against the spending limits the journal was given
    /// (their usage read and the batch's spends recorded in the same write, under a lock
    /// per limited asset). All or nothing.
    async fn prepare(&self, lease: &ChannelLease, batch: &Batch) -> Result<(), PrepareError>;
    /// Members still `prepared` in this envelope become `submitted` (one write); returns
    /// the ids it changed, each with its new version.
    async fn mark_submitted(
        &self,
        hash: &TxHash,
        note: &str,
    ) -> Result<Vec<(PayoutId, i64)>, JournalError>;
    /// In one atomic write: the envelope's status (only if still live), and each member's
    /// step (only for members still in this envelope). `owner` becomes the owner of the
    /// requeued members. Returns the members it changed. Idempotent: a second settlement
    /// of the same envelope changes nothing.
    async fn settle(
        &self,
        hash: &TxHash,
        settlement: &Settlement,
        owner: &str,
    ) -> Result<Vec<Settled>, JournalError>;
    /// Each payout still `accepted` at the version its `Ready` names becomes `held` with
    /// the hold's reason (one write); returns the ids it changed.
    async fn hold(&self, holds: &[(Ready, Hold)]) -> Result<Vec<PayoutId>, JournalError>;
    /// The channel's live envelopes with their members, oldest first.
    async fn open_batches(&self, channel: &AccountId) -> Result<Vec<Batch>, JournalError>;
}

/// What the cluster knows about one channel account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    pub account: AccountId,
    pub owner: Option<String>,
    /// The owner's heartbeat has not expired.
    pub owner_alive: bool,
    /// Live envelopes sourced from it.
    pub open_envelopes: u32,
}

/// The cluster's bookkeeping.
#[async_trait]
pub trait ClusterStore: Send + Sync + 'static {
    /// Makes the channel accounts known (idempotent).
    async fn register_channels(&self, accounts: &[AccountId]) -> Result<(), JournalError>;
    /// This instance is alive for `ttl_ms` more (by the database's clock).
    async fn heartbeat(&self, instance: &str, ttl_ms: u64) -> Result<(), JournalError>;
    /// This instance stops: its heartbeat expires now and the leases it names are released
    /// (each only if still held at its epoch: a replacement under the same name keeps its
    /// own).
    async fn retire(&self, instance: &str, leases: &[ChannelLease]) -> Result<(), JournalError>;
    /// Takes the channel's lease, bumping its epoch, if it is free, its owner is dead, it
    /// is `instance`'s own (a restart), or its holder cannot sign and `can_sign` is true.
    async fn claim_channel(
        &self,
        instance: &str,
        account: &AccountId,
        can_sign: bool,
    ) -> Result<Option<ChannelLease>, JournalError>;
    /// Gives the lease back (only if still held at this epoch).
    async fn release_channel(&self, lease: &ChannelLease) -> Result<(), JournalError>;
    async fn channels(&self) -> Result<Vec<ChannelInfo>, JournalError>;
    /// Takes over up to `limit` `accepted` payouts whose owner is dead, or alive but
    /// holding no channel lease it can sign with (an "adopted" event each); returns them
    /// to be batched. Only an instance that can sign calls it.
    async fn adopt_orphans(&self, instance: &str, limit: u32) -> Result<Vec<Ready>, JournalError>;
    /// Up to `limit` `held` payouts whose hold has run out (by the database's clock) go
    /// back to `accepted`, owned by `instance` (a "released" event each); returns them to
    /// be batched (and checked against the limits again).
    async fn release_held(&self, instance: &str, limit: u32) -> Result<Vec<Ready>, JournalError>;
    /// `owner`'s `accepted` payouts in id order after `after` (recovery at start).
    async fn ready_of(
        &self,
        owner: &str,
        after: Option<&PayoutId>,
        limit: u32,
    ) -> Result<Vec<Ready>, JournalError>;
}

/// The cluster-wide pause (see [`crate::safety`]).
#[async_trait]
pub trait ControlStore: Send + Sync + 'static {
    /// The pause in force, if any.
    async fn pause_state(&self) -> Result<Option<Pause>, JournalError>;
    /// Sets (`pause`) or clears the pause, with an audit entry naming `by` and `reason`,
    /// in one write; pausing an already paused cluster keeps the first pause. Returns the
    /// state after the write.
    async fn set_pause(
        &self,
        pause: bool,
        by: &str,
        reason: &str,
    ) -> Result<Option<Pause>, JournalError>;
}

/// Everything the core needs from persistence.
pub trait Journal: PayoutStore + BatchStore + ClusterStore + ControlStore {}

impl<T: PayoutStore + BatchStore + ClusterStore + ControlStore> Journal for T {}
