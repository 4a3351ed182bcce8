//! A run's report for people (plain text) and for machines (JSON, documented in
//! docs/reconcile.md). Neither holds anything secret: the server is shown as its
//! redacted URL, accounts as public keys, amounts as decimal strings.

use std::fmt::Write as _;

use serde::Serialize;

use super::compare::{Counts, Finding, InFlight, Total};
use super::{CheckedRange, ReconcileError, Report};

/// The version of the JSON document; bumped on an incompatible change.
pub const JSON_VERSION: u32 = 1;
/// Hashes longer than this are never cut: evidence must be usable as is.
const ACCOUNT_SHOWN_CHARS: usize = 56;

/// Unix seconds as RFC 3339 UTC.
pub fn rfc3339(unix_s: u64) -> String {
    payoutd_simulator::rfc3339(unix_s)
}

fn rfc3339_ms(unix_ms: i64) -> String {
    rfc3339(u64::try_from(unix_ms / 1000).unwrap_or(0))
}

#[derive(Serialize)]
struct LedgerSide<'a> {
    server: &'a str,
    network_passphrase: &'a str,
    elder_ledger: u32,
    latest_ledger: u32,
    latest_ledger_closed_at: String,
}

#[derive(Serialize)]
struct AccountsSide<'a> {
    distribution: &'a str,
    channels: &'a [String],
}

#[derive(Serialize)]
struct JsonReport<'a> {
    version: u32,
    /// `clean` or `mismatches`.
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<i64>,
    range: &'a CheckedRange,
    ledger: LedgerSide<'a>,
    accounts: AccountsSide<'a>,
    counts: &'a Counts,
    totals: &'a [Total],
    mismatches: &'a [Finding],
    notes: &'a [Finding],
    in_flight: &'a [InFlight],
    resume_ledger: u32,
    started_at: String,
    finished_at: String,
}

#[derive(Serialize)]
struct JsonError<'a> {
    version: u32,
    result: &'static str,
    error: &'a str,
}

pub fn json(report: &Report) -> String {
    let f = &report.findings;
    let doc = JsonReport {
        version: JSON_VERSION,
        result: if report.agrees() {
            "clean"
        } else {
            "mismatches"
        },
        run_id: report.run_id,
        range: &report.range,
        ledger: LedgerSide {
            server: &report.server,
            network_passphrase: &report.window.network_passphrase,
            elder_ledger: report.window.elder,
            latest_ledger: report.window.latest,
            latest_ledger_closed_at: rfc3339(report.window.latest_close_time),
        },
        accounts: AccountsSide {
            distribution: &report.distribution,
            channels: &report.channels,
        },
        counts: &f.counts,
        totals: &f.totals,
        mismatches: &f.mismatches,
        notes: &f.notes,
        in_flight: &f.in_flight,
        resume_ledger: f.resume_ledger,
        started_at: rfc3339_ms(report.started_at_unix_ms),
        finished_at: rfc3339_ms(report.finished_at_unix_ms),
    };
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".to_owned())
}

pub fn json_error(error: &ReconcileError) -> String {
    let text = error.to_string();
    serde_json::to_string_pretty(&JsonError {
        version: JSON_VERSION,
        result: "error",
        error: &text,
    })
    .unwrap_or_else(|_| "{}".to_owned())
}

#[derive(Serialize)]
struct JsonNothingNew {
    version: u32,
    result: &'static str,
    resume_ledger: u32,
    latest_ledger: u32,
}

/// A run without a range when no ledger closed since the last one: `result` is
/// `nothing_new`.
pub fn json_nothing_new(resume_ledger: u32, latest: u32) -> String {
    serde_json::to_string_pretty(&JsonNothingNew {
        version: JSON_VERSION,
        result: "nothing_new",
        resume_ledger,
        latest_ledger: latest,
    })
    .unwrap_or_else(|_| "{}".to_owned())
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn account(text: &str) -> &str {
    &text[..text.len().min(ACCOUNT_SHOWN_CHARS)]
}

fn finding(out: &mut String, n: usize, f: &Finding) {
    let mut place = Vec::new();
    if let Some(l) = f.ledger {
        place.push(format!("ledger {l}"));
    }
    if let Some(h) = &f.tx_hash {
        place.push(format!("tx {h}"));
    }
    if let Some(i) = f.op_index {
        place.push(format!("op {i}"));
    }
    if let Some(p) = &f.payout_id {
        place.push(format!("payout {p}"));
    }
    let _ = writeln!(out, "  [{n}] {}  {}", f.kind.as_str(), place.join(", "));
    let _ = writeln!(out, "      {}", f.detail);
    let side = |out: &mut String, name: &str, map: &std::collections::BTreeMap<&str, String>| {
        if map.is_empty() {
            return;
        }
        let fields: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "      {name:<8} {}", fields.join(" "));
    };
    side(out, "journal:", &f.journal_says);
    side(out, "ledger:", &f.ledger_says);
}

/// The report for people.
// Long because it is the report's layout, section after section, as the operator reads it.
pub fn human(report: &Report) -> String {
    let f = &report.findings;
    let c = &f.counts;
    let r = &report.range;
    let mut out = String::new();
    let how = match r.kind {
        "since_last_run" => "since the last run".to_owned(),
        "time" => format!(
            "closed from {} until {}",
            r.since.as_deref().unwrap_or("?"),
            r.until.as_deref().unwrap_or("now")
        ),
        _ => "as asked".to_owned(),
    };
    let _ = writeln!(
        out,
        "payoutd reconcile: ledgers {}..={} ({how}), read from {}",
        r.from_ledger, r.to_ledger, report.server
    );
    if let Some(note) = &r.note {
        let _ = writeln!(out, "  note       {note}");
    }
    let _ = writeln!(
        out,
        "  accounts   distribution {}, {}",
        account(&report.distribution),
        plural(report.channels.len() as u64, "channel", "channels")
    );
    let _ = writeln!(
        out,
        "  journal    envelopes: {} applied, {} failed, {} dead, {} live; payouts: {} confirmed, {} failed",
        c.envelopes_applied,
        c.envelopes_failed,
        c.envelopes_dead,
        c.envelopes_live,
        c.payouts_confirmed,
        c.payouts_failed
    );
    let _ = writeln!(
        out,
        "  ledger     {} from payoutd's accounts, {} from the distribution account ({} matched to payouts)",
        plural(c.ledger_transactions, "transaction", "transactions"),
        plural(c.ledger_payments, "payment", "payments"),
        c.payments_matched
    );
    if f.totals.is_empty() {
        let _ = writeln!(out, "  paid       nothing");
    }
    for (i, t) in f.totals.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {}  {} {} in {}",
            if i == 0 { "paid     " } else { "         " },
            t.amount,
            t.asset,
            plural(t.payments, "payment", "payments")
        );
    }
    let _ = writeln!(out, "  fees       {} stroops", c.fees_charged_stroops);
    if !f.in_flight.is_empty() {
        let _ = writeln!(
            out,
            "  in flight  {} the journal has not settled yet:",
            plural(f.in_flight.len() as u64, "envelope", "envelopes")
        );
        for e in &f.in_flight {
            let seen = e
                .on_ledger
                .map(|l| format!(", on the ledger in {l}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "             {} from {} (sequence {}, {}), {} s old{seen}",
                e.tx_hash,
                account(&e.source),
                e.sequence,
                plural(e.payouts as u64, "payout", "payouts"),
                e.age_seconds
            );
        }
    }
    if !f.notes.is_empty() {
        let _ = writeln!(
            out,
            "  notes      {} (not mismatches):",
            plural(f.notes.len() as u64, "item", "items")
        );
        for (i, n) in f.notes.iter().enumerate() {
            finding(&mut out, i + 1, n);
        }
    }
    let _ = writeln!(out);
    if report.agrees() {
        let _ = writeln!(
            out,
            "CLEAN: the journal and the ledger agree on ledgers {}..={}.",
            r.from_ledger, r.to_ledger
        );
    } else {
        let _ = writeln!(
            out,
            "{} between the journal and the ledger:",
            plural(f.mismatches.len() as u64, "MISMATCH", "MISMATCHES")
        );
        for (i, m) in f.mismatches.iter().enumerate() {
            finding(&mut out, i + 1, m);
        }
    }
    let next = match report.run_id {
        Some(id) => format!("run #{id}; "),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "({next}the next run without a range starts at ledger {})",
        f.resume_ledger
    );
    out
}
