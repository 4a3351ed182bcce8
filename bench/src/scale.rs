//! Scale: resident memory across a million payouts (idle payout actors passivate, the
//! queue holds what waits), and recovery after `kill -9` of a payoutd process with
//! 100,000 payouts in flight.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{BenchResult, DEST, Database, err};
use crate::http::tempdir::TempDir;

#[derive(Debug, Clone, Default)]
pub struct Recovery {
    pub in_flight: u64,
    /// From the restarted process's start until it answers HTTP: the queue is refilled
    /// from the journal by then (recovery runs before the listener opens).
    pub ready_s: f64,
    /// Payouts back under the service's control (queued, or in envelopes being driven).
    pub recovered: u64,
    /// Until the first 1,000 of them were paid, with ledgers closing again.
    pub first_thousand_paid_s: f64,
}

fn payoutd_binary() -> BenchResult<std::path::PathBuf> {
    let exe = std::env::current_exe().map_err(err)?;
    let bin = exe.with_file_name("payoutd");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: build it first (cargo build --release -p payoutd)",
            bin.display()
        ))
    }
}

fn spawn_payoutd(
    db: &Database,
    dir: &TempDir,
    port: u16,
    close_interval_ms: u64,
) -> BenchResult<tokio::process::Child> {
    let bin = payoutd_binary()?;
    tokio::process::Command::new(bin)
        .arg("serve")
        .env("PAYOUTD__DATABASE__URL", &db.url)
        .env("PAYOUTD__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("PAYOUTD__CLUSTER__INSTANCE_ID", "bench-recovery")
        .env(
            "PAYOUTD__LEDGER__SIMULATOR__STATE_FILE",
            dir.0.join("simulator.json"),
        )
        .env(
            "PAYOUTD__LEDGER__SIMULATOR__CLOSE_INTERVAL_MS",
            close_interval_ms.to_string(),
        )
        .env("PAYOUTD__PAYOUTS__LIVE_ACTORS_MAX", "1000000")
        .env("PAYOUTD__PAYOUTS__IDLE_PASSIVATE_MS", "1000")
        .env("PAYOUTD__INBOX__ENABLED", "false")
        .env("PAYOUTD__TELEMETRY__LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(err)
}

async fn wait_http(client: &reqwest::Client, url: &str) -> BenchResult<()> {
    for _ in 0..6_000 {
        if client
            .get(format!("{url}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err("payoutd did not answer within 30 s".into())
}

async fn count(pool: &sqlx::PgPool, sql: &'static str) -> BenchResult<i64> {
    sqlx::query_scalar(sql).fetch_one(pool).await.map_err(err)
}

/// The payouts the service is done with (what the recovery bench counts back in hand once
/// they finish after the restart).
const FINISHED: &str = "SELECT count(*) FROM payouts WHERE state IN ('confirmed','failed')";

/// How long the recovery bench reads the payouts back in hand again until they add up
/// (see `recovery`), in ms.
const RECOVERY_COUNT_WAIT_MS: u64 = 2_000;

// Long because: one measured scenario: load, kill -9, restart, and the clock from restart
// to the last recovered payout
pub async fn recovery(in_flight: u64) -> BenchResult<Recovery> {
    let db = Database::start("recovery").await?;
    let pool = db.pool(4).await?;
    let dir = TempDir::new("recovery")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(err)?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    // Life 1: no ledger closes, so everything accepted stays in flight.
    let mut child = spawn_payoutd(&db, &dir, port, 3_600_000)?;
    wait_http(&client, &url).await?;
    let per = 1_000u64;
    for b in 0..in_flight / per {
        let items: Vec<_> = (0..per)
            .map(|i| serde_json::json!({ "payout_id": format!("rec-{}", b * per + i), "destination": DEST, "asset": "native", "amount": "1" }))
            .collect();
        let r = client
            .post(format!("{url}/v1/payouts/batch"))
            .json(&serde_json::json!({ "payouts": items }))
            .send()
            .await
            .map_err(err)?;
        if !r.status().is_success() {
            return Err(format!("batch refused: HTTP {}", r.status()));
        }
    }
    let accepted = count(&pool, "SELECT count(*) FROM payouts").await?;
    // kill -9
    child.start_kill().map_err(err)?;
    let _ = child.wait().await;
    let unfinished = count(
        &pool,
        "SELECT count(*) FROM payouts WHERE state IN ('accepted','prepared','submitted')",
    )
    .await?;
    let finished_at_kill = count(&pool, FINISHED).await?;
    // Life 2: ledgers close every second again.
    let started = Instant::now();
    let mut child = spawn_payoutd(&db, &dir, port, 1_000)?;
    wait_http(&client, &url).await?;
    let ready_s = started.elapsed().as_secs_f64();
    // Back in hand: in the ready queue, in an envelope, or already finished since the
    // restart (ledgers close every second, so the first batches settle before this reads).
    // A batch a channel worker has taken but not yet journaled is in none of them for a
    // moment (no metric counts it), so they are read again until they add up, for at most
    // RECOVERY_COUNT_WAIT_MS.
    let deadline = Instant::now() + Duration::from_millis(RECOVERY_COUNT_WAIT_MS);
    let recovered = loop {
        let metrics = client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .map_err(err)?
            .text()
            .await
            .map_err(err)?;
        let queued = metrics
            .lines()
            .find_map(|l| l.strip_prefix("payoutd_ready_queue "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let in_envelopes = count(
            &pool,
            "SELECT count(*) FROM payouts WHERE state IN ('prepared','submitted')",
        )
        .await?;
        let finished = count(&pool, FINISHED).await? - finished_at_kill;
        let recovered = queued + (in_envelopes + finished) as u64;
        if recovered >= unfinished as u64 || Instant::now() >= deadline {
            break recovered;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut first = f64::NAN;
    for _ in 0..12_000 {
        let paid = count(
            &pool,
            "SELECT count(*) FROM payouts WHERE state = 'confirmed'",
        )
        .await?;
        if paid >= 1_000 {
            first = started.elapsed().as_secs_f64();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.start_kill().map_err(err)?;
    let _ = child.wait().await;
    let _ = accepted;
    Ok(Recovery {
        in_flight: unfinished as u64,
        ready_s,
        recovered,
        first_thousand_paid_s: first,
    })
}
