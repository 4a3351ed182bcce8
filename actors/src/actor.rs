//! The per-payout actor: owns one payout, handles its messages strictly one at a time and
//! drives its state machine (accept → prepare → submit → confirm) through the ports.
//!
//! Every step is written to the journal before it takes effect, and the envelope is
//! journaled before its first submission. A new envelope is built only when the old one is
//! provably dead (BRIEF §2.4). Business errors are answered; an `Err` from a handler or a
//! panic means a bug, and the supervisor restarts the actor from the journal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{Instrument, debug, info, warn};

use crate::domain::{AccountId, Memo, PayoutId, PayoutRequest};
use crate::metrics::Metrics;
use crate::ports::{
    Accepted, Change, Envelope, Inclusion, Journal, JournalError, Ledger, LedgerError, Lookup,
    PayoutRecord, PayoutState, SubmitOutcome, TxSpec,
};
use crate::supervisor::SupervisorMsg;

/// How the core pays and when it retries. Every bound carries its unit.
#[derive(Debug, Clone)]
pub struct PayoutPolicy {
    /// The distribution account: the payment operation's source, whose balance pays out.
    pub payer: AccountId,
    /// Fee per operation offered on a first envelope, in stroops (network minimum 100).
    pub fee_per_op_stroops: u32,
    /// Ceiling for the fee after `tx_insufficient_fee` doublings, in stroops.
    pub fee_per_op_max_stroops: u32,
    /// An envelope's `max_time` = last ledger close time + this, in seconds.
    pub tx_validity_s: u64,
    /// Envelopes one payout may build before it is parked for an operator.
    pub attempts_max: u32,
    /// Pause between checks of an envelope whose fate is not known, in milliseconds.
    pub poll_interval_ms: u64,
    /// Pause before asking again for a channel account when all are leased, in milliseconds.
    pub channel_wait_ms: u64,
    /// Pause before retrying after the journal or the ledger was unreachable, in milliseconds.
    pub io_retry_ms: u64,
    /// Pause before a new attempt after `op_underfunded`, in milliseconds.
    pub underfunded_retry_ms: u64,
    /// An actor with no message for this long stops (passivates), in milliseconds.
    pub idle_passivate_ms: u64,
}

impl PayoutPolicy {
    pub fn new(payer: AccountId) -> Self {
        Self {
            payer,
            fee_per_op_stroops: 100,
            fee_per_op_max_stroops: 100_000,
            tx_validity_s: 60,
            attempts_max: 10,
            poll_interval_ms: 1_000,
            channel_wait_ms: 1_000,
            io_retry_ms: 500,
            underfunded_retry_ms: 30_000,
            idle_passivate_ms: 30_000,
        }
    }
}

/// Everything an actor needs, shared by all actors.
pub struct Context {
    pub journal: Arc<dyn Journal>,
    pub ledger: Arc<dyn Ledger>,
    pub policy: PayoutPolicy,
    pub metrics: Arc<Metrics>,
}

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
    #[error("payout {id} is {state}, not parked: nothing to resume")]
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
    Get {
        reply: RpcReplyPort<Result<Option<PayoutRecord>, PayoutError>>,
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
    /// Advance the state machine. `None` from outside (submit, recovery); `Some(generation)`
    /// from the actor's own timer, ignored if a newer timer replaced it.
    Drive(Option<u64>),
    /// Passivation check, scheduled by the actor itself.
    IdleCheck,
}

impl PayoutMsg {
    /// Answers the caller (if any) with `err` instead of handling the message.
    pub fn reject(self, err: PayoutError) {
        // A send error means the caller gave up waiting: nothing to do.
        match self {
            Self::Submit { reply, .. } => drop(reply.send(Err(err))),
            Self::Get { reply } => drop(reply.send(Err(err))),
            Self::Cancel { reply, .. } | Self::Resume { reply, .. } => drop(reply.send(Err(err))),
            Self::Drive(_) | Self::IdleCheck => {}
        }
    }

    pub fn is_drive(&self) -> bool {
        matches!(self, Self::Drive(_))
    }
}

pub struct PayoutActor;

pub struct PayoutActorArgs {
    pub id: PayoutId,
    pub ctx: Arc<Context>,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub waiters: Arc<ChannelWaiters>,
}

/// Payouts waiting for a channel account, first come first served. A payout that releases a
/// channel wakes the next one, so waiting costs no polling; `channel_wait_ms` is only the
/// fallback for channels released by another instance.
#[derive(Default)]
pub struct ChannelWaiters(std::sync::Mutex<std::collections::VecDeque<ActorRef<PayoutMsg>>>);

impl ChannelWaiters {
    fn wait(&self, actor: ActorRef<PayoutMsg>) {
        // A poisoned lock only means a panic elsewhere mid-push; the queue is still valid.
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(actor);
    }

    fn wake_one(&self) {
        let mut queue = self.0.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(actor) = queue.pop_front() {
            if actor.send_message(PayoutMsg::Drive(None)).is_ok() {
                return;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct PayoutActorState {
    id: PayoutId,
    ctx: Arc<Context>,
    supervisor: ActorRef<SupervisorMsg>,
    waiters: Arc<ChannelWaiters>,
    /// In the channel waiting queue right now.
    queued_for_channel: bool,
    /// `None` until the journal was read once; then `Some(None)` if no such payout exists.
    record: Option<Option<PayoutRecord>>,
    /// Generation of the one live drive timer; older timers are ignored.
    timer_generation: u64,
    timer_pending: bool,
    last_activity: Instant,
    /// The current envelope was refused for `tx_insufficient_fee` at least once, so the
    /// next envelope offers more (kept in memory: after a restart the fee is not raised).
    fee_too_low: bool,
    /// Whether this actor counts itself in the `in_flight` gauge.
    counted_in_flight: bool,
}

/// What to do after a step.
enum Next {
    Now,
    After(u64),
    Idle,
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
            waiters: args.waiters,
            queued_for_channel: false,
            record: None,
            timer_generation: 0,
            timer_pending: false,
            last_activity: Instant::now(),
            fee_too_low: false,
            counted_in_flight: false,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.set_in_flight(false);
        // Stopping with work left (a message routed just before a passivation drain made the
        // payout active, and the drain then refused our own next-step message): hand the
        // payout back to the supervisor, which drives it in a fresh actor once this one has
        // stopped. During shutdown the supervisor is gone and recovery covers it.
        if state.record().is_some_and(|r| r.state.is_active()) {
            let _ = state.supervisor.cast(SupervisorMsg::Route(
                state.id.clone(),
                PayoutMsg::Drive(None),
            ));
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if !matches!(msg, PayoutMsg::IdleCheck | PayoutMsg::Drive(Some(_))) {
            state.last_activity = Instant::now();
        }
        // Every log line about this payout carries its id.
        let span = tracing::info_span!("payout", payout_id = %state.id);
        async {
            match msg {
                PayoutMsg::Submit { request, reply } => {
                    let answer = state.submit(&request).await;
                    let created = matches!(answer, Ok(SubmitAnswer::Created(_)));
                    let _ = reply.send(answer);
                    if created {
                        state.run_step(&myself).await;
                    }
                }
                PayoutMsg::Get { reply } => {
                    let answer = state.ensure_loaded().await.map(|r| r.cloned());
                    let _ = reply.send(answer);
                }
                PayoutMsg::Cancel { reason, reply } => {
                    let answer = state.cancel(reason).await;
                    let _ = reply.send(answer);
                }
                PayoutMsg::Resume { reason, reply } => {
                    let answer = state.resume(reason).await;
                    let _ = reply.send(answer);
                }
                PayoutMsg::Drive(Some(generation)) if generation != state.timer_generation => {}
                PayoutMsg::Drive(generation) => {
                    if generation.is_some() {
                        state.timer_pending = false;
                    } else {
                        // Possibly woken from the channel queue: it is no longer in it.
                        state.queued_for_channel = false;
                    }
                    state.run_step(&myself).await;
                }
                PayoutMsg::IdleCheck => state.idle_check(&myself),
            }
        }
        .instrument(span)
        .await;
        // Liveness: whoever holds an unfinished payout drives it. (A duplicate can be the
        // first message a fresh actor sees, e.g. before recovery reached this payout.)
        if !state.timer_pending && state.record().is_some_and(|r| r.state.is_active()) {
            state.schedule(&myself, 0);
        }
        Ok(())
    }
}

/// Converts a ledger error into "try again later".
fn ledger_retry(policy: &PayoutPolicy, err: &LedgerError, what: &str, id: &PayoutId) -> Next {
    warn!(payout_id = %id, error = %err, "{what} failed; retrying");
    Next::After(policy.io_retry_ms)
}

impl PayoutActorState {
    fn record(&self) -> Option<&PayoutRecord> {
        self.record.as_ref().and_then(|r| r.as_ref())
    }

    async fn ensure_loaded(&mut self) -> Result<Option<&PayoutRecord>, PayoutError> {
        if self.record.is_none() {
            let loaded = self
                .ctx
                .journal
                .load(&self.id)
                .await
                .map_err(|e| PayoutError::Unavailable(e.to_string()))?;
            self.record = Some(loaded);
            self.refresh_in_flight();
        }
        Ok(self.record())
    }

    fn set_in_flight(&mut self, on: bool) {
        if on != self.counted_in_flight {
            let delta = if on { 1 } else { -1 };
            self.ctx
                .metrics
                .in_flight
                .fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
            self.counted_in_flight = on;
        }
    }

    fn refresh_in_flight(&mut self) {
        let active = self.record().is_some_and(|r| r.state.is_active());
        self.set_in_flight(active);
    }

    async fn submit(&mut self, request: &PayoutRequest) -> Result<SubmitAnswer, PayoutError> {
        let fingerprint = request.fingerprint();
        if let Some(existing) = self.ensure_loaded().await?.cloned() {
            return self.compare(existing, fingerprint);
        }
        match self.ctx.journal.accept(request, fingerprint).await {
            Ok(Accepted::Created(record)) => {
                Metrics::inc(&self.ctx.metrics.accepted);
                info!(payout_id = %self.id, amount = record.request.amount().stroops(), "payout accepted");
                self.record = Some(Some(record.clone()));
                self.refresh_in_flight();
                Ok(SubmitAnswer::Created(record))
            }
            Ok(Accepted::Existing(record)) => {
                // Another instance stored it between our read and our insert.
                self.record = Some(Some(record.clone()));
                self.refresh_in_flight();
                self.compare(record, fingerprint)
            }
            Err(e) => Err(PayoutError::Unavailable(e.to_string())),
        }
    }

    fn compare(
        &self,
        existing: PayoutRecord,
        fingerprint: crate::domain::Fingerprint,
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

    async fn cancel(&mut self, reason: String) -> Result<PayoutRecord, PayoutError> {
        let Some(record) = self.ensure_loaded().await?.cloned() else {
            return Err(PayoutError::NotFound(self.id.to_string()));
        };
        let refuse = |why| {
            Err(PayoutError::NotCancellable {
                id: self.id.to_string(),
                state: record.state,
                why,
            })
        };
        match record.state {
            PayoutState::Cancelled => return Ok(record),
            PayoutState::Accepted | PayoutState::Parked if record.envelope.is_none() => {}
            PayoutState::Confirmed => return refuse("it was paid"),
            PayoutState::Failed => return refuse("it already failed"),
            _ => return refuse("a transaction envelope exists and may still be applied"),
        }
        match self.write(&record, Change::Cancelled { reason }).await {
            Ok(()) => {
                Metrics::inc(&self.ctx.metrics.cancelled);
                self.record()
                    .cloned()
                    .ok_or_else(|| PayoutError::Unavailable("record vanished".into()))
            }
            Err(e) => Err(PayoutError::Unavailable(e.to_string())),
        }
    }

    async fn resume(&mut self, reason: String) -> Result<PayoutRecord, PayoutError> {
        let Some(record) = self.ensure_loaded().await?.cloned() else {
            return Err(PayoutError::NotFound(self.id.to_string()));
        };
        if record.state != PayoutState::Parked {
            return Err(PayoutError::NotResumable {
                id: self.id.to_string(),
                state: record.state,
            });
        }
        info!(payout_id = %self.id, %reason, "payout resumed by an operator");
        match self.write(&record, Change::Resumed { reason }).await {
            Ok(()) => self
                .record()
                .cloned()
                .ok_or_else(|| PayoutError::Unavailable("record vanished".into())),
            Err(e) => Err(PayoutError::Unavailable(e.to_string())),
        }
    }

    /// Writes one change conditionally on the version we hold. On a stale version the
    /// record is reloaded (someone else moved it on) and the error returned.
    async fn write(&mut self, record: &PayoutRecord, change: Change) -> Result<(), JournalError> {
        match self.ctx.journal.apply(record, &change).await {
            Ok(updated) => {
                if change.releases_channel() && record.channel.is_some() {
                    self.waiters.wake_one();
                }
                debug!(payout_id = %self.id, event = change.event_kind(), state = %updated.state, "journaled");
                self.record = Some(Some(updated));
                self.refresh_in_flight();
                Ok(())
            }
            Err(err) => {
                if matches!(err, JournalError::Stale(_)) {
                    warn!(payout_id = %self.id, "stale version; reloading from the journal");
                }
                // Whatever happened, our copy may be out of date: read it again next time.
                self.record = None;
                Err(err)
            }
        }
    }

    /// Runs one step and schedules the next one.
    async fn run_step(&mut self, myself: &ActorRef<PayoutMsg>) {
        let next = self.step(myself).await;
        match next {
            Next::Now => self.schedule(myself, 0),
            Next::After(ms) => self.schedule(myself, ms),
            Next::Idle => {}
        }
    }

    fn schedule(&mut self, myself: &ActorRef<PayoutMsg>, delay_ms: u64) {
        self.timer_generation += 1;
        self.timer_pending = true;
        let generation = self.timer_generation;
        if delay_ms == 0 {
            // Our own mailbox; a send error means we are stopping, and the journal has it.
            let _ = myself.send_message(PayoutMsg::Drive(Some(generation)));
        } else {
            myself.send_after(Duration::from_millis(delay_ms), move || {
                PayoutMsg::Drive(Some(generation))
            });
        }
    }

    fn idle_check(&mut self, myself: &ActorRef<PayoutMsg>) {
        let idle_ms = self.ctx.policy.idle_passivate_ms;
        let elapsed = self.last_activity.elapsed();
        let busy = self.timer_pending || self.record().is_some_and(|r| r.state.is_active());
        if !busy && elapsed >= Duration::from_millis(idle_ms) {
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

    /// One step of the state machine.
    async fn step(&mut self, myself: &ActorRef<PayoutMsg>) -> Next {
        let record = match self.ensure_loaded().await {
            Ok(Some(r)) => r.clone(),
            Ok(None) => return Next::Idle,
            Err(e) => {
                warn!(payout_id = %self.id, error = %e, "cannot load payout; retrying");
                return Next::After(self.ctx.policy.io_retry_ms);
            }
        };
        match record.state {
            PayoutState::Accepted => self.prepare(record, myself).await,
            PayoutState::Prepared | PayoutState::Submitted => self.submit_envelope(record).await,
            PayoutState::Confirmed
            | PayoutState::Failed
            | PayoutState::Parked
            | PayoutState::Cancelled => Next::Idle,
        }
    }

    /// Turns a journal write result into the next step.
    fn after_write(&self, result: Result<(), JournalError>, on_ok: Next) -> Next {
        match result {
            Ok(()) => on_ok,
            Err(JournalError::Stale(_)) => Next::Now,
            Err(e) => {
                warn!(payout_id = %self.id, error = %e, "journal write failed; retrying");
                Next::After(self.ctx.policy.io_retry_ms)
            }
        }
    }

    async fn park(&mut self, record: &PayoutRecord, reason: String) -> Next {
        warn!(payout_id = %self.id, %reason, "payout parked for an operator");
        let result = self.write(record, Change::Parked { reason }).await;
        if result.is_ok() {
            Metrics::inc(&self.ctx.metrics.parked);
        }
        self.after_write(result, Next::Idle)
    }

    /// `Accepted` → lease a source account, build and sign, journal the envelope.
    async fn prepare(&mut self, record: PayoutRecord, myself: &ActorRef<PayoutMsg>) -> Next {
        let policy = &self.ctx.policy;
        // Negative space: a payout with a live envelope never reaches here.
        assert!(
            record.envelope.is_none(),
            "prepare with a live envelope for payout {}",
            self.id
        );
        if record.attempt >= policy.attempts_max {
            let reason = format!("gave up after {} envelopes (attempts_max)", record.attempt);
            return self.park(&record, reason).await;
        }
        let channel = match self.ctx.journal.lease_channel(&self.id).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                // Refused: every channel is busy, or the payout is no longer `accepted`
                // (another instance moved it on). Re-read it before the next step.
                self.record = None;
                if !self.queued_for_channel {
                    self.waiters.wait(myself.clone());
                    self.queued_for_channel = true;
                }
                return Next::After(policy.channel_wait_ms);
            }
            Err(e) => {
                warn!(payout_id = %self.id, error = %e, "channel lease failed; retrying");
                return Next::After(policy.io_retry_ms);
            }
        };
        let sequence = match self.ctx.ledger.account_sequence(&channel).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                let reason = format!("source account {channel} does not exist on the ledger");
                return self.park(&record, reason).await;
            }
            Err(e) => return ledger_retry(policy, &e, "reading the source sequence", &self.id),
        };
        let head = match self.ctx.ledger.latest_ledger().await {
            Ok(h) => h,
            Err(e) => return ledger_retry(policy, &e, "reading the latest ledger", &self.id),
        };
        let fee = record.next_fee_stroops.unwrap_or(policy.fee_per_op_stroops);
        let request = &record.request;
        let spec = TxSpec {
            source: channel,
            sequence: sequence + 1,
            fee_stroops: fee,
            max_time: head.close_time + policy.tx_validity_s,
            ledger_bounds: None,
            payer: policy.payer,
            destination: *request.destination(),
            asset: request.asset().clone(),
            amount: request.amount(),
            memo: payment_memo(request),
        };
        let envelope = match self.ctx.ledger.build_and_sign(&spec) {
            Ok(e) => e,
            Err(e) => {
                return self
                    .park(&record, format!("cannot build the transaction: {e}"))
                    .await;
            }
        };
        Metrics::inc(&self.ctx.metrics.envelopes_built);
        info!(payout_id = %self.id, hash = %envelope.hash, source = %channel, sequence = envelope.sequence, attempt = record.attempt + 1, "envelope prepared");
        let result = self
            .write(&record, Change::Prepared { channel, envelope })
            .await;
        self.after_write(result, Next::Now)
    }

    /// `Prepared`/`Submitted` → send the journaled bytes and classify the answer.
    async fn submit_envelope(&mut self, record: PayoutRecord) -> Next {
        let Some(envelope) = record.envelope.clone() else {
            return self
                .park(
                    &record,
                    "lost invariant: live state without an envelope".into(),
                )
                .await;
        };
        let started = Instant::now();
        let outcome = self.ctx.ledger.submit(&envelope).await;
        let metrics = &self.ctx.metrics;
        Metrics::inc(&metrics.submissions);
        metrics.observe_submit_latency_ms(
            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        );
        match outcome {
            SubmitOutcome::Applied(inclusion) => {
                metrics.ledger_outcome("applied");
                self.confirm(&record, inclusion).await
            }
            SubmitOutcome::Failed {
                inclusion,
                tx_code,
                op_codes,
            } => {
                metrics.ledger_outcome(&outcome_code(&tx_code, &op_codes));
                self.included_failure(&record, inclusion, &tx_code, &op_codes)
                    .await
            }
            SubmitOutcome::Rejected { code } => {
                metrics.ledger_outcome(&code);
                match rejection_policy(&code) {
                    RejectionPolicy::Park => {
                        let reason = format!(
                            "{code}: the network refused the envelope for a reason an operator must fix"
                        );
                        self.park(&record, reason).await
                    }
                    RejectionPolicy::WaitUntilDead => {
                        self.fee_too_low |= code == "tx_insufficient_fee";
                        self.settle(record, &envelope, &code).await
                    }
                }
            }
            SubmitOutcome::Unknown { detail } => {
                metrics.ledger_outcome("unknown");
                debug!(payout_id = %self.id, %detail, "submission outcome unknown");
                self.settle(record, &envelope, "unknown").await
            }
        }
    }

    /// After an unsettled answer: journal `Submitted` once, then look the hash up and decide
    /// whether the envelope is applied, failed, dead or still pending.
    async fn settle(&mut self, mut record: PayoutRecord, envelope: &Envelope, cause: &str) -> Next {
        if record.state == PayoutState::Prepared {
            let result = self
                .write(
                    &record,
                    Change::Submitted {
                        note: cause.to_owned(),
                    },
                )
                .await;
            match result {
                Ok(()) => match self.record() {
                    Some(r) => record = r.clone(),
                    None => return Next::Now,
                },
                Err(e) => return self.after_write(Err(e), Next::Now),
            }
        }
        let policy = &self.ctx.policy;
        // Order matters: read the ledger head and the source sequence *before* looking the
        // hash up, so that a transaction that consumed the sequence is already visible.
        let head = match self.ctx.ledger.latest_ledger().await {
            Ok(h) => h,
            Err(e) => return ledger_retry(policy, &e, "reading the latest ledger", &self.id),
        };
        let account_sequence = match self.ctx.ledger.account_sequence(&envelope.source).await {
            Ok(s) => s,
            Err(e) => return ledger_retry(policy, &e, "reading the source sequence", &self.id),
        };
        let lookup = match self.ctx.ledger.lookup(&envelope.hash).await {
            Ok(l) => l,
            Err(e) => return ledger_retry(policy, &e, "looking the transaction up", &self.id),
        };
        match lookup {
            Lookup::Applied(inclusion) => self.confirm(&record, inclusion).await,
            Lookup::Failed {
                inclusion,
                tx_code,
                op_codes,
            } => {
                self.included_failure(&record, inclusion, &tx_code, &op_codes)
                    .await
            }
            Lookup::NotFound => {
                let expired = head.close_time > envelope.max_time;
                let sequence_moved = account_sequence.is_some_and(|s| s >= envelope.sequence);
                if !expired && !sequence_moved {
                    return Next::After(policy.poll_interval_ms);
                }
                let reason = if expired {
                    format!(
                        "expired: ledger {} closed at {} > max_time {}",
                        head.sequence, head.close_time, envelope.max_time
                    )
                } else {
                    format!(
                        "source sequence moved to {} >= envelope sequence {}",
                        account_sequence.unwrap_or_default(),
                        envelope.sequence
                    )
                };
                let next_fee = self.fee_too_low.then(|| {
                    let current = envelope.fee_stroops.max(policy.fee_per_op_stroops);
                    current.saturating_mul(2).min(policy.fee_per_op_max_stroops)
                });
                info!(payout_id = %self.id, hash = %envelope.hash, %reason, "envelope provably dead; a new one will be built");
                self.fee_too_low = false;
                let result = self
                    .write(
                        &record,
                        Change::EnvelopeDead {
                            reason,
                            next_fee_stroops: next_fee,
                        },
                    )
                    .await;
                self.after_write(result, Next::Now)
            }
        }
    }

    async fn confirm(&mut self, record: &PayoutRecord, inclusion: Inclusion) -> Next {
        let result = self.write(record, Change::Confirmed { inclusion }).await;
        if result.is_ok() {
            Metrics::inc(&self.ctx.metrics.confirmed);
            info!(payout_id = %self.id, ledger = inclusion.ledger, fee = inclusion.fee_charged, "payout confirmed");
        }
        self.after_write(result, Next::Idle)
    }

    async fn included_failure(
        &mut self,
        record: &PayoutRecord,
        inclusion: Inclusion,
        tx_code: &str,
        op_codes: &[String],
    ) -> Next {
        let code = outcome_code(tx_code, op_codes);
        let policy = &self.ctx.policy;
        if failure_policy(op_codes) == FailurePolicy::NewAttempt
            && record.attempt < policy.attempts_max
        {
            let reason = format!(
                "{code}: included but failed in ledger {}; a new attempt follows",
                inclusion.ledger
            );
            let delay = policy.underfunded_retry_ms;
            let result = self
                .write(
                    record,
                    Change::EnvelopeDead {
                        reason,
                        next_fee_stroops: None,
                    },
                )
                .await;
            return self.after_write(result, Next::After(delay));
        }
        let reason = format!("{code}: included but failed in ledger {}", inclusion.ledger);
        warn!(payout_id = %self.id, %reason, "payout failed");
        let result = self
            .write(
                record,
                Change::Failed {
                    reason,
                    inclusion: Some(inclusion),
                },
            )
            .await;
        if result.is_ok() {
            Metrics::inc(&self.ctx.metrics.failed);
        }
        self.after_write(result, Next::Idle)
    }
}

/// The memo on the payment: the caller's, or else a hash of the payout id that ties the
/// transaction to its payout (sha256 of `payoutd:` ‖ id).
pub fn payment_memo(request: &PayoutRequest) -> Memo {
    match request.memo() {
        Memo::None => {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            h.update(b"payoutd:");
            h.update(request.payout_id().as_str().as_bytes());
            Memo::Hash(h.finalize().into())
        }
        other => other.clone(),
    }
}

fn outcome_code(tx_code: &str, op_codes: &[String]) -> String {
    match op_codes.iter().find(|c| c.as_str() != "op_success") {
        Some(op) => format!("{tx_code}:{op}"),
        None => tx_code.to_owned(),
    }
}

/// What to do with a transaction that was included but failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// The payout fails for good with the code as its reason.
    Terminal,
    /// A new envelope is built after `underfunded_retry_ms` (bounded by `attempts_max`).
    NewAttempt,
}

/// The policy per operation code (docs/result-codes.md keeps the table).
pub fn failure_policy(op_codes: &[String]) -> FailurePolicy {
    if op_codes.iter().any(|c| c == "op_underfunded") {
        FailurePolicy::NewAttempt
    } else {
        FailurePolicy::Terminal
    }
}

/// What to do with a rejection before inclusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionPolicy {
    /// The envelope may still (or later) be valid: keep it until it is provably dead, then
    /// build a new one (with a doubled fee after `tx_insufficient_fee`).
    WaitUntilDead,
    /// A configuration problem no retry can fix: park for an operator, keeping the lease.
    Park,
}

pub fn rejection_policy(code: &str) -> RejectionPolicy {
    match code {
        "tx_bad_auth"
        | "tx_bad_auth_extra"
        | "tx_no_source_account"
        | "tx_no_account"
        | "tx_malformed"
        | "tx_not_supported"
        | "tx_bad_sponsorship"
        | "tx_insufficient_balance"
        | "transaction_malformed" => RejectionPolicy::Park,
        _ => RejectionPolicy::WaitUntilDead,
    }
}
