//! `payoutd reconcile`: one check, a report on stdout (text, or JSON with `--json`), a
//! progress bar on stderr for long ranges, and an exit code a script can act on.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use payoutd_actors::domain::AccountId;
use payoutd_stellar::{HorizonTimeouts, Keypair};
use secrecy::ExposeSecret;

use super::{
    Accounts, Outcome, Progress, RangeRequest, ReconcileError, Reconciler, RunOptions, Trigger,
    history_for, report,
};
use crate::config::{LedgerMode, Settings};

/// Everything agrees.
pub const EXIT_CLEAN: u8 = 0;
/// The check ran and found mismatches (listed in the report).
pub const EXIT_MISMATCHES: u8 = 3;
/// The check could not be done: the ledger or the database unreachable, the range outside
/// what the server keeps, another run holding the lock, a bad configuration.
pub const EXIT_COULD_NOT_CHECK: u8 = 4;
/// The progress bar is shown for ranges of at least this many ledgers.
pub const PROGRESS_LEDGERS_MIN: u64 = 1_000;

fn parse_time(text: &str) -> Result<i64, String> {
    payoutd_stellar::horizon::parse_rfc3339(text)
        .ok_or_else(|| format!("{text:?} is not an RFC 3339 time such as 2026-11-01T00:00:00Z"))
}

#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Without a range: the ledgers closed since the last run.\n\
Exit status: 0 everything agrees, 3 mismatches found, 4 could not check, 2 bad usage.\n\
Examples:\n  payoutd reconcile\n  payoutd reconcile --from-ledger 51000000 --to-ledger 51017280 --json\n  \
payoutd reconcile --since 2026-11-01T00:00:00Z --until 2026-12-01T00:00:00Z"
)]
pub struct ReconcileArgs {
    /// First ledger to check (default: where the last run stopped).
    #[arg(long, value_name = "LEDGER", conflicts_with_all = ["since", "until"])]
    pub from_ledger: Option<u32>,
    /// Last ledger to check, included (default: the latest closed ledger).
    #[arg(long, value_name = "LEDGER", conflicts_with_all = ["since", "until"])]
    pub to_ledger: Option<u32>,
    /// Check the ledgers closed at this time or later (RFC 3339, e.g. 2026-11-01T00:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<i64>,
    /// ... and before this time (RFC 3339; default: up to the latest ledger).
    #[arg(long, value_name = "TIME", value_parser = parse_time, requires = "since")]
    pub until: Option<i64>,
    /// Print the report as JSON (docs/reconcile.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Read the ledger from this Horizon instead of the configured one (the built-in
    /// simulator's URL, printed by `payoutd serve`). May carry credentials: never shown.
    #[arg(
        long,
        value_name = "URL",
        env = "PAYOUTD_RECONCILE_HORIZON_URL",
        hide_env_values = true
    )]
    pub horizon_url: Option<String>,
    /// No progress bar on stderr.
    #[arg(long)]
    pub no_progress: bool,
    /// How long to wait for another reconciliation to finish, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub lock_wait_ms: u64,
}

impl ReconcileArgs {
    fn range(&self) -> RangeRequest {
        match (self.since, self.from_ledger, self.to_ledger) {
            (Some(since), _, _) => RangeRequest::Time {
                since,
                until: self.until,
            },
            (None, None, None) => RangeRequest::SinceLastRun,
            (None, from, to) => RangeRequest::Ledgers { from, to },
        }
    }
}

/// The accounts payoutd pays from, by their public keys only: the configured
/// distribution account (or the one its seed belongs to) and channels; the demo keys in
/// simulator mode.
pub fn accounts_of(settings: &Settings) -> Result<Accounts, String> {
    let ledger = &settings.ledger;
    if ledger.mode == LedgerMode::Simulator {
        return Ok(Accounts {
            distribution: crate::app::demo::demo_keypair("distribution").account(),
            channels: (0..ledger.simulator.channels)
                .map(|i| crate::app::demo::demo_keypair(&format!("channel {i}")).account())
                .collect(),
        });
    }
    let distribution = if !ledger.distribution_account.is_empty() {
        AccountId::parse(&ledger.distribution_account)
            .map_err(|e| format!("ledger.distribution_account: {e}"))?
    } else if let Some(seed) = &ledger.distribution_seed {
        Keypair::from_seed(seed.expose_secret())
            .map_err(|e| format!("the distribution seed: {e}"))?
            .account()
    } else {
        return Err(
            "set ledger.distribution_account (PAYOUTD__LEDGER__DISTRIBUTION_ACCOUNT): reconcile needs the distribution account's public key"
                .into(),
        );
    };
    let mut channels = Vec::new();
    for c in &ledger.channel_accounts {
        channels.push(AccountId::parse(c).map_err(|e| format!("ledger.channel_accounts: {e}"))?);
    }
    for (i, s) in ledger.channel_seeds.iter().enumerate() {
        let account = Keypair::from_seed(s.expose_secret())
            .map_err(|e| format!("channel seed {}: {e}", i + 1))?
            .account();
        if !channels.contains(&account) {
            channels.push(account);
        }
    }
    Ok(Accounts {
        distribution,
        channels,
    })
}

/// Where the history is read: a Horizon (`--horizon-url`, the configured one, or the
/// built-in simulator's when it listens on a fixed port), or in `ledger.mode = "rpc"` the
/// configured Stellar RPC.
pub enum HistorySource {
    Horizon(String),
    Rpc(String),
}

fn history_source(settings: &Settings, args: &ReconcileArgs) -> Result<HistorySource, String> {
    if let Some(url) = &args.horizon_url {
        return Ok(HistorySource::Horizon(url.clone()));
    }
    let ledger = &settings.ledger;
    match ledger.mode {
        LedgerMode::Horizon => Ok(HistorySource::Horizon(ledger.horizon_url.clone())),
        LedgerMode::Rpc => Ok(HistorySource::Rpc(ledger.rpc_url.clone())),
        LedgerMode::Simulator => {
            let listen = &ledger.simulator.listen;
            match listen.rsplit_once(':') {
                Some((host, port)) if port != "0" => {
                    Ok(HistorySource::Horizon(format!("http://{host}:{port}")))
                }
                _ => Err(format!(
                    "the built-in simulator listens on a port chosen at start (ledger.simulator.listen = {listen:?}): \
                     pass --horizon-url with the URL `payoutd serve` printed, or give it a fixed port"
                )),
            }
        }
    }
}

/// The history reader for `source`, with the ledger's configured timeouts.
pub fn open_history(
    settings: &Settings,
    source: &HistorySource,
) -> Result<Arc<dyn payoutd_stellar::history::LedgerHistory>, ReconcileError> {
    match source {
        HistorySource::Horizon(url) => history_for(
            url,
            HorizonTimeouts {
                request_timeout_ms: settings.ledger.request_timeout_ms,
                connect_timeout_ms: settings.ledger.connect_timeout_ms,
            },
        ),
        HistorySource::Rpc(url) => {
            let client = payoutd_stellar::RpcClient::new(
                url,
                crate::config::ledger::rpc_timeouts(&settings.ledger),
            )
            .map_err(|e| ReconcileError::Setup(format!("the RPC URL: {e}")))?;
            Ok(Arc::new(payoutd_stellar::rpc_history::RpcHistory::new(
                client,
            )))
        }
    }
}

/// A progress bar on stderr (terminals only), for long ranges.
struct Bar {
    shown: bool,
    bar: Mutex<Option<(indicatif::ProgressBar, u64)>>,
}

impl Progress for Bar {
    fn start(&self, ledgers: u64, scans: u64) {
        if !self.shown || ledgers < PROGRESS_LEDGERS_MIN {
            return;
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(ledgers * scans),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "reconcile [{bar:40}] {percent:>3}% {msg} ({elapsed}, about {eta} left)",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some((bar, ledgers));
        }
    }

    fn at(&self, scan: u64, done: u64, label: &str) {
        if let Ok(slot) = self.bar.lock()
            && let Some((bar, ledgers)) = slot.as_ref()
        {
            bar.set_position(scan * ledgers + done.min(*ledgers));
            bar.set_message(label.to_owned());
        }
    }

    fn finish(&self) {
        if let Ok(mut slot) = self.bar.lock()
            && let Some((bar, _)) = slot.take()
        {
            bar.finish_and_clear();
        }
    }
}

fn could_not_check(args: &ReconcileArgs, error: &ReconcileError) -> ExitCode {
    if args.json {
        println!("{}", report::json_error(error));
    }
    eprintln!("payoutd reconcile: could not check: {error}");
    ExitCode::from(EXIT_COULD_NOT_CHECK)
}

/// Runs the command; the exit code is the answer.
// Long because: one command from start to exit code: settings, history, database (attached
// or private), the run, the private cluster stopped, the report; each step answers its own
// failure with the exit code, so the steps read best in order
pub async fn run(config: Option<&Path>, args: &ReconcileArgs) -> ExitCode {
    let setup = |e: String| ReconcileError::Setup(e);
    let settings = match Settings::load_read_only(config, std::env::vars()) {
        Ok(s) => s,
        Err(e) => return could_not_check(args, &setup(e.to_string())),
    };
    crate::telemetry::init(&settings.telemetry);
    let accounts = match accounts_of(&settings) {
        Ok(a) => a,
        Err(e) => return could_not_check(args, &setup(e)),
    };
    let history = match history_source(&settings, args)
        .map_err(setup)
        .and_then(|source| open_history(&settings, &source))
    {
        Ok(h) => h,
        Err(e) => return could_not_check(args, &e),
    };
    // A private cluster that `payoutd serve` is running stays up after this command.
    let attached = settings.wants_local_postgres()
        && settings
            .database
            .local_data_dir
            .join("postmaster.pid")
            .exists();
    let (pool, local) = match crate::app::startup::database(&settings).await {
        Ok(db) => db,
        Err(e) => return could_not_check(args, &ReconcileError::Journal(e.to_string())),
    };
    let reconciler = Reconciler {
        pool: pool.clone(),
        history,
        accounts,
        network_passphrase: settings.ledger.network_passphrase.clone(),
        page_records: settings.reconcile.page_records,
    };
    let bar = Bar {
        shown: !args.no_progress && std::io::stderr().is_terminal(),
        bar: Mutex::new(None),
    };
    let outcome = reconciler
        .run(
            args.range(),
            RunOptions {
                trigger: Trigger::Command,
                instance: None,
                ledgers_max: None,
                lock_wait: Duration::from_millis(args.lock_wait_ms),
                progress: &bar,
            },
        )
        .await;
    bar.finish();
    pool.close().await;
    if let Some(pg) = local {
        if attached {
            pg.detach();
        } else {
            let mut pg = pg;
            let _ = tokio::task::spawn_blocking(move || pg.stop()).await;
        }
    }
    match outcome {
        Ok(Outcome::Checked(r)) => {
            if args.json {
                println!("{}", report::json(&r));
            } else {
                print!("{}", report::human(&r));
            }
            ExitCode::from(if r.agrees() {
                EXIT_CLEAN
            } else {
                EXIT_MISMATCHES
            })
        }
        // Nothing closed since the last run: nothing to disagree about.
        Ok(Outcome::NothingNew {
            resume_ledger,
            latest,
        }) => {
            if args.json {
                println!("{}", report::json_nothing_new(resume_ledger, latest));
            } else {
                println!(
                    "payoutd reconcile: nothing to check: the last run reached ledger {}, the latest closed ledger is {latest}.",
                    resume_ledger.saturating_sub(1)
                );
            }
            ExitCode::from(EXIT_CLEAN)
        }
        Err(e) => could_not_check(args, &e),
    }
}

/// The scheduled check for a built service: `None` when `reconcile.interval_ms` is 0.
pub fn scheduled(
    settings: &Settings,
    pool: sqlx::PgPool,
    source: &HistorySource,
    accounts: Accounts,
) -> Result<Option<Arc<Reconciler>>, ReconcileError> {
    if settings.reconcile.interval_ms == 0 {
        return Ok(None);
    }
    let history = open_history(settings, source)?;
    Ok(Some(Arc::new(Reconciler {
        pool,
        history,
        accounts,
        network_passphrase: settings.ledger.network_passphrase.clone(),
        page_records: settings.reconcile.page_records,
    })))
}
