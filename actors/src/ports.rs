//! The ports the payout core needs from the outside world: a journal (persistence) and a
//! ledger (the Stellar network). Traits only; the service crate supplies Postgres and
//! Horizon, the tests supply in-memory fakes.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{
    AccountId, Amount, Asset, Destination, Fingerprint, Memo, PayoutId, PayoutRequest,
};

/// Where a payout stands. `Confirmed`, `Failed` and `Cancelled` are terminal; `Parked`
/// waits for an operator; the rest are driven by the payout's actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutState {
    /// Durable, no live envelope: the next step builds one.
    Accepted,
    /// An envelope is persisted; it may or may not have reached the network.
    Prepared,
    /// The envelope was submitted at least once and its fate is not known yet.
    Submitted,
    Confirmed,
    Failed,
    /// Stopped for an operator (restart budget spent, or a condition the service cannot fix).
    Parked,
    Cancelled,
}

impl PayoutState {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Prepared => "prepared",
            Self::Submitted => "submitted",
            Self::Confirmed => "confirmed",
            Self::Failed => "failed",
            Self::Parked => "parked",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "accepted" => Self::Accepted,
            "prepared" => Self::Prepared,
            "submitted" => Self::Submitted,
            "confirmed" => Self::Confirmed,
            "failed" => Self::Failed,
            "parked" => Self::Parked,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// Nothing will ever happen to a terminal payout again.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Confirmed | Self::Failed | Self::Cancelled)
    }

    /// The actor has work to do (recovery re-drives exactly these).
    pub fn is_active(&self) -> bool {
        matches!(self, Self::Accepted | Self::Prepared | Self::Submitted)
    }

    /// A persisted envelope may still land on the ledger.
    pub fn has_live_envelope(&self) -> bool {
        matches!(self, Self::Prepared | Self::Submitted)
    }
}

impl fmt::Display for PayoutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transaction hash (sha256 of the network id, envelope type and transaction XDR).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxHash(pub [u8; 32]);

impl TxHash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Debug for TxHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxHash({})", self.to_hex())
    }
}

impl fmt::Display for TxHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// What the ledger adapter needs to build one payment transaction.
#[derive(Debug, Clone)]
pub struct TxSpec {
    /// The transaction's source: a channel account leased to this payout, or the
    /// distribution account itself. Its sequence number is consumed.
    pub source: AccountId,
    /// Must be the source account's current sequence + 1.
    pub sequence: i64,
    /// Total fee offered, in stroops (per-operation fee × 1 operation).
    pub fee_stroops: u32,
    /// `TimeBounds.max_time`, unix seconds, compared by the network against ledger close time.
    pub max_time: u64,
    /// Optional `LedgerBounds` (min, max ledger sequence; 0 max = none).
    pub ledger_bounds: Option<(u32, u32)>,
    /// The payment's source (the distribution account that holds the money).
    pub payer: AccountId,
    pub destination: Destination,
    pub asset: Asset,
    pub amount: Amount,
    pub memo: Memo,
}

/// A signed, ready-to-submit envelope. Persisted before it is ever submitted.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Base64 `TransactionEnvelope` XDR: the exact bytes every submission sends.
    pub xdr: String,
    pub hash: TxHash,
    pub source: AccountId,
    pub sequence: i64,
    pub fee_stroops: u32,
    pub max_time: u64,
    pub ledger_bounds: Option<(u32, u32)>,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("hash", &self.hash)
            .field("source", &self.source)
            .field("sequence", &self.sequence)
            .field("max_time", &self.max_time)
            .finish_non_exhaustive()
    }
}

/// Where and at what cost a transaction was included in a ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inclusion {
    pub ledger: u32,
    pub fee_charged: i64,
}

/// The answer to one submission, classified per BRIEF §2.3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// In a ledger and successful: paid.
    Applied(Inclusion),
    /// In a ledger and failed: fee and sequence consumed, nothing paid.
    Failed {
        inclusion: Inclusion,
        tx_code: String,
        op_codes: Vec<String>,
    },
    /// Refused before inclusion (`tx_bad_seq`, `tx_insufficient_fee`, `tx_too_late`, …).
    /// Not applied *yet*: the envelope may still become valid.
    Rejected { code: String },
    /// Timeout, 5xx, connection error, try-again-later: the fate is not known.
    Unknown { detail: String },
}

/// The result of looking an envelope up by hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    NotFound,
    Applied(Inclusion),
    Failed {
        inclusion: Inclusion,
        tx_code: String,
        op_codes: Vec<String>,
    },
}

/// The last closed ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerHead {
    pub sequence: u32,
    /// Unix seconds. Expiry is judged against this, never against the local clock.
    pub close_time: u64,
}

/// Errors talking to the network that leave nothing decided (the caller retries later).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    #[error("cannot sign for account {0}: no key configured")]
    NoKey(String),
    #[error("cannot build the transaction: {0}")]
    Build(String),
}

/// The Stellar network as the payout core sees it.
#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Builds and signs a payment transaction. Pure: nothing leaves the process.
    fn build_and_sign(&self, spec: &TxSpec) -> Result<Envelope, LedgerError>;
    /// Sends exactly these bytes.
    async fn submit(&self, envelope: &Envelope) -> SubmitOutcome;
    async fn lookup(&self, hash: &TxHash) -> Result<Lookup, LedgerError>;
    /// The account's current sequence number; `None` if the account does not exist.
    async fn account_sequence(&self, account: &AccountId) -> Result<Option<i64>, LedgerError>;
    async fn latest_ledger(&self) -> Result<LedgerHead, LedgerError>;
}

/// The journaled state of one payout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutRecord {
    pub request: PayoutRequest,
    pub fingerprint: Fingerprint,
    pub state: PayoutState,
    /// Bumped by every write; a write names the version it read (fencing).
    pub version: i64,
    /// Envelopes built so far (1 after the first prepare).
    pub attempt: u32,
    /// Why the payout failed, parked or was cancelled; the last notable condition otherwise.
    pub reason: Option<String>,
    /// The source account leased to this payout, held until its envelope is applied or dead.
    pub channel: Option<AccountId>,
    /// The current attempt's envelope.
    pub envelope: Option<Envelope>,
    /// Set once confirmed (or included-but-failed).
    pub inclusion: Option<Inclusion>,
    /// Fee per operation for the next envelope, raised after `tx_insufficient_fee`.
    pub next_fee_stroops: Option<u32>,
}

impl PayoutRecord {
    pub fn id(&self) -> &PayoutId {
        self.request.payout_id()
    }
}

/// One step of a payout, written atomically together with its event (and, where the step
/// says so, with the channel lease and the envelope log).
#[derive(Debug, Clone)]
pub enum Change {
    /// A new envelope: persisted before its first submission. Leaves the channel leased.
    Prepared {
        channel: AccountId,
        envelope: Envelope,
    },
    /// The envelope went out at least once and the answer did not settle it.
    Submitted { note: String },
    /// Applied on the ledger. Releases the channel.
    Confirmed { inclusion: Inclusion },
    /// Over for good. `inclusion` is set when a failed transaction consumed a fee.
    /// Releases the channel (the caller has proven no envelope can still land).
    Failed {
        reason: String,
        inclusion: Option<Inclusion>,
    },
    /// The current envelope can never apply (BRIEF §2.4): back to `Accepted` for a new
    /// one. Keeps the channel. `next_fee_stroops` raises the fee for the next one.
    EnvelopeDead {
        reason: String,
        next_fee_stroops: Option<u32>,
    },
    /// Waits for an operator; keeps the channel (an envelope may still be live).
    Parked { reason: String },
    /// Cancelled before any envelope existed.
    Cancelled { reason: String },
    /// An operator resumes a parked payout: back to `Submitted` if it holds an envelope
    /// (which is resubmitted and looked up, never replaced before it is dead), else to
    /// `Accepted`.
    Resumed { reason: String },
    /// A note in the audit trail with no state change (e.g. a rejection code).
    Noted { note: String },
}

impl Change {
    /// The name of the event this change writes to the log.
    pub fn event_kind(&self) -> &'static str {
        match self {
            Self::Prepared { .. } => "prepared",
            Self::Submitted { .. } => "submitted",
            Self::Confirmed { .. } => "confirmed",
            Self::Failed { .. } => "failed",
            Self::EnvelopeDead { .. } => "envelope_dead",
            Self::Parked { .. } => "parked",
            Self::Cancelled { .. } => "cancelled",
            Self::Resumed { .. } => "resumed",
            Self::Noted { .. } => "noted",
        }
    }

    /// The state after this change, given the state before it.
    pub fn next_state(&self, current: PayoutState) -> PayoutState {
        match self {
            Self::Prepared { .. } => PayoutState::Prepared,
            Self::Submitted { .. } => PayoutState::Submitted,
            Self::Confirmed { .. } => PayoutState::Confirmed,
            Self::Failed { .. } => PayoutState::Failed,
            Self::EnvelopeDead { .. } => PayoutState::Accepted,
            Self::Parked { .. } => PayoutState::Parked,
            Self::Cancelled { .. } => PayoutState::Cancelled,
            // Decided in `apply_to`, which sees the envelope.
            Self::Resumed { .. } | Self::Noted { .. } => current,
        }
    }

    /// Applies the change to a record in memory (the journal does the same in SQL).
    pub fn apply_to(&self, record: &mut PayoutRecord) {
        record.state = match self {
            Self::Resumed { .. } if record.envelope.is_some() => PayoutState::Submitted,
            Self::Resumed { .. } => PayoutState::Accepted,
            _ => self.next_state(record.state),
        };
        record.version += 1;
        match self {
            Self::Resumed { .. } => record.reason = None,
            Self::Prepared { channel, envelope } => {
                record.channel = Some(*channel);
                record.envelope = Some(envelope.clone());
                record.attempt += 1;
                record.reason = None;
            }
            Self::Submitted { .. } | Self::Noted { .. } => {}
            Self::Confirmed { inclusion } => {
                record.inclusion = Some(*inclusion);
                record.channel = None;
                record.reason = None;
            }
            Self::Failed { reason, inclusion } => {
                record.inclusion = *inclusion;
                record.channel = None;
                record.reason = Some(reason.clone());
            }
            Self::EnvelopeDead {
                reason,
                next_fee_stroops,
            } => {
                record.envelope = None;
                record.reason = Some(reason.clone());
                if next_fee_stroops.is_some() {
                    record.next_fee_stroops = *next_fee_stroops;
                }
            }
            Self::Parked { reason } => record.reason = Some(reason.clone()),
            Self::Cancelled { reason } => {
                record.channel = None;
                record.reason = Some(reason.clone());
            }
        }
    }

    /// True when the change gives the channel back to the pool.
    pub fn releases_channel(&self) -> bool {
        matches!(
            self,
            Self::Confirmed { .. } | Self::Failed { .. } | Self::Cancelled { .. }
        )
    }
}

/// The answer to `Journal::accept`.
#[derive(Debug, Clone)]
pub enum Accepted {
    /// A new payout was stored, with its "accepted" event.
    Created(PayoutRecord),
    /// A payout with this id already exists (duplicate or conflict: compare fingerprints).
    Existing(PayoutRecord),
}

/// An entry of a payout's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayoutEvent {
    pub version: i64,
    pub kind: String,
    pub state: PayoutState,
    pub detail: serde_json::Value,
    /// RFC 3339 time of the write.
    pub at: String,
}

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
    #[error("corrupt journal row for payout {id}: {detail}")]
    Corrupt { id: String, detail: String },
}

/// Persistence of payouts, their event log and channel leases.
#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Stores a new payout (state `Accepted`, version 1, an "accepted" event) unless one with
    /// this id exists, in which case that one is returned untouched.
    async fn accept(
        &self,
        request: &PayoutRequest,
        fingerprint: Fingerprint,
    ) -> Result<Accepted, JournalError>;
    async fn load(&self, id: &PayoutId) -> Result<Option<PayoutRecord>, JournalError>;
    /// Applies `change` to `current` if the stored version is still `current.version`
    /// (fencing); returns the new record. `Stale` if someone wrote a newer version.
    async fn apply(
        &self,
        current: &PayoutRecord,
        change: &Change,
    ) -> Result<PayoutRecord, JournalError>;
    /// Parks a payout whatever its version (the supervisor's last resort); bumps the version
    /// so that any stale actor is fenced out.
    async fn park(&self, id: &PayoutId, reason: &str) -> Result<(), JournalError>;
    /// Leases a source account to this payout: the one it already holds, else a free one.
    /// `None` when every channel is busy.
    async fn lease_channel(&self, id: &PayoutId) -> Result<Option<AccountId>, JournalError>;
    /// Ids of payouts the service must drive (accepted, prepared, submitted), in id order,
    /// after `after`, at most `limit`.
    async fn active_ids(
        &self,
        after: Option<&PayoutId>,
        limit: u32,
    ) -> Result<Vec<PayoutId>, JournalError>;
    async fn events(&self, id: &PayoutId) -> Result<Vec<PayoutEvent>, JournalError>;
}
