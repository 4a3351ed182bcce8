//! The Prometheus text rendering of the core's metrics (`GET /metrics`): a table of
//! counters and gauges, then the labelled counters and the histograms.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use payoutd_actors::metrics::{Histogram, Metrics, ReconcileGauges};

enum Value<'a> {
    Counter(&'a AtomicU64),
    Gauge(&'a AtomicI64),
}

/// (name, help, value) of every plain counter and gauge.
// Long because it is a table: one row per metric (name, help, value), in the order
// /metrics shows them. Cutting it would scatter the table, not shorten it.
fn table(m: &Metrics) -> Vec<(&'static str, &'static str, Value<'_>)> {
    use Value::{Counter as C, Gauge as G};
    vec![
        (
            "payoutd_payouts_accepted_total",
            "New payouts stored.",
            C(&m.accepted),
        ),
        (
            "payoutd_duplicates_total",
            "Duplicate submissions answered without a write.",
            C(&m.duplicates),
        ),
        (
            "payoutd_conflicts_total",
            "Submissions refused: same id, other content.",
            C(&m.conflicts),
        ),
        (
            "payoutd_payouts_confirmed_total",
            "Payouts paid (their transaction applied).",
            C(&m.confirmed),
        ),
        (
            "payoutd_payouts_failed_total",
            "Payouts failed for good (their payment refused by the ledger).",
            C(&m.failed),
        ),
        (
            "payoutd_payouts_parked_total",
            "Payouts parked for an operator.",
            C(&m.parked),
        ),
        (
            "payoutd_payouts_cancelled_total",
            "Payouts cancelled before an envelope existed.",
            C(&m.cancelled),
        ),
        (
            "payoutd_payouts_requeued_total",
            "Payouts back in the queue after their envelope ended unpaid.",
            C(&m.requeued),
        ),
        (
            "payoutd_payouts_adopted_total",
            "Accepted payouts taken over from instances that are gone.",
            C(&m.adopted),
        ),
        (
            "payoutd_envelopes_built_total",
            "Transaction envelopes journaled.",
            C(&m.envelopes_built),
        ),
        (
            "payoutd_envelopes_dead_total",
            "Envelopes proven dead (never applied, never will).",
            C(&m.envelopes_dead),
        ),
        (
            "payoutd_envelopes_closed_total",
            "Envelopes that could no longer apply before their fate was proven.",
            C(&m.envelopes_closed),
        ),
        (
            "payoutd_submissions_total",
            "Envelope submissions sent.",
            C(&m.submissions),
        ),
        (
            "payoutd_actor_restarts_total",
            "Payout actors restarted after a failure.",
            C(&m.actor_restarts),
        ),
        (
            "payoutd_actors_spawned_total",
            "Payout actors started.",
            C(&m.actors_spawned),
        ),
        (
            "payoutd_overloaded_total",
            "Requests refused at the live-actor bound.",
            C(&m.overloaded),
        ),
        (
            "payoutd_channel_worker_restarts_total",
            "Channel workers restarted after a failure.",
            C(&m.worker_restarts),
        ),
        (
            "payoutd_queue_spilled_total",
            "Accepted payouts left in the journal for lack of room in the queue.",
            C(&m.spilled),
        ),
        (
            "payoutd_live_actors",
            "Payout actors alive.",
            G(&m.live_actors),
        ),
        (
            "payoutd_ready_queue",
            "Accepted payouts waiting in memory for a batch.",
            G(&m.ready_queue),
        ),
        (
            "payoutd_channels_running",
            "Channel accounts this instance drives.",
            G(&m.channels_running),
        ),
        (
            "payoutd_channels_busy",
            "Channels with an envelope that may still apply.",
            G(&m.channels_busy),
        ),
        (
            "payoutd_channels_disabled",
            "Channels that stopped building envelopes (see /readyz).",
            G(&m.channels_disabled),
        ),
        (
            "payoutd_envelopes_unresolved",
            "Envelopes that can no longer apply, whose fate is not proven yet.",
            G(&m.envelopes_unresolved),
        ),
        (
            "payoutd_envelopes_beyond_history",
            "Unresolved envelopes older than the ledger server's history: no lookup can settle them; an operator must (see /readyz).",
            G(&m.envelopes_beyond_history),
        ),
        (
            "payoutd_paused",
            "1 while paying is paused cluster-wide (no new envelopes), else 0.",
            G(&m.paused),
        ),
        (
            "payoutd_breaker_trips_total",
            "Times this instance's circuit breaker paused paying.",
            C(&m.breaker_trips),
        ),
        (
            "payoutd_prepares_paused_total",
            "Envelopes the journal refused because paying was paused.",
            C(&m.prepares_paused),
        ),
        (
            "payoutd_payouts_held_total",
            "Payouts held because a spending limit would be exceeded.",
            C(&m.payouts_held),
        ),
        (
            "payoutd_payouts_released_total",
            "Held payouts released because their limit's window moved on.",
            C(&m.payouts_released),
        ),
    ]
}

fn histogram<const N: usize>(
    out: &mut String,
    name: &str,
    help: &str,
    h: &Histogram<N>,
    unit_divisor: Option<u64>,
) {
    let (buckets, count, sum) = h.snapshot();
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let show = |v: u64| match unit_divisor {
        Some(d) => format!("{}.{:03}", v / d, v % d),
        None => v.to_string(),
    };
    for (bound, n) in buckets {
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {n}", show(bound));
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}", show(sum));
    let _ = writeln!(out, "{name}_count {count}");
}

pub fn render_prometheus(m: &Metrics) -> String {
    let mut out = String::new();
    for (name, help, value) in table(m) {
        let (kind, v) = match value {
            Value::Counter(c) => ("counter", c.load(Ordering::Relaxed) as i64),
            Value::Gauge(g) => ("gauge", g.load(Ordering::Relaxed)),
        };
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP payoutd_ledger_outcomes_total Ledger answers by outcome code (unknown codes count as other).\n# TYPE payoutd_ledger_outcomes_total counter"
    );
    for (code, n) in m.ledger_outcomes() {
        let _ = writeln!(out, "payoutd_ledger_outcomes_total{{code=\"{code}\"}} {n}");
    }
    histogram(
        &mut out,
        "payoutd_submit_latency_seconds",
        "Time of one envelope submission.",
        &m.submit_latency_ms,
        Some(1000),
    );
    histogram(
        &mut out,
        "payoutd_batch_size",
        "Payouts per journaled envelope.",
        &m.batch_size,
        None,
    );
    reconcile(&mut out, &m.reconcile);
    out
}

/// The scheduled reconciliation's gauges (docs/reconcile.md), when it is on.
fn reconcile(out: &mut String, r: &ReconcileGauges) {
    if !r.enabled.load(Ordering::Relaxed) {
        return;
    }
    let gauge = |out: &mut String, name: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        out,
        "payoutd_reconcile_mismatches",
        "Mismatches between journal and ledger that the last completed reconciliation found.",
        r.mismatches.load(Ordering::Relaxed).to_string(),
    );
    let last_clean = r.last_clean_unix_ms.load(Ordering::Relaxed);
    let age = if last_clean <= 0 {
        "+Inf".to_owned()
    } else {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let age_ms = now_ms.saturating_sub(last_clean).max(0);
        format!("{}.{:03}", age_ms / 1000, age_ms % 1000)
    };
    gauge(
        out,
        "payoutd_reconcile_last_clean_age_seconds",
        "Seconds since a reconciliation last found journal and ledger in agreement (+Inf: never).",
        age,
    );
    gauge(
        out,
        "payoutd_reconcile_checked_ledger",
        "The last ledger a completed reconciliation checked (0: none yet).",
        r.checked_ledger.load(Ordering::Relaxed).to_string(),
    );
    let _ = writeln!(
        out,
        "# HELP payoutd_reconcile_runs_total Reconciliation runs of this instance by result.\n# TYPE payoutd_reconcile_runs_total counter"
    );
    for (result, n) in [
        ("clean", &r.runs_clean),
        ("mismatches", &r.runs_mismatches),
        ("error", &r.runs_error),
    ] {
        let _ = writeln!(
            out,
            "payoutd_reconcile_runs_total{{result=\"{result}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
}
