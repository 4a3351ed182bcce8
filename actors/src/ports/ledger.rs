//! The ledger port: what the core needs from the Stellar network, as facts.
//!
//! Every read says *as of which ledger* it is true, because a real deployment answers from
//! several servers that ingest at different speeds (Horizon nodes behind a load balancer,
//! RPC providers): a "not found" proves only what the answering server had seen. The proof
//! of death (`crate::proof`) is written once over these facts; each adapter (Horizon, RPC,
//! the in-memory fake) supplies them from its own answers.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::destinations::OpKind;
use crate::domain::{AccountId, Amount, Asset, Destination, Memo};

/// A transaction hash (sha256 of the network id, envelope type and transaction XDR).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

/// One payment operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpSpec {
    /// The operation's source: the distribution account that holds the money.
    pub payer: AccountId,
    pub destination: Destination,
    pub asset: Asset,
    pub amount: Amount,
    /// A payment, a claimable balance for the destination, or the destination's creation.
    pub kind: OpKind,
}

/// What the ledger adapter needs to build one transaction of 1..=100 payments.
#[derive(Debug, Clone)]
pub struct TxSpec {
    /// The transaction's source: a channel account, or the distribution account itself.
    /// Its sequence number is consumed.
    pub source: AccountId,
    /// Must be the source account's current sequence + 1.
    pub sequence: i64,
    /// Total fee offered, in stroops (fee per operation × operations).
    pub fee_stroops: u32,
    /// `TimeBounds.max_time`, unix seconds, compared by the network against ledger close time.
    pub max_time: u64,
    /// Optional `LedgerBounds` (min, max ledger sequence; 0 max = none).
    pub ledger_bounds: Option<(u32, u32)>,
    /// The transaction's memo (one per transaction, shared by every operation).
    pub memo: Memo,
    pub operations: Vec<OpSpec>,
}

/// A signed, ready-to-submit envelope. Journaled before it is ever submitted.
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
    /// The whole transaction's fee, in stroops.
    pub fee_charged: i64,
}

/// The answer to one submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// In a ledger and successful: every operation applied.
    Applied(Inclusion),
    /// In a ledger and failed: fee and sequence consumed, nothing of it applied.
    /// `op_codes` has one code per operation, in order (empty if the server gave none).
    Failed {
        inclusion: Inclusion,
        tx_code: String,
        op_codes: Vec<String>,
    },
    /// Refused before inclusion (`tx_bad_seq`, `tx_insufficient_fee`, `tx_too_late`, …).
    /// Not applied *yet*: the envelope may still become valid.
    Rejected { code: String },
    /// Taken for inclusion but not in a ledger yet (RPC `PENDING`/`DUPLICATE`).
    Pending,
    /// Timeout, 5xx, connection error, try-again-later: the fate is not known.
    Unknown { detail: String },
}

/// The ledgers a server's answer covers: it had ingested everything from `oldest` to
/// `latest`, and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    pub oldest: u32,
    pub latest: u32,
}

/// The result of looking a transaction up by hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Applied(Inclusion),
    Failed {
        inclusion: Inclusion,
        tx_code: String,
        op_codes: Vec<String>,
    },
    /// Not in the ledgers the answering server covers (`None`: it did not say which, so
    /// the answer proves nothing).
    NotFound(Option<Coverage>),
}

/// An account's sequence number, and the ledger the answering server had ingested when it
/// read it (`None` if it did not say: then the read proves nothing about time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceRead {
    /// `None` if the account does not exist.
    pub sequence: Option<i64>,
    pub as_of_ledger: Option<u32>,
}

/// The last closed ledger, as some server saw it.
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
    /// Builds and signs a transaction. Pure: nothing leaves the process.
    fn build_and_sign(&self, spec: &TxSpec) -> Result<Envelope, LedgerError>;
    /// Whether this process holds the key of `account` (it may build envelopes sourced
    /// from it). Submitting and looking up journaled envelopes needs no key.
    fn can_sign(&self, account: &AccountId) -> bool;
    /// Sends exactly these bytes.
    async fn submit(&self, envelope: &Envelope) -> SubmitOutcome;
    async fn lookup(&self, hash: &TxHash) -> Result<Lookup, LedgerError>;
    async fn account_sequence(&self, account: &AccountId) -> Result<SequenceRead, LedgerError>;
    async fn latest_ledger(&self) -> Result<LedgerHead, LedgerError>;
}
