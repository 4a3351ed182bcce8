//! One test's world: a fresh database in the shared test cluster, the ledger simulator as a
//! process of its own (Horizon over HTTP, faults switched at runtime), the run's accounts
//! funded on it, and any number of payoutd processes (Horizon mode, seeds only in their
//! environment) sharing that database. Plus the HTTP calls the tests make and a bounded
//! wait for conditions.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::keys::{Accounts, Key, Shape, accounts_of, seeds_of};
use crate::support::pg::fresh_empty_db;
use crate::support::procs::{Service, SimOptions, SimulatorProcess, binary_under_test, free_port};
use crate::support::simadmin::SimAdmin;

/// The keys of this binary's runs derive from this, the run seed and a label.
const KEY_NAMESPACE: &str = "payoutd cluster tests";

/// An instance's heartbeat interval, heartbeat lifetime and sweep interval, in milliseconds:
/// a dead instance's work is taken over within `TTL_MS + SWEEP_MS`.
pub const HEARTBEAT_MS: u64 = 200;
pub const TTL_MS: u64 = 1_000;
pub const SWEEP_MS: u64 = 300;

pub struct WorldOptions {
    /// Names the run folder.
    pub name: &'static str,
    /// Seeds the accounts, the payouts and the simulator's fault draws.
    pub seed: u64,
    pub close_interval_ms: u64,
    pub submit_wait_ms: u64,
    pub channels: usize,
    pub destinations: usize,
}

pub struct World {
    pub dir: PathBuf,
    pub pool: PgPool,
    db_url: String,
    passphrase: String,
    bin: PathBuf,
    pub sim: SimAdmin,
    /// Killed when the world is dropped.
    simulator: Option<SimulatorProcess>,
    horizon_url: String,
    pub accounts: Accounts,
    pub http: reqwest::Client,
    seed: u64,
}

impl World {
    pub async fn start(options: WorldOptions) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "payoutd-cluster-{}-{}-{}",
            options.name,
            options.seed,
            std::process::id()
        ));
        // A folder left by an earlier run of the same process id holds stale logs only.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let (pool, db_url) = fresh_empty_db().await;
        // Migrated once here, so that instances starting together do not race for it and
        // the test's own queries find the tables at once.
        payoutd::storage::migrate(&pool)
            .await
            .expect("the migrations apply to a fresh database");
        let passphrase = format!("payoutd cluster tests ; {} {}", options.name, options.seed);
        let bin = binary_under_test(&dir);
        let simulator = tokio::task::block_in_place(|| {
            SimulatorProcess::start(
                &bin,
                &dir,
                &SimOptions {
                    passphrase: &passphrase,
                    close_interval_ms: options.close_interval_ms,
                    submit_wait_ms: options.submit_wait_ms,
                    seed: options.seed,
                },
            )
        });
        let sim = SimAdmin::new(&simulator.base_url);
        let horizon_url = simulator.base_url.clone();
        let accounts = Accounts::derive(
            KEY_NAMESPACE,
            options.seed,
            Shape {
                channels: options.channels,
                destinations: options.destinations,
                ghosts: 0,
            },
        );
        sim.fund(&accounts).await;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("an HTTP client with a timeout builds");
        Self {
            dir,
            pool,
            db_url,
            passphrase,
            bin,
            sim,
            simulator: Some(simulator),
            horizon_url,
            accounts,
            http,
            seed: options.seed,
        }
    }

    /// A payoutd process named `id` (`cluster.instance_id`) holding the distribution seed
    /// and the seeds of `channels` only; `tuning` overrides or adds settings.
    pub fn instance(&self, id: &str, channels: &[Key], tuning: &[(&str, &str)]) -> Instance {
        let port = free_port();
        let mut env: BTreeMap<String, String> = [
            ("PAYOUTD__SERVER__LISTEN", format!("127.0.0.1:{port}")),
            ("PAYOUTD__SERVER__REQUEST_TIMEOUT_MS", "5000".into()),
            // Named, so that a test can see when a killed instance's sessions are gone.
            (
                "PAYOUTD__DATABASE__URL",
                format!("{}?application_name={id}", self.db_url),
            ),
            ("PAYOUTD__DATABASE__CONNECT_TIMEOUT_MS", "2000".into()),
            // Three instances and the test share one test cluster.
            ("PAYOUTD__DATABASE__CONNECTIONS_MAX", "8".into()),
            ("PAYOUTD__LEDGER__MODE", "horizon".into()),
            ("PAYOUTD__LEDGER__HORIZON_URL", self.horizon_url.clone()),
            (
                "PAYOUTD__LEDGER__NETWORK_PASSPHRASE",
                self.passphrase.clone(),
            ),
            ("PAYOUTD__LEDGER__REQUEST_TIMEOUT_MS", "4000".into()),
            (
                "PAYOUTD__LEDGER__DISTRIBUTION_SEED",
                self.accounts.distribution.seed.clone(),
            ),
            ("PAYOUTD__LEDGER__CHANNEL_SEEDS", seeds_of(channels)),
            ("PAYOUTD__LEDGER__CHANNEL_ACCOUNTS", accounts_of(channels)),
            ("PAYOUTD__PAYOUTS__POLL_INTERVAL_MS", "100".into()),
            ("PAYOUTD__PAYOUTS__IO_RETRY_MS", "100".into()),
            ("PAYOUTD__PAYOUTS__BATCH_LINGER_MS", "20".into()),
            ("PAYOUTD__PAYOUTS__CALL_TIMEOUT_MS", "5000".into()),
            ("PAYOUTD__CLUSTER__INSTANCE_ID", id.to_owned()),
            (
                "PAYOUTD__CLUSTER__HEARTBEAT_INTERVAL_MS",
                HEARTBEAT_MS.to_string(),
            ),
            ("PAYOUTD__CLUSTER__INSTANCE_TTL_MS", TTL_MS.to_string()),
            (
                "PAYOUTD__CLUSTER__ORPHAN_SWEEP_INTERVAL_MS",
                SWEEP_MS.to_string(),
            ),
            // Not what these tests are about; it would hold two connections per instance.
            ("PAYOUTD__INBOX__ENABLED", "false".into()),
            ("PAYOUTD__TELEMETRY__LOG_LEVEL", "info".into()),
            // Plain text in the log file.
            ("NO_COLOR", "1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (key, value) in tuning {
            env.insert((*key).to_owned(), (*value).to_owned());
        }
        let log = self.dir.join(format!("payoutd-{id}.log"));
        Instance {
            id: id.to_owned(),
            channels: channels.iter().map(|k| k.id()).collect(),
            service: Service::new(&self.bin, env.into_iter().collect(), port, log),
        }
    }

    /// `n` payout requests `{prefix}-000`…, native XLM of seeded amounts to the run's
    /// destinations in turn.
    pub fn payouts(&self, prefix: &str, n: usize) -> Vec<Value> {
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x9a70);
        (0..n)
            .map(|i| {
                let destination = &self.accounts.destinations[i % self.accounts.destinations.len()];
                let whole: u32 = rng.random_range(1..=20);
                let fraction: u32 = rng.random_range(0..10_000_000);
                json!({
                    "payout_id": format!("{prefix}-{i:03}"),
                    "destination": destination.key.id(),
                    "asset": "native",
                    "amount": format!("{whole}.{fraction:07}"),
                })
            })
            .collect()
    }

    /// `POST /v1/payouts`: the status and the body.
    pub async fn post(&self, base: &str, body: &Value) -> (u16, Value) {
        let url = format!("{base}/v1/payouts");
        let response = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        answer(response, &url).await
    }

    /// `GET /v1/payouts/{id}`: the status and the body.
    pub async fn get(&self, base: &str, id: &str) -> (u16, Value) {
        let url = format!("{base}/v1/payouts/{id}");
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        answer(response, &url).await
    }

    /// Payouts of `ids` per journaled state.
    pub async fn states(&self, ids: &[String]) -> BTreeMap<String, usize> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, count(*) FROM payouts WHERE payout_id = ANY($1) GROUP BY state",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .expect("read payout states");
        rows.into_iter().map(|(s, n)| (s, n as usize)).collect()
    }

    /// True when every one of `ids` is journaled and terminal.
    pub async fn all_terminal(&self, ids: &[String]) -> bool {
        let states = self.states(ids).await;
        let terminal: usize = ["confirmed", "failed", "parked", "cancelled"]
            .iter()
            .filter_map(|s| states.get(*s))
            .sum();
        terminal == ids.len()
    }

    /// Envelopes journaled as live (they may still apply, or their fate is not known yet).
    pub async fn live_envelopes(&self) -> u64 {
        self.count("SELECT count(*) FROM envelopes WHERE status = 'live'")
            .await
    }

    /// Envelopes journaled as provably dead.
    pub async fn dead_envelopes(&self) -> u64 {
        self.count("SELECT count(*) FROM envelopes WHERE status = 'dead'")
            .await
    }

    async fn count(&self, sql: &'static str) -> u64 {
        let n: i64 = sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect("count envelopes");
        u64::try_from(n).unwrap_or(0)
    }
}

impl Drop for World {
    /// Removes the run folder after a passing test; keeps it (logs, simulator state) when
    /// the test failed. The payoutd processes are the test's and are gone by now.
    fn drop(&mut self) {
        drop(self.simulator.take());
        if std::thread::panicking() {
            eprintln!("run folder kept: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

async fn answer(response: reqwest::Response, url: &str) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("{url}: unreadable answer: {e}"));
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// A payoutd process of the world.
pub struct Instance {
    pub id: String,
    /// The channel accounts it holds the keys of.
    pub channels: Vec<String>,
    pub service: Service,
}

impl Instance {
    pub fn url(&self) -> String {
        self.service.base_url()
    }

    /// Starts it and waits for `/healthz`.
    pub async fn start(&mut self, http: &reqwest::Client) {
        self.service.start();
        assert!(
            self.service.wait_ready(http).await,
            "payoutd {} did not start; see {}",
            self.id,
            self.service.log_path().display()
        );
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.service.log_path()).unwrap_or_default()
    }

    /// `GET /metrics`: the value of an unlabelled sample.
    pub async fn metric(&self, http: &reqwest::Client, name: &str) -> f64 {
        let url = format!("{}/metrics", self.url());
        let text = http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        text.lines()
            .find_map(|line| {
                let (key, value) = line.split_once(' ')?;
                (key == name).then(|| value.trim().parse::<f64>().ok())?
            })
            .unwrap_or_else(|| panic!("GET {url}: no sample {name}"))
    }
}

/// Awaits `cond`, polling every 50 ms; false when `timeout` passed first.
pub async fn wait_for<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends request `i` of `bodies` to `urls[i % urls.len()]`, `concurrency` at a time;
/// returns each answer's status in order.
pub async fn post_all(
    world: &World,
    bodies: &[Value],
    urls: &[String],
    concurrency: usize,
) -> Vec<u16> {
    use futures_util::StreamExt;
    futures_util::stream::iter(bodies.iter().enumerate())
        .map(|(i, body)| {
            let url = &urls[i % urls.len()];
            async move { world.post(url, body).await.0 }
        })
        .buffered(concurrency)
        .collect()
        .await
}
