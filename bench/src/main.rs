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
mod inprocess;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::common::{Row, n, print_table};

#[derive(Parser)]
#[command(name = "payoutd-bench", about = "payoutd's benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every benchmark, one after the other, with one summary table.
    All {
        /// Payouts of the in-process run (at least 30 s of work at the target rate).
        #[arg(long, default_value_t = 300_000)]
        count: u64,
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
        }
        Command::All { count } => {
            let mut rows = Vec::new();
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
            }
            print_table("payoutd-bench all", &rows);
        }
    }
    Ok(())
}

fn inprocess_rows(f: &inprocess::Figures) -> Vec<Row> {
    let tag = format!("in-process, {} per tx", f.payments_per_tx_max);
    let ratio = f.payouts_per_s / f.plain_commits_per_s;
    let mut rows = vec![
        Row::new(format!("{tag}: payouts"), n(f.count as f64)),
        Row::new(format!("{tag}: payouts/s accept→confirmed"), n(f.payouts_per_s))
            .bound(">= 10,000", f.payouts_per_s >= 10_000.0),
        Row::new(format!("{tag}: plain PostgreSQL commits/s"), n(f.plain_commits_per_s)),
        Row::new(format!("{tag}: ratio payouts/s ÷ commits/s"), format!("{ratio:.2}"))
            .bound(">= 1.0", ratio >= 1.0),
        Row::new(
            format!("{tag}: latency p50 / p99 / max"),
            format!("{:.0} / {:.0} / {:.0} ms", f.p50_ms, f.p99_ms, f.max_ms),
        ),
        Row::new(format!("{tag}: commits per payout"), format!("{:.3}", f.commits_per_payout)),
        Row::new(format!("{tag}: rows written per payout"), format!("{:.2}", f.rows_per_payout)),
        Row::new(format!("{tag}: envelopes"), n(f.envelopes as f64)),
    ];
    if f.payments_per_tx_max == 1 {
        rows.retain(|r| !r.what.contains("ratio"));
    }
    rows
}
