//! The scheduled check inside the service: every `reconcile.interval_ms`, the ledgers closed
//! since the last run, by one instance at a time (the advisory lock: an instance that finds
//! it held skips its turn). Mismatches are logged at error level with their evidence; the
//! gauges are read back from the runs journal after every turn, so every instance shows
//! what the last run found, whichever instance ran it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use payoutd_actors::metrics::Metrics;
use tokio::sync::watch;

use super::{Outcome, Quiet, RangeRequest, ReconcileError, Reconciler, RunOptions, Trigger};

/// Starts the loop; it ends when `stop` turns true (a run under way is abandoned: it
/// wrote nothing yet, and its lock goes with its connection).
pub fn spawn(
    reconciler: Arc<Reconciler>,
    interval_ms: u64,
    ledgers_per_run_max: u32,
    metrics: Arc<Metrics>,
    instance: String,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        metrics.reconcile.enabled.store(true, Ordering::Relaxed);
        refresh(&reconciler, &metrics).await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(interval_ms)) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let run = reconciler.run(
                RangeRequest::SinceLastRun,
                RunOptions {
                    trigger: Trigger::Schedule,
                    instance: Some(&instance),
                    ledgers_max: Some(ledgers_per_run_max),
                    lock_wait: Duration::ZERO,
                    progress: &Quiet,
                },
            );
            let outcome = tokio::select! {
                outcome = run => outcome,
                _ = stop.changed() => return,
            };
            note(&outcome, &metrics);
            refresh(&reconciler, &metrics).await;
        }
    })
}

/// Logs a turn and counts it.
fn note(outcome: &Result<Outcome, ReconcileError>, metrics: &Metrics) {
    let gauges = &metrics.reconcile;
    match outcome {
        Ok(Outcome::Checked(report)) => {
            let r = &report.range;
            let f = &report.findings;
            if report.agrees() {
                Metrics::inc(&gauges.runs_clean);
                tracing::info!(
                    from_ledger = r.from_ledger,
                    to_ledger = r.to_ledger,
                    payments = f.counts.payments_matched,
                    in_flight = f.in_flight.len(),
                    run = report.run_id,
                    "reconcile: journal and ledger agree"
                );
            } else {
                Metrics::inc(&gauges.runs_mismatches);
                for m in &f.mismatches {
                    tracing::error!(
                        kind = m.kind.as_str(),
                        tx_hash = m.tx_hash.as_deref(),
                        ledger = m.ledger,
                        op_index = m.op_index,
                        payout_id = m.payout_id.as_deref(),
                        journal = ?m.journal_says,
                        on_ledger = ?m.ledger_says,
                        run = report.run_id,
                        "reconcile mismatch: {}",
                        m.detail
                    );
                }
                tracing::error!(
                    from_ledger = r.from_ledger,
                    to_ledger = r.to_ledger,
                    mismatches = f.mismatches.len(),
                    run = report.run_id,
                    "reconcile: journal and ledger disagree (see `payoutd reconcile --from-ledger {} --to-ledger {}`)",
                    r.from_ledger,
                    r.to_ledger
                );
            }
        }
        Ok(Outcome::NothingNew { .. }) => {}
        Err(ReconcileError::Busy) => {
            tracing::debug!("reconcile: another instance is running the check; skipped");
        }
        Err(e) => {
            Metrics::inc(&gauges.runs_error);
            tracing::warn!(error = %e, "reconcile: could not check");
        }
    }
}

/// Sets the gauges from the runs journal.
async fn refresh(reconciler: &Reconciler, metrics: &Metrics) {
    let g = &metrics.reconcile;
    match crate::storage::reconcile::gauges(&reconciler.pool).await {
        Ok(state) => {
            g.mismatches.store(
                state
                    .mismatches
                    .map_or(0, |m| i64::try_from(m).unwrap_or(i64::MAX)),
                Ordering::Relaxed,
            );
            // The age comes from the database's clock; turned into a time on this host's
            // clock, so the rendered age does not depend on the two clocks agreeing.
            let last_clean = state.last_clean_age_ms.map_or(0, |age| {
                super::now_unix_ms().saturating_sub(age.max(0)).max(1)
            });
            g.last_clean_unix_ms.store(last_clean, Ordering::Relaxed);
            g.checked_ledger
                .store(state.checked_ledger.map_or(0, i64::from), Ordering::Relaxed);
        }
        Err(e) => tracing::warn!(error = %e, "reconcile: cannot read the runs journal"),
    }
}
