//! The payout state machine: where a payout stands, what it holds, and which step moves it
//! where. Pure data and transitions; the journals persist exactly these transitions (the
//! in-memory one with `Step::apply_to`, the Postgres one in SQL that mirrors it).
//!
//! ```text
//!   accepted ──prepare (in a batch)──► prepared ──unsettled answer──► submitted
//!      ▲  │                                 │                            │
//!      │  │ cancel                          ├──── applied ──► confirmed ◄┤
//!      │  ▼                                 ├──── own op failed ─► failed◄┤
//!      │ cancelled                          └─ dead, or a sibling's op ───┘
//!      └──────── requeued ◄───────────────────── failed the transaction
//!   parked: by an operator condition; keeps its envelope until that envelope settles
//!   (applied → confirmed, dead → parked without envelope); resume → submitted | accepted
//!   held: refused by a spending limit before any envelope (accepted → held); released
//!   (its window moved on) or resumed (an operator) → accepted; cancel → cancelled
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::destinations::OpKind;
use crate::domain::{Fingerprint, PayoutId, PayoutRequest};
use crate::ports::ledger::{Inclusion, TxHash};

/// Where a payout stands. `Confirmed`, `Failed` and `Cancelled` are terminal; `Parked`
/// waits for an operator; the rest are moved on by the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutState {
    /// Durable, in no live envelope: waits to join a batch.
    Accepted,
    /// In a journaled envelope that may or may not have reached the network.
    Prepared,
    /// Its envelope was submitted at least once and its fate is not known yet.
    Submitted,
    Confirmed,
    Failed,
    /// Stopped for an operator (with the reason). May still hold an envelope, which keeps
    /// being looked up until it is applied (→ confirmed) or provably dead.
    Parked,
    Cancelled,
    /// Not paid yet because a spending limit would be exceeded (the reason says which);
    /// holds no envelope. Goes back to `accepted` when its window allows or an operator
    /// resumes it (see [`crate::limits`]).
    Held,
}

impl PayoutState {
    pub const ALL: [PayoutState; 8] = [
        Self::Accepted,
        Self::Prepared,
        Self::Submitted,
        Self::Confirmed,
        Self::Failed,
        Self::Parked,
        Self::Cancelled,
        Self::Held,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Prepared => "prepared",
            Self::Submitted => "submitted",
            Self::Confirmed => "confirmed",
            Self::Failed => "failed",
            Self::Parked => "parked",
            Self::Cancelled => "cancelled",
            Self::Held => "held",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Nothing will ever happen to a terminal payout again.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Confirmed | Self::Failed | Self::Cancelled)
    }

    /// The service has work to do for it (an envelope to build or to settle).
    pub fn is_active(&self) -> bool {
        matches!(self, Self::Accepted | Self::Prepared | Self::Submitted)
    }
}

impl fmt::Display for PayoutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A payout's place in an envelope: the transaction and its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeRef {
    pub hash: TxHash,
    /// Index of this payout's operation in the transaction (0-based, as in `result_xdr`).
    pub op_index: u32,
}

/// The journaled state of one payout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutRecord {
    pub request: PayoutRequest,
    pub fingerprint: Fingerprint,
    pub state: PayoutState,
    /// Bumped by every write; a write names the version it read (fencing).
    pub version: i64,
    /// Envelopes this payout has been in since it was accepted (or last resumed).
    pub attempt: u32,
    /// Why it failed, parked or was cancelled; the last notable condition otherwise.
    pub reason: Option<String>,
    /// The instance that takes care of it while it is `accepted` (others leave it alone
    /// while that instance is alive). Decides who tries; the version decides who wins.
    pub owner: Option<String>,
    /// The envelope it is in (prepared, submitted, parked with an envelope), or the one
    /// that settled it (confirmed, failed).
    pub envelope: Option<EnvelopeRef>,
    /// Set once its transaction was included (successful or failed).
    pub inclusion: Option<Inclusion>,
    /// The operation that pays it (a payment unless a destination that was not ready
    /// rerouted it; see `destinations`).
    pub op_kind: OpKind,
    /// The claimable balance that paid it (confirmed with `OpKind::ClaimableBalance`).
    pub balance_id: Option<String>,
}

impl PayoutRecord {
    pub fn id(&self) -> &PayoutId {
        self.request.payout_id()
    }

    /// A fresh record, as `accept` stores it.
    pub fn accepted(request: PayoutRequest, owner: &str) -> Self {
        let fingerprint = request.fingerprint();
        Self {
            request,
            fingerprint,
            state: PayoutState::Accepted,
            version: 1,
            attempt: 0,
            reason: None,
            owner: Some(owner.to_owned()),
            envelope: None,
            inclusion: None,
            op_kind: OpKind::Payment,
            balance_id: None,
        }
    }

    /// Holds an envelope that may still apply, or whose fate is not settled.
    pub fn holds_envelope(&self) -> bool {
        self.envelope.is_some() && !self.state.is_terminal()
    }
}

/// One step of a payout. The journal writes the new state, bumps the version and appends
/// the step's event in one atomic write, and only if the stored version is the one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Joined a journaled envelope (written for every member of a batch at once).
    Prepared { envelope: EnvelopeRef },
    /// Its envelope went out and the answer did not settle it.
    Submitted { note: String },
    /// Its transaction applied: paid. `balance_id` names the claimable balance that paid
    /// it, if its operation created one.
    Confirmed {
        inclusion: Inclusion,
        balance_id: Option<String>,
    },
    /// Over for good: its own operation failed in an included transaction.
    Failed {
        reason: String,
        inclusion: Option<Inclusion>,
    },
    /// Its envelope is provably dead, or was included as failed because of another
    /// member's operation: nothing was paid; it waits for a new batch. Parked payouts stay
    /// parked (without the envelope). `park` parks it instead (attempts exhausted).
    Requeued {
        reason: String,
        park: Option<String>,
    },
    /// Its own operation failed because the destination was not ready, and another kind of
    /// operation can pay it (`destinations::reroute`): like `Requeued`, and the next
    /// envelope pays it with `op_kind`.
    Rerouted { reason: String, op_kind: OpKind },
    /// Waits for an operator; keeps its envelope, which still settles it.
    Parked { reason: String },
    /// Cancelled before any envelope existed.
    Cancelled { reason: String },
    /// An operator resumes a parked payout: back to its envelope if it holds one (which is
    /// resubmitted and looked up, never replaced before it is dead), else to `accepted`
    /// with a fresh attempt budget, owned by the instance that resumed it.
    Resumed { reason: String, owner: String },
    /// Another instance took over an orphaned `accepted` payout.
    Adopted { owner: String },
    /// A spending limit refused it before any envelope: it waits, `until` (ms since the
    /// epoch) or for an operator.
    Held {
        reason: String,
        until_unix_ms: Option<i64>,
    },
    /// Its limit's window moved on: back to `accepted`, owned by the instance that
    /// released it, to be checked again.
    Released { owner: String },
    /// A note in the audit trail, no state change (e.g. a rejection code).
    Noted { note: String },
}

impl Step {
    /// The name of the event this step appends to the log.
    pub fn event_kind(&self) -> &'static str {
        match self {
            Self::Prepared { .. } => "prepared",
            Self::Submitted { .. } => "submitted",
            Self::Confirmed { .. } => "confirmed",
            Self::Failed { .. } => "failed",
            Self::Requeued { park: Some(_), .. } => "parked",
            Self::Requeued { .. } => "requeued",
            Self::Rerouted { .. } => "rerouted",
            Self::Parked { .. } => "parked",
            Self::Cancelled { .. } => "cancelled",
            Self::Resumed { .. } => "resumed",
            Self::Adopted { .. } => "adopted",
            Self::Held { .. } => "held",
            Self::Released { .. } => "released",
            Self::Noted { .. } => "noted",
        }
    }

    /// Whether the step may be applied to a payout in `state` (the journals refuse the
    /// others; the core never asks for them).
    pub fn allowed_from(&self, record: &PayoutRecord) -> bool {
        use PayoutState::*;
        let state = record.state;
        match self {
            Self::Prepared { .. } => state == Accepted,
            Self::Submitted { .. } => state == Prepared,
            Self::Confirmed { .. }
            | Self::Failed { .. }
            | Self::Requeued { .. }
            | Self::Rerouted { .. } => {
                record.holds_envelope() && matches!(state, Prepared | Submitted | Parked)
            }
            Self::Parked { .. } => state.is_active(),
            Self::Cancelled { .. } => {
                matches!(state, Accepted | Parked | Held) && record.envelope.is_none()
            }
            Self::Resumed { .. } => matches!(state, Parked | Held),
            Self::Adopted { .. } => state == Accepted,
            Self::Held { .. } => state == Accepted && record.envelope.is_none(),
            Self::Released { .. } => state == Held,
            Self::Noted { .. } => true,
        }
    }

    /// Applies the step to a record in memory (the Postgres journal does the same in SQL).
    pub fn apply_to(&self, record: &mut PayoutRecord) {
        use PayoutState::*;
        record.version += 1;
        match self {
            Self::Prepared { envelope } => {
                record.state = Prepared;
                record.envelope = Some(*envelope);
                record.attempt += 1;
                record.reason = None;
            }
            Self::Submitted { .. } => record.state = Submitted,
            Self::Confirmed {
                inclusion,
                balance_id,
            } => {
                record.state = Confirmed;
                record.inclusion = Some(*inclusion);
                record.reason = None;
                record.balance_id = balance_id.clone();
            }
            Self::Failed { reason, inclusion } => {
                record.state = Failed;
                record.inclusion = *inclusion;
                record.reason = Some(reason.clone());
            }
            Self::Requeued { reason, park } => {
                record.envelope = None;
                match (record.state, park) {
                    // Stays parked, with the operator's reason; only the envelope is gone.
                    (Parked, _) => return,
                    (_, Some(why)) => {
                        record.state = Parked;
                        record.reason = Some(why.clone());
                        return;
                    }
                    _ => record.state = Accepted,
                }
                record.reason = Some(reason.clone());
            }
            Self::Rerouted { reason, op_kind } => {
                record.envelope = None;
                record.op_kind = *op_kind;
                if record.state != Parked {
                    record.state = Accepted;
                    record.reason = Some(reason.clone());
                }
            }
            Self::Parked { reason } => {
                record.state = Parked;
                record.reason = Some(reason.clone());
            }
            Self::Cancelled { reason } => {
                record.state = Cancelled;
                record.reason = Some(reason.clone());
            }
            Self::Resumed { owner, .. } => {
                record.reason = None;
                if record.envelope.is_some() {
                    record.state = Submitted;
                } else {
                    record.state = Accepted;
                    record.attempt = 0;
                    record.owner = Some(owner.clone());
                }
            }
            Self::Adopted { owner } => record.owner = Some(owner.clone()),
            Self::Held { reason, .. } => {
                record.state = Held;
                record.reason = Some(reason.clone());
            }
            Self::Released { owner } => {
                record.state = Accepted;
                record.reason = None;
                record.owner = Some(owner.clone());
            }
            Self::Noted { .. } => {}
        }
    }

    /// The event's detail (JSON), as the journal stores it.
    pub fn detail(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Self::Prepared { envelope } => {
                json!({ "tx_hash": envelope.hash.to_hex(), "op_index": envelope.op_index })
            }
            Self::Submitted { note } | Self::Noted { note } => json!({ "note": note }),
            Self::Confirmed {
                inclusion,
                balance_id: None,
            } => json!({ "ledger": inclusion.ledger, "fee_charged": inclusion.fee_charged }),
            Self::Confirmed {
                inclusion,
                balance_id: Some(id),
            } => json!({
                "ledger": inclusion.ledger,
                "fee_charged": inclusion.fee_charged,
                "balance_id": id,
            }),
            Self::Failed { reason, inclusion } => json!({
                "reason": reason,
                "ledger": inclusion.map(|i| i.ledger),
                "fee_charged": inclusion.map(|i| i.fee_charged),
            }),
            Self::Requeued {
                reason,
                park: Some(why),
            } => json!({ "reason": why, "envelope": reason }),
            Self::Requeued { reason, park: None }
            | Self::Parked { reason }
            | Self::Cancelled { reason } => json!({ "reason": reason }),
            Self::Rerouted { reason, op_kind } => {
                json!({ "reason": reason, "op_kind": op_kind.as_str() })
            }
            Self::Resumed { reason, owner } => json!({ "reason": reason, "owner": owner }),
            Self::Adopted { owner } | Self::Released { owner } => json!({ "owner": owner }),
            Self::Held {
                reason,
                until_unix_ms,
            } => json!({ "reason": reason, "until_unix_ms": until_unix_ms }),
        }
    }
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
