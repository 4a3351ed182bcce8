//! The crash harness: evidence for "never twice, never lost" (docs/guarantees.md).
//!
//! payoutd runs as a child process (`payoutd serve`, over Horizon or Stellar RPC: see
//! ledger_api.rs) against the ledger simulator in a process of its own (`payoutd simulator`) and a PostgreSQL cluster (fsync
//! on) that the harness starts. Payouts arrive over HTTP and NATS, most more than once, some
//! concurrently, while the harness kills payoutd with SIGKILL at seeded moments, switches
//! the simulator's faults, restarts PostgreSQL, and now and then runs a second payoutd
//! beside the first on the same database. At the end every accepted payout must be
//! terminal and the ledger must agree with the journal: no payout paid twice, none lost.
//!
//! Short by default (CI); longer with `PAYOUTD_CRASH_PAYOUTS`, `PAYOUTD_CRASH_KILLS`,
//! `PAYOUTD_CRASH_SEED` (see config.rs). A failing run prints its seed and the command that
//! reruns the same schedule.

mod chaos;
mod config;
mod feeder;
mod ledger_api;
#[path = "../support/mod.rs"]
mod support;
mod verify;
mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use sqlx::postgres::PgPoolOptions;

use crate::chaos::{Chaos, ChaosStats};
use crate::config::{
    CHANNELS, CLOSE_INTERVAL_MS, DESTINATIONS, GHOSTS, KEY_NAMESPACE, RunConfig, SUBMIT_WAIT_MS,
    TX_VALIDITY_S,
};
use crate::feeder::{FeedStats, Ingresses};
use crate::support::keys::{Accounts, Shape};
use crate::support::procs::{
    Database, NatsProcess, Service, SimOptions, SimulatorProcess, binary_under_test, free_port,
};
use crate::support::simadmin::SimAdmin;
use crate::verify::Verdict;
use crate::workload::{PayoutSpec, Via};

/// payoutd's environment: Horizon mode against the simulator, the harness's database, the
/// seeds (only here, never on a command line), and short timers so the run is fast.
fn service_env(
    port: u16,
    database_url: &str,
    horizon_url: &str,
    nats_url: &str,
    passphrase: &str,
    accounts: &Accounts,
) -> Vec<(String, String)> {
    let pairs: [(&str, String); 29] = [
        ("PAYOUTD__SERVER__LISTEN", format!("127.0.0.1:{port}")),
        ("PAYOUTD__SERVER__REQUEST_TIMEOUT_MS", "5000".into()),
        ("PAYOUTD__DATABASE__URL", database_url.into()),
        ("PAYOUTD__DATABASE__CONNECT_TIMEOUT_MS", "2000".into()),
        ("PAYOUTD__LEDGER__MODE", "horizon".into()),
        ("PAYOUTD__LEDGER__HORIZON_URL", horizon_url.into()),
        ("PAYOUTD__LEDGER__NETWORK_PASSPHRASE", passphrase.into()),
        ("PAYOUTD__LEDGER__REQUEST_TIMEOUT_MS", "4000".into()),
        (
            "PAYOUTD__LEDGER__DISTRIBUTION_SEED",
            accounts.distribution.seed.clone(),
        ),
        ("PAYOUTD__LEDGER__CHANNEL_SEEDS", accounts.channel_seeds()),
        ("PAYOUTD__PAYOUTS__TX_VALIDITY_S", TX_VALIDITY_S.to_string()),
        ("PAYOUTD__PAYOUTS__POLL_INTERVAL_MS", "100".into()),
        ("PAYOUTD__PAYOUTS__IO_RETRY_MS", "100".into()),
        ("PAYOUTD__PAYOUTS__BATCH_LINGER_MS", "25".into()),
        ("PAYOUTD__PAYOUTS__UNDERFUNDED_RETRY_MS", "1000".into()),
        // Expiry under faults rebuilds often; parking is not what this run is about.
        ("PAYOUTD__PAYOUTS__ATTEMPTS_MAX", "1000".into()),
        ("PAYOUTD__PAYOUTS__CALL_TIMEOUT_MS", "5000".into()),
        ("PAYOUTD__NATS__ENABLED", "true".into()),
        ("PAYOUTD__NATS__URL", nats_url.into()),
        // No outbox: batch steps are logged one row per step (the second instance turns it
        // on, see below).
        ("PAYOUTD__NATS__OUTBOX__ENABLED", "false".into()),
        // A message a killed payoutd held unacknowledged comes back this soon.
        ("PAYOUTD__NATS__ACK_WAIT_MS", "2000".into()),
        ("PAYOUTD__NATS__FETCH_WAIT_MS", "500".into()),
        ("PAYOUTD__NATS__RETRY_DELAY_MS", "200".into()),
        ("PAYOUTD__NATS__RECONNECT_DELAY_MAX_MS", "1000".into()),
        ("PAYOUTD__TELEMETRY__LOG_LEVEL", "info".into()),
        // A killed twin's payouts are adopted soon (the main instance keeps its name across
        // restarts and recovers its own at once).
        ("PAYOUTD__CLUSTER__HEARTBEAT_INTERVAL_MS", "200".into()),
        ("PAYOUTD__CLUSTER__INSTANCE_TTL_MS", "1000".into()),
        ("PAYOUTD__CLUSTER__ORPHAN_SWEEP_INTERVAL_MS", "300".into()),
        // Plain text in the log file.
        ("NO_COLOR", "1".into()),
    ];
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The subject the harness publishes payout requests on (inside `nats.subjects`).
const NATS_SUBJECT: &str = "payouts.requests.crash";

/// Creates the request stream exactly as payoutd would (from the same settings), so that
/// publishing can start before payoutd's consumer is up, and returns a JetStream context.
async fn request_stream(env: &[(String, String)]) -> async_nats::jetstream::Context {
    let settings = payoutd::config::Settings::load(None, env.iter().cloned())
        .expect("the harness's settings for payoutd are valid");
    let client = payoutd::nats::connect(&settings.nats)
        .await
        .expect("connect to the harness's nats-server");
    let js = payoutd::nats::jetstream(client, &settings.nats);
    payoutd::nats::ensure_stream(&js, payoutd::nats::request_stream_config(&settings.nats))
        .await
        .expect("create the request stream");
    js
}

/// Under the temp dir, which the `postgres` user can reach when tests run as root.
fn run_dir(seed: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("payoutd-crash-{seed}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_are_paid_exactly_once_across_crashes_and_faults() {
    let cfg = RunConfig::from_env();
    let started = Instant::now();
    println!(
        "crash harness: seed {} ({} mode): {} payouts, {} kills, {} PostgreSQL restarts\n  rerun: {}",
        cfg.seed,
        if cfg.long { "long" } else { "short" },
        cfg.payouts,
        cfg.kills,
        cfg.pg_restarts,
        cfg.rerun_command()
    );
    let dir = run_dir(cfg.seed);
    let mut db = tokio::task::block_in_place(|| Database::start(&dir.join("postgres")));
    let passphrase = format!("payoutd crash harness ; seed {}", cfg.seed);
    let bin = binary_under_test(&dir);
    let simulator = SimulatorProcess::start(
        &bin,
        &dir,
        &SimOptions {
            passphrase: &passphrase,
            close_interval_ms: CLOSE_INTERVAL_MS,
            submit_wait_ms: SUBMIT_WAIT_MS,
            seed: cfg.stream("simulator faults"),
        },
    );
    let sim = SimAdmin::new(&simulator.base_url);
    let accounts = Accounts::derive(
        KEY_NAMESPACE,
        cfg.seed,
        Shape {
            channels: CHANNELS,
            destinations: DESTINATIONS,
            ghosts: GHOSTS,
        },
    );
    sim.fund(&accounts).await;

    let nats = NatsProcess::start(&dir);
    let port = free_port();
    let apis = ledger_api::Apis::choose(cfg.seed);
    println!(
        "  ledger: main instance over {}, second instance over {} ({}={})",
        apis.main,
        apis.twin,
        ledger_api::ENV_LEDGER,
        apis.name()
    );
    let mut env = service_env(
        port,
        &db.url(),
        &simulator.base_url,
        &nats.url,
        &passphrase,
        &accounts,
    );
    ledger_api::apply(&mut env, apis.main, &simulator.base_url);
    // Most runs pay destinations that are not ready with claimable balances and new
    // accounts (payoutd's `[destinations]`); the others let those payouts fail.
    let reroute = !cfg.stream("destinations").is_multiple_of(4);
    if reroute {
        env.push((
            "PAYOUTD__DESTINATIONS__NO_TRUST".into(),
            "claimable_balance".into(),
        ));
        env.push((
            "PAYOUTD__DESTINATIONS__NO_ACCOUNT".into(),
            "create_account".into(),
        ));
    }
    println!(
        "  destinations         not ready: {}",
        if reroute {
            "paid by claimable balances and new accounts"
        } else {
            "fail with op_no_trust / op_no_destination"
        }
    );
    let js = request_stream(&env).await;
    // The second instance: same database, keys and broker, its own port.
    let twin_port = free_port();
    // It publishes state changes, so it logs one event row per member; the main one,
    // without an outbox, one row per batch step (docs/protocol.md, "The event log").
    let mut twin_env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| match k.as_str() {
            "PAYOUTD__SERVER__LISTEN" => (k.clone(), format!("127.0.0.1:{twin_port}")),
            "PAYOUTD__NATS__OUTBOX__ENABLED" => (k.clone(), "true".into()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    ledger_api::apply(&mut twin_env, apis.twin, &simulator.base_url);
    let mut twin = Service::new(&bin, twin_env, twin_port, dir.join("payoutd-twin.log"));
    let reconcile_env = env.clone();
    let mut service = Service::new(&bin, env, port, dir.join("payoutd.log"));
    let http = reqwest::Client::new();
    service.start();
    assert!(
        service.wait_ready(&http).await,
        "payoutd did not start; see {}",
        service.log_path().display()
    );

    let mut rng = StdRng::seed_from_u64(cfg.stream("workload"));
    let specs = workload::generate(
        cfg.payouts,
        cfg.seed,
        &accounts,
        cfg.mean_feed_gap_ms(),
        reroute,
        &mut rng,
    );
    let ingress = Arc::new(Ingresses::new(&service.base_url(), js, NATS_SUBJECT));
    let feeding = tokio::spawn(feeder::run(specs.clone(), ingress));

    let chaos = Chaos {
        service: &mut service,
        twin: &mut twin,
        twin_rng: StdRng::seed_from_u64(cfg.stream("twin")),
        db: &mut db,
        sim: &sim,
        http: http.clone(),
        rng: StdRng::seed_from_u64(cfg.stream("chaos")),
        stats: ChaosStats::default(),
    };
    let mut chaos = chaos.run(&cfg).await;
    let chaos_done = started.elapsed();
    if !service.wait_ready(&http).await {
        chaos.service_failures.push(format!(
            "payoutd did not come back after the last restart; see {}",
            service.log_path().display()
        ));
    }
    let feed = feeding.await.expect("the feeder does not panic");

    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.url())
        .await
        .expect("the harness connects to its database");
    let settle_started = Instant::now();
    let accepted: Vec<String> = feed.accepted.iter().cloned().collect();
    let unsettled = verify::settle(&pool, &accepted, cfg.settle_timeout_ms())
        .await
        .err();
    let settle_time = settle_started.elapsed();
    let faults = sim.fault_counts().await;
    let mut verdict = verify::check(&pool, &sim, &specs, &feed, &accounts.distribution.id()).await;
    if let Some(left) = unsettled {
        verdict.violations.insert(
            0,
            format!(
                "{left} {} ms after the last restart",
                cfg.settle_timeout_ms()
            ),
        );
    }
    for failure in &chaos.service_failures {
        verdict.violations.push(failure.clone());
    }
    service.kill();
    twin.kill();
    pool.close().await;
    // The operator's check of the morning after: `payoutd reconcile` over the whole run,
    // through the main instance's ledger interface, must find journal and ledger agree.
    let reconciled = reconcile_whole_run(&bin, &reconcile_env).await;
    match &reconciled {
        Ok(summary) => println!("  reconcile            {summary}"),
        Err(why) => verdict.violations.push(why.clone()),
    }

    let report = Report {
        cfg: &cfg,
        apis,
        specs: &specs,
        feed: &feed,
        chaos: &chaos,
        verdict: &verdict,
        faults,
        lives: service.lives,
        chaos_time: chaos_done,
        settle_time,
        total_time: started.elapsed(),
    };
    println!("{report}");
    drop(simulator);
    drop(nats);
    drop(db);
    finish(&cfg, &dir, &verdict);
}

/// Runs `payoutd reconcile --json` from the first ledger with payoutd's own environment;
/// `Ok` with a summary when it exits 0 (clean), else the report as a violation.
async fn reconcile_whole_run(bin: &Path, env: &[(String, String)]) -> Result<String, String> {
    let out = tokio::process::Command::new(bin)
        .args([
            "reconcile",
            "--json",
            "--from-ledger",
            &payoutd_simulator::GENESIS_LEDGER.to_string(),
        ])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .await
        .map_err(|e| format!("cannot run payoutd reconcile: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.code() != Some(0) {
        return Err(format!(
            "payoutd reconcile after the run exited {:?}:\n{stdout}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let doc: serde_json::Value = serde_json::from_str(&stdout)
        .map_err(|e| format!("payoutd reconcile printed no JSON report ({e}): {stdout}"))?;
    let c = &doc["counts"];
    Ok(format!(
        "{} over ledgers {}..={} ({}): {} envelopes applied, {} failed, {} dead; {} payouts confirmed, {} failed; {} of {} ledger payments matched",
        doc["result"].as_str().unwrap_or("?"),
        doc["range"]["from_ledger"],
        doc["range"]["to_ledger"],
        doc["ledger"]["server"].as_str().unwrap_or("?"),
        c["envelopes_applied"],
        c["envelopes_failed"],
        c["envelopes_dead"],
        c["payouts_confirmed"],
        c["payouts_failed"],
        c["payments_matched"],
        c["ledger_payments"],
    ))
}

/// Removes the run folder after a clean run (unless asked to keep it); on a violation keeps
/// it and fails with the evidence and the rerun command.
fn finish(cfg: &RunConfig, dir: &Path, verdict: &Verdict) {
    if verdict.violations.is_empty() {
        if cfg.keep_dir {
            println!("  run folder kept: {}", dir.display());
        } else {
            let _ = std::fs::remove_dir_all(dir);
        }
        return;
    }
    let shown: Vec<&str> = verdict
        .violations
        .iter()
        .take(50)
        .map(String::as_str)
        .collect();
    panic!(
        "{} violations (first {} below); seed {}; logs, journal and ledger state kept in {}\n  rerun: {}\n  - {}",
        verdict.violations.len(),
        shown.len(),
        cfg.seed,
        dir.display(),
        cfg.rerun_command(),
        shown.join("\n  - ")
    );
}

/// The printout of a run.
struct Report<'a> {
    cfg: &'a RunConfig,
    apis: ledger_api::Apis,
    specs: &'a [PayoutSpec],
    feed: &'a FeedStats,
    chaos: &'a ChaosStats,
    verdict: &'a Verdict,
    faults: payoutd_simulator::FaultCounts,
    lives: u32,
    chaos_time: Duration,
    settle_time: Duration,
    total_time: Duration,
}

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (c, fd, v, fc) = (self.cfg, self.feed, self.verdict, &self.faults);
        writeln!(f, "crash harness report")?;
        writeln!(f, "  seed                 {}", c.seed)?;
        writeln!(
            f,
            "  ledger interfaces    main instance over {}, second instance over {} (one simulated ledger)",
            self.apis.main, self.apis.twin
        )?;
        writeln!(
            f,
            "  setup                {CHANNELS} channels, ledger close every {CLOSE_INTERVAL_MS} ms, tx validity {TX_VALIDITY_S} ledger-s"
        )?;
        writeln!(
            f,
            "  payouts              {} sent, {} accepted, {} stored: {} confirmed, {} failed ({} were meant to fail)",
            c.payouts,
            fd.accepted.len(),
            v.stored,
            v.confirmed,
            v.failed,
            v.expected_failures
        )?;
        writeln!(
            f,
            "  deliveries           {} ({} duplicates sent; HTTP answered 202 x{}, 200 x{}; NATS publishes acked x{}; {} tries retried)",
            fd.deliveries,
            fd.duplicates_sent,
            fd.answered_created,
            fd.answered_duplicate,
            fd.published,
            fd.retries
        )?;
        let only = |via: Via| {
            self.specs
                .iter()
                .filter(|s| s.via.iter().all(|v| *v == via))
                .count()
        };
        let (http, nats) = (only(Via::Http), only(Via::Nats));
        writeln!(
            f,
            "  ingress              {http} payouts over HTTP only, {nats} over NATS only, {} over both",
            self.specs.len() - http - nats
        )?;
        writeln!(
            f,
            "  kills (SIGKILL)      {} ({} before payoutd answered /healthz); {} lives",
            self.chaos.kills, self.chaos.kills_before_ready, self.lives
        )?;
        writeln!(
            f,
            "  second instance      {} lives beside the first, {} ended by SIGKILL",
            self.chaos.twin_lives, self.chaos.twin_kills
        )?;
        writeln!(f, "  postgres restarts    {}", self.chaos.pg_restarts)?;
        writeln!(
            f,
            "  faults injected      {} (latency {}, 5xx before apply {}, answers lost after apply {}, rejected by code {}, try again later {}); {} profile switches, {} fee surges",
            fc.latency
                + fc.server_errors_before_apply
                + fc.answers_lost_after_apply
                + fc.rejected_by_code
                + fc.try_again_later_injected,
            fc.latency,
            fc.server_errors_before_apply,
            fc.answers_lost_after_apply,
            fc.rejected_by_code,
            fc.try_again_later_injected,
            self.chaos.fault_switches,
            self.chaos.fee_surges
        )?;
        writeln!(
            f,
            "  consistency          {} answers from a lagging node, {} transactions hidden by its lag, {} hidden by pruned history",
            fc.answers_from_lagging_node,
            fc.transactions_hidden_by_lag,
            fc.transactions_hidden_by_pruning
        )?;
        writeln!(
            f,
            "  envelopes            {} built ({} carried more than one payout), {} provably dead, {} payouts rebuilt, {} unsettled at the end",
            v.envelopes, v.batched_envelopes, v.envelopes_dead, v.rebuilt, v.unsettled_envelopes
        )?;
        writeln!(
            f,
            "  event log            main instance one row per batch step ({} member events so), second one row per member (its outbox is on)",
            v.batch_step_events
        )?;
        writeln!(
            f,
            "  ledger payments      {} from the distribution account ({} claimable balances, {} accounts created)",
            v.ledger_payments, v.claimable_balances, v.accounts_created
        )?;
        writeln!(f, "  double payments      {}", v.double_payments)?;
        writeln!(f, "  lost payouts         {}", v.lost_payouts)?;
        writeln!(
            f,
            "  other violations     {} (wrong outcomes {}, unknown payments {}, mismatches {})",
            v.violations
                .len()
                .saturating_sub(v.double_payments + v.lost_payouts),
            v.wrong_outcomes,
            v.unknown_payments,
            v.mismatches
        )?;
        write!(
            f,
            "  time                 {:.0?} chaos, {:.1?} to settle, {:.0?} total",
            self.chaos_time, self.settle_time, self.total_time
        )
    }
}
