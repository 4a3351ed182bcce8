//! What only Stellar RPC does: asynchronous submission (`PENDING`, `DUPLICATE`,
//! `TRY_AGAIN_LATER`), `ERROR` results, and a history window (`NOT_FOUND` says nothing
//! about ledgers older than the answer's `oldestLedger`). Same stack as stellar.rs (real
//! Postgres, the RPC adapter over HTTP to the simulator, ledgers closed by hand); the
//! envelopes sent over RPC are checked with the official Python SDK.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use payoutd_actors::ports::{Ledger, PayoutStore};
use payoutd_actors::state::PayoutState;
use payoutd_simulator::Faults;
use serde_json::{Value, json};
use sqlx::Row;

use crate::stellar::{
    Api, DiesAfterSubmit, PASSPHRASE, Stack, StackOptions, keyring, rpc_ledger, rpc_url, stack,
    start_payouts, wait_for,
};

/// Envelopes journaled for any payout.
async fn envelope_rows(s: &Stack) -> usize {
    sqlx::query("SELECT count(*) AS n FROM envelopes")
        .fetch_one(s.journal.pool())
        .await
        .unwrap()
        .get::<i64, _>("n") as usize
}

#[tokio::test]
async fn duplicate_after_a_restart_is_pending_and_the_same_envelope_confirms() {
    let s = stack(StackOptions::over(Api::Rpc)).await;
    s.payouts.shutdown(1_000).await;
    let (ring, _, _) = keyring(2);
    // The first process sends the envelope (PENDING) and dies before journaling any answer.
    let doomed = start_payouts(
        s.journal.clone(),
        Arc::new(DiesAfterSubmit(rpc_ledger(&s.sim, ring).await)),
        s.policy.clone(),
        s.channels.clone(),
    )
    .await;
    let req = s.request("rpc-duplicate", "4");
    doomed.submit(req.clone()).await.unwrap();
    wait_for("the transaction to be pending", || {
        s.sim().pending_count() > 0
    })
    .await;
    doomed.shutdown(1_000).await;
    let first = s.record("rpc-duplicate").await;
    let envelope = first.envelope.expect("journaled before it was sent");
    // The second process sends the same bytes again: the server still holds them.
    let (ring, _, _) = keyring(2);
    let rpc = rpc_ledger(&s.sim, ring).await;
    let _second = start_payouts(
        s.journal.clone(),
        rpc.clone(),
        s.policy.clone(),
        s.channels.clone(),
    )
    .await;
    wait_for("a DUPLICATE answer", || {
        rpc.client().send_counts().duplicate >= 1
    })
    .await;
    assert_eq!(s.payments(&req), 0, "not in a ledger yet");
    let rec = s.run_until("rpc-duplicate", PayoutState::Confirmed).await;
    assert_eq!(rec.attempt, 1);
    assert_eq!(rec.envelope.unwrap().hash, envelope.hash, "never rebuilt");
    assert_eq!(s.payments(&req), 1);
    assert_eq!(envelope_rows(&s).await, 1);
}

#[tokio::test]
async fn a_try_again_later_storm_keeps_every_envelope_and_pays_each_payout_once() {
    let s = stack(StackOptions {
        channels: 2,
        ..StackOptions::over(Api::Rpc)
    })
    .await;
    s.sim().set_faults(Faults {
        p_try_again_later: 1.0,
        ..Faults::default()
    });
    let reqs: Vec<_> = (0..6)
        .map(|i| s.request(&format!("rpc-storm-{i}"), &format!("5.{i}")))
        .collect();
    for r in &reqs {
        s.payouts.submit(r.clone()).await.unwrap();
    }
    wait_for("a storm of TRY_AGAIN_LATER", || {
        s.sim().fault_counts().try_again_later_injected >= 40
    })
    .await;
    // Ledgers close during the storm, all before the envelopes' max_time.
    for _ in 0..3 {
        s.sim().close_ledger();
    }
    let before = s.sim().fault_counts().try_again_later_injected;
    wait_for("more TRY_AGAIN_LATER after the closes", || {
        s.sim().fault_counts().try_again_later_injected >= before + 10
    })
    .await;
    // Each payout is in an envelope still being sent (or waits for a channel): none is
    // failed, none rebuilt, none paid.
    let mut hashes = Vec::new();
    for r in &reqs {
        let rec = s.record(r.payout_id().as_str()).await;
        match rec.state {
            PayoutState::Prepared | PayoutState::Submitted => {
                assert_eq!(rec.attempt, 1, "not a failure, not a reason to rebuild");
                hashes.push(Some(rec.envelope.unwrap().hash));
            }
            PayoutState::Accepted => {
                assert_eq!(rec.attempt, 0);
                hashes.push(None);
            }
            other => panic!("{}: {other:?}", r.payout_id()),
        }
        assert_eq!(s.payments(r), 0);
    }
    assert!(
        hashes.iter().flatten().count() >= 2,
        "both channels held an envelope"
    );
    s.sim().set_faults(Faults::default());
    for (r, hash) in reqs.iter().zip(hashes) {
        let rec = s
            .run_until(r.payout_id().as_str(), PayoutState::Confirmed)
            .await;
        if let Some(hash) = hash {
            assert_eq!(rec.attempt, 1);
            assert_eq!(rec.envelope.unwrap().hash, hash, "the same bytes landed");
        }
        assert_eq!(s.payments(r), 1);
    }
}

#[tokio::test]
async fn an_error_tx_bad_seq_for_an_envelope_that_later_lands_confirms_it_never_rebuilds() {
    let s = stack(StackOptions {
        channels: 1,
        ..StackOptions::over(Api::Rpc)
    })
    .await;
    s.payouts.shutdown(1_000).await;
    let (ring, _, _) = keyring(1);
    let rpc = rpc_ledger(&s.sim, ring).await;
    let payouts = start_payouts(
        s.journal.clone(),
        rpc.clone(),
        s.policy.clone(),
        s.channels.clone(),
    )
    .await;
    let channel = s.channels[0].to_strkey();
    let req = s.request("rpc-bad-seq", "6");
    payouts.submit(req.clone()).await.unwrap();
    wait_for("the transaction to be pending", || {
        s.sim().pending_count() > 0
    })
    .await;
    let envelope = s.record("rpc-bad-seq").await.envelope.unwrap();
    // The channel's sequence falls below the envelope's: core drops it from its queue and
    // answers ERROR tx_bad_seq to every resubmission.
    let seq = s.sim().account_sequence(&channel).unwrap();
    s.sim().set_account_sequence(&channel, seq - 2).unwrap();
    s.sim().close_ledger();
    wait_for("ERROR answers", || rpc.client().send_counts().error >= 3).await;
    let rec = s.record("rpc-bad-seq").await;
    assert_eq!(rec.attempt, 1);
    assert_eq!(rec.envelope.as_ref().unwrap().hash, envelope.hash);
    assert_eq!(
        envelope_rows(&s).await,
        1,
        "a rejection is no proof of death"
    );
    // The sequence number comes back (the gap is filled): the very same envelope lands.
    s.sim().set_account_sequence(&channel, seq).unwrap();
    let rec = s.run_until("rpc-bad-seq", PayoutState::Confirmed).await;
    assert_eq!(rec.attempt, 1, "confirmed, never rebuilt");
    assert_eq!(rec.envelope.unwrap().hash, envelope.hash);
    assert_eq!(s.payments(&req), 1);
    assert_eq!(envelope_rows(&s).await, 1);
}

/// The payouts of the channel worker's envelopes that are beyond the server's history.
fn beyond_history(s: &Stack) -> Vec<String> {
    s.payouts
        .context()
        .channel_statuses()
        .values()
        .flat_map(|c| c.beyond_history.iter())
        .flat_map(|b| b.payouts.iter().map(|p| p.to_string()))
        .collect()
}

/// The real RPC adapter, counting the lookups made through it.
struct CountingLookups {
    inner: Arc<dyn Ledger>,
    lookups: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Ledger for CountingLookups {
    fn build_and_sign(
        &self,
        spec: &payoutd_actors::ports::TxSpec,
    ) -> Result<payoutd_actors::ports::Envelope, payoutd_actors::ports::LedgerError> {
        self.inner.build_and_sign(spec)
    }
    fn can_sign(&self, account: &payoutd_actors::domain::AccountId) -> bool {
        self.inner.can_sign(account)
    }
    async fn submit(
        &self,
        envelope: &payoutd_actors::ports::Envelope,
    ) -> payoutd_actors::ports::SubmitOutcome {
        self.inner.submit(envelope).await
    }
    async fn lookup(
        &self,
        hash: &payoutd_actors::ports::TxHash,
    ) -> Result<payoutd_actors::ports::Lookup, payoutd_actors::ports::LedgerError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.lookup(hash).await
    }
    async fn account_sequence(
        &self,
        account: &payoutd_actors::domain::AccountId,
    ) -> Result<payoutd_actors::ports::SequenceRead, payoutd_actors::ports::LedgerError> {
        self.inner.account_sequence(account).await
    }
    async fn latest_ledger(
        &self,
    ) -> Result<payoutd_actors::ports::LedgerHead, payoutd_actors::ports::LedgerError> {
        self.inner.latest_ledger().await
    }
}

/// A process sends the envelope and dies; then the ledger moves on past the server's
/// retention window while no payoutd runs; then a new process takes over over RPC.
async fn outage_past_the_retention_window(
    id: &str,
    applied: bool,
) -> (Stack, Arc<CountingLookups>) {
    const WINDOW: u32 = 5;
    let mut s = stack(StackOptions {
        channels: 1,
        rpc_retention_ledgers: WINDOW,
        ..StackOptions::over(Api::Rpc)
    })
    .await;
    s.payouts.shutdown(1_000).await;
    let (ring, _, _) = keyring(1);
    let doomed = start_payouts(
        s.journal.clone(),
        Arc::new(DiesAfterSubmit(rpc_ledger(&s.sim, ring).await)),
        s.policy.clone(),
        s.channels.clone(),
    )
    .await;
    let req = s.request(id, "7");
    doomed.submit(req.clone()).await.unwrap();
    wait_for("the transaction to be pending", || {
        s.sim().pending_count() > 0
    })
    .await;
    doomed.shutdown(1_000).await;
    if !applied {
        // Someone else takes the sequence number: the envelope can never apply now.
        let channel = s.channels[0].to_strkey();
        let seq = s.sim().account_sequence(&channel).unwrap();
        s.sim().set_account_sequence(&channel, seq + 1).unwrap();
    }
    s.sim().close_ledger();
    assert_eq!(s.payments(&req), usize::from(applied));
    // A long outage: the window moves past every ledger the envelope could be in.
    for _ in 0..WINDOW * 3 {
        s.sim().close_ledger();
    }
    let (ring, _, _) = keyring(1);
    let rpc = Arc::new(CountingLookups {
        inner: rpc_ledger(&s.sim, ring).await,
        lookups: Default::default(),
    });
    let (payouts, metrics) = crate::helpers::start_core(
        s.journal.clone(),
        rpc.clone(),
        "after-the-outage",
        s.channels.clone(),
        s.policy.clone(),
    )
    .await;
    s.payouts = payouts;
    s.metrics = metrics;
    (s, rpc)
}

async fn assert_kept_and_flagged(s: &Stack, rpc: &CountingLookups, id: &str) {
    wait_for("the envelope to be flagged beyond the history", || {
        s.metrics.envelopes_beyond_history.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(beyond_history(s), vec![id.to_owned()]);
    let reason = s
        .payouts
        .context()
        .channel_statuses()
        .values()
        .flat_map(|c| c.beyond_history.iter())
        .map(|b| b.reason.clone())
        .next()
        .unwrap();
    assert!(reason.contains("history now begins at ledger"), "{reason}");
    // Many more lookups, each NOT_FOUND outside the window: still never a rebuild.
    let seen = rpc.lookups.load(Ordering::SeqCst);
    for _ in 0..3 {
        s.sim().close_ledger();
    }
    wait_for("more lookups", || {
        rpc.lookups.load(Ordering::SeqCst) >= seen + 5
    })
    .await;
    let rec = s.record(id).await;
    assert!(rec.holds_envelope(), "{:?}", rec.state);
    assert!(
        matches!(rec.state, PayoutState::Prepared | PayoutState::Submitted),
        "{:?}",
        rec.state
    );
    assert_eq!(rec.attempt, 1, "never rebuilt");
    assert_eq!(envelope_rows(s).await, 1);
    let events = s
        .journal
        .events(&payoutd_actors::domain::PayoutId::parse(id).unwrap())
        .await
        .unwrap();
    assert!(events.iter().all(|e| e.kind != "requeued"), "{events:?}");
}

#[tokio::test]
async fn not_found_outside_the_retention_window_never_rebuilds_an_applied_envelope() {
    let (s, rpc) = outage_past_the_retention_window("rpc-window-applied", true).await;
    assert_kept_and_flagged(&s, &rpc, "rpc-window-applied").await;
    assert!(s.sim().fault_counts().transactions_hidden_by_pruning >= 1);
    let req = s.request("rpc-window-applied", "7");
    assert_eq!(s.payments(&req), 1, "paid once, and only once");
}

#[tokio::test]
async fn not_found_outside_the_retention_window_never_rebuilds_even_a_dead_envelope() {
    // Its sequence was taken by someone else, so it can never apply: yet nothing the
    // server says proves it was not applied before, so its payout keeps it and waits.
    let (s, rpc) = outage_past_the_retention_window("rpc-window-superseded", false).await;
    assert_kept_and_flagged(&s, &rpc, "rpc-window-superseded").await;
    let req = s.request("rpc-window-superseded", "7");
    assert_eq!(s.payments(&req), 0);
}

/// One JSON-RPC call to the simulator, by hand (not through payoutd's client).
async fn raw_rpc(url: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let answer: Value = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["result"].clone()
}

const INSTALL_HINT: &str = "install Python 3 and the official SDK: `pip install stellar-sdk` \
     (scripts/test does; or point PAYOUTD_PYTHON at an interpreter that has it)";

#[tokio::test]
async fn envelopes_sent_over_rpc_decode_hash_and_verify_with_the_official_python_sdk() {
    let s = stack(StackOptions {
        channels: 2,
        batch_linger_ms: 200,
        ..StackOptions::over(Api::Rpc)
    })
    .await;
    let reqs: Vec<_> = (0..5)
        .map(|i| s.request(&format!("rpc-sdk-{i}"), &format!("8.{i}")))
        .collect();
    for r in &reqs {
        s.payouts.submit(r.clone()).await.unwrap();
    }
    for r in &reqs {
        s.run_until(r.payout_id().as_str(), PayoutState::Confirmed)
            .await;
    }
    let rows =
        sqlx::query("SELECT DISTINCT tx_hash, source, sequence, envelope_xdr FROM envelopes")
            .fetch_all(s.journal.pool())
            .await
            .unwrap();
    assert!(!rows.is_empty());
    let url = rpc_url(&s.sim);
    let mut items = Vec::new();
    for row in rows {
        let hash: String = row.get("tx_hash");
        let got = raw_rpc(&url, "getTransaction", json!({"hash": hash})).await;
        assert_eq!(got["status"], "SUCCESS", "{got}");
        let record = s.sim().transaction(&hash).unwrap();
        let source: String = row.get("source");
        let mut signers = vec![source.clone()];
        if source != s.distribution.to_strkey() {
            signers.push(s.distribution.to_strkey());
        }
        items.push(json!({
            "xdr": got["envelopeXdr"],
            "journaled_xdr": row.get::<String, _>("envelope_xdr"),
            "passphrase": PASSPHRASE,
            "hash": hash,
            "source": source,
            "sequence": row.get::<i64, _>("sequence"),
            "operations": record.operation_count,
            "signers": signers,
        }));
    }
    check_with_the_official_sdk(&items);
}

/// Runs tests/api/sdk_envelopes.py (the official Python SDK) over `items`; panics with
/// its findings, or with how to install the SDK when it is missing.
pub(crate) fn check_with_the_official_sdk(items: &[Value]) {
    let python = std::env::var("PAYOUTD_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/sdk_envelopes.py");
    let mut child = Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}; {INSTALL_HINT}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(&items).unwrap())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => assert!(
            stdout.contains(&format!("checked {} envelopes, 0 problems", items.len())),
            "{stdout}"
        ),
        Some(2) => panic!("the Python SDK is missing ({stderr}); {INSTALL_HINT}"),
        _ => panic!("the official SDK disagrees:\n{stdout}\n{stderr}"),
    }
}

/// The demo (`ledger.mode = "simulator"`, the built-in simulator) over RPC by configuration
/// alone: the whole application pays over JSON-RPC. Horizon's `POST /transactions` waits
/// for inclusion and answers "applied"; RPC's `sendTransaction` never does, so every
/// submission outcome is "pending" and the confirmation came from `getTransaction`.
#[tokio::test]
async fn the_demo_runs_over_rpc_when_configured() {
    use crate::helpers::{payout, spawn_app};
    let app = spawn_app(&[("PAYOUTD__LEDGER__SIMULATOR__PROTOCOL", "rpc")]).await;
    let (status, body) = app.submit(&payout("demo-rpc-1", "3.25")).await;
    assert_eq!(status, 202, "{body}");
    let done = app.wait_state("demo-rpc-1", "confirmed").await;
    let hash = done["tx_hash"].as_str().unwrap().to_owned();
    // The same ledger answers over JSON-RPC at the simulator's /rpc.
    let url = format!("{}/rpc", app.simulator_url().trim_end_matches('/'));
    let got = raw_rpc(&url, "getTransaction", json!({"hash": hash})).await;
    assert_eq!(got["status"], "SUCCESS", "{got}");
    assert_eq!(got["ledger"], done["ledger"]);
    let (_, ready) = app.get_json("/readyz").await;
    assert_eq!(ready["ledger"], true, "{ready}");
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("payoutd_ledger_outcomes_total{code=\"pending\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("payoutd_ledger_outcomes_total{code=\"applied\"}"),
        "a submission answered applied: not RPC\n{metrics}"
    );
}
