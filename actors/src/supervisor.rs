//! The payout supervisor: routes every request by payout id to that payout's actor,
//! spawning it on first use, restarts failed actors from the journal within a restart
//! budget, parks a payout past the budget, passivates idle actors and bounds how many are
//! alive. Notices from channel workers (`Invalidate`) reach only actors that are alive; no
//! actor is spawned for them.
//!
//! It never awaits slow I/O in its own handler: spawning waits only for the actor's cheap
//! `pre_start`, and parking is written by a separate task that reports back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::{error, info, warn};

use crate::context::Context;
use crate::domain::PayoutId;
use crate::messages::{PayoutError, PayoutMsg};
use crate::messages::{SupervisorMsg, SupervisorStats};
use crate::metrics::Metrics;
use crate::payout::{PayoutActor, PayoutActorArgs};

/// Bounds of the supervisor, each with its unit.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Actors alive at once; past it requests for payouts without a live actor are refused
    /// (`Overloaded`).
    pub live_actors_max: usize,
    /// Restarts one payout's actor may have within `restart_period_ms` before it is parked.
    pub restart_intensity: usize,
    pub restart_period_ms: u64,
}

/// For tests: round figures near the service's defaults. Not in the production API (the
/// service builds its configuration from its settings, `config/default.toml`).
#[cfg(any(test, feature = "test-support"))]
impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            live_actors_max: 100_000,
            restart_intensity: 3,
            restart_period_ms: 60_000,
        }
    }
}

/// What the supervisor knows about one payout id.
enum Child {
    Live(ActorRef<PayoutMsg>),
    /// Draining for passivation (or dead, awaiting its event): messages wait here and go
    /// to a fresh actor once the old one has stopped, so two actors never hold one payout.
    Stopping(Vec<PayoutMsg>),
    /// Restart budget spent: the park is being written; messages wait for it.
    Parking(Vec<PayoutMsg>),
}

pub struct Supervisor;

pub struct SupervisorArgs {
    pub ctx: Arc<Context>,
    pub config: SupervisorConfig,
    pub registry: Arc<Registry>,
}

/// Shards of the live-actor registry (a power of two).
const REGISTRY_SHARDS: usize = 16;

/// The live payout actors, readable by callers: a request for a payout whose actor is
/// alive can go straight to it instead of through the supervisor's mailbox. Only the
/// supervisor writes it: an actor is in it from its spawn until its passivation begins,
/// its death or its failure.
pub struct Registry {
    shards: [std::sync::Mutex<HashMap<PayoutId, ActorRef<PayoutMsg>>>; REGISTRY_SHARDS],
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| std::sync::Mutex::new(HashMap::new())),
        }
    }
}

impl Registry {
    fn shard(
        &self,
        id: &PayoutId,
    ) -> std::sync::MutexGuard<'_, HashMap<PayoutId, ActorRef<PayoutMsg>>> {
        use std::hash::{BuildHasher, RandomState};
        static HASHER: std::sync::LazyLock<RandomState> =
            std::sync::LazyLock::new(RandomState::new);
        let i = (HASHER.hash_one(id) as usize) & (REGISTRY_SHARDS - 1);
        // A poisoned shard only means a panic while holding it; the map stays valid.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, id: &PayoutId) -> Option<ActorRef<PayoutMsg>> {
        self.shard(id).get(id).cloned()
    }

    fn insert(&self, id: PayoutId, actor: ActorRef<PayoutMsg>) {
        self.shard(&id).insert(id, actor);
    }

    fn remove(&self, id: &PayoutId, actor: ActorId) {
        let mut shard = self.shard(id);
        if shard.get(id).is_some_and(|a| a.get_id() == actor) {
            shard.remove(id);
        }
    }
}

pub struct SupervisorState {
    ctx: Arc<Context>,
    config: SupervisorConfig,
    registry: Arc<Registry>,
    children: HashMap<PayoutId, Child>,
    by_actor: HashMap<ActorId, PayoutId>,
    restarts: HashMap<PayoutId, VecDeque<Instant>>,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SupervisorState {
            ctx: args.ctx,
            config: args.config,
            registry: args.registry,
            children: HashMap::new(),
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
            SupervisorMsg::Route(id, msg) => state.route(&myself, id, msg).await,
            SupervisorMsg::Invalidate(id, moved) => match state.children.get_mut(&id) {
                Some(Child::Live(actor)) => {
                    let _ = actor.send_message(PayoutMsg::Invalidate(moved));
                }
                // A fresh actor reads the journal anyway.
                Some(Child::Stopping(_) | Child::Parking(_)) | None => {}
            },
            SupervisorMsg::Passivate(id, actor_id) => {
                if let Some(Child::Live(actor)) = state.children.get(&id)
                    && actor.get_id() == actor_id
                {
                    let actor = actor.clone();
                    state.registry.remove(&id, actor_id);
                    // The drain marker goes behind everything already forwarded; newer
                    // messages wait in `Stopping` until the actor has terminated.
                    if actor.drain().is_err() {
                        actor.stop(None);
                    }
                    state.children.insert(id, Child::Stopping(Vec::new()));
                }
            }
            SupervisorMsg::ParkWritten(id) => {
                if let Some(Child::Parking(buffer)) = state.children.remove(&id) {
                    state.restarts.remove(&id);
                    state.spawn_with(&myself, id, buffer).await;
                }
            }
            SupervisorMsg::Stats(reply) => {
                let _ = reply.send(SupervisorStats {
                    live_actors: state.by_actor.len(),
                });
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
                let Some(id) = state.forget(cell.get_id()) else {
                    return Ok(());
                };
                match state.children.remove(&id) {
                    Some(Child::Stopping(buffer)) if !buffer.is_empty() => {
                        state.spawn_with(&myself, id, buffer).await;
                    }
                    Some(Child::Live(actor)) if actor.get_id() != cell.get_id() => {
                        state.children.insert(id, Child::Live(actor));
                    }
                    Some(other @ Child::Parking(_)) => {
                        state.children.insert(id, other);
                    }
                    _ => {}
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(id) = state.forget(cell.get_id()) else {
                    return Ok(());
                };
                let buffer = match state.children.remove(&id) {
                    Some(Child::Stopping(buffer)) => buffer,
                    _ => Vec::new(),
                };
                let reason = err.to_string();
                error!(payout_id = %id, error = %reason, "payout actor failed");
                if state.within_budget(&id) {
                    Metrics::inc(&state.ctx.metrics.actor_restarts);
                    info!(payout_id = %id, "restarting payout actor from the journal");
                    state.spawn_with(&myself, id, buffer).await;
                } else {
                    state.park_in_background(&myself, id, buffer, reason);
                }
            }
            SupervisionEvent::ActorStarted(_) | SupervisionEvent::ProcessGroupChanged(_) => {}
        }
        Ok(())
    }
}

impl SupervisorState {
    fn forget(&mut self, actor_id: ActorId) -> Option<PayoutId> {
        let id = self.by_actor.remove(&actor_id)?;
        self.registry.remove(&id, actor_id);
        self.ctx
            .metrics
            .live_actors
            .store(self.by_actor.len() as i64, Ordering::Relaxed);
        Some(id)
    }

    async fn route(&mut self, myself: &ActorRef<SupervisorMsg>, id: PayoutId, msg: PayoutMsg) {
        match self.children.get_mut(&id) {
            Some(Child::Live(actor)) => {
                if let Err(ractor::MessagingErr::SendErr(msg)) = actor.send_message(msg) {
                    // Dead but its event has not arrived yet: hold the message for the next one.
                    self.children.insert(id, Child::Stopping(vec![msg]));
                }
            }
            Some(Child::Stopping(buffer) | Child::Parking(buffer)) => buffer.push(msg),
            None => {
                if !msg.is_request() {
                    return;
                }
                if self.by_actor.len() >= self.config.live_actors_max {
                    Metrics::inc(&self.ctx.metrics.overloaded);
                    msg.reject(PayoutError::Overloaded);
                    return;
                }
                self.spawn_with(myself, id, vec![msg]).await;
            }
        }
    }

    /// Spawns the payout's actor and hands it `messages`.
    async fn spawn_with(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: PayoutId,
        messages: Vec<PayoutMsg>,
    ) {
        let args = PayoutActorArgs {
            id: id.clone(),
            ctx: self.ctx.clone(),
            supervisor: myself.clone(),
        };
        match Actor::spawn_linked(None, PayoutActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                Metrics::inc(&self.ctx.metrics.actors_spawned);
                self.by_actor.insert(actor.get_id(), id.clone());
                self.registry.insert(id.clone(), actor.clone());
                self.ctx
                    .metrics
                    .live_actors
                    .store(self.by_actor.len() as i64, Ordering::Relaxed);
                for msg in messages {
                    if let Err(ractor::MessagingErr::SendErr(msg)) = actor.send_message(msg) {
                        msg.reject(PayoutError::Unavailable("payout actor stopped".into()));
                    }
                }
                self.children.insert(id, Child::Live(actor));
            }
            Err(e) => {
                // pre_start cannot fail today; if it ever does, the callers are told and the
                // journal still has the payout for the next drive.
                error!(payout_id = %id, error = %e, "cannot spawn payout actor");
                for msg in messages {
                    msg.reject(PayoutError::Unavailable("cannot start payout actor".into()));
                }
            }
        }
    }

    fn within_budget(&mut self, id: &PayoutId) -> bool {
        let period = Duration::from_millis(self.config.restart_period_ms);
        let now = Instant::now();
        let log = self.restarts.entry(id.clone()).or_default();
        while log.front().is_some_and(|t| now.duration_since(*t) > period) {
            log.pop_front();
        }
        log.push_back(now);
        log.len() <= self.config.restart_intensity
    }

    fn park_in_background(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: PayoutId,
        buffer: Vec<PayoutMsg>,
        reason: String,
    ) {
        warn!(payout_id = %id, "restart budget spent; parking the payout");
        Metrics::inc(&self.ctx.metrics.parked);
        self.children.insert(id.clone(), Child::Parking(buffer));
        let ctx = self.ctx.clone();
        let retry_ms = self.ctx.policy.io_retry_ms;
        let myself = myself.clone();
        let intensity = self.config.restart_intensity;
        tokio::spawn(async move {
            let reason = format!(
                "actor failed more than {intensity} times within the restart period; last error: {reason}"
            );
            // Keep trying: parking is how the failure becomes visible, it must not be lost.
            while let Err(e) = crate::payout::park(&ctx, &id, &reason).await {
                warn!(payout_id = %id, error = %e, "cannot write the park; retrying");
                tokio::time::sleep(Duration::from_millis(retry_ms)).await;
            }
            let _ = myself.cast(SupervisorMsg::ParkWritten(id));
        });
    }
}
