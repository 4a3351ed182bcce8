//! The command line of the `payoutd-simulator` binary and the loop that runs it.

use std::path::PathBuf;

use crate::config::{CloseMode, SimConfig};
use crate::sim::{SimError, Simulator};

/// `payoutd-simulator` options.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "payoutd-simulator",
    version,
    about = "A Stellar ledger simulator that answers Horizon and Stellar RPC",
    after_help = "Horizon: GET /, /accounts/{id}, /accounts/{id}/transactions|operations|payments, \
/transactions/{hash}; POST /transactions, /transactions_async. Stellar RPC (JSON-RPC 2.0): \
POST /rpc or POST / with getHealth, getNetwork, getLatestLedger, getLedgerEntries, \
sendTransaction, getTransaction, getTransactions. Operations applied: payment, create_account, \
create_claimable_balance, claim_claimable_balance.\n\n\
Faults are set at runtime: PUT /sim/faults with a JSON object (latency_ms, \
p_5xx_before_apply, p_lose_answer_after_apply, p_try_again_later, reject_next, \
lookup_lag_ledgers, p_lookup_lagging, history_retention_ledgers; a field left out is off, \
p_lookup_lagging 1.0), counted by GET /sim/faults. They apply to Horizon and RPC alike. \
GET /sim/status shows the ledger, its capacity, what is pending, the head and lagging nodes, \
and the faults; GET /sim/payments and /sim/claimable_balances list what was paid and what \
waits to be claimed. Ledgers close by hand with POST /sim/close_ledger."
)]
pub struct StandaloneArgs {
    /// Address to listen on.
    #[arg(long, env = "SIM_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: String,
    /// Network passphrase.
    #[arg(long, env = "SIM_PASSPHRASE", default_value = crate::TESTNET_PASSPHRASE)]
    pub passphrase: String,
    /// Close a ledger every this many milliseconds; 0 = only by `POST /sim/close_ledger`.
    #[arg(long, env = "SIM_CLOSE_INTERVAL_MS", default_value_t = 5000)]
    pub close_interval_ms: u64,
    /// Close a ledger at every accepted submission (overrides --close-interval-ms).
    #[arg(long, env = "SIM_INSTANT")]
    pub instant: bool,
    /// Keep the ledger in this file across restarts.
    #[arg(long, env = "SIM_STATE_FILE")]
    pub state_file: Option<PathBuf>,
    /// Seed of the fault-injection RNG.
    #[arg(long, env = "SIM_SEED", default_value_t = 0)]
    pub seed: u64,
    /// Create an account with this many stroops of XLM if it does not exist yet (repeatable).
    #[arg(long = "fund", value_name = "G...=STROOPS", value_parser = parse_fund)]
    pub fund: Vec<(String, i64)>,
    /// How long `POST /transactions` waits for inclusion before answering 504.
    #[arg(long, default_value_t = 30_000)]
    pub submit_wait_ms: u64,
    /// Minimum fee per operation, in stroops.
    #[arg(long, default_value_t = 100)]
    pub base_fee: i64,
    /// Base reserve in stroops (0 disables reserves).
    #[arg(long, default_value_t = 5_000_000)]
    pub base_reserve: i64,
    /// Close time step between ledgers in manual mode, in seconds.
    #[arg(long, default_value_t = 5)]
    pub close_time_step_s: u64,
    /// Ledger capacity in operations: beyond it, the highest fee per operation goes first and
    /// the rest wait for a later ledger (surge pricing). A transaction with more operations
    /// is refused as tx_malformed.
    #[arg(long, default_value_t = crate::config::DEFAULT_OPS_PER_LEDGER_MAX,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub ops_per_ledger_max: u32,
    /// Ledgers of history the Stellar RPC interface keeps (its `oldestLedger` is
    /// `latest - N + 1`; the default is RPC's stock window, 7 days of 5-second ledgers).
    #[arg(long, default_value_t = crate::config::DEFAULT_RPC_RETENTION_LEDGERS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rpc_retention_ledgers: u32,
}

fn parse_fund(s: &str) -> Result<(String, i64), String> {
    let (account, stroops) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected G...=STROOPS"))?;
    let stroops: i64 = stroops
        .parse()
        .map_err(|e| format!("{s:?}: stroops: {e}"))?;
    Ok((account.to_owned(), stroops))
}

impl StandaloneArgs {
    /// The simulator configuration these options describe.
    pub fn to_config(&self) -> SimConfig {
        let close_mode = if self.instant {
            CloseMode::Instant
        } else if self.close_interval_ms == 0 {
            CloseMode::Manual
        } else {
            CloseMode::Interval {
                close_interval_ms: self.close_interval_ms,
            }
        };
        SimConfig {
            network_passphrase: self.passphrase.clone(),
            close_mode,
            submit_wait_ms: self.submit_wait_ms,
            seed: self.seed,
            state_file: self.state_file.clone(),
            close_time_step_s: self.close_time_step_s,
            base_fee_stroops: self.base_fee,
            base_reserve_stroops: self.base_reserve,
            ops_per_ledger_max: self.ops_per_ledger_max,
            rpc_retention_ledgers: self.rpc_retention_ledgers,
            ..SimConfig::default()
        }
    }
}

/// Runs the simulator until Ctrl-C (SIGINT). Prints one line, `listening on <base url>`,
/// to stdout once it accepts connections.
pub async fn run_standalone(args: StandaloneArgs) -> Result<(), SimError> {
    let sim = Simulator::new(args.to_config())?;
    for (account, stroops) in &args.fund {
        if sim.account(account).is_none() {
            sim.create_account(account, *stroops)?;
        }
    }
    let handle = crate::server::spawn(sim, &args.listen).await?;
    tracing::info!(base_url = %handle.base_url, passphrase = %args.passphrase, "simulator listening");
    println!("listening on {}", handle.base_url);
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}
