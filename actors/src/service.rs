//! `Payouts`: the handle every ingress uses (HTTP, broker, inbox, CLI). `start` brings one
//! instance up: the payout supervisor, the channel workers' supervisor, the heartbeat, the
//! recovery of this instance's queued payouts, a first sweep (channel leases, orphans) and
//! the sweep loop. Calls to payout actors carry a timeout; reads go to the journal.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tokio::sync::watch;
use tracing::info;

use crate::cluster::{self, ChannelSupMsg, ChannelSupervisor, ClusterConfig};
use crate::context::Context;
use crate::domain::{AccountId, PayoutId, PayoutRequest};
use crate::messages::{PayoutError, PayoutMsg, SubmitAnswer, SupervisorMsg, SupervisorStats};
use crate::metrics::Metrics;
use crate::ports::journal::JournalError;
use crate::safety::Pause;
use crate::state::{PayoutEvent, PayoutRecord};
use crate::supervisor::{Registry, Supervisor, SupervisorArgs, SupervisorConfig};

/// How one instance runs.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub supervisor: SupervisorConfig,
    pub cluster: ClusterConfig,
    /// How long a caller waits for a payout actor's answer, in milliseconds.
    pub call_timeout_ms: u64,
    /// The channel accounts this instance holds the keys of.
    pub channels: Vec<AccountId>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the supervisors: {0}")]
    Spawn(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

#[derive(Clone)]
pub struct Payouts {
    supervisor: ActorRef<SupervisorMsg>,
    /// Live payout actors: duplicates go straight to them.
    registry: Arc<Registry>,
    channels: ActorRef<ChannelSupMsg>,
    ctx: Arc<Context>,
    config: Arc<ServiceConfig>,
    stop: Arc<watch::Sender<bool>>,
    recovered: u64,
}

impl Payouts {
    /// Starts an instance (unnamed actors: several instances may live in one process, as
    /// in the tests).
    pub async fn start(ctx: Arc<Context>, config: ServiceConfig) -> Result<Self, StartError> {
        let registry = Arc::new(Registry::default());
        let (supervisor, _) = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                ctx: ctx.clone(),
                config: config.supervisor.clone(),
                registry: registry.clone(),
            },
        )
        .await
        .map_err(|e| StartError::Spawn(e.to_string()))?;
        ctx.set_supervisor(supervisor.clone());
        let (channels, _) = Actor::spawn(
            None,
            ChannelSupervisor,
            (ctx.clone(), config.cluster.clone()),
        )
        .await
        .map_err(|e| StartError::Spawn(e.to_string()))?;
        ctx.journal.register_channels(&config.channels).await?;
        // No worker builds before it knows whether paying is paused.
        let ticket = ctx.pause_ticket();
        ctx.set_pause_view(ticket, ctx.journal.pause_state().await?);
        ctx.journal
            .heartbeat(&ctx.instance, config.cluster.instance_ttl_ms)
            .await?;
        // Recovery: this instance's queued payouts from its previous life. Payouts with an
        // envelope are the channel workers' (they read their channel's envelopes).
        let before = ctx.queue.len();
        cluster::refill(&ctx, &mut None).await;
        let recovered = ctx.queue.len().saturating_sub(before) as u64;
        cluster::sweep(&ctx, &config.cluster, &config.channels, &channels).await;
        let (stop, stopped) = watch::channel(false);
        cluster::spawn(
            ctx.clone(),
            config.cluster.clone(),
            config.channels.clone(),
            channels.clone(),
            stopped,
        );
        info!(instance = %ctx.instance, recovered, channels = config.channels.len(), "payout core started");
        Ok(Self {
            supervisor,
            registry,
            channels,
            ctx,
            config: Arc::new(config),
            stop: Arc::new(stop),
            recovered,
        })
    }

    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// `accepted` payouts of this instance's previous life that were queued again at start.
    pub fn recovered(&self) -> u64 {
        self.recovered
    }

    async fn call<T: Send + 'static>(
        &self,
        id: &PayoutId,
        build: impl FnOnce(ractor::RpcReplyPort<Result<T, PayoutError>>) -> PayoutMsg,
    ) -> Result<T, PayoutError> {
        // Admission in front of the supervisor's mailbox (which is unbounded).
        let live = self.ctx.metrics.live_actors.load(Ordering::Relaxed);
        if live >= self.config.supervisor.live_actors_max as i64 {
            Metrics::inc(&self.ctx.metrics.overloaded);
            return Err(PayoutError::Overloaded);
        }
        let id = id.clone();
        let timeout_ms = self.config.call_timeout_ms;
        let result = self
            .supervisor
            .call(
                |reply| SupervisorMsg::Route(id, build(reply)),
                Some(Duration::from_millis(timeout_ms)),
            )
            .await;
        match result {
            Ok(CallResult::Success(answer)) => answer,
            Ok(CallResult::Timeout) => Err(PayoutError::Unavailable(format!(
                "no answer within {timeout_ms} ms"
            ))),
            Ok(CallResult::SenderError) => Err(PayoutError::Unavailable(
                "the payout actor stopped before answering".into(),
            )),
            Err(e) => Err(PayoutError::Unavailable(format!(
                "supervisor unreachable: {e}"
            ))),
        }
    }

    /// Accepts a payout (or recognises a duplicate, or reports a conflict).
    ///
    /// A payout whose actor is alive is asked directly (a duplicate then costs one message
    /// and no I/O). If that actor is on its way out (passivating: ractor drops messages
    /// behind its drain marker unanswered), the request goes through the supervisor, which
    /// hands it to the payout's next actor; sending a submit twice is harmless.
    pub async fn submit(&self, request: PayoutRequest) -> Result<SubmitAnswer, PayoutError> {
        let id = request.payout_id().clone();
        if let Some(actor) = self.registry.get(&id) {
            let (tx, rx) = ractor::concurrency::oneshot();
            let msg = PayoutMsg::Submit {
                request: request.clone(),
                reply: tx.into(),
            };
            if actor.send_message(msg).is_ok() {
                let timeout = Duration::from_millis(self.config.call_timeout_ms);
                match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(answer)) => return answer,
                    Ok(Err(_)) => {} // dropped unanswered: through the supervisor
                    Err(_) => {
                        return Err(PayoutError::Unavailable(format!(
                            "no answer within {} ms",
                            self.config.call_timeout_ms
                        )));
                    }
                }
            }
        }
        self.call(&id, |reply| PayoutMsg::Submit { request, reply })
            .await
    }

    /// The journaled record (no actor is involved: unknown ids cost one read, nothing else).
    pub async fn get(&self, id: &PayoutId) -> Result<Option<PayoutRecord>, PayoutError> {
        self.ctx
            .journal
            .load(id)
            .await
            .map_err(|e| PayoutError::Unavailable(e.to_string()))
    }

    pub async fn events(&self, id: &PayoutId) -> Result<Vec<PayoutEvent>, PayoutError> {
        self.ctx
            .journal
            .events(id)
            .await
            .map_err(|e| PayoutError::Unavailable(e.to_string()))
    }

    pub async fn cancel(&self, id: &PayoutId, reason: String) -> Result<PayoutRecord, PayoutError> {
        self.call(id, |reply| PayoutMsg::Cancel { reason, reply })
            .await
    }

    /// Resumes a parked payout (an operator's decision).
    pub async fn resume(&self, id: &PayoutId, reason: String) -> Result<PayoutRecord, PayoutError> {
        self.call(id, |reply| PayoutMsg::Resume { reason, reply })
            .await
    }

    /// Pauses paying on every instance sharing the journal (the kill switch): no new
    /// envelope is journaled from the moment the write commits; envelopes already live keep
    /// being submitted and looked up, and ingress keeps accepting. Audited with `by` and
    /// `reason`. Returns the pause in force (the first one, if it was paused already).
    pub async fn pause(&self, by: &str, reason: &str) -> Result<Pause, PayoutError> {
        let pause = self
            .ctx
            .journal
            .set_pause(true, by, reason)
            .await
            .map_err(|e| PayoutError::Unavailable(e.to_string()))?;
        self.ctx
            .set_pause_view(self.ctx.pause_ticket(), pause.clone());
        let pause = pause.ok_or_else(|| {
            PayoutError::Unavailable("the pause was not recorded; try again".into())
        })?;
        tracing::warn!(by = %pause.by, reason = %pause.reason, "paying paused on every instance");
        Ok(pause)
    }

    /// Lifts the pause (audited). Returns the pause that was lifted, if there was one.
    pub async fn unpause(&self, by: &str, reason: &str) -> Result<Option<Pause>, PayoutError> {
        let before = self
            .ctx
            .journal
            .pause_state()
            .await
            .map_err(|e| PayoutError::Unavailable(e.to_string()))?;
        let after = self
            .ctx
            .journal
            .set_pause(false, by, reason)
            .await
            .map_err(|e| PayoutError::Unavailable(e.to_string()))?;
        self.ctx.set_pause_view(self.ctx.pause_ticket(), after);
        tracing::warn!(%by, %reason, "paying resumed");
        Ok(before)
    }

    /// The pause in force, read from the journal now (and remembered here).
    pub async fn read_pause(&self) -> Result<Option<Pause>, PayoutError> {
        let ticket = self.ctx.pause_ticket();
        let pause = self
            .ctx
            .journal
            .pause_state()
            .await
            .map_err(|e| PayoutError::Unavailable(e.to_string()))?;
        self.ctx.set_pause_view(ticket, pause.clone());
        Ok(pause)
    }

    /// The pause in force as this instance last read it.
    pub fn pause_state(&self) -> Option<Pause> {
        self.ctx.pause()
    }

    pub async fn stats(&self) -> Option<SupervisorStats> {
        match self
            .supervisor
            .call(
                SupervisorMsg::Stats,
                Some(Duration::from_millis(self.config.call_timeout_ms)),
            )
            .await
        {
            Ok(CallResult::Success(s)) => Some(s),
            _ => None,
        }
    }

    /// Stops this instance: the sweep loop, the channel workers (anything in flight is
    /// journaled; the next owner resumes it), then gives its channels back and lets its
    /// heartbeat expire, so other instances take over at once; then the payout actors.
    pub async fn shutdown(&self, timeout_ms: u64) {
        let _ = self.stop.send(true);
        let timeout = Some(Duration::from_millis(timeout_ms));
        let leases = match self.channels.call(ChannelSupMsg::Leases, timeout).await {
            Ok(CallResult::Success(l)) => l,
            // Not answered: the leases expire with the heartbeat instead.
            _ => Vec::new(),
        };
        // Kill, not stop: a worker may be waiting for a ledger answer; nothing of it is
        // lost (its envelope is journaled, the next holder resubmits the same bytes).
        let _ = self.channels.kill_and_wait(timeout).await;
        if let Err(e) = self.ctx.journal.retire(&self.ctx.instance, &leases).await {
            tracing::warn!(error = %e, "cannot retire this instance; its heartbeat expires instead");
        }
        let _ = self.supervisor.stop_and_wait(None, timeout).await;
    }
}
