//! Run parameters: the seed and the scale (payouts, kills) from the environment, the timing
//! knobs the whole run shares, and the command that reruns a seed.

use std::time::{SystemTime, UNIX_EPOCH};

/// The run seed; every random choice of the harness derives from it.
pub const ENV_SEED: &str = "PAYOUTD_CRASH_SEED";
/// How many payouts to feed.
pub const ENV_PAYOUTS: &str = "PAYOUTD_CRASH_PAYOUTS";
/// How many times to SIGKILL payoutd.
pub const ENV_KILLS: &str = "PAYOUTD_CRASH_KILLS";
/// Keep the run folder (logs, database, simulator state) even when the run passes.
pub const ENV_KEEP: &str = "PAYOUTD_CRASH_KEEP";

/// The short (CI) run.
pub const SHORT_PAYOUTS: usize = 200;
pub const SHORT_KILLS: usize = 20;
/// When only one of payouts/kills is given, the other follows this ratio.
pub const PAYOUTS_PER_KILL: usize = 10;
/// One PostgreSQL restart per this many kills (at least one per run).
pub const KILLS_PER_PG_RESTART: usize = 10;

/// The simulator closes a ledger this often. Its close time advances at least one second
/// per ledger, so the ledger clock runs about four times faster than the wall clock.
pub const CLOSE_INTERVAL_MS: u64 = 250;
/// How long the simulator's `POST /transactions` waits for inclusion before its 504.
pub const SUBMIT_WAIT_MS: u64 = 1_500;
/// An envelope's validity in ledger seconds (about three wall seconds here), so expiry and
/// rebuilding happen often.
pub const TX_VALIDITY_S: u64 = 12;
/// Channel accounts given to payoutd.
pub const CHANNELS: usize = 8;
/// Funded destination accounts (half of them trust the test asset).
pub const DESTINATIONS: usize = 12;
/// Keys that never get an account: payouts to them fail with `op_no_destination`.
pub const GHOSTS: usize = 3;
/// The run's keys derive from this and the seed (tests/support/keys.rs).
pub const KEY_NAMESPACE: &str = "payoutd crash harness";

/// A single delivery of one message is retried (connection refused, 503, 504) for at most
/// this long before the harness gives up on it.
pub const SEND_DEADLINE_MS: u64 = 120_000;
/// Payouts the feeder works on at once.
pub const FEED_CONCURRENCY_MAX: usize = 64;

/// Everything one run needs to know.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seed: u64,
    pub payouts: usize,
    pub kills: usize,
    pub pg_restarts: usize,
    /// True when the scale came from the environment.
    pub long: bool,
    pub keep_dir: bool,
}

fn env_number(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    let parsed = match raw.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => raw.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={raw:?} is not a number: {e}")))
}

impl RunConfig {
    pub fn from_env() -> Self {
        let seed = env_number(ENV_SEED).unwrap_or_else(fresh_seed);
        let payouts = env_number(ENV_PAYOUTS).map(|n| n as usize);
        let kills = env_number(ENV_KILLS).map(|n| n as usize);
        let long = payouts.is_some() || kills.is_some();
        let (payouts, kills) = match (payouts, kills) {
            (Some(p), Some(k)) => (p, k),
            (Some(p), None) => (p, (p / PAYOUTS_PER_KILL).max(1)),
            (None, Some(k)) => (k * PAYOUTS_PER_KILL, k),
            (None, None) => (SHORT_PAYOUTS, SHORT_KILLS),
        };
        assert!(payouts >= 1, "{ENV_PAYOUTS} must be at least 1");
        assert!(kills >= 1, "{ENV_KILLS} must be at least 1");
        Self {
            seed,
            payouts,
            kills,
            pg_restarts: (kills / KILLS_PER_PG_RESTART).max(1),
            long,
            keep_dir: std::env::var_os(ENV_KEEP).is_some(),
        }
    }

    /// The command that reruns this exact schedule.
    pub fn rerun_command(&self) -> String {
        format!(
            "{ENV_SEED}={} {ENV_PAYOUTS}={} {ENV_KILLS}={} cargo test -p payoutd --test crash -- --nocapture",
            self.seed, self.payouts, self.kills
        )
    }

    /// How long to wait, after the last restart, for every payout to become terminal.
    pub fn settle_timeout_ms(&self) -> u64 {
        120_000 + 20 * self.payouts as u64
    }

    /// Mean pause between two new payouts, so that feeding ends at about 80% of the
    /// expected chaos time and the last kills still hit payouts in flight.
    pub fn mean_feed_gap_ms(&self) -> u64 {
        let chaos_ms = self.kills as u64 * crate::chaos::MEAN_CYCLE_MS;
        (chaos_ms * 8 / 10 / self.payouts as u64).max(1)
    }

    /// A sub-seed for one concern, so that (say) the feeder's choices do not shift when
    /// the chaos schedule draws one more number.
    pub fn stream(&self, name: &str) -> u64 {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("{}:{name}", self.seed).as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
}

/// A seed from the clock: every unconfigured run explores a new schedule, and prints it.
fn fresh_seed() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_secs() << 20) ^ u64::from(now.subsec_nanos()) ^ u64::from(std::process::id())
}
