//! The messages of the payout actors and their supervisor, and what the actors answer
//! (`PayoutError` with its code, `SubmitAnswer`). Kept apart from the actors so that the
//! context, the supervisor and the payout actor can all name them without naming each
//! other.

use ractor::{ActorId, RpcReplyPort};

use crate::domain::{PayoutId, PayoutRequest};
use crate::error_code::ErrorCode;
use crate::state::{PayoutRecord, PayoutState};

/// Why a request about a payout was not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayoutError {
    /// Same id, different content: the stored payout is untouched.
    #[error("payout {id} already exists with different content (state {state})")]
    Conflict { id: String, state: PayoutState },
    #[error("payout {0} not found")]
    NotFound(String),
    #[error("payout {id} cannot be cancelled in state {state}: {why}")]
    NotCancellable {
        id: String,
        state: PayoutState,
        why: &'static str,
    },
    #[error("payout {id} is {state}, not parked or held: nothing to resume")]
    NotResumable { id: String, state: PayoutState },
    /// The live-actor bound is reached: try again shortly.
    #[error("too many payouts in flight; retry later")]
    Overloaded,
    /// The journal could not be reached, or the actor stopped before answering: nothing is
    /// known to have been stored; the same request may be sent again safely.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

/// The answer to a submission.
#[derive(Debug, Clone)]
pub enum SubmitAnswer {
    /// A new payout was stored.
    Created(PayoutRecord),
    /// The same request was seen before: nothing was written.
    Duplicate(PayoutRecord),
}

impl SubmitAnswer {
    pub fn record(&self) -> &PayoutRecord {
        match self {
            Self::Created(r) | Self::Duplicate(r) => r,
        }
    }
}

/// Messages a payout actor handles, one at a time.
pub enum PayoutMsg {
    Submit {
        request: PayoutRequest,
        reply: RpcReplyPort<Result<SubmitAnswer, PayoutError>>,
    },
    Cancel {
        reason: String,
        reply: RpcReplyPort<Result<PayoutRecord, PayoutError>>,
    },
    /// An operator resumes a parked payout.
    Resume {
        reason: String,
        reply: RpcReplyPort<Result<PayoutRecord, PayoutError>>,
    },
    /// The journaled record moved on elsewhere (a channel worker wrote it): take in what
    /// it became when that is given (a prepare, a submission, a settlement), else read it
    /// again when next asked.
    Invalidate(Option<Box<crate::ports::journal::Moved>>),
    /// Passivation check, scheduled by the actor itself.
    IdleCheck,
}

impl PayoutMsg {
    /// Answers the caller (if any) with `err` instead of handling the message.
    pub fn reject(self, err: PayoutError) {
        // A send error means the caller gave up waiting: nothing to do.
        match self {
            Self::Submit { reply, .. } => drop(reply.send(Err(err))),
            Self::Cancel { reply, .. } | Self::Resume { reply, .. } => drop(reply.send(Err(err))),
            Self::Invalidate(_) | Self::IdleCheck => {}
        }
    }

    /// A request from a caller (as opposed to the actor's own or a worker's notice).
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Self::Submit { .. } | Self::Cancel { .. } | Self::Resume { .. }
        )
    }
}

impl PayoutError {
    /// The code of this refusal: the one mapping from the core's errors to the vocabulary.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Conflict { .. } => ErrorCode::PayoutConflict,
            Self::NotFound(_) => ErrorCode::PayoutNotFound,
            Self::NotCancellable { .. } => ErrorCode::PayoutNotCancellable,
            Self::NotResumable { .. } => ErrorCode::PayoutNotParked,
            Self::Overloaded => ErrorCode::Overloaded,
            Self::Unavailable(_) => ErrorCode::Unavailable,
        }
    }
}

pub enum SupervisorMsg {
    /// Deliver a message to the payout's actor.
    Route(PayoutId, PayoutMsg),
    /// The payout's journaled record moved on (to this, when given): tell its actor, if one
    /// is alive.
    Invalidate(PayoutId, Option<Box<crate::ports::journal::Moved>>),
    /// An idle actor asks to stop; granted only if it is still the routed actor.
    Passivate(PayoutId, ActorId),
    /// The park task finished writing; buffered messages may go to a fresh actor.
    ParkWritten(PayoutId),
    Stats(RpcReplyPort<SupervisorStats>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupervisorStats {
    pub live_actors: usize,
}
