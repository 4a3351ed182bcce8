//! The `payoutd-simulator` binary: a Horizon-compatible ledger simulator for demos and tests.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser as _;
use payoutd_simulator::{StandaloneArgs, run_standalone};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run_standalone(StandaloneArgs::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "payoutd-simulator failed");
            ExitCode::FAILURE
        }
    }
}
