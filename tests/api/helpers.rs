//! Test harness: a real PostgreSQL (a shared throwaway cluster, a fresh database per test;
//! tests/support/pg.rs) and small helpers to await conditions instead of sleeping blindly.

use std::sync::Arc;
use std::time::Duration;

use payoutd::journal::{PgJournal, migrate};
use payoutd_actors::domain::{AccountId, Amount, Asset, Destination, PayoutId, PayoutRequest};
use payoutd_actors::metrics::Metrics;
use payoutd_actors::ports::{Journal, Ledger, PayoutStore};
use payoutd_actors::queue::ReadyQueue;
use payoutd_actors::state::{PayoutRecord, PayoutState};
use payoutd_actors::{
    ClusterConfig, Context, PayoutPolicy, Payouts, ServiceConfig, SupervisorConfig,
};
use sqlx::postgres::PgPool;

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
    crate::test_pg::fresh_empty_db().await
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
