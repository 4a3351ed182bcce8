//! Serving the simulator over HTTP: the router, a server on a listener, a spawned server
//! with its handle, and the task that closes ledgers in [`CloseMode::Interval`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::config::CloseMode;
use crate::sim::Simulator;

/// Every route: the Horizon subset, `/friendbot` and the `/sim/*` admin endpoints.
pub fn router(sim: Arc<Simulator>) -> Router {
    crate::horizon::routes()
        .merge(crate::admin::routes())
        .with_state(sim)
}

/// Serves `sim` on `listener` until the task running this future is dropped or aborted.
pub async fn serve(sim: Arc<Simulator>, listener: TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router(sim)).await
}

/// A simulator served on a local port. Dropping it (or [`SimHandle::shutdown`]) stops the
/// server and, in interval mode, the ledger-closing task.
#[derive(Debug)]
pub struct SimHandle {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    pub addr: SocketAddr,
    pub sim: Arc<Simulator>,
    server: Option<JoinHandle<()>>,
    closer: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// Stops the server and the closer and waits until both have ended.
    pub async fn shutdown(mut self) {
        for task in [self.server.take(), self.closer.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
            // An aborted task ends with a cancellation error, which is the expected outcome.
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
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
    let server_sim = Arc::clone(&sim);
    let server = tokio::spawn(async move {
        if let Err(e) = serve(server_sim, listener).await {
            tracing::error!(error = %e, "simulator server stopped");
        }
    });
    let closer = spawn_closer(&sim);
    Ok(SimHandle {
        base_url: format!("http://{addr}"),
        addr,
        sim,
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
