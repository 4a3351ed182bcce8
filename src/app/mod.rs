//! Wiring: settings → database (a private cluster or a URL) → ledger (the in-process
//! simulator, Horizon or Stellar RPC) → journal → supervisor → recovery → HTTP. `Application::build`
//! returns something tests can start on port 0.

use std::future::Future;
use std::sync::Arc;

use payoutd_actors::domain::AccountId;
use payoutd_actors::metrics::Metrics;
use payoutd_actors::ports::Ledger;
use payoutd_actors::queue::ReadyQueue;
use payoutd_actors::{
    ClusterConfig, Context, PayoutPolicy, Payouts, ServiceConfig, SupervisorConfig,
};
use payoutd_simulator::{CloseMode, SimConfig, SimHandle, Simulator};
use payoutd_stellar::{HorizonTimeouts, Keypair, Keyring, RpcLedger, StellarLedger};
use secrecy::ExposeSecret;
use sqlx::postgres::PgPool;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::{LedgerMode, Settings, SimulatorProtocol};
use crate::http::{ApiShared, ApiState, router, with_body_limit};
use crate::local_postgres::LocalPostgres;

pub mod demo;
pub mod startup;

pub use demo::demo_keypair;

use crate::storage::{AcceptBatching, PgJournal};
pub use startup::{StartupError, database};

/// XLM given to the demo distribution account on a fresh simulator, in stroops.
pub const DEMO_DISTRIBUTION_STROOPS: i64 = 100_000_000 * 10_000_000;
/// XLM given to each demo channel account, in stroops (fees only).
pub const DEMO_CHANNEL_STROOPS: i64 = 1_000 * 10_000_000;
/// A demo destination that exists on a fresh simulator (the example account of the README).
pub const DEMO_DESTINATION: &str = "GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2";

/// The ledger side: keys, the payer, the channel accounts and the port implementation.
pub struct LedgerSetup {
    pub ledger: Arc<dyn Ledger>,
    pub payer: AccountId,
    pub channels: Vec<AccountId>,
    pub simulator: Option<SimHandle>,
}

pub async fn ledger(settings: &Settings) -> Result<LedgerSetup, StartupError> {
    match settings.ledger.mode {
        LedgerMode::Simulator => simulator_ledger(&settings.ledger).await,
        LedgerMode::Horizon | LedgerMode::Rpc => keyed_ledger(&settings.ledger).await,
    }
}

/// Connects the port to the server at `url`, over Horizon or Stellar RPC.
async fn connect_ledger(
    cfg: &crate::config::LedgerSettings,
    url: &str,
    rpc: bool,
    keyring: Keyring,
) -> Result<Arc<dyn Ledger>, StartupError> {
    if rpc {
        let timeouts = crate::config::ledger::rpc_timeouts(cfg);
        let ledger = RpcLedger::connect(url, &cfg.network_passphrase, keyring, timeouts)
            .await
            .map_err(|e| StartupError::Ledger(e.into()))?;
        return Ok(Arc::new(ledger));
    }
    let timeouts = HorizonTimeouts {
        request_timeout_ms: cfg.request_timeout_ms,
        connect_timeout_ms: cfg.connect_timeout_ms,
    };
    let ledger = StellarLedger::connect(url, &cfg.network_passphrase, keyring, timeouts)
        .await
        .map_err(|e| StartupError::Ledger(e.into()))?;
    Ok(Arc::new(ledger))
}

/// The built-in simulator with its demo accounts (created and funded at first start).
async fn simulator_ledger(
    cfg: &crate::config::LedgerSettings,
) -> Result<LedgerSetup, StartupError> {
    let sim_cfg = SimConfig {
        network_passphrase: cfg.network_passphrase.clone(),
        close_mode: if cfg.simulator.close_interval_ms == 0 {
            CloseMode::Manual
        } else {
            CloseMode::Interval {
                close_interval_ms: cfg.simulator.close_interval_ms,
            }
        },
        state_file: Some(cfg.simulator.state_file.clone()),
        ops_per_ledger_max: cfg.simulator.ops_per_ledger_max,
        ..SimConfig::default()
    };
    if let Some(parent) = cfg.simulator.state_file.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let sim = Simulator::new(sim_cfg).map_err(|e| StartupError::Ledger(e.into()))?;
    let distribution = demo_keypair("distribution");
    let channels: Vec<Keypair> = (0..cfg.simulator.channels)
        .map(|i| demo_keypair(&format!("channel {i}")))
        .collect();
    let fund = |account: AccountId, stroops: i64| -> Result<(), StartupError> {
        if sim.account_sequence(&account.to_strkey()).is_none() {
            sim.create_account(&account.to_strkey(), stroops)
                .map_err(|e| StartupError::Ledger(e.into()))?;
        }
        Ok(())
    };
    fund(distribution.account(), DEMO_DISTRIBUTION_STROOPS)?;
    for c in &channels {
        fund(c.account(), DEMO_CHANNEL_STROOPS)?;
    }
    fund(
        AccountId::parse(DEMO_DESTINATION).map_err(|e| StartupError::Ledger(e.into()))?,
        10 * 10_000_000,
    )?;
    let handle = payoutd_simulator::spawn(sim, &cfg.simulator.listen)
        .await
        .map_err(|source| StartupError::Listen {
            addr: cfg.simulator.listen.clone(),
            source,
        })?;
    info!(url = %handle.base_url, "built-in ledger simulator listening (demo network)");
    let payer = distribution.account();
    let channel_ids: Vec<AccountId> = channels.iter().map(Keypair::account).collect();
    let mut keyring = Keyring::new();
    keyring.insert(distribution);
    for c in channels {
        keyring.insert(c);
    }
    let ledger = match cfg.simulator.protocol {
        SimulatorProtocol::Horizon => connect_ledger(cfg, &handle.base_url, false, keyring).await?,
        SimulatorProtocol::Rpc => {
            let url = crate::config::ledger::simulator_rpc_url(&handle.base_url);
            connect_ledger(cfg, &url, true, keyring).await?
        }
    };
    Ok(LedgerSetup {
        ledger,
        payer,
        channels: channel_ids,
        simulator: Some(handle),
    })
}

/// A real network (Horizon or RPC) with the seeds of the configuration.
async fn keyed_ledger(cfg: &crate::config::LedgerSettings) -> Result<LedgerSetup, StartupError> {
    let (distribution, mut keyring, mut channels) = keys(cfg)?;
    let payer = distribution.account();
    if channels.is_empty() {
        warn!(
            "no channel accounts: the distribution account is the only source, one payout at a time"
        );
        channels.push(payer);
    }
    keyring.insert(distribution);
    let ledger = if cfg.mode == LedgerMode::Rpc {
        connect_ledger(cfg, &cfg.rpc_url, true, keyring).await?
    } else {
        connect_ledger(cfg, &cfg.horizon_url, false, keyring).await?
    };
    Ok(LedgerSetup {
        ledger,
        payer,
        channels,
        simulator: None,
    })
}

/// The distribution key and the channel keys from their seeds, checked against the
/// accounts the configuration names.
fn keys(
    cfg: &crate::config::LedgerSettings,
) -> Result<(Keypair, Keyring, Vec<AccountId>), StartupError> {
    let seed = cfg
        .distribution_seed
        .as_ref()
        .ok_or_else(|| StartupError::Key {
            what: "ledger.distribution_seed",
            detail: "missing: set PAYOUTD__LEDGER__DISTRIBUTION_SEED".into(),
        })?;
    let distribution = Keypair::from_seed(seed.expose_secret()).map_err(|e| StartupError::Key {
        what: "PAYOUTD__LEDGER__DISTRIBUTION_SEED",
        detail: e.to_string(),
    })?;
    let payer = distribution.account();
    if !cfg.distribution_account.is_empty() && cfg.distribution_account != payer.to_strkey() {
        return Err(StartupError::Key {
            what: "ledger.distribution_account",
            detail: format!(
                "the distribution seed belongs to {payer}, not to {}",
                cfg.distribution_account
            ),
        });
    }
    let mut keyring = Keyring::new();
    let mut channels = Vec::new();
    for (i, s) in cfg.channel_seeds.iter().enumerate() {
        let pair = Keypair::from_seed(s.expose_secret()).map_err(|e| StartupError::Key {
            what: "PAYOUTD__LEDGER__CHANNEL_SEEDS",
            detail: format!("entry {}: {e}", i + 1),
        })?;
        channels.push(pair.account());
        keyring.insert(pair);
    }
    if !cfg.channel_accounts.is_empty() {
        let listed: Vec<String> = channels.iter().map(AccountId::to_strkey).collect();
        if let Some(missing) = cfg.channel_accounts.iter().find(|a| !listed.contains(a)) {
            return Err(StartupError::Key {
                what: "ledger.channel_accounts",
                detail: format!("no seed given for channel {missing}"),
            });
        }
    }
    Ok((distribution, keyring, channels))
}

/// The background workers of intake and delivery: the inbox, the NATS consumer and
/// publisher, the webhook dispatcher (each as configured).
fn ingress_and_egress(
    settings: &Settings,
    payouts: &Payouts,
    journal: &PgJournal,
    stopped: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut workers = Vec::new();
    let pool = journal.pool();
    if settings.inbox.enabled {
        let (pool, payouts, inbox) = (pool.clone(), payouts.clone(), settings.inbox.clone());
        let stopped = stopped.clone();
        workers.push(tokio::spawn(async move {
            let totals = crate::inbox::run(pool, payouts, inbox, stopped).await;
            info!(?totals, "inbox worker stopped");
        }));
    }
    let nats_outbox = settings.nats.enabled && settings.nats.outbox.enabled;
    if settings.nats.enabled {
        workers.push(crate::nats::spawn_consumer(
            settings.nats.clone(),
            payouts.clone(),
            pool.clone(),
            stopped.clone(),
        ));
    }
    if nats_outbox {
        workers.push(crate::outbox::spawn_publisher(
            settings.nats.clone(),
            pool.clone(),
            settings.webhooks.enabled(),
            stopped.clone(),
        ));
    }
    if settings.webhooks.enabled() {
        workers.push(crate::webhooks::deliver::spawn(
            settings.webhooks.clone(),
            pool.clone(),
            nats_outbox,
            stopped.clone(),
        ));
    }
    workers
}

/// The scheduled reconciliation, over the ledger this instance pays on (none when
/// `reconcile.interval_ms` is 0).
fn scheduled_reconcile(
    settings: &Settings,
    setup: &LedgerSetup,
    journal: &PgJournal,
) -> Result<Option<Arc<crate::reconcile::Reconciler>>, StartupError> {
    use crate::reconcile::cli::HistorySource;
    let source = match settings.ledger.mode {
        LedgerMode::Simulator => setup
            .simulator
            .as_ref()
            .map(|s| HistorySource::Horizon(s.base_url.clone())),
        LedgerMode::Horizon => Some(HistorySource::Horizon(settings.ledger.horizon_url.clone())),
        LedgerMode::Rpc => Some(HistorySource::Rpc(settings.ledger.rpc_url.clone())),
    };
    let Some(source) = source else {
        return Ok(None);
    };
    let accounts = crate::reconcile::Accounts {
        distribution: setup.payer,
        channels: setup.channels.clone(),
    };
    crate::reconcile::cli::scheduled(settings, journal.pool().clone(), &source, accounts)
        .map_err(|e| StartupError::Ledger(e.into()))
}

pub fn policy(settings: &Settings, payer: AccountId) -> PayoutPolicy {
    let p = &settings.payouts;
    PayoutPolicy {
        payer,
        fee_per_op_stroops: p.fee_per_op_stroops,
        fee_per_op_max_stroops: p.fee_per_op_max_stroops,
        tx_validity_s: p.tx_validity_s,
        attempts_max: p.attempts_max,
        payments_per_tx_max: p.payments_per_tx_max,
        batch_linger_ms: p.batch_linger_ms,
        poll_interval_ms: p.poll_interval_ms,
        io_retry_ms: p.io_retry_ms,
        underfunded_retry_ms: p.underfunded_retry_ms,
        idle_passivate_ms: p.idle_passivate_ms,
        breaker: settings.safety,
        destinations: settings.destinations.policy(),
    }
}

pub fn service_config(settings: &Settings, channels: Vec<AccountId>) -> ServiceConfig {
    let c = &settings.cluster;
    ServiceConfig {
        supervisor: SupervisorConfig {
            live_actors_max: settings.payouts.live_actors_max,
            restart_intensity: settings.payouts.restart_intensity,
            restart_period_ms: settings.payouts.restart_period_ms,
        },
        cluster: ClusterConfig {
            heartbeat_interval_ms: c.heartbeat_interval_ms,
            instance_ttl_ms: c.instance_ttl_ms,
            orphan_sweep_interval_ms: c.orphan_sweep_interval_ms,
            queue_refill_interval_ms: c.queue_refill_interval_ms,
            adopt_page_max: c.adopt_page_max,
            pool_full_warn_ms: c.pool_full_warn_ms,
            control_poll_interval_ms: c.control_poll_interval_ms,
            worker_restart_intensity: c.worker_restart_intensity,
            worker_restart_period_ms: c.worker_restart_period_ms,
        },
        call_timeout_ms: settings.payouts.call_timeout_ms,
        channels,
    }
}

/// A built service, ready to run.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    pub payouts: Payouts,
    pub journal: Arc<PgJournal>,
    pub simulator: Option<SimHandle>,
    local_pg: Option<LocalPostgres>,
    /// Tells the background ingress workers (inbox, broker) to stop after their current batch.
    workers_stop: tokio::sync::watch::Sender<bool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let (pool, local_pg) = database(&settings).await?;
        Self::build_with_pool(settings, pool, local_pg).await
    }

    /// As `build`, over an existing pool (tests give each app a fresh database).
    pub async fn build_with_pool(
        settings: Settings,
        pool: PgPool,
        local_pg: Option<LocalPostgres>,
    ) -> Result<Self, StartupError> {
        let setup = ledger(&settings).await?;
        let outbox =
            (settings.nats.enabled && settings.nats.outbox.enabled) || settings.webhooks.enabled();
        let limits = settings.limits.limits()?;
        if !limits.is_empty() {
            info!(assets = limits.assets.len(), when_reached = ?limits.when_reached, "spending limits in force");
        }
        let journal = Arc::new(
            PgJournal::with_options(pool, outbox, AcceptBatching::default()).with_limits(limits),
        );
        let instance = settings.instance_id();
        let ctx = Arc::new(Context::new(
            journal.clone(),
            setup.ledger.clone(),
            policy(&settings, setup.payer),
            Arc::new(Metrics::default()),
            instance.clone(),
            Arc::new(ReadyQueue::new(settings.payouts.ready_queue_max)),
        ));
        let payouts = Payouts::start(ctx, service_config(&settings, setup.channels.clone()))
            .await
            .map_err(|e| StartupError::Supervisor(e.to_string()))?;
        info!(%instance, recovered = payouts.recovered(), "payout core running");
        if settings.server.api_tokens.is_empty() {
            warn!(
                "no API tokens configured (PAYOUTD__SERVER__API_TOKENS): the HTTP API is open to anyone who can reach it"
            );
        }
        let state = ApiState::new(ApiShared {
            payouts: payouts.clone(),
            reads: journal.clone(),
            db: journal.pool().clone(),
            tokens: Arc::new(settings.server.api_tokens.clone()),
            admin_tokens: Arc::new(settings.server.admin_tokens.clone()),
            request_timeout_ms: settings.server.request_timeout_ms,
            batch_items_max: settings.server.batch_items_max,
            batch_body_bytes_max: settings.server.batch_body_bytes_max,
        });
        let router = with_body_limit(router(state), settings.server.body_bytes_max);
        let listener = TcpListener::bind(&settings.server.listen)
            .await
            .map_err(|source| StartupError::Listen {
                addr: settings.server.listen.clone(),
                source,
            })?;
        let (workers_stop, workers_stopped) = tokio::sync::watch::channel(false);
        let mut workers = ingress_and_egress(&settings, &payouts, &journal, &workers_stopped);
        if let Some(reconciler) = scheduled_reconcile(&settings, &setup, &journal)? {
            workers.push(crate::reconcile::schedule::spawn(
                reconciler,
                settings.reconcile.interval_ms,
                settings.reconcile.ledgers_per_run_max,
                payouts.context().metrics.clone(),
                instance.clone(),
                workers_stopped.clone(),
            ));
        }
        Ok(Self {
            listener,
            router,
            payouts,
            journal,
            simulator: setup.simulator,
            local_pg,
            workers_stop,
            workers,
        })
    }

    /// The router the listener serves: tests drive it without a socket.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` resolves, then stops intake, stops the actors (every step is
    /// already journaled), the simulator and the private database.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self {
            listener,
            router,
            payouts,
            simulator,
            mut local_pg,
            workers_stop,
            workers,
            ..
        } = self;
        info!(addr = %listener.local_addr()?, "payoutd listening");
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await?;
        // Stop intake from the other ingresses too; each finishes its current batch, so
        // nothing acknowledged is left half-done.
        let _ = workers_stop.send(true);
        for worker in workers {
            let _ = worker.await;
        }
        info!("intake stopped; stopping payout actors");
        payouts.shutdown(5_000).await;
        if let Some(sim) = simulator {
            sim.shutdown().await;
        }
        if let Some(mut pg) = local_pg.take() {
            tokio::task::spawn_blocking(move || pg.stop()).await.ok();
        }
        info!("payoutd stopped");
        Ok(())
    }
}
