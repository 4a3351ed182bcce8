//! The per-payout actor: owns one payout id and handles every request about it strictly one
//! at a time: submit (accept, duplicate or conflict), cancel, resume. It keeps the journaled
//! record in memory, so a duplicate of a live payout costs no database I/O at all; channel
//! workers that move the payout on (prepared, confirmed…) tell it to read the record again.
//!
//! It never talks to the ledger: once accepted, the payout waits in the ready queue for a
//! channel worker. Business errors are answered; an `Err` from a handler or a panic means a
//! bug, and the supervisor restarts the actor (its state is only a cache of the journal).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{Instrument, info, warn};

use crate::context::Context;
use crate::domain::{Fingerprint, PayoutId, PayoutRequest};
use crate::messages::SupervisorMsg;
use crate::messages::{PayoutError, PayoutMsg, SubmitAnswer};
use crate::metrics::Metrics;
use crate::ports::journal::{Accepted, JournalError, Ready};
use crate::state::{PayoutRecord, PayoutState, Step};

pub struct PayoutActor;

pub struct PayoutActorArgs {
    pub id: PayoutId,
    pub ctx: Arc<Context>,
    pub supervisor: ActorRef<SupervisorMsg>,
}

pub struct PayoutActorState {
    id: PayoutId,
    ctx: Arc<Context>,
    supervisor: ActorRef<SupervisorMsg>,
    /// `None` until the journal was read (or after an invalidation); then `Some(None)` if
    /// no such payout exists.
    record: Option<Option<PayoutRecord>>,
    /// The record an invalidation took from `record`: a later notice that says exactly what
    /// the row became from it (a settlement carries every column a step changes; the
    /// request and the fingerprint never change) brings it back, so it can serve again
    /// without a read.
    invalidated: Option<PayoutRecord>,
    last_activity: Instant,
}

impl Actor for PayoutActor {
    type Msg = PayoutMsg;
    type State = PayoutActorState;
    type Arguments = PayoutActorArgs;

    /// Cheap on purpose: spawning waits for it. The journal is read by the first message.
    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let idle = Duration::from_millis(args.ctx.policy.idle_passivate_ms);
        myself.send_after(idle, || PayoutMsg::IdleCheck);
        Ok(PayoutActorState {
            id: args.id,
            ctx: args.ctx,
            supervisor: args.supervisor,
            record: None,
            invalidated: None,
            last_activity: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if msg.is_request() {
            state.last_activity = Instant::now();
        }
        // Every log line about this payout carries its id.
        let span = tracing::info_span!("payout", payout_id = %state.id);
        async {
            match msg {
                PayoutMsg::Submit { request, reply } => {
                    let _ = reply.send(state.submit(request).await);
                }
                PayoutMsg::Cancel { reason, reply } => {
                    let _ = reply.send(state.cancel(reason).await);
                }
                PayoutMsg::Resume { reason, reply } => {
                    let _ = reply.send(state.resume(reason).await);
                }
                PayoutMsg::Invalidate(moved) => state.invalidate(moved.as_deref()),
                PayoutMsg::IdleCheck => state.idle_check(&myself),
            }
        }
        .instrument(span)
        .await;
        Ok(())
    }
}

impl PayoutActorState {
    fn cached(&self) -> Option<&PayoutRecord> {
        self.record.as_ref().and_then(|r| r.as_ref())
    }

    /// The journaled record moved on: forget the cached one, unless `moved` says exactly
    /// what it became (a prepare, a submission or a settlement by a channel worker), so
    /// that duplicates are still answered without I/O. A record forgotten earlier is kept
    /// aside: a later notice that starts from its version, or a settlement (which names
    /// every column a step changes), brings it back.
    fn invalidate(&mut self, moved: Option<&crate::ports::journal::Moved>) {
        let mut cached = match self.record.take() {
            Some(Some(r)) => Some(r),
            _ => self.invalidated.take(),
        };
        if let (Some(m), Some(r)) = (moved, cached.as_mut())
            && m.catch_up(r)
        {
            self.record = Some(cached);
            return;
        }
        self.invalidated = cached;
    }

    async fn load(&mut self) -> Result<Option<PayoutRecord>, PayoutError> {
        if self.record.is_none() {
            let loaded = self
                .ctx
                .journal
                .load(&self.id)
                .await
                .map_err(|e| PayoutError::Unavailable(e.to_string()))?;
            self.record = Some(loaded);
        }
        Ok(self.cached().cloned())
    }

    async fn submit(&mut self, request: PayoutRequest) -> Result<SubmitAnswer, PayoutError> {
        let fingerprint = request.fingerprint();
        if let Some(existing) = self.cached() {
            return self.compare(existing.clone(), fingerprint);
        }
        // No read first: the insert itself says whether the payout exists (the common case
        // is a new payout, and a duplicate of a passivated one costs one read).
        match self.ctx.journal.accept(&request, &self.ctx.instance).await {
            Ok(Accepted::Created(record)) => {
                Metrics::inc(&self.ctx.metrics.accepted);
                info!(payout_id = %self.id, amount = record.request.amount().stroops(), "payout accepted");
                self.ctx.enqueue(Ready::of(&record));
                self.record = Some(Some(record.clone()));
                Ok(SubmitAnswer::Created(record))
            }
            Ok(Accepted::Existing(record)) => {
                self.record = Some(Some(record.clone()));
                // An earlier accept whose answer was lost (its caller retries): it was
                // never queued.
                let ours = record.owner.as_deref() == Some(self.ctx.instance.as_str());
                if record.state == PayoutState::Accepted
                    && ours
                    && record.fingerprint == fingerprint
                    && !self.ctx.queue.contains(record.id())
                {
                    self.ctx.enqueue(Ready::of(&record));
                }
                self.compare(record, fingerprint)
            }
            Err(e) => Err(PayoutError::Unavailable(e.to_string())),
        }
    }

    fn compare(
        &self,
        existing: PayoutRecord,
        fingerprint: Fingerprint,
    ) -> Result<SubmitAnswer, PayoutError> {
        if existing.fingerprint == fingerprint {
            Metrics::inc(&self.ctx.metrics.duplicates);
            Ok(SubmitAnswer::Duplicate(existing))
        } else {
            Metrics::inc(&self.ctx.metrics.conflicts);
            Err(PayoutError::Conflict {
                id: self.id.to_string(),
                state: existing.state,
            })
        }
    }

    /// Applies one step, re-reading and re-deciding (with `decide`) if the stored record
    /// moved on since it was read.
    async fn write(
        &mut self,
        decide: impl Fn(&PayoutRecord) -> Result<Option<Step>, PayoutError>,
    ) -> Result<PayoutRecord, PayoutError> {
        // Each retry follows a write by someone else; a handful is plenty.
        for _ in 0..8 {
            let Some(record) = self.load().await? else {
                return Err(PayoutError::NotFound(self.id.to_string()));
            };
            let Some(step) = decide(&record)? else {
                return Ok(record);
            };
            match self.ctx.journal.apply(&record, &step).await {
                Ok(updated) => {
                    self.record = Some(Some(updated.clone()));
                    return Ok(updated);
                }
                Err(JournalError::Stale(_)) => {
                    warn!(payout_id = %self.id, "stale version; reading the payout again");
                    self.record = None;
                }
                Err(e) => {
                    self.record = None;
                    return Err(PayoutError::Unavailable(e.to_string()));
                }
            }
        }
        Err(PayoutError::Unavailable(
            "the payout kept changing; try again".into(),
        ))
    }

    async fn cancel(&mut self, reason: String) -> Result<PayoutRecord, PayoutError> {
        let id = self.id.to_string();
        let record = self
            .write(|r| {
                let refuse = |why| {
                    Err(PayoutError::NotCancellable {
                        id: id.clone(),
                        state: r.state,
                        why,
                    })
                };
                match r.state {
                    PayoutState::Cancelled => Ok(None),
                    PayoutState::Accepted | PayoutState::Parked | PayoutState::Held
                        if r.envelope.is_none() =>
                    {
                        Ok(Some(Step::Cancelled {
                            reason: reason.clone(),
                        }))
                    }
                    PayoutState::Confirmed => refuse("it was paid"),
                    PayoutState::Failed => refuse("it already failed"),
                    _ => refuse("a transaction envelope exists and may still be applied"),
                }
            })
            .await?;
        if record.state == PayoutState::Cancelled {
            self.ctx.queue.remove(&self.id);
            Metrics::inc(&self.ctx.metrics.cancelled);
        }
        Ok(record)
    }

    async fn resume(&mut self, reason: String) -> Result<PayoutRecord, PayoutError> {
        let (id, owner) = (self.id.to_string(), self.ctx.instance.clone());
        let record = self
            .write(|r| {
                if !matches!(r.state, PayoutState::Parked | PayoutState::Held) {
                    return Err(PayoutError::NotResumable {
                        id: id.clone(),
                        state: r.state,
                    });
                }
                Ok(Some(Step::Resumed {
                    reason: reason.clone(),
                    owner: owner.clone(),
                }))
            })
            .await?;
        info!(payout_id = %self.id, state = %record.state, "payout resumed by an operator");
        if record.state == PayoutState::Accepted {
            self.ctx.enqueue(Ready::of(&record));
        }
        Ok(record)
    }

    fn idle_check(&mut self, myself: &ActorRef<PayoutMsg>) {
        let idle_ms = self.ctx.policy.idle_passivate_ms;
        let elapsed = self.last_activity.elapsed();
        if elapsed >= Duration::from_millis(idle_ms) {
            // Ask the supervisor: it stops routing to us, then drains our mailbox.
            let _ = self
                .supervisor
                .cast(SupervisorMsg::Passivate(self.id.clone(), myself.get_id()));
        } else {
            let wait = Duration::from_millis(idle_ms)
                .saturating_sub(elapsed)
                .max(Duration::from_millis(idle_ms.min(1_000)));
            myself.send_after(wait, || PayoutMsg::IdleCheck);
        }
    }
}

/// Parks a payout for an operator (the supervisor's last resort after repeated failures);
/// fenced like every write: re-reads and retries on a stale version. A finished payout
/// stays finished.
pub async fn park(ctx: &Context, id: &PayoutId, reason: &str) -> Result<(), JournalError> {
    loop {
        let Some(record) = ctx.journal.load(id).await? else {
            return Ok(());
        };
        if !record.state.is_active() {
            return Ok(());
        }
        let step = Step::Parked {
            reason: reason.to_owned(),
        };
        match ctx.journal.apply(&record, &step).await {
            Ok(_) => {
                ctx.queue.remove(id);
                return Ok(());
            }
            Err(JournalError::Stale(_)) => continue,
            Err(e) => return Err(e),
        }
    }
}
