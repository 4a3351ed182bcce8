//! Renders the core's counters in the Prometheus text exposition format.

use std::fmt::Write;

use payoutd_actors::metrics::Metrics;

fn line(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

pub fn render_prometheus(m: &Metrics) -> String {
    let mut out = String::with_capacity(4096);
    let c = |x: &std::sync::atomic::AtomicU64| Metrics::get(x);
    line(
        &mut out,
        "payoutd_payouts_accepted_total",
        "counter",
        "New payouts stored.",
        c(&m.accepted),
    );
    line(
        &mut out,
        "payoutd_duplicates_total",
        "counter",
        "Requests recognised as duplicates (no write).",
        c(&m.duplicates),
    );
    line(
        &mut out,
        "payoutd_conflicts_total",
        "counter",
        "Requests refused: same id, different content.",
        c(&m.conflicts),
    );
    line(
        &mut out,
        "payoutd_payouts_confirmed_total",
        "counter",
        "Payouts applied on the ledger.",
        c(&m.confirmed),
    );
    line(
        &mut out,
        "payoutd_payouts_failed_total",
        "counter",
        "Payouts failed for good.",
        c(&m.failed),
    );
    line(
        &mut out,
        "payoutd_payouts_parked_total",
        "counter",
        "Payouts parked for an operator.",
        c(&m.parked),
    );
    line(
        &mut out,
        "payoutd_payouts_cancelled_total",
        "counter",
        "Payouts cancelled.",
        c(&m.cancelled),
    );
    line(
        &mut out,
        "payoutd_envelopes_built_total",
        "counter",
        "Transaction envelopes built and journaled.",
        c(&m.envelopes_built),
    );
    line(
        &mut out,
        "payoutd_submissions_total",
        "counter",
        "Envelope submissions to the ledger.",
        c(&m.submissions),
    );
    line(
        &mut out,
        "payoutd_actor_restarts_total",
        "counter",
        "Payout actors restarted after a failure.",
        c(&m.actor_restarts),
    );
    line(
        &mut out,
        "payoutd_overloaded_total",
        "counter",
        "Requests refused at the live-actor bound.",
        c(&m.overloaded),
    );
    line(
        &mut out,
        "payoutd_live_actors",
        "gauge",
        "Payout actors alive.",
        m.live_actors.load(std::sync::atomic::Ordering::Relaxed),
    );
    line(
        &mut out,
        "payoutd_in_flight",
        "gauge",
        "Payouts being driven now.",
        m.in_flight.load(std::sync::atomic::Ordering::Relaxed),
    );
    let _ = writeln!(
        out,
        "# HELP payoutd_ledger_outcomes_total Ledger answers by outcome code.\n# TYPE payoutd_ledger_outcomes_total counter"
    );
    for (code, n) in m.ledger_outcomes() {
        let _ = writeln!(
            out,
            "payoutd_ledger_outcomes_total{{code=\"{}\"}} {n}",
            code.replace(['"', '\\', '\n'], "_")
        );
    }
    let (buckets, count, sum_ms) = m.submit_latency();
    let _ = writeln!(
        out,
        "# HELP payoutd_submit_latency_seconds Time of one envelope submission.\n# TYPE payoutd_submit_latency_seconds histogram"
    );
    for (le_ms, n) in buckets {
        let _ = writeln!(
            out,
            "payoutd_submit_latency_seconds_bucket{{le=\"{}.{:03}\"}} {n}",
            le_ms / 1000,
            le_ms % 1000
        );
    }
    let _ = writeln!(
        out,
        "payoutd_submit_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "payoutd_submit_latency_seconds_sum {}.{:03}",
        sum_ms / 1000,
        sum_ms % 1000
    );
    let _ = writeln!(out, "payoutd_submit_latency_seconds_count {count}");
    out
}
