//! What every actor and worker of one instance shares: the ports, the policy, the metrics,
//! the ready queue, and the channels' status board.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use ractor::ActorRef;

use crate::domain::{AccountId, PayoutId};
use crate::messages::SupervisorMsg;
use crate::metrics::Metrics;
use crate::policy::PayoutPolicy;
use crate::ports::journal::{Journal, Moved, Ready, Settled};
use crate::ports::ledger::{Ledger, TxHash};
use crate::queue::ReadyQueue;
use crate::safety::{BREAKER, Breaker, Pause, Signal};
use crate::state::Step;

/// What a channel worker is doing, for metrics, `/readyz` and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelStatus {
    /// This instance holds the key: it builds envelopes (else it only settles old ones).
    pub can_sign: bool,
    /// The envelope that may still apply, with its payouts and when it was journaled.
    pub open: Option<OpenEnvelope>,
    /// Envelopes that can no longer apply and whose fate is not proven yet.
    pub unresolved: usize,
    /// Why the channel stopped building envelopes, if it did.
    pub disabled: Option<String>,
    /// Unresolved envelopes that no lookup can settle any more (the ledgers they may be in
    /// are older than the server's history): an operator must look.
    pub beyond_history: Vec<BeyondHistory>,
}

/// An envelope whose fate the ledger server can no longer tell, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeyondHistory {
    pub hash: TxHash,
    pub payouts: Vec<PayoutId>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenEnvelope {
    pub hash: TxHash,
    pub payouts: Vec<PayoutId>,
    pub since: Instant,
}

pub struct Context {
    pub journal: Arc<dyn Journal>,
    pub ledger: Arc<dyn Ledger>,
    pub policy: PayoutPolicy,
    pub metrics: Arc<Metrics>,
    /// This instance's name in the cluster: the owner of the payouts it accepts.
    pub instance: String,
    pub queue: Arc<ReadyQueue>,
    /// The payout supervisor, set once it runs: records changed by channel workers are
    /// announced to the payouts' live actors through it.
    supervisor: OnceLock<ActorRef<SupervisorMsg>>,
    channels: Mutex<BTreeMap<AccountId, ChannelStatus>>,
    /// The cluster-wide pause as last read (or set) here; workers build nothing while set.
    paused: AtomicBool,
    /// The pause as last read, with the ticket of the observation it came from.
    pause: Mutex<(u64, Option<Pause>)>,
    pause_tickets: std::sync::atomic::AtomicU64,
    breaker: Mutex<Breaker>,
}

impl Context {
    pub fn new(
        journal: Arc<dyn Journal>,
        ledger: Arc<dyn Ledger>,
        policy: PayoutPolicy,
        metrics: Arc<Metrics>,
        instance: impl Into<String>,
        queue: Arc<ReadyQueue>,
    ) -> Self {
        Self {
            journal,
            ledger,
            metrics,
            instance: instance.into(),
            queue,
            supervisor: OnceLock::new(),
            channels: Mutex::new(BTreeMap::new()),
            paused: AtomicBool::new(false),
            pause: Mutex::new((0, None)),
            pause_tickets: std::sync::atomic::AtomicU64::new(0),
            breaker: Mutex::new(Breaker::new(policy.breaker)),
            policy,
        }
    }

    /// Whether paying is paused (as last read from the journal, or set here).
    pub fn is_paused(&self) -> bool {
        self.paused.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The pause in force, as last read.
    pub fn pause(&self) -> Option<Pause> {
        self.pause
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// A ticket for one observation of the journal's pause: taken before a read starts,
    /// or after a write returned. A view older than one already taken is ignored, so a
    /// read that began before a pause was written cannot undo it.
    pub fn pause_ticket(&self) -> u64 {
        self.pause_tickets
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1
    }

    /// The journal refused an envelope because paying is paused: stop building here too
    /// (the next read of the journal fills in who paused and why).
    pub fn note_paused(&self) {
        self.paused
            .store(true, std::sync::atomic::Ordering::Release);
        self.metrics
            .paused
            .store(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records the pause the journal holds, as observed under `ticket` (see
    /// [`pause_ticket`](Self::pause_ticket)). Lifting it also resets the breaker.
    pub fn set_pause_view(&self, ticket: u64, pause: Option<Pause>) {
        let mut view = self.pause.lock().unwrap_or_else(|p| p.into_inner());
        if ticket < view.0 {
            return;
        }
        let paused = pause.is_some();
        let take = self
            .breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(paused);
        if !take {
            // This instance's breaker tripped and its pause is not written yet.
            return;
        }
        *view = (ticket, pause);
        self.paused
            .store(paused, std::sync::atomic::Ordering::Release);
        self.metrics
            .paused
            .store(i64::from(paused), std::sync::atomic::Ordering::Relaxed);
    }

    /// A signal for the circuit breaker; when it trips, paying is paused cluster-wide
    /// with the evidence as the reason.
    pub fn signal(self: &std::sync::Arc<Self>, signal: Signal) {
        let evidence = self
            .breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(signal, Instant::now());
        let Some(evidence) = evidence else { return };
        tracing::error!(%evidence, "circuit breaker: pausing every instance (no new envelopes; live ones still settle) until an operator resumes");
        Metrics::inc(&self.metrics.breaker_trips);
        self.paused
            .store(true, std::sync::atomic::Ordering::Release);
        self.metrics
            .paused
            .store(1, std::sync::atomic::Ordering::Relaxed);
        let ctx = self.clone();
        tokio::spawn(async move {
            // Retried until written: the local flag holds meanwhile, and the journal's
            // refusal of prepares makes it hold everywhere once written.
            loop {
                match ctx.journal.set_pause(true, BREAKER, &evidence).await {
                    Ok(p) => {
                        let ticket = ctx.pause_ticket();
                        ctx.set_pause_view(ticket, p);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot journal the breaker's pause; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(
                            ctx.policy.io_retry_ms,
                        ))
                        .await;
                    }
                }
            }
        });
    }

    pub(crate) fn set_supervisor(&self, supervisor: ActorRef<SupervisorMsg>) {
        // Set once at start; a second call (never made) would keep the first.
        let _ = self.supervisor.set(supervisor);
    }

    /// Tells the live actors of these payouts that their journaled state moved on (they
    /// read it again when next asked). Actors that are not alive are not spawned for it.
    pub fn invalidate(&self, ids: impl IntoIterator<Item = PayoutId>) {
        self.tell(ids.into_iter().map(|id| (id, None)));
    }

    /// Tells the live actors of settled payouts what their records became: each takes it
    /// into its cache (a duplicate of a paid payout is then answered without a read).
    pub fn settled(&self, members: impl IntoIterator<Item = Settled>) {
        self.tell(
            members
                .into_iter()
                .map(|m| (m.id.clone(), Some(Moved::Settled(m)))),
        );
    }

    /// Tells the live actors of these payouts that `step` moved each of their rows on from
    /// the version given (a prepare, a submission): an actor whose cache is at that version
    /// applies the step to it, any other forgets its record.
    pub fn stepped(&self, moved: impl IntoIterator<Item = (PayoutId, i64, Step)>) {
        self.tell(
            moved
                .into_iter()
                .map(|(id, from_version, step)| (id, Some(Moved::Stepped { from_version, step }))),
        );
    }

    /// One notice per payout, through the supervisor, to its actor if one is alive.
    fn tell(&self, notices: impl Iterator<Item = (PayoutId, Option<Moved>)>) {
        if let Some(s) = self.supervisor.get() {
            for (id, moved) in notices {
                // A send error means shutdown: there is no cache left to invalidate.
                let _ = s.cast(SupervisorMsg::Invalidate(id, moved.map(Box::new)));
            }
        }
    }

    /// Queues a payout for a batch, counting it when the queue had no room.
    pub fn enqueue(&self, ready: Ready) {
        if !self.queue.push(ready) {
            Metrics::inc(&self.metrics.spilled);
        }
    }

    pub fn set_channel_status(&self, account: AccountId, status: Option<ChannelStatus>) {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        match status {
            Some(s) => {
                map.insert(account, s);
            }
            None => {
                map.remove(&account);
            }
        }
        let running = map.len() as i64;
        let busy = map.values().filter(|s| s.open.is_some()).count() as i64;
        let disabled = map.values().filter(|s| s.disabled.is_some()).count() as i64;
        let unresolved: usize = map.values().map(|s| s.unresolved).sum();
        let beyond: usize = map.values().map(|s| s.beyond_history.len()).sum();
        self.metrics
            .envelopes_beyond_history
            .store(beyond as i64, std::sync::atomic::Ordering::Relaxed);
        use std::sync::atomic::Ordering::Relaxed;
        self.metrics.channels_running.store(running, Relaxed);
        self.metrics.channels_busy.store(busy, Relaxed);
        self.metrics.channels_disabled.store(disabled, Relaxed);
        self.metrics
            .envelopes_unresolved
            .store(unresolved as i64, Relaxed);
    }

    /// The status of every channel this instance runs a worker for.
    pub fn channel_statuses(&self) -> BTreeMap<AccountId, ChannelStatus> {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Channels this instance disabled in this life (never claimed again until restart).
    pub fn is_disabled(&self, account: &AccountId) -> bool {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
            .is_some_and(|s| s.disabled.is_some())
    }
}
