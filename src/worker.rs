//! What the background workers (NATS consumer, outbox publisher, webhook dispatcher) share:
//! stopping on a watch channel, and an exponential backoff.

use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

/// Waits until shutdown is asked for (`true`), or its sender is gone.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped: nobody can ask any more, so stop.
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        warn!("the shutdown sender was dropped; stopping (keep the watch::Sender alive)");
    }
}

pub(crate) fn is_stopped(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Sleeps `ms` milliseconds; true if shutdown came first.
pub(crate) async fn sleep_or_stop(ms: u64, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms)) => is_stopped(shutdown),
        () = stopped(shutdown) => true,
    }
}

/// Exponential backoff between reconnection attempts.
pub(crate) struct Backoff {
    min_ms: u64,
    max_ms: u64,
    next_ms: u64,
}

impl Backoff {
    pub(crate) fn new(min_ms: u64, max_ms: u64) -> Self {
        Self {
            min_ms,
            max_ms,
            next_ms: min_ms,
        }
    }

    pub(crate) fn next_ms(&mut self) -> u64 {
        let now = self.next_ms;
        self.next_ms = self.next_ms.saturating_mul(2).min(self.max_ms);
        now
    }

    pub(crate) fn reset(&mut self) {
        self.next_ms = self.min_ms;
    }
}
