//! `payoutd bench`: figures, not assertions. Runs the payout core in-process and prints
//! throughput and memory:
//! - `dups`: duplicate messages per second absorbed by one live actor (no database write);
//! - `payouts`: N payouts accept → confirmed with passivation on, over the in-memory journal
//!   or a real PostgreSQL journal, then the peak RSS of the process.
//!
//! The ledger is the in-memory fake (no network latency).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use payoutd_actors::domain::{
    AccountId, Amount, Asset, Destination, Memo, PayoutId, PayoutRequest,
};
use payoutd_actors::memory::{MemJournal, MemLedger};
use payoutd_actors::metrics::Metrics;
use payoutd_actors::ports::{Journal, Ledger};
use payoutd_actors::{Context, PayoutPolicy, Payouts, SubmitAnswer, SupervisorConfig};

const DEST: &str = "GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2";

/// Peak resident set size of this process in KiB (Linux `VmHWM`), if known.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Current resident set size in KiB (`VmRSS`).
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn request(id: &str) -> PayoutRequest {
    // Both parse calls take constants that are valid by construction.
    PayoutRequest::new(
        PayoutId::parse(id).expect("bench ids are valid"),
        Destination::parse(DEST).expect("constant destination is valid"),
        Asset::Native,
        Amount::from_stroops(10_000_000).expect("positive"),
        Memo::None,
    )
}

pub fn channels(n: u32) -> Vec<AccountId> {
    (0..n)
        .map(|i| {
            let mut key = [7u8; 32];
            key[..4].copy_from_slice(&i.to_be_bytes());
            AccountId::from_bytes(key)
        })
        .collect()
}

fn policy(idle_passivate_ms: u64) -> PayoutPolicy {
    let mut p = PayoutPolicy::new(AccountId::from_bytes([1; 32]));
    p.idle_passivate_ms = idle_passivate_ms;
    p.channel_wait_ms = 1_000;
    p.poll_interval_ms = 10;
    p.io_retry_ms = 10;
    p
}

async fn start(
    journal: Arc<dyn Journal>,
    ledger: Arc<dyn Ledger>,
    idle_ms: u64,
    live_max: usize,
) -> Result<(Payouts, Arc<Metrics>), String> {
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context {
        journal,
        ledger,
        policy: policy(idle_ms),
        metrics: metrics.clone(),
    });
    let config = SupervisorConfig {
        live_actors_max: live_max,
        ..SupervisorConfig::default()
    };
    let (payouts, _) = Payouts::start(ctx, config, 60_000)
        .await
        .map_err(|e| e.to_string())?;
    Ok((payouts, metrics))
}

/// Runs `tasks` concurrent callers, each awaiting `job(task, i)` for `i` in `0..per_task` one
/// after another; the first error stops the bench. Returns how many jobs ran.
async fn fan_out<F, Fut>(tasks: u64, per_task: u64, job: F) -> Result<u64, String>
where
    F: Fn(u64, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let job = job.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    job(t, i).await?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for h in handles {
        h.await.map_err(|e| e.to_string())??;
    }
    Ok(tasks * per_task)
}

/// Duplicate messages per second absorbed by one live actor.
pub async fn dups(messages: u64, concurrency: u64) -> Result<(), String> {
    let chans = channels(1);
    let journal = Arc::new(MemJournal::with_channels(&chans));
    let (payouts, metrics) = start(
        journal.clone(),
        Arc::new(MemLedger::new(&chans)),
        600_000,
        10,
    )
    .await?;
    let req = request("bench-dup");
    payouts
        .submit(req.clone())
        .await
        .map_err(|e| e.to_string())?;
    while metrics.confirmed.load(Ordering::Relaxed) < 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let writes_before = journal.writes.load(Ordering::SeqCst);
    let started = Instant::now();
    let total = fan_out(concurrency, messages / concurrency, move |_, _| {
        let (p, r) = (payouts.clone(), req.clone());
        async move {
            match p.submit(r).await {
                Ok(SubmitAnswer::Duplicate(_)) => Ok(()),
                other => Err(format!("unexpected answer: {other:?}")),
            }
        }
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "bench dups: {total} duplicate submissions to one live actor, {concurrency} concurrent callers"
    );
    println!("  {:.0} duplicates/s   ({secs:.2} s)", total as f64 / secs);
    println!(
        "  journal writes during the run: {}",
        journal.writes.load(Ordering::SeqCst) - writes_before
    );
    Ok(())
}

/// N payouts accept → confirmed with passivation on; peak RSS at the end.
pub async fn payouts(
    journal: Arc<dyn Journal>,
    label: &str,
    count: u64,
    concurrency: u64,
    idle_ms: u64,
    chans: &[AccountId],
) -> Result<(), String> {
    let ledger = Arc::new(MemLedger::new(chans));
    let (payouts, metrics) = start(journal, ledger.clone(), idle_ms, 100_000).await?;
    let rss_start = rss_kib().unwrap_or(0);
    let started = Instant::now();
    let submitter = payouts.clone();
    let total = fan_out(concurrency, count / concurrency, move |t, i| {
        let p = submitter.clone();
        async move {
            let id = format!("bench-{t}-{i}");
            loop {
                match p.submit(request(&id)).await {
                    Ok(_) => return Ok(()),
                    Err(payoutd_actors::PayoutError::Overloaded) => {
                        tokio::time::sleep(Duration::from_millis(5)).await
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
    })
    .await?;
    let accepted_secs = started.elapsed().as_secs_f64();
    let mut last_report = Instant::now();
    while metrics.confirmed.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  … {} / {total} confirmed",
                metrics.confirmed.load(Ordering::Relaxed)
            );
            last_report = Instant::now();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    // Let idle actors passivate, then read the live count.
    tokio::time::sleep(Duration::from_millis(idle_ms * 3 + 1_500)).await;
    println!(
        "bench payouts ({label} journal, in-memory ledger): {total} payouts, {concurrency} concurrent callers, {} channels",
        chans.len()
    );
    println!(
        "  accepted in {accepted_secs:.2} s; all confirmed in {secs:.2} s = {:.0} payouts/s end to end",
        total as f64 / secs
    );
    println!(
        "  ledger submissions: {}",
        ledger.submissions.load(Ordering::SeqCst)
    );
    println!(
        "  live actors after passivation ({idle_ms} ms idle): {}; actors spawned: {}",
        metrics.live_actors.load(Ordering::Relaxed),
        metrics.actors_spawned.load(Ordering::Relaxed)
    );
    println!(
        "  RSS at start {} MiB, now {} MiB, peak {} MiB",
        rss_start / 1024,
        rss_kib().unwrap_or(0) / 1024,
        peak_rss_kib().unwrap_or(0) / 1024
    );
    payouts.shutdown(5_000).await;
    Ok(())
}

/// The commit rate plain PostgreSQL reaches here with one commit per write: `count` single-
/// row INSERTs, each its own transaction, from `connections` concurrent connections.
pub async fn naive_commit_rate(
    pool: &sqlx::PgPool,
    count: u64,
    connections: u64,
) -> Result<f64, String> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_naive (id bigserial PRIMARY KEY, payload text NOT NULL)",
    )
    .execute(pool)
    .await
    .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let pool = pool.clone();
    let total = fan_out(connections, count / connections, move |_, _| {
        let pool = pool.clone();
        async move {
            sqlx::query("INSERT INTO bench_naive (payload) VALUES ('x')")
                .execute(&pool)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await?;
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// The in-memory journal with `n` channels, for `payouts`.
pub fn memory_journal(chans: &[AccountId]) -> Arc<MemJournal> {
    Arc::new(MemJournal::with_channels(chans))
}

/// Starts a private PostgreSQL (fsync on) in a temp folder and returns it with a migrated pool.
pub async fn bench_postgres()
-> Result<(crate::pg::LocalPostgres, sqlx::PgPool, std::path::PathBuf), String> {
    let dir = std::env::temp_dir().join(format!("payoutd-bench-pg-{}", std::process::id()));
    let pg = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || crate::pg::LocalPostgres::start(&dir, true)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(32)
        .connect(&pg.url(crate::pg::DATABASE))
        .await
        .map_err(|e| e.to_string())?;
    crate::journal::migrate(&pool)
        .await
        .map_err(|e| e.to_string())?;
    Ok((pg, pool, dir))
}

/// The simulator-backed pipeline: PostgreSQL journal, the real Stellar adapter over HTTP,
/// the simulator closing a ledger per accepted submission. Accept → confirmed.
pub async fn pipeline(count: u64, concurrency: u64, channels: u32) -> Result<(), String> {
    use payoutd_simulator::{CloseMode, SimConfig, Simulator};
    use payoutd_stellar::{HorizonTimeouts, Keypair, Keyring, StellarLedger};
    let (pg, pool, dir) = bench_postgres().await?;
    let passphrase = "payoutd bench network";
    let sim = Simulator::new(SimConfig {
        network_passphrase: passphrase.into(),
        close_mode: CloseMode::Instant,
        base_reserve_stroops: 0,
        ..SimConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let handle = payoutd_simulator::spawn(sim.clone(), "127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let key = |label: String| {
        use sha2::{Digest, Sha256};
        let raw: [u8; 32] = Sha256::digest(label.as_bytes()).into();
        Keypair::from_seed(&payoutd_actors::strkey::encode(
            payoutd_actors::strkey::VERSION_SEED,
            &raw,
        ))
        .map_err(|e| e.to_string())
    };
    let mut ring = Keyring::new();
    let dist = key("bench distribution".into())?;
    let payer = dist.account();
    sim.create_account(&payer.to_strkey(), i64::MAX / 4)
        .map_err(|e| e.to_string())?;
    ring.insert(dist);
    let mut chans = Vec::new();
    for i in 0..channels {
        let c = key(format!("bench channel {i}"))?;
        sim.create_account(&c.account().to_strkey(), 1_000_000 * 10_000_000)
            .map_err(|e| e.to_string())?;
        chans.push(c.account());
        ring.insert(c);
    }
    sim.create_account(DEST, 10_000_000)
        .map_err(|e| e.to_string())?;
    let ledger = StellarLedger::connect(
        &handle.base_url,
        passphrase,
        ring,
        HorizonTimeouts {
            request_timeout_ms: 30_000,
            connect_timeout_ms: 2_000,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let journal = Arc::new(
        crate::journal::PgJournal::new(pool, &chans)
            .await
            .map_err(|e| e.to_string())?,
    );
    let metrics = Arc::new(Metrics::default());
    let mut policy = PayoutPolicy::new(payer);
    policy.idle_passivate_ms = 200;
    policy.channel_wait_ms = 2;
    policy.poll_interval_ms = 50;
    let ctx = Arc::new(Context {
        journal,
        ledger: Arc::new(ledger),
        policy,
        metrics: metrics.clone(),
    });
    let (payouts, _) = Payouts::start(ctx, SupervisorConfig::default(), 120_000)
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let submitter = payouts.clone();
    let total = fan_out(concurrency, count / concurrency, move |t, i| {
        let p = submitter.clone();
        async move {
            p.submit(request(&format!("pipe-{t}-{i}")))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await?;
    while metrics.confirmed.load(Ordering::Relaxed) + metrics.failed.load(Ordering::Relaxed) < total
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let payments = sim
        .payments(&payoutd_simulator::PaymentFilter {
            memo: None,
            destination: Some(DEST.into()),
        })
        .len();
    println!(
        "bench pipeline: {total} payouts over HTTP to the simulator (instant close), PostgreSQL journal (fsync on), {channels} channels, {concurrency} callers"
    );
    println!(
        "  {:.0} payouts/s confirmed end to end ({secs:.2} s)",
        total as f64 / secs
    );
    println!(
        "  confirmed {}, failed {}, payments on the ledger {payments}",
        metrics.confirmed.load(Ordering::Relaxed),
        metrics.failed.load(Ordering::Relaxed)
    );
    payouts.shutdown(5_000).await;
    handle.shutdown().await;
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// HTTP requests per second against the whole application (built-in simulator, private
/// PostgreSQL): new payouts, then duplicates of them.
pub async fn http(count: u64, concurrency: u64) -> Result<(), String> {
    let (pg, pool, dir) = bench_postgres().await?;
    let state = dir.join("sim.json").display().to_string();
    let env = [
        ("PAYOUTD__SERVER__LISTEN", "127.0.0.1:0"),
        ("PAYOUTD__LEDGER__SIMULATOR__LISTEN", "127.0.0.1:0"),
        ("PAYOUTD__LEDGER__SIMULATOR__CLOSE_INTERVAL_MS", "1000"),
        ("PAYOUTD__LEDGER__SIMULATOR__CHANNELS", "64"),
        ("PAYOUTD__LEDGER__SIMULATOR__STATE_FILE", state.as_str()),
        ("PAYOUTD__TELEMETRY__LOG_LEVEL", "warn"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect::<Vec<_>>();
    let settings = crate::config::Settings::load(None, env).map_err(|e| e.to_string())?;
    let app = crate::app::Application::build_with_pool(settings, pool, None)
        .await
        .map_err(|e| e.to_string())?;
    let base = format!("http://127.0.0.1:{}/v1/payouts", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency as usize)
        .build()
        .map_err(|e| e.to_string())?;
    for (label, expect) in [("new payouts", 202u16), ("duplicates", 200u16)] {
        let started = Instant::now();
        let (client, base) = (client.clone(), base.clone());
        let total = fan_out(concurrency, count / concurrency, move |t, i| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let body = serde_json::json!({ "payout_id": format!("http-{t}-{i}"), "destination": DEST, "asset": "native", "amount": "1" });
                let resp = client.post(&base).json(&body).send().await.map_err(|e| e.to_string())?;
                if resp.status().as_u16() != expect {
                    return Err(format!("status {} (expected {expect})", resp.status()));
                }
                Ok(())
            }
        })
        .await?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "bench http {label}: {total} POST /v1/payouts, {concurrency} connections: {:.0} requests/s ({secs:.2} s)",
            total as f64 / secs
        );
    }
    let _ = stop.send(());
    let _ = server.await;
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
