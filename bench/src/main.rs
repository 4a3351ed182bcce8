//! `payoutd-bench`: payoutd's performance figures, each printed beside the bound it is held
//! to. Figures, not assertions: nothing here fails a build.
//!
//! `payoutd-bench all` runs everything in one go: in-process (PostgreSQL with fsync on,
//! batches and one payment per transaction), the whole application over HTTP with the
//! load from a separate process, the network-bound run (5 s ledgers, 1,000 operations per
//! ledger, 8 channels), memory over many payouts and recovery after `kill -9`. Each part
//! also runs on its own (`--help`).
#![forbid(unsafe_code)]

mod common;
mod http;
mod inprocess;
mod network;
mod scale;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::common::{Row, n, print_table};

/// See Cargo.toml: many small short-lived allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "payoutd-bench",
    about = "payoutd's benchmarks, each figure beside its bound"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every benchmark, one after the other, with one summary table (about 12 minutes).
    All {
        /// Payouts of the in-process run (at least 30 s of work at the target rate).
        #[arg(long, default_value_t = 300_000)]
        count: u64,
        /// Payouts of the memory run.
        #[arg(long, default_value_t = 1_000_000)]
        scale_count: u64,
        /// Skip the run with one payment per transaction on the network (1250 ledgers of
        /// 5 s would take 104 minutes; it runs 400 payouts and reports ledgers per payout).
        #[arg(long)]
        quick: bool,
    },
    /// In-process: accept → confirmed with PostgreSQL (fsync on) and the in-memory ledger.
    Inprocess {
        #[arg(long, default_value_t = 300_000)]
        count: u64,
        #[arg(long, default_value_t = 256)]
        concurrency: u64,
        #[arg(long, default_value_t = 8)]
        channels: u32,
        /// Payments per transaction (1 = one payout per transaction).
        #[arg(long, default_value_t = 100)]
        payments_per_tx_max: usize,
    },
    /// The whole application over HTTP, load from a separate process.
    Http {
        #[arg(long, default_value_t = 30_000)]
        count: u64,
        #[arg(long, default_value_t = 64)]
        connections: u64,
        #[arg(long, default_value_t = 1_000)]
        batch_size: usize,
    },
    /// Network-bound: the simulator at 5 s ledgers and 1,000 operations per ledger.
    Network {
        #[arg(long, default_value_t = 10_000)]
        payouts: u64,
        #[arg(long, default_value_t = 100)]
        payments_per_tx_max: usize,
        #[arg(long, default_value_t = 5_000)]
        close_interval_ms: u64,
    },
    /// Resident memory sampled across many payouts (in-process, PostgreSQL fsync on).
    Memory {
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
    },
    /// Recovery of payouts in flight after `kill -9` of a payoutd process.
    Recovery {
        #[arg(long, default_value_t = 100_000)]
        in_flight: u64,
    },
    /// The load generator (run by `http` as a separate process); prints JSON.
    Load {
        #[arg(long)]
        url: String,
        /// new | batch | dups
        #[arg(long)]
        mode: String,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        connections: u64,
        #[arg(long)]
        prefix: String,
        #[arg(long, default_value_t = 1)]
        batch_size: usize,
    },
}

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .try_init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("payoutd-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("payoutd-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Inprocess {
            count,
            concurrency,
            channels,
            payments_per_tx_max,
        } => {
            let f = inprocess::run(&inprocess::Options {
                count,
                concurrency,
                channels,
                payments_per_tx_max,
            })
            .await?;
            print_table("in-process, PostgreSQL fsync on", &inprocess_rows(&f));
            print_statements(&f);
        }
        Command::Http {
            count,
            connections,
            batch_size,
        } => {
            let f = http::run(&http::Options {
                count,
                connections,
                batch_size,
            })
            .await?;
            print_table("whole application over HTTP", &http_rows(&f));
        }
        Command::Network {
            payouts,
            payments_per_tx_max,
            close_interval_ms,
        } => {
            let f = network::run(&network::Options {
                payouts,
                payments_per_tx_max,
                close_interval_ms,
            })
            .await?;
            print_table("network-bound", &network_rows(&f));
        }
        Command::Memory { count } => {
            let f = memory(count).await?;
            print_table("memory", &rss_rows(&f));
        }
        Command::Recovery { in_flight } => {
            let r = scale::recovery(in_flight).await?;
            print_table("recovery after kill -9", &recovery_rows(&r));
        }
        Command::Load {
            url,
            mode,
            count,
            connections,
            prefix,
            batch_size,
        } => {
            let l = http::generate(&url, &mode, count, connections, &prefix, batch_size).await?;
            println!("{}", serde_json::to_string(&l).map_err(|e| e.to_string())?);
        }
        Command::All {
            count,
            scale_count,
            quick,
        } => all(count, scale_count, quick).await?,
    }
    Ok(())
}

/// `payoutd-bench all`: every figure, one after the other, in one table.
async fn all(count: u64, scale_count: u64, quick: bool) -> Result<(), String> {
    let mut rows = Vec::new();
    let mut statements = Vec::new();
    for ppt in [100, 1] {
        let c = if ppt == 1 { count.min(20_000) } else { count };
        eprintln!("in-process, {ppt} payments per transaction, {c} payouts…");
        let f = inprocess::run(&inprocess::Options {
            count: c,
            concurrency: 256,
            channels: 8,
            payments_per_tx_max: ppt,
        })
        .await?;
        rows.extend(inprocess_rows(&f));
        if ppt == 100 {
            statements = f.top_statements.clone();
        }
    }
    eprintln!("over HTTP…");
    let f = http::run(&http::Options {
        count: 30_000,
        connections: 64,
        batch_size: 1_000,
    })
    .await?;
    rows.extend(http_rows(&f));
    eprintln!("network-bound, 10,000 payouts at 5 s ledgers…");
    let f = network::run(&network::Options {
        payouts: 10_000,
        payments_per_tx_max: 100,
        close_interval_ms: 5_000,
    })
    .await?;
    rows.extend(network_rows(&f));
    let one = if quick { 80 } else { 400 };
    eprintln!("network-bound, {one} payouts, one payment per transaction…");
    let f = network::run(&network::Options {
        payouts: one,
        payments_per_tx_max: 1,
        close_interval_ms: 5_000,
    })
    .await?;
    rows.extend(network_rows(&f));
    eprintln!("memory over {scale_count} payouts…");
    let f = memory(scale_count).await?;
    rows.extend(rss_rows(&f));
    eprintln!("recovery of 100,000 payouts in flight after kill -9…");
    let r = scale::recovery(100_000).await?;
    rows.extend(recovery_rows(&r));
    print_table("payoutd-bench all (2 cores, PostgreSQL fsync on)", &rows);
    println!("\n  where PostgreSQL spent its time in the in-process run (pg_stat_statements):");
    for line in &statements {
        println!("    {line}");
    }
    Ok(())
}

async fn memory(count: u64) -> Result<inprocess::Figures, String> {
    inprocess::run(&inprocess::Options {
        count,
        concurrency: 256,
        channels: 8,
        payments_per_tx_max: 100,
    })
    .await
}

fn print_statements(f: &inprocess::Figures) {
    println!("\n  where PostgreSQL spent its time (pg_stat_statements, top statements):");
    for line in &f.top_statements {
        println!("    {line}");
    }
}

fn http_rows(f: &http::Figures) -> Vec<Row> {
    vec![
        Row::new(
            "HTTP: new payouts/s, one per request",
            n(f.single.payouts_per_s()),
        )
        .bound(">= 3,000", f.single.payouts_per_s() >= 3_000.0),
        Row::new(
            "HTTP: one per request, p50 / p99",
            format!("{:.1} / {:.1} ms", f.single.p50_ms, f.single.p99_ms),
        ),
        Row::new(
            format!("HTTP: new payouts/s, batches of {}", f.batch_size),
            n(f.batch.payouts_per_s()),
        )
        .bound(">= 10,000", f.batch.payouts_per_s() >= 10_000.0),
        Row::new(
            "HTTP: batch request p50 / p99",
            format!("{:.0} / {:.0} ms", f.batch.p50_ms, f.batch.p99_ms),
        ),
        Row::new("HTTP: duplicates/s", n(f.duplicates.requests_per_s()))
            .bound(">= 30,000", f.duplicates.requests_per_s() >= 30_000.0),
        Row::new(
            "HTTP: duplicate p50 / p99",
            format!("{:.1} / {:.1} ms", f.duplicates.p50_ms, f.duplicates.p99_ms),
        ),
        Row::new(
            "HTTP: failed requests (all runs)",
            n((f.single.errors + f.batch.errors + f.duplicates.errors) as f64),
        )
        .bound(
            "0",
            f.single.errors + f.batch.errors + f.duplicates.errors == 0,
        ),
    ]
}

fn network_rows(f: &network::Figures) -> Vec<Row> {
    let tag = format!(
        "network, {} payouts, {} per tx",
        n(f.payouts as f64),
        f.payments_per_tx_max
    );
    let usage = f.ops_per_ledger_mean / f64::from(f.offered_capacity);
    let mut rows = vec![
        Row::new(format!("{tag}: ledgers to pay all"), f.ledgers.to_string()),
        Row::new(format!("{tag}: wall time"), format!("{:.0} s", f.seconds)),
        Row::new(
            format!("{tag}: operations per ledger (mean / max)"),
            format!("{:.0} / {}", f.ops_per_ledger_mean, f.ops_per_ledger_max),
        ),
        Row::new(
            format!("{tag}: share of offered capacity used"),
            format!("{:.0}% of {}", usage * 100.0, f.offered_capacity),
        )
        .bound(">= 95%", usage >= 0.95),
    ];
    if f.payments_per_tx_max == 100 && f.payouts == 10_000 {
        rows[0] = Row::new(format!("{tag}: ledgers to pay all"), f.ledgers.to_string())
            .bound("<= 15", f.ledgers <= 15);
    } else {
        let per_10k = 10_000.0 * f64::from(f.ledgers) / f.payouts as f64;
        rows.push(Row::new(
            format!("{tag}: ledgers for 10,000 at this rate"),
            n(per_10k),
        ));
    }
    rows
}

fn rss_rows(f: &inprocess::Figures) -> Vec<Row> {
    let samples: Vec<String> = f
        .rss_kib
        .iter()
        .map(|(_, kib)| format!("{}", kib / 1024))
        .collect();
    // Flat: the second half of the run never needs more than the first half did. One
    // sample against another is noise (allocator pools, a burst of waiting payouts); a
    // leak of even 100 bytes a payout shows as 50 MiB more in the second half.
    let half = f.rss_kib.len() / 2;
    let peak = |s: &[(u64, u64)]| s.iter().map(|(_, k)| *k).max().unwrap_or(0);
    let first = peak(&f.rss_kib[..half]).max(1);
    let growth = peak(&f.rss_kib[half..]) as f64 / first as f64;
    vec![
        Row::new(
            format!(
                "memory: RSS (MiB) at each tenth of {} payouts",
                n(f.count as f64)
            ),
            samples.join(" "),
        ),
        Row::new(
            "memory: peak RSS of the second half ÷ of the first",
            format!("{growth:.2}"),
        )
        .bound("flat (<= 1.25)", growth <= 1.25),
        Row::new("memory: payouts/s over the long run", n(f.payouts_per_s)),
        Row::new(
            "memory: payout actors alive at the end (idle ones passivate)",
            n(f.live_actors_at_end as f64),
        ),
    ]
}

fn recovery_rows(r: &scale::Recovery) -> Vec<Row> {
    vec![
        Row::new(
            "recovery: payouts in flight at kill -9",
            n(r.in_flight as f64),
        ),
        Row::new(
            "recovery: restart until serving, all back in hand",
            format!("{:.2} s", r.ready_s),
        )
        .bound("<= 10 s", r.ready_s <= 10.0 && r.recovered >= r.in_flight),
        Row::new("recovery: payouts back in hand", n(r.recovered as f64)),
        Row::new(
            "recovery: until the first 1,000 are paid",
            format!("{:.1} s", r.first_thousand_paid_s),
        ),
    ]
}

fn cpu_row(what: String, cpu: common::CpuUs) -> Row {
    Row::new(
        format!("{what}, PostgreSQL / this process"),
        format!("{:.0} / {:.0} µs", cpu.postgres, cpu.bench),
    )
}

fn inprocess_rows(f: &inprocess::Figures) -> Vec<Row> {
    let tag = format!("in-process, {} per tx", f.payments_per_tx_max);
    let ratio = f.payouts_per_s / f.plain_commits_per_s;
    let per_s = Row::new(
        format!("{tag}: payouts/s accept→confirmed"),
        n(f.payouts_per_s),
    );
    // The targets are those of batched settlement; one payment per transaction is the
    // before/after, held to no bound.
    let per_s = if f.payments_per_tx_max > 1 {
        per_s.bound(">= 10,000", f.payouts_per_s >= 10_000.0)
    } else {
        per_s
    };
    let mut rows = vec![
        Row::new(format!("{tag}: payouts"), n(f.count as f64)),
        per_s,
        Row::new(
            format!("{tag}: plain PostgreSQL commits/s"),
            n(f.plain_commits_per_s),
        ),
        Row::new(
            format!("{tag}: ratio payouts/s ÷ commits/s"),
            format!("{ratio:.2}"),
        )
        .bound(">= 1.0", ratio >= 1.0),
        Row::new(
            format!("{tag}: latency p50 / p99 / max"),
            format!("{:.0} / {:.0} / {:.0} ms", f.p50_ms, f.p99_ms, f.max_ms),
        ),
        Row::new(
            format!("{tag}: commits per payout"),
            format!("{:.3}", f.commits_per_payout),
        ),
        Row::new(
            format!("{tag}: rows written per payout"),
            format!("{:.2}", f.rows_per_payout),
        ),
        Row::new(
            format!("{tag}: WAL per payout (full-page images)"),
            format!(
                "{:.0} bytes ({:.3})",
                f.wal_bytes_per_payout, f.wal_fpi_per_payout
            ),
        ),
        Row::new(
            format!("{tag}: payout row updates that were HOT"),
            format!("{:.1}%", f.hot_update_pct),
        ),
        cpu_row(format!("{tag}: CPU per payout"), f.cpu_per_payout),
        cpu_row(
            format!("{tag}: CPU per plain commit"),
            f.cpu_per_plain_commit,
        ),
        Row::new(format!("{tag}: envelopes"), n(f.envelopes as f64)),
    ];
    if f.payments_per_tx_max == 1 {
        rows.retain(|r| !r.what.contains("ratio"));
    }
    rows
}
