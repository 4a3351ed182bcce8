//! The `payoutd` command line: `serve` (the default), `migrate`, `status`, `simulator`,
//! `submit`, `reconcile`, `admin`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// See Cargo.toml: many small short-lived allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use payoutd::app::{Application, database};
use payoutd::config::Settings;
use payoutd_actors::domain::PayoutId;
use payoutd_actors::ports::PayoutStore;

#[derive(Parser)]
#[command(
    name = "payoutd",
    version,
    about = "Pays Stellar payouts exactly once.",
    after_help = "Examples:\n  payoutd                      run with built-in defaults (private PostgreSQL, built-in simulator)\n  payoutd serve --config /etc/payoutd/payoutd.toml\n  payoutd migrate              apply database migrations and exit\n  payoutd status reward-2026-11-0042\n  payoutd admin pause --reason \"incident 42\"\n  payoutd reconcile --since 2026-11-01T00:00:00Z --until 2026-12-01T00:00:00Z\n  payoutd simulator --listen 127.0.0.1:8000 --state-file sim.json\n\nEvery setting can be overridden with PAYOUTD__SECTION__KEY environment variables."
)]
struct Cli {
    /// Configuration file layered over the built-in defaults (also PAYOUTD_CONFIG).
    #[arg(long, global = true, env = "PAYOUTD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Apply the embedded database migrations and exit.
    Migrate,
    /// Show a payout's state and history.
    Status {
        /// The payout id.
        id: String,
    },
    /// Run the Horizon-compatible ledger simulator on its own.
    Simulator(payoutd_simulator::StandaloneArgs),
    /// Submit every row of a CSV file to a running payoutd over its HTTP API.
    Submit(payoutd::cli::submit::SubmitArgs),
    /// Compare the journal with the ledger and prove they agree (docs/reconcile.md).
    Reconcile(payoutd::reconcile::cli::ReconcileArgs),
    /// The kill switch and the audit trail: pause, resume, status, audit.
    Admin {
        #[command(subcommand)]
        action: payoutd::cli::admin::AdminCommand,
    },
}

/// Why a command could not do its work (printed as `payoutd: …`, with its cause).
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Config(#[from] payoutd::config::ConfigError),
    #[error(transparent)]
    Startup(#[from] payoutd::app::StartupError),
    #[error("the journal: {0}")]
    Journal(#[from] payoutd_actors::ports::JournalError),
    #[error("payout id: {0}")]
    PayoutId(#[from] payoutd_actors::domain::ValidationError),
    #[error("the simulator: {0}")]
    Simulator(#[from] payoutd_simulator::SimError),
    #[error("serving HTTP: {0}")]
    Serve(#[from] std::io::Error),
    #[error("writing the payout as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The admin commands answer in words (they name the key or the rule at fault).
    #[error("{0}")]
    Admin(String),
}

fn load_settings(cli: &Cli) -> Result<Settings, CliError> {
    Ok(Settings::load(cli.config.as_deref(), std::env::vars())?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("payoutd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("payoutd: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match &cli.command {
        Some(Command::Simulator(args)) => {
            let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
            payoutd_simulator::run_standalone(args.clone()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Migrate) => {
            let settings = load_settings(&cli)?;
            payoutd::telemetry::init(&settings.telemetry);
            let (pool, _pg) = database(&settings).await?;
            pool.close().await;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Status { id }) => {
            let settings = load_settings(&cli)?;
            let id = PayoutId::parse(id)?;
            let (pool, _pg) = database(&settings).await?;
            let journal = payoutd::storage::PgJournal::new(pool).await;
            let Some(record) = journal.load(&id).await? else {
                eprintln!("payout {id} not found");
                return Ok(ExitCode::from(3));
            };
            let mut view = payoutd::http::PayoutView::from_record(&record);
            view.events = Some(journal.events(&id).await?);
            println!("{}", serde_json::to_string_pretty(&view)?);
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Submit(args)) => Ok(payoutd::cli::submit::run_cli(args).await),
        Some(Command::Reconcile(args)) => {
            Ok(payoutd::reconcile::cli::run(cli.config.as_deref(), args).await)
        }
        Some(Command::Admin { action }) => {
            let settings = load_settings(&cli)?;
            let (pool, _pg) = database(&settings).await?;
            let journal = payoutd::storage::PgJournal::new(pool).await;
            payoutd::cli::admin::run_cli(&journal, action)
                .await
                .map_err(CliError::Admin)
        }
        Some(Command::Serve) | None => serve(&cli).await,
    }
}

async fn serve(cli: &Cli) -> Result<ExitCode, CliError> {
    let settings = load_settings(cli)?;
    payoutd::telemetry::init(&settings.telemetry);
    let app = Application::build(settings).await?;
    if let Some(sim) = &app.simulator {
        eprintln!(
            "payoutd: built-in ledger simulator at {} (demo network)",
            sim.base_url
        );
    }
    eprintln!("payoutd: HTTP API on port {}", app.port());
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on the first SIGTERM or ctrl-c; a second one exits at once (the next start
/// recovers from the journal either way).
async fn shutdown_signal() {
    wait_signal().await;
    tracing::info!("shutdown requested; a second signal exits immediately");
    tokio::spawn(async {
        wait_signal().await;
        eprintln!("payoutd: second signal, exiting now");
        std::process::exit(130);
    });
}

async fn wait_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
