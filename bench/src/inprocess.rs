//! In-process, PostgreSQL with fsync on: payouts accept → confirmed through the real core
//! (payout actors, group-committed accepts, channel workers, batches, the Postgres
//! journal) over the in-memory ledger (no network latency), beside plain PostgreSQL's
//! single-row commit rate at the same connection count, and the CPU each of them takes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use payoutd::storage::{AcceptBatching, PgJournal};
use payoutd_actors::memory::MemLedger;
use payoutd_actors::metrics::Metrics;
use payoutd_actors::queue::ReadyQueue;
use payoutd_actors::{
    ClusterConfig, Context, PayoutPolicy, Payouts, ServiceConfig, SupervisorConfig,
};

use crate::common::{
    BenchResult, CpuUs, Database, POOL_CONNECTIONS, channels, counters, cpu_ms, err, latencies,
    plain_commit_rate, request, reset_statements, rss_kib, top_statements,
};

#[derive(Debug, Clone)]
pub struct Options {
    pub count: u64,
    pub concurrency: u64,
    pub channels: u32,
    pub payments_per_tx_max: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub count: u64,
    pub payments_per_tx_max: usize,
    pub payouts_per_s: f64,
    pub plain_commits_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub commits_per_payout: f64,
    pub rows_per_payout: f64,
    pub wal_bytes_per_payout: f64,
    pub wal_fpi_per_payout: f64,
    /// The share of `payouts` row updates that were HOT, in percent.
    pub hot_update_pct: f64,
    /// CPU per payout: PostgreSQL's, and this process's (payoutd's core with the
    /// in-memory ledger and the load); and the same two per plain commit.
    pub cpu_per_payout: CpuUs,
    pub cpu_per_plain_commit: CpuUs,
    pub envelopes: u64,
    /// Where PostgreSQL spent its time (pg_stat_statements).
    pub top_statements: Vec<String>,
    /// (payouts confirmed, resident memory in KiB) at every tenth of the run.
    pub rss_kib: Vec<(u64, u64)>,
    pub live_actors_at_end: i64,
}

/// Closed ledgers of transactions the in-memory ledger keeps (a real node prunes too); it
/// would otherwise hold every transaction of the run, and the memory figure would measure
/// the stand-in network rather than payoutd.
pub const LEDGER_RETENTION_LEDGERS: u32 = 1_000;

/// The instance name the in-process runs journal as owner: `PAYOUTD_BENCH_INSTANCE`, or
/// `bench`. A deployment's default is its host name and port (`payoutd-7d9f8b6c4-x2k9p:8080`
/// in a Kubernetes pod); the name is stored in the payout rows, so its length moves the
/// share of HOT updates.
fn instance() -> String {
    std::env::var("PAYOUTD_BENCH_INSTANCE").unwrap_or_else(|_| "bench".to_owned())
}

/// Single-row commits of the plain PostgreSQL figure.
pub const PLAIN_COMMITS: u64 = 20_000;

pub fn policy(ppt: usize) -> PayoutPolicy {
    let mut p = PayoutPolicy::new(payoutd_actors::domain::AccountId::from_bytes([1; 32]));
    p.payments_per_tx_max = ppt;
    p.batch_linger_ms = 10;
    p.poll_interval_ms = 50;
    p.io_retry_ms = 50;
    p.idle_passivate_ms = 1_000;
    // The in-memory ledger's clock moves 5 s per closed ledger, and with every channel
    // closing ledgers back to back an hour passes in seconds: envelopes must outlive that.
    p.tx_validity_s = 3_600;
    p
}

// Long because: one measured run: the setup, the timed load with RSS samples taken while it
// runs, and the figures read right after it; cut apart, the timing would span functions
pub async fn run(o: &Options) -> BenchResult<Figures> {
    let db = Database::start("inprocess").await?;
    let pool = db.pool(POOL_CONNECTIONS).await?;
    let cpu_plain = cpu_ms(&db);
    let plain = plain_commit_rate(&pool, PLAIN_COMMITS, u64::from(POOL_CONNECTIONS)).await?;
    let cpu_per_plain_commit = cpu_ms(&db).us_each(cpu_plain, PLAIN_COMMITS);
    let chans = channels(o.channels);
    let payer = payoutd_actors::domain::AccountId::from_bytes([1; 32]);
    let ledger = Arc::new(
        MemLedger::new(&[chans.clone(), vec![payer]].concat())
            .without_payment_log()
            .with_history_retention(LEDGER_RETENTION_LEDGERS),
    );
    let journal = Arc::new(PgJournal::with_options(
        pool.clone(),
        false,
        AcceptBatching::default(),
    ));
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context::new(
        journal,
        ledger,
        policy(o.payments_per_tx_max),
        metrics.clone(),
        instance(),
        Arc::new(ReadyQueue::new(1_000_000)),
    ));
    let config = ServiceConfig {
        supervisor: SupervisorConfig {
            live_actors_max: 1_000_000,
            ..SupervisorConfig::default()
        },
        cluster: ClusterConfig::default(),
        call_timeout_ms: 60_000,
        channels: chans,
    };
    let payouts = Payouts::start(ctx, config).await.map_err(err)?;
    let before = counters(&pool).await?;
    reset_statements(&pool).await?;
    let cpu_before = cpu_ms(&db);
    let started = Instant::now();
    let per = o.count / o.concurrency;
    let total = per * o.concurrency;
    let tasks: Vec<_> = (0..o.concurrency)
        .map(|t| {
            let payouts = payouts.clone();
            tokio::spawn(async move {
                for i in 0..per {
                    payouts
                        .submit(request(&format!("b{t}-{i}")))
                        .await
                        .map_err(err)?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    // Resident memory at every tenth of the run (while payouts still arrive).
    let mut rss = Vec::new();
    let step = (total / 10).max(1);
    let mut next_sample = step;
    loop {
        let done = Metrics::get(&metrics.confirmed);
        if done >= next_sample {
            rss.push((done, rss_kib().unwrap_or(0)));
            next_sample += step;
        }
        if done >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for t in tasks {
        t.await.map_err(err)??;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_after = cpu_ms(&db);
    let after = counters(&pool).await?;
    let (p50, p99, max) = latencies(&pool).await?;
    let top = top_statements(&pool, 8).await?;
    payouts.shutdown(5_000).await;
    Ok(Figures {
        count: total,
        payments_per_tx_max: o.payments_per_tx_max,
        payouts_per_s: total as f64 / secs,
        plain_commits_per_s: plain,
        p50_ms: p50,
        p99_ms: p99,
        max_ms: max,
        commits_per_payout: (after.commits - before.commits) as f64 / total as f64,
        rows_per_payout: (after.rows - before.rows) as f64 / total as f64,
        wal_bytes_per_payout: (after.wal_bytes - before.wal_bytes) as f64 / total as f64,
        wal_fpi_per_payout: (after.wal_fpi - before.wal_fpi) as f64 / total as f64,
        hot_update_pct: 100.0 * (after.payout_hot_updates - before.payout_hot_updates) as f64
            / ((after.payout_updates - before.payout_updates) as f64).max(1.0),
        cpu_per_payout: cpu_after.us_each(cpu_before, total),
        cpu_per_plain_commit,
        envelopes: metrics.envelopes_built.load(Ordering::Relaxed),
        top_statements: top,
        rss_kib: rss,
        live_actors_at_end: metrics.live_actors.load(Ordering::Relaxed),
    })
}
