//! Test harness: a real PostgreSQL (a shared throwaway cluster, a fresh database per test;
//! tests/support/pg.rs), the whole application on port 0 (`spawn_app`), and small helpers
//! to await conditions instead of sleeping blindly.

use std::sync::Arc;
use std::time::Duration;

use payoutd::app::{Application, DEMO_DESTINATION};
use payoutd::config::Settings;
use payoutd::storage::{PgJournal, migrate};
use payoutd_actors::domain::{AccountId, Amount, Asset, Destination, PayoutId, PayoutRequest};
use payoutd_actors::metrics::Metrics;
use payoutd_actors::ports::{Journal, Ledger, PayoutStore};
use payoutd_actors::queue::ReadyQueue;
use payoutd_actors::state::{PayoutRecord, PayoutState};
use payoutd_actors::{
    ClusterConfig, Context, PayoutPolicy, Payouts, ServiceConfig, SupervisorConfig,
};
use serde_json::{Value, json};
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
        queue_refill_interval_ms: 40,
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

// ---- The whole application on port 0 (fresh database, the built-in simulator closing
// ledgers on a short cadence), driven with a real HTTP client.

pub struct TestApp {
    pub base: String,
    /// The same application's router, to drive without a socket (`TestApp::call`).
    pub router: axum::Router,
    pub client: reqwest::Client,
    pub pool: sqlx::PgPool,
    pub token: Option<String>,
    /// The built-in simulator's Horizon URL.
    pub sim_url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    _state_dir: TempDir,
}

/// A temp folder removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("payoutd-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn spawn_app(extra_env: &[(&str, &str)]) -> TestApp {
    let state_dir = TempDir::new("http");
    let state_file = state_dir.0.join("sim.json").display().to_string();
    let mut env: Vec<(String, String)> = [
        ("PAYOUTD__SERVER__LISTEN", "127.0.0.1:0"),
        ("PAYOUTD__LEDGER__SIMULATOR__LISTEN", "127.0.0.1:0"),
        ("PAYOUTD__LEDGER__SIMULATOR__CLOSE_INTERVAL_MS", "50"),
        (
            "PAYOUTD__LEDGER__SIMULATOR__STATE_FILE",
            state_file.as_str(),
        ),
        ("PAYOUTD__PAYOUTS__POLL_INTERVAL_MS", "20"),
        ("PAYOUTD__PAYOUTS__BATCH_LINGER_MS", "5"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.extend(
        extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let token = extra_env
        .iter()
        .find(|(k, _)| *k == payoutd::config::ENV_API_TOKENS)
        .map(|(_, v)| v.split(',').next().unwrap().to_string());
    let settings = Settings::load(None, env).unwrap();
    let pool = fresh_db().await;
    let app = Application::build_with_pool(settings, pool.clone(), None)
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let router = app.router();
    let sim_url = app
        .simulator
        .as_ref()
        .map(|s| s.base_url.clone())
        .unwrap_or_default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        router,
        client: reqwest::Client::new(),
        pool,
        token,
        sim_url,
        _stop: stop,
        _state_dir: state_dir,
    }
}

impl TestApp {
    /// One request through the router itself, no socket: the status, headers and body.
    pub async fn call(
        &self,
        request: axum::http::Request<axum::body::Body>,
    ) -> (axum::http::StatusCode, axum::http::HeaderMap, Vec<u8>) {
        use tower::ServiceExt;
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.status, parts.headers, bytes.to_vec())
    }

    pub fn simulator_url(&self) -> &str {
        &self.sim_url
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.post(format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.get(format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// GET `path`: the status and the JSON body (null when it is not JSON).
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.get(path).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// GET `path`: the body as text.
    pub async fn get_text(&self, path: &str) -> String {
        self.get(path).send().await.unwrap().text().await.unwrap()
    }

    /// POST `body` as JSON to `path`: the status and the JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.post(path).json(body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn submit(&self, body: &Value) -> (u16, Value) {
        let resp = self.post("/v1/payouts").json(body).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn wait_state(&self, id: &str, state: &str) -> Value {
        for _ in 0..1_000 {
            let v: Value = self
                .get(&format!("/v1/payouts/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["state"] == state {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("payout {id} never reached {state}");
    }

    pub async fn payout_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM payouts")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

pub fn payout(id: &str, amount: &str) -> Value {
    json!({ "payout_id": id, "destination": DEMO_DESTINATION, "asset": "native", "amount": amount })
}
