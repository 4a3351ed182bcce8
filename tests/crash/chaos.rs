//! The chaos schedule: SIGKILL payoutd at seeded moments and start it again, switch the
//! simulator's faults (latency, 5xx before apply, answers lost after apply, rejections with
//! chosen codes, fee surges, lookups served by a node that lags behind the head, history
//! pruned to a moving elder ledger, core's TRY_AGAIN_LATER), restart PostgreSQL under a running payoutd, and now and then
//! run a second payoutd (the "twin") on the same database and keys beside the first, so
//! that two processes drive the same payouts (fencing).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use payoutd_simulator::{Faults, RejectNext};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::config::RunConfig;
use crate::support::procs::{Database, Service};
use crate::support::simadmin::SimAdmin;

/// Mean time between two kills, start-up included, in milliseconds (paces the feeder).
pub const MEAN_CYCLE_MS: u64 = 1_300;
/// Chance that a kill cycle switches to another fault profile.
const SWITCH_PROBABILITY: f64 = 0.7;
/// Share of kills aimed at the first moments of a life (start-up, recovery), in percent.
const EARLY_KILL_PERCENT: u32 = 30;
/// An early kill comes this soon after the start, at most, in milliseconds (payoutd
/// connects, recovers and listens within a few tens of milliseconds).
const EARLY_KILL_MAX_MS: u64 = 40;
/// A later kill comes this late after the start, at most, in milliseconds.
const LATE_KILL_MAX_MS: u64 = 3_000;
/// payoutd is dead for up to this long between a kill and the next start, in milliseconds.
const DOWN_MAX_MS: u64 = 300;
/// After a PostgreSQL restart payoutd must report ready (`/readyz`, which reads the
/// database) within this time, in milliseconds.
const DB_RECOVERY_MAX_MS: u64 = 15_000;
/// Chance per cycle that a stopped twin starts, and that a running twin is killed.
const TWIN_START_PROBABILITY: f64 = 0.25;
const TWIN_KILL_PROBABILITY: f64 = 0.4;
/// Chance that a profile other than the two consistency ones also gets a lagging node,
/// and pruned history, on top of its own faults.
const OVERLAY_LAG_PROBABILITY: f64 = 0.3;
const OVERLAY_PRUNE_PROBABILITY: f64 = 0.2;
/// Base fee of the network outside fee surges, in stroops.
pub const BASE_FEE_STROOPS: i64 = 100;
/// Rejection codes `reject_next` uses: all "not applied (yet)", none an operator problem.
const REJECT_CODES: [&str; 5] = [
    "tx_bad_seq",
    "tx_insufficient_fee",
    "tx_too_early",
    "tx_too_late",
    "tx_internal_error",
];

#[derive(Debug, Default)]
pub struct ChaosStats {
    pub kills: u64,
    /// Kills that hit payoutd before it answered `/healthz` (start-up, recovery).
    pub kills_before_ready: u64,
    pub pg_restarts: u64,
    /// Times the fault profile was switched, and how many were fee surges.
    pub fault_switches: u64,
    pub fee_surges: u64,
    /// Lives of the second instance, and how many of them ended by SIGKILL.
    pub twin_lives: u64,
    pub twin_kills: u64,
    /// payoutd ended without being killed, or did not recover from a database restart:
    /// each is a violation.
    pub service_failures: Vec<String>,
}

/// The kinds of fault profile; a run goes through all of them (in a seeded order) before
/// it draws them at random.
#[derive(Debug, Clone, Copy)]
enum Profile {
    Calm,
    Latency,
    ServerErrors,
    LostAnswers,
    Rejections,
    Mixed,
    FeeSurge,
    /// Lookups and re-posts often served by a node many ledgers behind, while answers are
    /// lost after apply: the case where trusting a "not found" pays twice.
    LaggingNode,
    /// Nodes keep only a few ledgers of history (a fresh node after a failover).
    PrunedHistory,
}

const PROFILES: [Profile; 9] = [
    Profile::Calm,
    Profile::Latency,
    Profile::ServerErrors,
    Profile::LostAnswers,
    Profile::Rejections,
    Profile::Mixed,
    Profile::FeeSurge,
    Profile::LaggingNode,
    Profile::PrunedHistory,
];

/// The faults of one profile, with its seeded strengths; `Some` base fee for a fee surge.
fn draw_faults(profile: Profile, rng: &mut StdRng) -> (Faults, Option<i64>) {
    let mut f = Faults::default();
    let reject = |rng: &mut StdRng| RejectNext {
        code: REJECT_CODES[rng.random_range(0..REJECT_CODES.len())].to_owned(),
        count: rng.random_range(1..=6),
    };
    match profile {
        Profile::Calm => {}
        Profile::Latency => f.latency_ms = rng.random_range(10..=150),
        Profile::ServerErrors => f.p_5xx_before_apply = rng.random_range(0.1..0.6),
        Profile::LostAnswers => f.p_lose_answer_after_apply = rng.random_range(0.1..0.6),
        Profile::Rejections => f.reject_next = Some(reject(rng)),
        Profile::Mixed => {
            f.latency_ms = rng.random_range(0..=50);
            f.p_5xx_before_apply = rng.random_range(0.0..0.3);
            f.p_lose_answer_after_apply = rng.random_range(0.0..0.3);
            if rng.random_bool(0.5) {
                f.reject_next = Some(reject(rng));
            }
        }
        Profile::FeeSurge => {
            overlay_consistency(&mut f, rng);
            return (f, Some(rng.random_range(200..=1_000)));
        }
        Profile::LaggingNode => {
            // Up to 150 ledgers: far past an envelope's validity here (12 ledger seconds).
            f.lookup_lag_ledgers = rng.random_range(5..=150);
            f.p_lookup_lagging = rng.random_range(0.3..0.9);
            f.p_lose_answer_after_apply = rng.random_range(0.1..0.4);
            f.p_try_again_later = rng.random_range(0.0..0.1);
        }
        Profile::PrunedHistory => {
            f.history_retention_ledgers = rng.random_range(2..=20);
            f.p_lose_answer_after_apply = rng.random_range(0.0..0.3);
            if rng.random_bool(0.5) {
                f.lookup_lag_ledgers = rng.random_range(1..=30);
                f.p_lookup_lagging = rng.random_range(0.1..0.5);
            }
        }
    }
    if !matches!(profile, Profile::LaggingNode | Profile::PrunedHistory) {
        overlay_consistency(&mut f, rng);
    }
    (f, None)
}

/// Now and then, a lagging node and pruned history under another profile's faults.
fn overlay_consistency(f: &mut Faults, rng: &mut StdRng) {
    if rng.random_bool(OVERLAY_LAG_PROBABILITY) {
        f.lookup_lag_ledgers = rng.random_range(1..=150);
        f.p_lookup_lagging = rng.random_range(0.2..0.8);
    }
    if rng.random_bool(OVERLAY_PRUNE_PROBABILITY) {
        f.history_retention_ledgers = rng.random_range(2..=40);
    }
}

pub struct Chaos<'a> {
    pub service: &'a mut Service,
    /// A second instance, started and killed on its own schedule (`twin_rng`, a stream of
    /// its own so the main schedule of a seed does not depend on it).
    pub twin: &'a mut Service,
    pub twin_rng: StdRng,
    pub db: &'a mut Database,
    pub sim: &'a SimAdmin,
    pub http: reqwest::Client,
    pub rng: StdRng,
    pub stats: ChaosStats,
}

impl Chaos<'_> {
    /// Runs `cfg.kills` kill/restart cycles; PostgreSQL restarts at `cfg.pg_restarts`
    /// seeded cycles. Ends with payoutd started again and every fault off.
    pub async fn run(mut self, cfg: &RunConfig) -> ChaosStats {
        let mut pg_cycles = BTreeSet::new();
        while pg_cycles.len() < cfg.pg_restarts.min(cfg.kills) {
            pg_cycles.insert(self.rng.random_range(0..cfg.kills));
        }
        let mut surge = false;
        let mut first_profiles = PROFILES.to_vec();
        first_profiles.shuffle(&mut self.rng);
        for cycle in 0..cfg.kills {
            let delay_ms = if self.rng.random_range(0..100) < EARLY_KILL_PERCENT {
                self.rng.random_range(0..=EARLY_KILL_MAX_MS)
            } else {
                self.rng.random_range(EARLY_KILL_MAX_MS..=LATE_KILL_MAX_MS)
            };
            let down_ms = self.rng.random_range(0..=DOWN_MAX_MS);
            if pg_cycles.contains(&cycle) {
                self.restart_database().await;
            }
            self.live_for(delay_ms).await;
            if !self.service.is_ready(&self.http).await {
                self.stats.kills_before_ready += 1;
            }
            self.service.kill();
            self.stats.kills += 1;
            let down = Instant::now() + Duration::from_millis(down_ms);
            if self.rng.random_bool(SWITCH_PROBABILITY) {
                let profile = first_profiles
                    .pop()
                    .unwrap_or_else(|| PROFILES[self.rng.random_range(0..PROFILES.len())]);
                self.switch_faults(profile, &mut surge).await;
            }
            tokio::time::sleep_until(down.into()).await;
            self.service.start();
            self.step_twin();
        }
        if self.twin.is_running() {
            self.twin.kill();
            self.stats.twin_kills += 1;
        }
        self.sim.set_faults(&Faults::default()).await;
        self.sim.set_base_fee(BASE_FEE_STROOPS).await;
        self.stats
    }

    /// Puts the simulator under `profile`; a fee surge lasts until the next switch.
    async fn switch_faults(&mut self, profile: Profile, surge: &mut bool) {
        let (faults, fee) = draw_faults(profile, &mut self.rng);
        self.sim.set_faults(&faults).await;
        if fee.is_some() || *surge {
            self.sim.set_base_fee(fee.unwrap_or(BASE_FEE_STROOPS)).await;
        }
        *surge = fee.is_some();
        self.stats.fault_switches += 1;
        self.stats.fee_surges += u64::from(*surge);
    }

    /// Starts or kills the twin, each with its chance.
    fn step_twin(&mut self) {
        self.check_twin();
        if self.twin.is_running() {
            if self.twin_rng.random_bool(TWIN_KILL_PROBABILITY) {
                self.twin.kill();
                self.stats.twin_kills += 1;
            }
        } else if self.twin_rng.random_bool(TWIN_START_PROBABILITY) {
            self.twin.start();
            self.stats.twin_lives += 1;
        }
    }

    /// A twin that ended by itself is a failure (it is not restarted).
    fn check_twin(&mut self) {
        if let Some(status) = self.twin.exited() {
            self.stats.service_failures.push(format!(
                "the second payoutd (twin life {}) ended by itself ({status}); see {}",
                self.twin.lives,
                self.twin.log_path().display()
            ));
        }
    }

    /// Lets the current life run for `ms` (counted from now), restarting payoutd if it
    /// ends by itself, which is recorded as a failure.
    async fn live_for(&mut self, ms: u64) {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            if let Some(status) = self.service.exited() {
                self.stats.service_failures.push(format!(
                    "payoutd life {} ended by itself ({status}); see {}",
                    self.service.lives,
                    self.service.log_path().display()
                ));
                self.service.start();
            }
            self.check_twin();
            let left = until.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(20))).await;
        }
    }

    /// Restarts PostgreSQL under a running, ready payoutd (and twin, if one runs), then
    /// requires payoutd to be alive and ready (database reachable again) within
    /// `DB_RECOVERY_MAX_MS`.
    async fn restart_database(&mut self) {
        if !self.service.wait_ready(&self.http).await {
            self.stats.service_failures.push(format!(
                "payoutd life {} did not become ready before a database restart; see {}",
                self.service.lives,
                self.service.log_path().display()
            ));
            if !self.service.is_running() {
                self.service.start();
            }
            return;
        }
        // A payoutd that is still starting cannot start without its database (it exits,
        // and a supervisor would start it again): the restart is for running instances.
        if self.twin.is_running() && !self.twin.wait_ready(&self.http).await {
            self.stats.service_failures.push(format!(
                "the second payoutd (twin life {}) did not become ready; see {}",
                self.twin.lives,
                self.twin.log_path().display()
            ));
            self.twin.kill();
        }
        tokio::task::block_in_place(|| self.db.restart());
        self.stats.pg_restarts += 1;
        let url = format!("{}/readyz", self.service.base_url());
        let deadline = Instant::now() + Duration::from_millis(DB_RECOVERY_MAX_MS);
        loop {
            if self.service.exited().is_some() {
                self.stats.service_failures.push(format!(
                    "payoutd life {} ended during a database restart; see {}",
                    self.service.lives,
                    self.service.log_path().display()
                ));
                self.service.start();
                return;
            }
            let ready = matches!(
                self.http.get(&url).timeout(Duration::from_millis(1_000)).send().await,
                Ok(r) if r.status().is_success()
            );
            if ready {
                return;
            }
            if Instant::now() >= deadline {
                self.stats.service_failures.push(format!(
                    "payoutd life {} was not ready {DB_RECOVERY_MAX_MS} ms after a database restart; see {}",
                    self.service.lives,
                    self.service.log_path().display()
                ));
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
