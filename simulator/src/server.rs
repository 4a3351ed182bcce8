//! Serving the simulator over HTTP: the router, a server on a listener, a spawned server
//! with its handle, and the task that closes ledgers in [`CloseMode::Interval`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::config::CloseMode;
use crate::sim::Simulator;

/// Every route: the Horizon subset, Stellar RPC (`POST /rpc` and `POST /`), `/friendbot`
/// and the `/sim/*` admin endpoints.
pub fn router(sim: Arc<Simulator>) -> Router {
    crate::horizon::routes(&sim)
        .merge(crate::rpc::routes())
        .merge(crate::admin::routes())
        .with_state(sim)
}

/// Serves `sim` on `listener` until the task running this future is dropped or aborted.
pub async fn serve(sim: Arc<Simulator>, listener: TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router(sim)).await
}

/// How long [`SimHandle::shutdown`] lets requests in flight finish before cutting them off.
const SHUTDOWN_GRACE_MS: u64 = 1_000;

/// A simulator served on a local port. Dropping it (or [`SimHandle::shutdown`]) stops the
/// server (open connections close once their request in flight is answered) and, in
/// interval mode, the ledger-closing task.
#[derive(Debug)]
pub struct SimHandle {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    pub addr: SocketAddr,
    pub sim: Arc<Simulator>,
    /// Dropping or sending on it starts the server's graceful shutdown.
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    closer: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// Stops accepting connections, closes the open ones (waiting up to a second for
    /// requests in flight), stops the closer, and returns when all of it has ended.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            // The server may already have ended; then nobody listens, which is fine.
            let _ = stop.send(());
        }
        if let Some(mut server) = self.server.take() {
            let grace = Duration::from_millis(SHUTDOWN_GRACE_MS);
            if tokio::time::timeout(grace, &mut server).await.is_err() {
                server.abort();
                // An aborted task ends with a cancellation error, the expected outcome.
                let _ = server.await;
            }
        }
        if let Some(closer) = self.closer.take() {
            closer.abort();
            let _ = closer.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The open connections were told to close by the signal above; the accept loop and
        // the closer stop now.
        for task in [self.server.take(), self.closer.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

/// Binds `addr` (e.g. `127.0.0.1:0`), serves `sim` on it and, in interval mode, starts the
/// ledger-closing task.
pub async fn spawn(sim: Arc<Simulator>, addr: &str) -> std::io::Result<SimHandle> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let app = router(Arc::clone(&sim));
    let server = tokio::spawn(async move {
        // A send or a dropped sender both mean "stop".
        let signal = async move {
            let _ = stopped.await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await
        {
            tracing::error!(error = %e, "simulator server stopped");
        }
    });
    let closer = spawn_closer(&sim);
    Ok(SimHandle {
        base_url: format!("http://{addr}"),
        addr,
        sim,
        stop: Some(stop),
        server: Some(server),
        closer,
    })
}

/// In [`CloseMode::Interval`], starts a task that closes a ledger every interval (empty
/// ledgers too, so close time keeps advancing); `None` in the other modes.
pub fn spawn_closer(sim: &Arc<Simulator>) -> Option<JoinHandle<()>> {
    let CloseMode::Interval { close_interval_ms } = sim.close_mode() else {
        return None;
    };
    let sim = Arc::clone(sim);
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(close_interval_ms.max(1)));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick completes at once; the first close is one interval after start.
        tick.tick().await;
        loop {
            tick.tick().await;
            let s = Arc::clone(&sim);
            // Closing writes the state file: keep it off the async worker threads.
            if tokio::task::spawn_blocking(move || s.close_ledger())
                .await
                .is_err()
            {
                tracing::error!("closing a ledger panicked; the closer stops");
                return;
            }
        }
    }))
}
