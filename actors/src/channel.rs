//! The channel worker: one actor per channel account this instance holds the lease of. It
//! is the only part of the core that talks to the ledger. A channel has at most one
//! envelope that may still apply (one transaction per source account per ledger, and the
//! next one needs the next sequence number), so the worker's loop is:
//!
//! 1. **Open envelope?** Submit exactly its journaled bytes; an answer that settles it
//!    (applied, included as failed) settles every member in one write. Otherwise read the
//!    head and the source sequence, look the hash up, and feed the facts to its
//!    [`Watch`]: dead → its members go back to the queue (one write); closed (its
//!    sequence is consumed, its fate not proven yet) → it moves to the unresolved list and
//!    the channel goes on; open → check again after `poll_interval_ms`.
//! 2. **Unresolved envelopes** are looked up every `poll_interval_ms` until found or
//!    proven dead; their payouts wait, nobody else's do.
//! 3. **Nothing open:** take a batch from the ready queue (up to `payments_per_tx_max`
//!    payouts of one memo lane, or fewer after `batch_linger_ms`), build and sign one
//!    transaction, and journal the envelope with every member `prepared`, fenced by the
//!    channel lease, before the first submission.
//!
//! Without the channel's key (an orphaned channel of a dead instance) the worker only does
//! 1 and 2, then gives the lease back. A rejection that says the channel itself is unusable
//! disables it for this instance's life (visible in metrics and `/readyz`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use sha2::{Digest, Sha256};
use tracing::{Instrument, debug, error, info, warn};

use crate::context::{BeyondHistory, ChannelStatus, Context, OpenEnvelope};
use crate::destinations::{self, OpKind, Reroute, claimable_balance_id};
use crate::domain::{Memo, PayoutId};
use crate::limits::Hold;
use crate::metrics::Metrics;
use crate::policy::{OpPolicy, RejectionPolicy, op_policy, rejection_policy};
use crate::ports::journal::{
    Batch, ChannelLease, EnvelopeStatus, Member, PrepareError, Ready, Settlement,
};
use crate::ports::ledger::{
    Inclusion, LedgerError, LedgerHead, Lookup, OpSpec, SequenceRead, SubmitOutcome, TxSpec,
};
use crate::proof::{Fate, Watch};
use crate::queue::{Lane, Take, Waker};
use crate::safety::Signal;

/// While paying is paused, a worker with nothing live looks again this often, in
/// milliseconds (the pause itself holds at once: the journal refuses new envelopes).
pub const PAUSED_RECHECK_MS: u64 = 250;
use crate::state::{EnvelopeRef, PayoutState, Step};

pub enum ChannelMsg {
    /// The worker's own timer; ignored unless it is the newest one.
    Tick(u64),
    /// The ready queue has work.
    Wake,
    /// The journal holds live envelopes of this channel the worker does not know of (the
    /// sweep saw them): read the channel's envelopes again.
    Reload,
}

pub struct ChannelWorker;

pub struct WorkerArgs {
    pub lease: ChannelLease,
    /// This instance holds the channel's key (it may build envelopes).
    pub can_sign: bool,
    pub ctx: Arc<Context>,
}

/// An envelope being driven, with the facts gathered about it.
struct Tracked {
    batch: Batch,
    watch: Watch,
    /// Its members were marked `submitted` (after the first answer that did not settle it).
    marked_submitted: bool,
    /// The network refused it for its fee at least once: the next envelope offers more.
    fee_low: bool,
    /// Its members were parked for an operator (a rejection no retry can fix).
    members_parked: bool,
    /// Why no lookup can settle it any more (logged once when first seen).
    beyond_history: Option<String>,
    since: Instant,
}

impl Tracked {
    fn new(batch: Batch) -> Self {
        let e = &batch.envelope;
        let watch = Watch::new(e.sequence, e.max_time, batch.first_ledger());
        Self {
            batch,
            watch,
            marked_submitted: false,
            fee_low: false,
            members_parked: false,
            beyond_history: None,
            since: Instant::now(),
        }
    }

    fn ids(&self) -> impl Iterator<Item = PayoutId> + '_ {
        self.batch.members.iter().map(|m| m.ready.id().clone())
    }
}

/// What an examination of an envelope found.
enum Verdict {
    Applied(Inclusion),
    Failed {
        inclusion: Inclusion,
        tx_code: String,
        op_codes: Vec<String>,
    },
    Dead(String),
    /// It can no longer apply (its sequence is consumed); not proven yet.
    Closed,
    Open,
}

enum Next {
    Now,
    After(u64),
    /// Nothing to do until the queue has work (and, if set, check again after this long).
    Idle(Option<u64>),
    Stop,
}

pub struct WorkerState {
    ctx: Arc<Context>,
    myself: ActorRef<ChannelMsg>,
    lease: ChannelLease,
    can_sign: bool,
    /// The channel's sequence number as last learned (`None`: read it before building).
    sequence: Option<i64>,
    fee_per_op: u32,
    loaded: bool,
    open: Option<Tracked>,
    unresolved: Vec<Tracked>,
    unresolved_checked: Option<Instant>,
    disabled: Option<String>,
    lease_lost: bool,
    timer_generation: u64,
    /// Shared with the waker this worker left in the queue: true while it waits for work.
    waiting: Arc<AtomicBool>,
    /// A batch whose `prepare` got no answer: it may or may not be journaled. The reload
    /// that follows finds its envelope, or puts its payouts back in the queue.
    uncertain: Option<Batch>,
}

struct WorkerWaker {
    actor: ActorRef<ChannelMsg>,
    waiting: Arc<AtomicBool>,
}

impl Waker for WorkerWaker {
    fn wake(&self) -> bool {
        // Only a worker that still waits takes the wake-up; a busy one passes it on.
        self.waiting.swap(false, Ordering::AcqRel) && self.actor.cast(ChannelMsg::Wake).is_ok()
    }
}

impl Actor for ChannelWorker {
    type Msg = ChannelMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Cheap: the journal is read by the first step.
        let _ = myself.cast(ChannelMsg::Tick(0));
        // A worker of this channel before it (it panicked) may have left payouts in hand
        // that were never journaled: the next sweep reads them back.
        args.ctx.queue.abandon_hand(&args.lease.account);
        let fee_per_op = args.ctx.policy.fee_per_op_stroops;
        Ok(WorkerState {
            ctx: args.ctx,
            myself: myself.clone(),
            lease: args.lease,
            can_sign: args.can_sign,
            sequence: None,
            fee_per_op,
            loaded: false,
            open: None,
            unresolved: Vec::new(),
            unresolved_checked: None,
            disabled: None,
            lease_lost: false,
            timer_generation: 0,
            waiting: Arc::new(AtomicBool::new(false)),
            uncertain: None,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A disabled channel stays on the board (and is not claimed again in this life).
        if state.disabled.is_none() {
            state.ctx.set_channel_status(state.lease.account, None);
        }
        // What it held and had not journaled is read back by the next sweep.
        state.ctx.queue.abandon_hand(&state.lease.account);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ChannelMsg::Tick(g) if g != state.timer_generation => return Ok(()),
            ChannelMsg::Tick(_) | ChannelMsg::Wake => {}
            ChannelMsg::Reload => {
                info!(channel = %state.lease.account, "the journal holds envelopes of this channel the worker did not know of; reading them again");
                state.loaded = false;
            }
        }
        state.waiting.store(false, Ordering::Release);
        let span = tracing::info_span!("channel", channel = %state.lease.account);
        let next = state.step().instrument(span).await;
        state.publish_status();
        match next {
            Next::Now => state.schedule(&myself, 0),
            Next::After(ms) => state.schedule(&myself, ms),
            Next::Idle(check) => {
                // Its waker is in the queue already (registered as it looked).
                match check {
                    Some(ms) => state.schedule(&myself, ms),
                    // A newer generation cancels any pending timer.
                    None => state.timer_generation += 1,
                }
            }
            Next::Stop => {
                if !state.lease_lost
                    && let Err(e) = state.ctx.journal.release_channel(&state.lease).await
                {
                    warn!(channel = %state.lease.account, error = %e, "cannot release the channel lease; it expires with the heartbeat");
                }
                myself.stop(None);
            }
        }
        Ok(())
    }
}

impl WorkerState {
    fn schedule(&mut self, myself: &ActorRef<ChannelMsg>, delay_ms: u64) {
        self.timer_generation += 1;
        let g = self.timer_generation;
        if delay_ms == 0 {
            // Our own mailbox; a send error means we are stopping.
            let _ = myself.cast(ChannelMsg::Tick(g));
        } else {
            myself.send_after(Duration::from_millis(delay_ms), move || ChannelMsg::Tick(g));
        }
    }

    fn publish_status(&self) {
        let status = ChannelStatus {
            can_sign: self.can_sign,
            open: self.open.as_ref().map(|t| OpenEnvelope {
                hash: t.batch.envelope.hash,
                payouts: t.ids().collect(),
                since: t.since,
            }),
            unresolved: self.unresolved.len(),
            disabled: self.disabled.clone(),
            beyond_history: self
                .unresolved
                .iter()
                .filter_map(|t| {
                    Some(BeyondHistory {
                        hash: t.batch.envelope.hash,
                        payouts: t.ids().collect(),
                        reason: t.beyond_history.clone()?,
                    })
                })
                .collect(),
        };
        self.ctx
            .set_channel_status(self.lease.account, Some(status));
    }

    fn io_retry(&self) -> Next {
        Next::After(self.ctx.policy.io_retry_ms)
    }

    async fn step(&mut self) -> Next {
        if !self.loaded {
            return self.load().await;
        }
        if let Some(open) = self.open.take() {
            return self.drive_open(open).await;
        }
        self.check_unresolved().await;
        let poll = self.ctx.policy.poll_interval_ms;
        if self.disabled.is_some() || !self.can_sign {
            // Settle what is left, then give the channel back.
            return if self.unresolved.is_empty() {
                Next::Stop
            } else {
                Next::After(poll)
            };
        }
        self.build().await
    }

    /// Reads the channel's journaled live envelopes (after a start, a restart or a
    /// takeover) and sorts them into open and unresolved by the facts.
    async fn load(&mut self) -> Next {
        let batches = match self.ctx.journal.open_batches(&self.lease.account).await {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "cannot read the channel's envelopes; retrying");
                return self.io_retry();
            }
        };
        // The journal is the truth: what this worker tracked is read again from it.
        self.open = None;
        self.unresolved.clear();
        if let Some(b) = self.uncertain.take()
            && !batches.iter().any(|j| j.envelope.hash == b.envelope.hash)
        {
            // Its prepare never committed: the payouts are still `accepted`.
            self.ctx.queue.unshift(members(b), Instant::now());
        }
        if batches.is_empty() {
            self.loaded = true;
            return Next::Now;
        }
        let (head, seq) = match self.observe().await {
            Ok(facts) => facts,
            Err(e) => {
                warn!(error = %e, "cannot read the ledger; retrying");
                return self.io_retry();
            }
        };
        info!(
            envelopes = batches.len(),
            "resuming the channel's journaled envelopes"
        );
        let mut open: Vec<Tracked> = Vec::new();
        for batch in batches {
            let mut t = Tracked::new(batch);
            match self.examine(&mut t, head, seq).await {
                Ok(verdict) => {
                    if let Some(t) = self.conclude(t, verdict).await {
                        open.push(t);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "cannot look an envelope up; retrying");
                    self.unresolved.push(t);
                }
            }
        }
        // At most one can still apply (each later one was built after the earlier one's
        // sequence was consumed); keep the highest, watch the rest as unresolved.
        open.sort_by_key(|t| t.batch.envelope.sequence);
        if let Some(last) = open.pop() {
            self.open = Some(last);
        }
        self.unresolved.extend(open);
        self.loaded = true;
        Next::Now
    }

    /// The ledger head and the channel's sequence, read before any lookup.
    async fn observe(&self) -> Result<(LedgerHead, SequenceRead), LedgerError> {
        let head = self.ctx.ledger.latest_ledger().await?;
        let seq = self
            .ctx
            .ledger
            .account_sequence(&self.lease.account)
            .await?;
        Ok((head, seq))
    }

    async fn examine(
        &self,
        t: &mut Tracked,
        head: LedgerHead,
        seq: SequenceRead,
    ) -> Result<Verdict, LedgerError> {
        t.watch.observe_head(head);
        t.watch.observe_sequence(seq);
        let lookup = self.ctx.ledger.lookup(&t.batch.envelope.hash).await?;
        Ok(match lookup {
            Lookup::Applied(inclusion) => Verdict::Applied(inclusion),
            Lookup::Failed {
                inclusion,
                tx_code,
                op_codes,
            } => Verdict::Failed {
                inclusion,
                tx_code,
                op_codes,
            },
            Lookup::NotFound(coverage) => {
                t.watch.observe_miss(coverage);
                let beyond = t.watch.beyond_history();
                if let Some(reason) = &beyond
                    && t.beyond_history.is_none()
                {
                    let payouts: Vec<String> = t.ids().map(|id| id.to_string()).collect();
                    error!(hash = %t.batch.envelope.hash, ?payouts, %reason, "envelope beyond the ledger server's history: its payouts keep it and wait for an operator");
                }
                t.beyond_history = beyond;
                match t.watch.fate() {
                    Fate::Dead => Verdict::Dead(t.watch.death().unwrap_or_default()),
                    Fate::Closed if t.watch.consumed() => Verdict::Closed,
                    // Expired but its sequence not seen unused past the expiry yet: the next
                    // check proves it dead; until then the sequence number is still its.
                    Fate::Closed | Fate::Open => Verdict::Open,
                }
            }
        })
    }

    /// Acts on a verdict; gives the envelope back if it may still apply (or could not be
    /// settled now and must be tried again).
    async fn conclude(&mut self, t: Tracked, verdict: Verdict) -> Option<Tracked> {
        let settled = match verdict {
            Verdict::Open => return Some(t),
            Verdict::Closed => {
                info!(hash = %t.batch.envelope.hash, reason = %t.watch.pending_reason(), "envelope can no longer apply; its payouts wait for proof, the channel moves on");
                Metrics::inc(&self.ctx.metrics.envelopes_closed);
                // The next envelope needs a later sequence number: read it again.
                self.sequence = None;
                self.unresolved.push(t);
                return None;
            }
            Verdict::Applied(inclusion) => self.finish_applied(&t, inclusion).await,
            Verdict::Failed {
                inclusion,
                tx_code,
                op_codes,
            } => self.finish_failed(&t, inclusion, &tx_code, &op_codes).await,
            Verdict::Dead(reason) => self.finish_dead(&t, &reason).await,
        };
        if settled {
            None
        } else {
            // The settlement could not be written: the envelope is still ours to settle.
            self.unresolved.push(t);
            None
        }
    }

    /// Submits the open envelope's journaled bytes, then settles it or checks its fate.
    // Long because: the submit-then-settle step of the protocol (docs/protocol.md): every
    // answer of the ledger is one arm, and the arms must be read together to see that none
    // pays twice
    async fn drive_open(&mut self, mut t: Tracked) -> Next {
        let metrics = &self.ctx.metrics;
        let started = Instant::now();
        let outcome = self.ctx.ledger.submit(&t.batch.envelope).await;
        Metrics::inc(&metrics.submissions);
        metrics
            .submit_latency_ms
            .observe(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        let note = match outcome {
            SubmitOutcome::Applied(inclusion) => {
                metrics.ledger_outcome("applied");
                let ok = self.finish_applied(&t, inclusion).await;
                return self.settled_or_retry(t, ok);
            }
            SubmitOutcome::Failed {
                inclusion,
                tx_code,
                op_codes,
            } => {
                metrics.ledger_outcome(&tx_code);
                let ok = self.finish_failed(&t, inclusion, &tx_code, &op_codes).await;
                return self.settled_or_retry(t, ok);
            }
            SubmitOutcome::Rejected { code } => {
                metrics.ledger_outcome(&code);
                self.on_rejection(&mut t, &code).await;
                code
            }
            SubmitOutcome::Pending => {
                metrics.ledger_outcome("pending");
                "pending".to_owned()
            }
            SubmitOutcome::Unknown { detail } => {
                metrics.ledger_outcome("unknown");
                debug!(hash = %t.batch.envelope.hash, %detail, "submission outcome unknown");
                "unknown".to_owned()
            }
        };
        if !t.marked_submitted {
            match self
                .ctx
                .journal
                .mark_submitted(&t.batch.envelope.hash, &note)
                .await
            {
                Ok(changed) => {
                    t.marked_submitted = true;
                    self.ctx.stepped(changed.into_iter().map(|(id, version)| {
                        let step = Step::Submitted { note: note.clone() };
                        (id, version - 1, step)
                    }));
                }
                Err(e) => {
                    warn!(error = %e, "cannot journal the submission; retrying");
                    // It may have committed, and a retry would then change and name none:
                    // the members' actors read their rows again rather than trust a cache.
                    self.ctx.invalidate(t.ids());
                    self.open = Some(t);
                    return self.io_retry();
                }
            }
        }
        let (head, seq) = match self.observe().await {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "cannot read the ledger; retrying");
                self.open = Some(t);
                return self.io_retry();
            }
        };
        let verdict = match self.examine(&mut t, head, seq).await {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "cannot look the envelope up; retrying");
                self.open = Some(t);
                return self.io_retry();
            }
        };
        let still_open = matches!(verdict, Verdict::Open);
        match self.conclude(t, verdict).await {
            Some(t) => {
                self.open = Some(t);
                Next::After(self.ctx.policy.poll_interval_ms)
            }
            None if still_open => Next::After(self.ctx.policy.poll_interval_ms),
            None => Next::Now,
        }
    }

    /// After a settlement attempt of the open envelope: on to the next step, or keep it
    /// open and write the settlement again later.
    fn settled_or_retry(&mut self, t: Tracked, settled: bool) -> Next {
        if settled {
            Next::Now
        } else {
            self.open = Some(t);
            self.io_retry()
        }
    }

    async fn on_rejection(&mut self, t: &mut Tracked, code: &str) {
        match rejection_policy(code) {
            RejectionPolicy::WaitUntilDead => {
                t.fee_low |= code == "tx_insufficient_fee";
            }
            RejectionPolicy::DisableChannel => {
                self.ctx.signal(Signal::ChannelRejected);
                self.disable(format!(
                    "{code}: the network refused an envelope of this channel for a reason an operator must fix (its key, its account or its XLM balance)"
                ));
            }
            RejectionPolicy::ParkMembers if !t.members_parked => {
                let reason = format!(
                    "{code}: the network refused the envelope as invalid; an operator must look (the envelope is watched until it is provably dead)"
                );
                if self.park_members(t, &reason).await {
                    t.members_parked = true;
                }
            }
            RejectionPolicy::ParkMembers => {}
        }
    }

    fn disable(&mut self, reason: String) {
        if self.disabled.is_none() {
            error!(channel = %self.lease.account, %reason, "channel disabled: no new envelopes from it in this life of payoutd");
            self.disabled = Some(reason);
        }
    }

    /// Parks every member still in the envelope (each its own fenced write).
    async fn park_members(&self, t: &Tracked, reason: &str) -> bool {
        let journal = &self.ctx.journal;
        let mut ok = true;
        for id in t.ids() {
            match park(journal.as_ref(), &id, reason, &t.batch.envelope.hash).await {
                Ok(true) => Metrics::inc(&self.ctx.metrics.parked),
                Ok(false) => {}
                Err(e) => {
                    warn!(payout_id = %id, error = %e, "cannot park the payout; will retry");
                    ok = false;
                }
            }
        }
        self.ctx.invalidate(t.ids());
        ok
    }

    /// Looks the unresolved envelopes up, at most every `poll_interval_ms`.
    async fn check_unresolved(&mut self) {
        if self.unresolved.is_empty() {
            return;
        }
        let poll = Duration::from_millis(self.ctx.policy.poll_interval_ms);
        if self.unresolved_checked.is_some_and(|t| t.elapsed() < poll) {
            return;
        }
        self.unresolved_checked = Some(Instant::now());
        let Ok((head, seq)) = self.observe().await else {
            return;
        };
        for mut t in std::mem::take(&mut self.unresolved) {
            match self.examine(&mut t, head, seq).await {
                Ok(Verdict::Open | Verdict::Closed) | Err(_) => self.unresolved.push(t),
                Ok(verdict) => {
                    let _ = self.conclude(t, verdict).await;
                }
            }
        }
    }

    /// Takes a batch from the queue, builds, signs and journals its envelope.
    // Long because it is the one place a batch becomes an envelope: take the members, route
    // each to its operation kind, build and sign, journal before any submission; the checks
    // between those steps are the exactly-once argument of docs/protocol.md and read in order.
    async fn build(&mut self) -> Next {
        if self.ctx.is_paused() {
            // Nothing new while paused; live envelopes were driven above.
            return Next::After(PAUSED_RECHECK_MS);
        }
        let policy = &self.ctx.policy;
        let poll = (!self.unresolved.is_empty()).then_some(policy.poll_interval_ms);
        let now = Instant::now();
        let linger = Duration::from_millis(policy.batch_linger_ms);
        // Waiting from the look on: an arrival right after it wakes this worker.
        self.waiting.store(true, Ordering::Release);
        let waker = Box::new(WorkerWaker {
            actor: self.myself.clone(),
            waiting: self.waiting.clone(),
        });
        let taken = self.ctx.queue.take_or_wait(
            policy.payments_per_tx_max,
            linger,
            now,
            &self.lease.account,
            waker,
        );
        if matches!(taken, Take::Batch(..)) {
            self.waiting.store(false, Ordering::Release);
        }
        let (lane, items) = match taken {
            Take::Empty => return Next::Idle(poll),
            Take::NotBefore(at) => {
                let ms = u64::try_from(at.saturating_duration_since(now).as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1);
                return Next::Idle(Some(poll.map_or(ms, |p| p.min(ms))));
            }
            Take::Batch(lane, items) => (lane, items),
        };
        let sequence = match self.sequence {
            Some(s) => s,
            None => match self.ctx.ledger.account_sequence(&self.lease.account).await {
                Ok(SequenceRead {
                    sequence: Some(s), ..
                }) => s,
                Ok(SequenceRead { sequence: None, .. }) => {
                    self.ctx.queue.unshift(items, now);
                    self.disable("the channel account does not exist on the ledger".into());
                    return Next::Now;
                }
                Err(e) => {
                    warn!(error = %e, "cannot read the channel's sequence; retrying");
                    self.ctx.queue.unshift(items, now);
                    return self.io_retry();
                }
            },
        };
        self.sequence = Some(sequence);
        let head = match self.ctx.ledger.latest_ledger().await {
            Ok(h) => h,
            Err(e) => {
                warn!(error = %e, "cannot read the latest ledger; retrying");
                self.ctx.queue.unshift(items, now);
                return self.io_retry();
            }
        };
        let spec = TxSpec {
            source: self.lease.account,
            sequence: sequence + 1,
            fee_stroops: self.fee_per_op.saturating_mul(items.len() as u32),
            max_time: head.close_time + policy.tx_validity_s,
            ledger_bounds: None,
            memo: lane_memo(&lane, &items),
            operations: items
                .iter()
                .map(|r| OpSpec {
                    payer: policy.payer,
                    destination: *r.request.destination(),
                    asset: r.request.asset().clone(),
                    amount: r.request.amount(),
                    kind: r.op_kind,
                })
                .collect(),
        };
        let envelope = match self.ctx.ledger.build_and_sign(&spec) {
            Ok(e) => e,
            Err(e) => {
                self.ctx.queue.unshift(items, now);
                self.disable(format!("cannot build a transaction: {e}"));
                return Next::Now;
            }
        };
        let batch = Batch {
            envelope,
            built_ledger: head.sequence,
            members: items
                .into_iter()
                .enumerate()
                .map(|(i, ready)| Member {
                    ready,
                    op_index: i as u32,
                })
                .collect(),
        };
        match self.ctx.journal.prepare(&self.lease, &batch).await {
            Ok(()) => {
                let mut batch = batch;
                let hash = batch.envelope.hash;
                let mut moved = Vec::with_capacity(batch.members.len());
                // The members as the journal now holds them: prepared, one more attempt.
                for m in &mut batch.members {
                    let envelope = EnvelopeRef {
                        hash,
                        op_index: m.op_index,
                    };
                    moved.push((
                        m.ready.id().clone(),
                        m.ready.version,
                        Step::Prepared { envelope },
                    ));
                    m.ready.version += 1;
                    m.ready.attempt += 1;
                }
                let m = &self.ctx.metrics;
                Metrics::inc(&m.envelopes_built);
                m.batch_size.observe(batch.members.len() as u64);
                info!(hash = %batch.envelope.hash, sequence = batch.envelope.sequence, payouts = batch.members.len(), "envelope prepared");
                let t = Tracked::new(batch);
                self.ctx.stepped(moved);
                self.open = Some(t);
                Next::Now
            }
            Err(PrepareError::Stale(stale)) => {
                debug!(
                    stale = stale.len(),
                    "members moved on; building without them"
                );
                self.ctx.queue.release(&stale);
                let rest = batch
                    .members
                    .into_iter()
                    .map(|m| m.ready)
                    .filter(|r| !stale.contains(r.id()))
                    .collect();
                self.ctx.queue.unshift(rest, now);
                Next::Now
            }
            Err(PrepareError::LeaseLost) => {
                warn!("the channel lease was taken over; stopping");
                self.ctx.queue.unshift(members(batch), now);
                self.lease_lost = true;
                Next::Stop
            }
            Err(PrepareError::SequenceTaken) => {
                warn!(
                    sequence = batch.envelope.sequence,
                    "another envelope holds this sequence number; reloading the channel"
                );
                self.ctx.queue.unshift(members(batch), now);
                self.sequence = None;
                self.loaded = false;
                Next::Now
            }
            Err(PrepareError::Paused) => {
                info!("paying is paused: the envelope was not journaled");
                Metrics::inc(&self.ctx.metrics.prepares_paused);
                self.ctx.queue.unshift(members(batch), now);
                self.ctx.note_paused();
                Next::After(PAUSED_RECHECK_MS)
            }
            Err(PrepareError::OverLimit(holds)) => self.hold_over_limit(batch, holds, now).await,
            Err(PrepareError::Journal(e)) => {
                // No answer: it may have committed. Not back to the queue (another channel
                // would take the payouts and its prepare be refused, leaving this envelope
                // live and unsubmitted): the channel's envelopes are read again first.
                warn!(error = %e, "cannot journal the envelope (it may be journaled); reading the channel again");
                // If it did, the members' cached records are behind their rows.
                self.ctx
                    .invalidate(batch.members.iter().map(|m| m.ready.id().clone()));
                self.uncertain = Some(batch);
                self.sequence = None;
                self.loaded = false;
                self.io_retry()
            }
        }
    }

    /// A spending limit refused some members: they become `held` (journaled, with the
    /// reason), the others go back to the front of the queue for the next build.
    async fn hold_over_limit(&mut self, batch: Batch, holds: Vec<Hold>, now: Instant) -> Next {
        let (over, rest): (Vec<Ready>, Vec<Ready>) = members(batch)
            .into_iter()
            .partition(|r| holds.iter().any(|h| h.id == *r.id()));
        let pairs: Vec<(Ready, Hold)> = over
            .into_iter()
            .filter_map(|r| {
                let hold = holds.iter().find(|h| h.id == *r.id())?.clone();
                Some((r, hold))
            })
            .collect();
        match self.ctx.journal.hold(&pairs).await {
            Ok(held) => {
                for (_, h) in pairs.iter().filter(|(r, _)| held.contains(r.id())) {
                    info!(payout_id = %h.id, reason = %h.reason, "payout held by a spending limit");
                }
                Metrics::add(&self.ctx.metrics.payouts_held, held.len());
                // Held, or moved on: none of them goes back (the rest does).
                self.ctx.queue.release(pairs.iter().map(|(r, _)| r.id()));
                self.ctx.invalidate(held.iter().cloned());
                self.ctx.queue.unshift(rest, now);
                Next::Now
            }
            Err(e) => {
                // Not written (or unknown): all go back; the next prepare decides again.
                warn!(error = %e, "cannot journal the held payouts; retrying");
                let mut all = rest;
                all.extend(pairs.into_iter().map(|(r, _)| r));
                self.ctx.queue.unshift(all, now);
                self.io_retry()
            }
        }
    }

    /// Writes a settlement; requeues this instance's requeued payouts. `false`: not
    /// written (try again).
    async fn settle(&mut self, t: &Tracked, settlement: Settlement, later: &[PayoutId]) -> bool {
        let hash = t.batch.envelope.hash;
        let changed = match self
            .ctx
            .journal
            .settle(&hash, &settlement, &self.ctx.instance)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                warn!(%hash, error = %e, "cannot journal the settlement; retrying");
                return false;
            }
        };
        // Settled: out of this worker's hand (the requeued ones are queued again below).
        self.ctx
            .queue
            .release(t.batch.members.iter().map(|m| m.ready.id()));
        let m = &self.ctx.metrics;
        let retry_at = Instant::now() + Duration::from_millis(self.ctx.policy.underfunded_retry_ms);
        for s in &changed {
            match s.state {
                PayoutState::Confirmed => {
                    Metrics::inc(&m.confirmed);
                    self.ctx.signal(Signal::Settled { failed: false });
                }
                PayoutState::Failed => {
                    Metrics::inc(&m.failed);
                    self.ctx.signal(Signal::Settled { failed: true });
                }
                PayoutState::Parked => Metrics::inc(&m.parked),
                PayoutState::Accepted => {
                    Metrics::inc(&m.requeued);
                    let member = t.batch.members.iter().find(|m| m.ready.id() == &s.id);
                    if let (Some(member), true) = (
                        member,
                        s.owner.as_deref() == Some(self.ctx.instance.as_str()),
                    ) {
                        // A rerouted member is paid by another kind of operation from now on.
                        let op_kind = settlement
                            .members
                            .iter()
                            .find_map(|(id, step)| match step {
                                Step::Rerouted { op_kind, .. } if id == &s.id => Some(*op_kind),
                                _ => None,
                            })
                            .unwrap_or(member.ready.op_kind);
                        let ready = Ready {
                            request: member.ready.request.clone(),
                            version: s.version,
                            attempt: s.attempt,
                            op_kind,
                        };
                        if later.contains(&s.id) {
                            self.ctx.queue.push_at(ready, retry_at);
                        } else {
                            self.ctx.enqueue(ready);
                        }
                    }
                }
                _ => {}
            }
        }
        self.ctx.settled(changed);
        true
    }

    async fn finish_applied(&mut self, t: &Tracked, inclusion: Inclusion) -> bool {
        let settlement = Settlement {
            status: EnvelopeStatus::Applied,
            inclusion: Some(inclusion),
            note: format!("applied in ledger {}", inclusion.ledger),
            members: t
                .batch
                .members
                .iter()
                .map(|m| {
                    let e = &t.batch.envelope;
                    let balance_id = (m.ready.op_kind == OpKind::ClaimableBalance)
                        .then(|| claimable_balance_id(&e.source, e.sequence, m.op_index));
                    let step = Step::Confirmed {
                        inclusion,
                        balance_id,
                    };
                    (m.ready.id().clone(), step)
                })
                .collect(),
        };
        let ok = self.settle(t, settlement, &[]).await;
        if ok {
            info!(hash = %t.batch.envelope.hash, ledger = inclusion.ledger, fee = inclusion.fee_charged, payouts = t.batch.members.len(), "envelope applied");
            self.sequence = Some(t.batch.envelope.sequence);
            self.fee_per_op = self.ctx.policy.fee_per_op_stroops;
        }
        ok
    }

    async fn finish_failed(
        &mut self,
        t: &Tracked,
        inclusion: Inclusion,
        tx_code: &str,
        op_codes: &[String],
    ) -> bool {
        let culprit = op_codes
            .iter()
            .find(|c| c.as_str() != "op_success")
            .map(String::as_str)
            .unwrap_or(tx_code);
        let mut later = Vec::new();
        let members = t
            .batch
            .members
            .iter()
            .map(|m| {
                let id = m.ready.id().clone();
                let own = op_codes.get(m.op_index as usize).map(String::as_str);
                let failure = Failure {
                    tx_code,
                    own,
                    culprit,
                    ledger: inclusion.ledger,
                };
                let (step, retry_later) =
                    failed_member_step(&self.ctx.policy, &m.ready, &failure, inclusion);
                if retry_later {
                    later.push(id.clone());
                    self.ctx.signal(Signal::Underfunded);
                }
                (id, step)
            })
            .collect();
        let settlement = Settlement {
            status: EnvelopeStatus::Failed,
            inclusion: Some(inclusion),
            note: format!("{tx_code} ({culprit}) in ledger {}", inclusion.ledger),
            members,
        };
        let ok = self.settle(t, settlement, &later).await;
        if ok {
            warn!(hash = %t.batch.envelope.hash, %tx_code, %culprit, ledger = inclusion.ledger, "envelope included but failed");
            self.sequence = Some(t.batch.envelope.sequence);
        }
        ok
    }

    async fn finish_dead(&mut self, t: &Tracked, reason: &str) -> bool {
        let attempts_max = self.ctx.policy.attempts_max;
        let settlement = Settlement {
            status: EnvelopeStatus::Dead,
            inclusion: None,
            note: reason.to_owned(),
            members: t
                .batch
                .members
                .iter()
                .map(|m| {
                    let why = format!(
                        "envelope {} is provably dead: {reason}",
                        t.batch.envelope.hash
                    );
                    (m.ready.id().clone(), requeue(&m.ready, why, attempts_max))
                })
                .collect(),
        };
        let ok = self.settle(t, settlement, &[]).await;
        if ok {
            Metrics::inc(&self.ctx.metrics.envelopes_dead);
            // Whatever the channel's sequence is now (the envelope never used it, someone
            // else may have), the next envelope reads it first.
            self.sequence = None;
            info!(hash = %t.batch.envelope.hash, %reason, "envelope provably dead; its payouts join new batches");
            // A fee refusal, or an envelope that expired unincluded (a surge), raises the
            // fee of the channel's next envelope.
            if t.fee_low || reason.starts_with("expired") {
                self.fee_per_op = self.ctx.policy.raised_fee(self.fee_per_op);
            }
        }
        ok
    }
}

/// How a transaction that was included as failed failed, as one member sees it.
struct Failure<'a> {
    tx_code: &'a str,
    /// The member's own operation result, if the result lists it.
    own: Option<&'a str>,
    /// The first operation code that was not `op_success`.
    culprit: &'a str,
    ledger: u32,
}

/// The step of one member of an envelope included as failed, and whether it may join a
/// batch only after `underfunded_retry_ms`: rerouted to another kind of operation
/// (`destinations`), failed for good, parked, or back to the queue.
fn failed_member_step(
    policy: &crate::policy::PayoutPolicy,
    ready: &Ready,
    f: &Failure<'_>,
    inclusion: Inclusion,
) -> (Step, bool) {
    let (tx_code, code, ledger) = (f.tx_code, f.own.unwrap_or(f.tx_code), f.ledger);
    let reroute = f
        .own
        .map(|c| destinations::reroute(&policy.destinations, &ready.request, ready.op_kind, c));
    let step = match (f.own.map(|c| op_policy(ready.op_kind, c)), reroute) {
        (_, Some(Reroute::To(op_kind))) if ready.attempt < policy.attempts_max => Step::Rerouted {
            reason: format!(
                "{tx_code}:{code}: the destination was not ready for a {} in ledger {ledger}; nothing was paid; a {op_kind} pays it next",
                ready.op_kind,
            ),
            op_kind,
        },
        (_, Some(Reroute::To(_))) => requeue(
            ready,
            format!("{tx_code}:{code}: destination not ready"),
            policy.attempts_max,
        ),
        (Some(OpPolicy::Terminal), why) => Step::Failed {
            reason: match why {
                Some(Reroute::No(Some(why))) => {
                    format!("{tx_code}:{code}: included but failed in ledger {ledger}; {why}")
                }
                _ => format!("{tx_code}:{code}: included but failed in ledger {ledger}"),
            },
            inclusion: Some(inclusion),
        },
        (Some(OpPolicy::Park), _) => Step::Requeued {
            reason: String::new(),
            park: Some(format!(
                "{tx_code}:{code}: the distribution account could not authorize the payment in ledger {ledger}; an operator must fix the signing configuration"
            )),
        },
        (Some(OpPolicy::RetryLater), _) => {
            let why = format!(
                "{tx_code}:{code}: nothing was paid; a new attempt follows after underfunded_retry_ms"
            );
            return (requeue(ready, why, policy.attempts_max), true);
        }
        (Some(OpPolicy::Retry) | None, _) => {
            let why = format!(
                "{tx_code}: another payment of the transaction failed ({}); nothing was paid; joins a new batch",
                f.culprit
            );
            requeue(ready, why, policy.attempts_max)
        }
    };
    (step, false)
}

/// A member whose envelope ended without paying it: back to the queue, or parked once it
/// has been in `attempts_max` envelopes.
fn requeue(ready: &Ready, reason: String, attempts_max: u32) -> Step {
    // A member's `attempt` counts the envelopes it was in, this one included.
    let park = (ready.attempt >= attempts_max).then(|| {
        format!(
            "gave up after {} envelopes (attempts_max); last: {reason}",
            ready.attempt
        )
    });
    Step::Requeued { reason, park }
}

fn members(batch: Batch) -> Vec<Ready> {
    batch.members.into_iter().map(|m| m.ready).collect()
}

/// The transaction's memo: the lane's memo, or one that names the payout (alone) or the
/// batch: `sha256("payoutd:" ‖ id)`, `sha256("payoutd-batch:" ‖ ids joined by "\n")`.
pub fn lane_memo(lane: &Lane, items: &[Ready]) -> Memo {
    match (lane, items) {
        (Lane::Memo(m), _) => m.clone(),
        (Lane::Default, [one]) => payout_memo(one.id()),
        (Lane::Default, many) => {
            let mut h = Sha256::new();
            h.update(b"payoutd-batch:");
            for (i, r) in many.iter().enumerate() {
                if i > 0 {
                    h.update(b"\n");
                }
                h.update(r.id().as_str().as_bytes());
            }
            Memo::Hash(h.finalize().into())
        }
    }
}

/// The memo that names one payout: `sha256("payoutd:" ‖ id)`.
pub fn payout_memo(id: &PayoutId) -> Memo {
    let mut h = Sha256::new();
    h.update(b"payoutd:");
    h.update(id.as_str().as_bytes());
    Memo::Hash(h.finalize().into())
}

/// Parks one payout if it is still in envelope `hash` (fenced: re-reads on a stale
/// version). `Ok(false)`: it had moved on.
async fn park(
    journal: &dyn crate::ports::journal::Journal,
    id: &PayoutId,
    reason: &str,
    hash: &crate::ports::ledger::TxHash,
) -> Result<bool, crate::ports::journal::JournalError> {
    use crate::ports::journal::JournalError;
    for _ in 0..8 {
        let Some(record) = journal.load(id).await? else {
            return Ok(false);
        };
        let in_it = record.envelope.map(|e| e.hash) == Some(*hash);
        if !in_it || !record.state.is_active() {
            return Ok(false);
        }
        let step = Step::Parked {
            reason: reason.to_owned(),
        };
        match journal.apply(&record, &step).await {
            Ok(_) => return Ok(true),
            Err(JournalError::Stale(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(JournalError::Unavailable(format!(
        "payout {id} kept changing while it was being parked"
    )))
}
