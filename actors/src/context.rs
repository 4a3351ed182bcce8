//! What every actor and worker of one instance shares: the ports, the policy, the metrics,
//! the ready queue, and the channels' status board.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use ractor::ActorRef;

use crate::domain::{AccountId, PayoutId};
use crate::metrics::Metrics;
use crate::policy::PayoutPolicy;
use crate::ports::journal::{Journal, Ready};
use crate::ports::ledger::{Ledger, TxHash};
use crate::queue::ReadyQueue;
use crate::supervisor::SupervisorMsg;

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
            policy,
            metrics,
            instance: instance.into(),
            queue,
            supervisor: OnceLock::new(),
            channels: Mutex::new(BTreeMap::new()),
        }
    }

    pub(crate) fn set_supervisor(&self, supervisor: ActorRef<SupervisorMsg>) {
        // Set once at start; a second call (never made) would keep the first.
        let _ = self.supervisor.set(supervisor);
    }

    /// Tells the live actors of these payouts that their journaled state moved on (they
    /// read it again when next asked). Actors that are not alive are not spawned for it.
    pub fn invalidate(&self, ids: impl IntoIterator<Item = PayoutId>) {
        if let Some(s) = self.supervisor.get() {
            for id in ids {
                // A send error means shutdown: there is no cache left to invalidate.
                let _ = s.cast(SupervisorMsg::Invalidate(id));
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
