//! Test harness: a real PostgreSQL (a shared throwaway cluster, a fresh database per test)
//! and small helpers to await conditions instead of sleeping blindly.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use payoutd::journal::{PgJournal, migrate};
use payoutd::pg::LocalPostgres;
use payoutd_actors::domain::{AccountId, Amount, Asset, Destination, PayoutId, PayoutRequest};
use payoutd_actors::metrics::Metrics;
use payoutd_actors::ports::{Journal, Ledger, PayoutStore};
use payoutd_actors::queue::ReadyQueue;
use payoutd_actors::state::{PayoutRecord, PayoutState};
use payoutd_actors::{
    ClusterConfig, Context, PayoutPolicy, Payouts, ServiceConfig, SupervisorConfig,
};
use sqlx::postgres::{PgPool, PgPoolOptions};

/// Base URL of the test cluster (no database): from `PAYOUTD_TEST_PG` if given, else a
/// cluster in `PAYOUTD_TEST_PG_DIR` (default: a folder under the temp dir) started here on
/// first use and left running for the next tests (the test command stops it at the end).
async fn cluster_base() -> String {
    if let Ok(url) = std::env::var("PAYOUTD_TEST_PG") {
        return url;
    }
    tokio::task::spawn_blocking(|| {
        let dir = std::env::var_os("PAYOUTD_TEST_PG_DIR").map(PathBuf::from).unwrap_or_else(default_cluster_dir);
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        // One starter at a time across test processes.
        let lock = std::fs::File::create(dir.with_extension("lock")).unwrap();
        lock.lock().unwrap();
        let pg = LocalPostgres::start(&dir, false).unwrap_or_else(|e| {
            panic!("cannot start the test PostgreSQL: {e}\nThe test command (scripts/test) installs it: apt-get install -y postgresql")
        });
        let port = pg.detach();
        format!("postgres://{}@127.0.0.1:{port}", payoutd::pg::SUPERUSER)
    })
    .await
    .unwrap()
}

/// Under the temp dir (reachable by the `postgres` user when tests run as root), one per
/// checkout.
fn default_cluster_dir() -> PathBuf {
    use sha2::{Digest, Sha256};
    let tag = hex::encode(&Sha256::digest(env!("CARGO_MANIFEST_DIR").as_bytes())[..6]);
    std::env::temp_dir().join(format!("payoutd-test-pg-{tag}"))
}

/// A fresh, migrated database for one test.
pub async fn fresh_db() -> PgPool {
    fresh_db_with_url().await.0
}

/// A fresh, migrated database and its URL (for child processes).
pub async fn fresh_db_with_url() -> (PgPool, String) {
    let (pool, url) = fresh_empty_db().await;
    migrate(&pool).await.unwrap();
    (pool, url)
}

/// A fresh database without any migration applied.
pub async fn fresh_empty_db() -> (PgPool, String) {
    let base = cluster_base().await;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{base}/postgres"))
        .await
        .expect("connect to the test cluster");
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("t_{}_{n}_{nanos}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let url = format!("{base}/{name}");
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .unwrap();
    (pool, url)
}

pub async fn pg_journal() -> Arc<PgJournal> {
    Arc::new(PgJournal::new(fresh_db().await).await)
}

/// Cluster timers short enough for tests.
pub fn cluster() -> ClusterConfig {
    ClusterConfig {
        heartbeat_interval_ms: 20,
        instance_ttl_ms: 200,
        orphan_sweep_interval_ms: 40,
        ..ClusterConfig::default()
    }
}

/// Starts one instance of the payout core named `name`, holding the keys of `keyed`.
pub async fn start_core(
    journal: Arc<dyn Journal>,
    ledger: Arc<dyn Ledger>,
    name: &str,
    keyed: Vec<AccountId>,
    policy: PayoutPolicy,
) -> (Payouts, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context::new(
        journal,
        ledger,
        policy,
        metrics.clone(),
        name,
        Arc::new(ReadyQueue::new(100_000)),
    ));
    let config = ServiceConfig {
        supervisor: SupervisorConfig::default(),
        cluster: cluster(),
        call_timeout_ms: 10_000,
        channels: keyed,
    };
    (Payouts::start(ctx, config).await.unwrap(), metrics)
}

/// Awaits a condition, polling; fails with `what` after `timeout_ms`.
pub async fn eventually<F, Fut>(timeout_ms: u64, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out after {timeout_ms} ms waiting for: {what}");
}

/// Awaits the journaled state of a payout.
pub async fn wait_state(journal: &dyn PayoutStore, id: &str, state: PayoutState) -> PayoutRecord {
    let pid = PayoutId::parse(id).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = journal.load(&pid).await.unwrap();
        if let Some(r) = &r
            && r.state == state
        {
            return r.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "payout {id} never reached {state}; now {:?}",
            r.map(|r| (r.state, r.reason))
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The destination most tests pay (an account that exists on the simulated ledgers).
pub const DEST: &str = "GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2";
/// The distribution account of the in-memory ledger tests.
pub const PAYER: &str = "GDF5O4OWEMVBY5FLDHWA5RZTYSV2U276XGKZZ6VSHDDR3THSQ6OQS7UM";

/// Four channel accounts for the in-memory ledger.
pub fn channels() -> Vec<AccountId> {
    (1..=4).map(|n| AccountId::from_bytes([n; 32])).collect()
}

/// The payout policy with short timers, for tests.
pub fn policy() -> PayoutPolicy {
    let mut p = PayoutPolicy::new(AccountId::parse(PAYER).unwrap());
    p.poll_interval_ms = 10;
    p.io_retry_ms = 10;
    p.batch_linger_ms = 5;
    p
}

/// A native payout to `DEST`.
pub fn request(id: &str, amount: &str) -> PayoutRequest {
    PayoutRequest::new(
        PayoutId::parse(id).unwrap(),
        Destination::parse(DEST).unwrap(),
        Asset::Native,
        Amount::parse(amount).unwrap(),
        None,
    )
}
