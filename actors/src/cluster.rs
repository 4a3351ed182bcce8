//! Several instances on one database: who is alive, who drives which channel, and who
//! takes over what a dead instance left behind.
//!
//! Every instance heartbeats (a row with an expiry, by the database's clock) and runs one
//! sweep loop. Each sweep:
//! - claims the lease of every channel it holds the key of and does not run yet (a lease
//!   is free when unheld, held by a dead instance, held by this instance's previous life,
//!   or held by an instance without the key) and starts its worker;
//! - claims the lease of any other channel that has live envelopes and no live owner (an
//!   instance that died for good, whose keys nobody here has), to settle those envelopes
//!   with the journaled bytes (no key needed), then gives it back;
//! - adopts the `accepted` payouts whose owner is dead and queues them;
//! - reads back from the journal the payouts the ready queue had no room for.
//!
//! Ownership only decides who tries. What makes it safe is that every write is fenced: a
//! payout by its version, a new envelope by the channel lease's epoch and by the rule that
//! a channel's sequence number is held by at most one envelope that is not dead.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::channel::{ChannelMsg, ChannelWorker, WorkerArgs};
use crate::context::Context;
use crate::domain::{AccountId, PayoutId};
use crate::metrics::Metrics;
use crate::ports::journal::ChannelLease;

/// The cluster's bounds, each with its unit.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// How often this instance renews its heartbeat, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// How long a heartbeat keeps an instance alive, in milliseconds (several intervals).
    pub instance_ttl_ms: u64,
    /// How often the sweep looks for free channels and orphaned payouts, in milliseconds.
    /// An orphan is picked up within `instance_ttl_ms + orphan_sweep_interval_ms` of its
    /// owner's last heartbeat.
    pub orphan_sweep_interval_ms: u64,
    /// How often a sweep reads this instance's `accepted` payouts back into the ready queue
    /// when the queue lost none it knows of, in milliseconds (a safety net). A queue that
    /// had no room, or a worker that stopped with payouts in hand, is read back at the next
    /// sweep.
    pub queue_refill_interval_ms: u64,
    /// Orphaned payouts adopted per statement.
    pub adopt_page_max: u32,
    /// Restarts one channel worker may have within `worker_restart_period_ms`; past it the
    /// worker is left for the next sweep to start again.
    pub worker_restart_intensity: usize,
    pub worker_restart_period_ms: u64,
    /// A full channel pool is logged (with the envelopes holding it) when the oldest queued
    /// payout has waited this long, in milliseconds; at most once per this period.
    pub pool_full_warn_ms: u64,
    /// How often the cluster-wide pause is read from the journal, in milliseconds (a pause
    /// holds at once anyway: the journal refuses new envelopes while it is set).
    pub control_poll_interval_ms: u64,
}

/// For tests: round figures near the service's defaults. Not in the production API (the
/// service builds its configuration from its settings, `config/default.toml`).
#[cfg(any(test, feature = "test-support"))]
impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 1_000,
            instance_ttl_ms: 10_000,
            orphan_sweep_interval_ms: 2_000,
            queue_refill_interval_ms: 60_000,
            adopt_page_max: 1_000,
            worker_restart_intensity: 3,
            worker_restart_period_ms: 60_000,
            pool_full_warn_ms: 30_000,
            control_poll_interval_ms: 250,
        }
    }
}

pub enum ChannelSupMsg {
    Start {
        lease: ChannelLease,
        can_sign: bool,
    },
    /// The channels with a running worker, and whether it signs.
    Running(RpcReplyPort<HashMap<AccountId, bool>>),
    /// The leases the running workers hold.
    Leases(RpcReplyPort<Vec<ChannelLease>>),
    /// Tells a channel's worker to read its envelopes from the journal again.
    Reload(AccountId),
}

/// Supervises the channel workers: starts one per claimed lease, restarts a failed one
/// within its budget.
pub struct ChannelSupervisor;

pub struct ChannelSupState {
    ctx: Arc<Context>,
    config: ClusterConfig,
    workers: HashMap<AccountId, (ActorRef<ChannelMsg>, ChannelLease, bool)>,
    by_actor: HashMap<ractor::ActorId, AccountId>,
    restarts: HashMap<AccountId, VecDeque<Instant>>,
}

impl Actor for ChannelSupervisor {
    type Msg = ChannelSupMsg;
    type State = ChannelSupState;
    type Arguments = (Arc<Context>, ClusterConfig);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (ctx, config): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(ChannelSupState {
            ctx,
            config,
            workers: HashMap::new(),
            by_actor: HashMap::new(),
            restarts: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ChannelSupMsg::Start { lease, can_sign } => {
                if !state.workers.contains_key(&lease.account) {
                    state.spawn(&myself, lease, can_sign).await;
                }
            }
            ChannelSupMsg::Running(reply) => {
                let running = state.workers.iter().map(|(a, w)| (*a, w.2)).collect();
                let _ = reply.send(running);
            }
            ChannelSupMsg::Leases(reply) => {
                let _ = reply.send(state.workers.values().map(|w| w.1.clone()).collect());
            }
            ChannelSupMsg::Reload(account) => {
                if let Some((worker, _, _)) = state.workers.get(&account) {
                    // A send error: the worker is stopping; its successor reads anyway.
                    let _ = worker.cast(ChannelMsg::Reload);
                }
            }
        }
        Ok(())
    }

    /// Overridden: the default would stop the supervisor when any child ends.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(account) = state.by_actor.remove(&cell.get_id()) {
                    state.workers.remove(&account);
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(account) = state.by_actor.remove(&cell.get_id()) else {
                    return Ok(());
                };
                let Some((_, lease, can_sign)) = state.workers.remove(&account) else {
                    return Ok(());
                };
                error!(channel = %account, error = %err, "channel worker failed");
                Metrics::inc(&state.ctx.metrics.worker_restarts);
                if state.within_budget(&account) {
                    // Its state is only a view of the journal: the new one reads it again.
                    state.spawn(&myself, lease, can_sign).await;
                } else {
                    warn!(channel = %account, "channel worker failing repeatedly; the next sweep starts it again");
                    state.ctx.set_channel_status(account, None);
                }
            }
            SupervisionEvent::ActorStarted(_) | SupervisionEvent::ProcessGroupChanged(_) => {}
        }
        Ok(())
    }
}

impl ChannelSupState {
    async fn spawn(
        &mut self,
        myself: &ActorRef<ChannelSupMsg>,
        lease: ChannelLease,
        can_sign: bool,
    ) {
        let args = WorkerArgs {
            lease: lease.clone(),
            can_sign,
            ctx: self.ctx.clone(),
        };
        match Actor::spawn_linked(None, ChannelWorker, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                info!(channel = %lease.account, epoch = lease.epoch, can_sign, "channel worker started");
                self.by_actor.insert(actor.get_id(), lease.account);
                self.workers.insert(lease.account, (actor, lease, can_sign));
            }
            Err(e) => error!(channel = %lease.account, error = %e, "cannot start a channel worker"),
        }
    }

    fn within_budget(&mut self, account: &AccountId) -> bool {
        let period = Duration::from_millis(self.config.worker_restart_period_ms);
        let now = Instant::now();
        let log = self.restarts.entry(*account).or_default();
        while log.front().is_some_and(|t| now.duration_since(*t) > period) {
            log.pop_front();
        }
        log.push_back(now);
        log.len() <= self.config.worker_restart_intensity
    }
}

/// Runs [`run`] on a task of its own until `stop` turns true, starting it again (after a
/// heartbeat interval) if it panics: without it this instance would stop heartbeating and
/// sweeping while it still accepts payouts.
pub fn spawn(
    ctx: Arc<Context>,
    config: ClusterConfig,
    keyed: Vec<AccountId>,
    channels: ActorRef<ChannelSupMsg>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let task = tokio::spawn(run(
                ctx.clone(),
                config.clone(),
                keyed.clone(),
                channels.clone(),
                stop.clone(),
            ));
            match task.await {
                Err(e) if e.is_panic() && !*stop.borrow() => {
                    error!(error = %e, "the heartbeat and sweep loop panicked; starting it again");
                    Metrics::inc(&ctx.metrics.worker_restarts);
                    tokio::time::sleep(Duration::from_millis(config.heartbeat_interval_ms)).await;
                }
                _ => return,
            }
        }
    })
}

/// The sweep loop: heartbeat, channel claims, adoption of orphans, refills. Runs until
/// `stop` turns true.
pub async fn run(
    ctx: Arc<Context>,
    config: ClusterConfig,
    keyed: Vec<AccountId>,
    channels: ActorRef<ChannelSupMsg>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_sweep: Option<Instant> = None;
    let mut last_heartbeat: Option<Instant> = None;
    let mut last_pool_warning: Option<Instant> = None;
    let mut refill_after: Option<PayoutId> = None;
    let mut last_refill = Instant::now();
    loop {
        let ticket = ctx.pause_ticket();
        match ctx.journal.pause_state().await {
            Ok(pause) => ctx.set_pause_view(ticket, pause),
            Err(e) => warn!(error = %e, "cannot read whether paying is paused"),
        }
        let heartbeat_due = last_heartbeat
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(config.heartbeat_interval_ms));
        if heartbeat_due {
            last_heartbeat = Some(Instant::now());
            if let Err(e) = ctx
                .journal
                .heartbeat(&ctx.instance, config.instance_ttl_ms)
                .await
            {
                warn!(error = %e, "cannot renew this instance's heartbeat");
            }
        }
        let sweep_due = last_sweep
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(config.orphan_sweep_interval_ms));
        if sweep_due {
            last_sweep = Some(Instant::now());
            sweep(&ctx, &config, &keyed, &channels).await;
            // The queue is only a cache of the journal: payouts it had no room for, or
            // that a stopped worker had in hand, are read back; and now and then all of
            // them, for what it cannot know it lost (an accept's answer lost after the
            // commit). Payouts in a worker's hand are skipped.
            let due =
                last_refill.elapsed() >= Duration::from_millis(config.queue_refill_interval_ms);
            if ctx.queue.take_spilled() || due {
                last_refill = Instant::now();
                refill(&ctx, &mut refill_after).await;
            }
            warn_if_pool_full(&ctx, &config, &mut last_pool_warning);
        }
        ctx.metrics
            .ready_queue
            .store(ctx.queue.len() as i64, std::sync::atomic::Ordering::Relaxed);
        let wait = Duration::from_millis(
            config
                .heartbeat_interval_ms
                .min(config.orphan_sweep_interval_ms)
                .min(config.control_poll_interval_ms.max(1)),
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// One sweep (also run once at start, before the first heartbeat interval passes).
// Long because it is the loop's one round in its order: which channels run here, claiming
// free and orphaned channels (with or without their key), adopting orphaned payouts (only
// when this instance can sign), releasing held payouts; each step relies on the earlier
// ones of the same round.
pub async fn sweep(
    ctx: &Arc<Context>,
    config: &ClusterConfig,
    keyed: &[AccountId],
    channels: &ActorRef<ChannelSupMsg>,
) {
    let running = match channels
        .call(ChannelSupMsg::Running, Some(Duration::from_secs(5)))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(r)) => r,
        _ => return,
    };
    let start = |lease: ChannelLease, can_sign: bool| {
        let _ = channels.cast(ChannelSupMsg::Start { lease, can_sign });
    };
    // Whether this instance can sign anything: only then does it adopt payouts.
    let mut signs = running
        .iter()
        .any(|(account, signs)| *signs && !ctx.is_disabled(account));
    for account in keyed {
        if running.contains_key(account) || ctx.is_disabled(account) {
            continue;
        }
        match ctx
            .journal
            .claim_channel(&ctx.instance, account, true)
            .await
        {
            Ok(Some(lease)) => {
                signs = true;
                start(lease, true)
            }
            Ok(None) => {}
            Err(e) => warn!(channel = %account, error = %e, "cannot claim the channel"),
        }
    }
    match ctx.journal.channels().await {
        Ok(all) => {
            let statuses = ctx.channel_statuses();
            for info in &all {
                // A worker of ours that does not know of every live envelope of its channel
                // (a prepare whose answer was lost, then committed): it reads them again.
                let mine = info.owner.as_deref() == Some(ctx.instance.as_str());
                let known = statuses
                    .get(&info.account)
                    .map_or(0, |s| u32::from(s.open.is_some()) + s.unresolved as u32);
                if mine && running.contains_key(&info.account) && info.open_envelopes > known {
                    let _ = channels.cast(ChannelSupMsg::Reload(info.account));
                }
            }
            for info in all {
                let orphaned = info.open_envelopes > 0
                    && !info.owner_alive
                    && !running.contains_key(&info.account)
                    && !keyed.contains(&info.account);
                if !orphaned {
                    continue;
                }
                match ctx
                    .journal
                    .claim_channel(&ctx.instance, &info.account, false)
                    .await
                {
                    Ok(Some(lease)) => {
                        info!(channel = %info.account, envelopes = info.open_envelopes, "settling the envelopes of an orphaned channel (no key here)");
                        start(lease, false)
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(channel = %info.account, error = %e, "cannot claim the channel")
                    }
                }
            }
        }
        Err(e) => warn!(error = %e, "cannot list the channels"),
    }
    // Adopting payouts this instance cannot sign for would only strand them.
    while signs && ctx.queue.has_room() {
        match ctx
            .journal
            .adopt_orphans(&ctx.instance, config.adopt_page_max)
            .await
        {
            Ok(page) => {
                let n = page.len();
                if n > 0 {
                    info!(payouts = n, "adopted payouts of instances that are gone");
                    Metrics::add(&ctx.metrics.adopted, n);
                }
                for ready in page {
                    ctx.enqueue(ready);
                }
                if n < config.adopt_page_max as usize {
                    break;
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot adopt orphaned payouts");
                break;
            }
        }
    }
    // Held payouts whose limit window has moved on: checked against the limits again.
    while signs && ctx.queue.has_room() {
        match ctx
            .journal
            .release_held(&ctx.instance, config.adopt_page_max)
            .await
        {
            Ok(page) => {
                let n = page.len();
                if n > 0 {
                    info!(
                        payouts = n,
                        "released held payouts: their limit window moved on"
                    );
                    Metrics::add(&ctx.metrics.payouts_released, n);
                }
                for ready in page {
                    ctx.enqueue(ready);
                }
                if n < config.adopt_page_max as usize {
                    break;
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot release held payouts");
                break;
            }
        }
    }
}

/// Reads this instance's `accepted` payouts back into the queue (at start, and after the
/// queue had no room for some). Stops when the queue is full again, marking it spilled, so
/// the next sweep goes on from `after`.
pub async fn refill(ctx: &Context, after: &mut Option<PayoutId>) {
    const PAGE: u32 = 1_000;
    loop {
        if !ctx.queue.has_room() {
            ctx.queue.mark_spilled();
            return;
        }
        let page = match ctx
            .journal
            .ready_of(&ctx.instance, after.as_ref(), PAGE)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "cannot read queued payouts back from the journal");
                ctx.queue.mark_spilled();
                return;
            }
        };
        let full = page.len() == PAGE as usize;
        *after = page.last().map(|r| r.id().clone());
        for ready in page {
            if !ctx.queue.contains(ready.id()) {
                ctx.enqueue(ready);
            }
        }
        if !full {
            *after = None;
            return;
        }
    }
}

fn warn_if_pool_full(ctx: &Context, config: &ClusterConfig, last: &mut Option<Instant>) {
    let now = Instant::now();
    let Some(waited) = ctx.queue.oldest_wait(now) else {
        return;
    };
    if waited < Duration::from_millis(config.pool_full_warn_ms)
        || last.is_some_and(|t| {
            now.duration_since(t) < Duration::from_millis(config.pool_full_warn_ms)
        })
    {
        return;
    }
    let statuses = ctx.channel_statuses();
    let usable = statuses
        .values()
        .filter(|s| s.disabled.is_none() && s.can_sign)
        .count();
    let busy: Vec<String> = statuses
        .iter()
        .filter_map(|(a, s)| {
            s.open.as_ref().map(|o| {
                let some: Vec<&str> = o.payouts.iter().take(5).map(|p| p.as_str()).collect();
                format!(
                    "{a}: {} ({} payouts for {} s: {}{})",
                    o.hash,
                    o.payouts.len(),
                    o.since.elapsed().as_secs(),
                    some.join(", "),
                    if o.payouts.len() > some.len() {
                        ", …"
                    } else {
                        ""
                    }
                )
            })
        })
        .collect();
    *last = Some(now);
    warn!(
        queued = ctx.queue.len(),
        oldest_wait_s = waited.as_secs(),
        usable_channels = usable,
        holding = %busy.join("; "),
        "payouts are waiting for a channel: every usable channel is busy or none is usable"
    );
}
