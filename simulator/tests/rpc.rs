//! Stellar RPC (JSON-RPC 2.0 over HTTP POST) on the simulated ledger: each method's shape and
//! values, sendTransaction's statuses, retention, the lagging node, paging, faults and
//! JSON-RPC errors.

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use payoutd_simulator::{Faults, RejectNext, SimConfig, Simulator, router};
use serde_json::{Value, json};
use stellar_xdr::{
    AccountEntryExt, Asset, ClaimableBalanceId, Hash, LedgerEntryData, LedgerKey, LedgerKeyAccount,
    LedgerKeyClaimableBalance, LedgerKeyTrustLine, Limits, ReadXdr as _, TransactionMeta,
    TransactionResultResult, TrustLineAsset, WriteXdr as _,
};
use support::*;

/// POSTs a JSON-RPC request with id 1 to `path`.
async fn rpc_at(app: &axum::Router, path: &str, method: &str, params: Value) -> Answer {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    post_json(app, path, body).await
}

/// Calls `method` on `/rpc` and returns its `result`, checking the envelope.
async fn call_rpc(app: &axum::Router, method: &str, params: Value) -> Value {
    let a = rpc_at(app, "/rpc", method, params).await;
    assert_eq!(a.status, StatusCode::OK, "{method}: {}", a.body);
    assert_eq!(a.json["jsonrpc"], "2.0", "{method}: {}", a.body);
    assert_eq!(a.json["id"], 1);
    assert!(a.json.get("error").is_none(), "{method}: {}", a.body);
    assert_eq!(
        a.latest_ledger, None,
        "RPC answers have no Latest-Ledger header"
    );
    a.json["result"].clone()
}

/// Calls `method` and returns its JSON-RPC error (code, message).
async fn rpc_error(app: &axum::Router, method: &str, params: Value) -> (i64, String) {
    let a = rpc_at(app, "/rpc", method, params).await;
    assert_eq!(a.status, StatusCode::OK, "{method}: {}", a.body);
    assert!(a.json.get("result").is_none(), "{method}: {}", a.body);
    (
        a.json["error"]["code"].as_i64().expect("error code"),
        a.json["error"]["message"]
            .as_str()
            .expect("message")
            .to_owned(),
    )
}

fn account_key(k: &Key) -> String {
    LedgerKey::Account(LedgerKeyAccount {
        account_id: k.account_id(),
    })
    .to_xdr_base64(Limits::none())
    .expect("encodes")
}

fn entry_data(v: &Value) -> LedgerEntryData {
    LedgerEntryData::from_xdr_base64(v["xdr"].as_str().expect("xdr"), Limits::none())
        .expect("a LedgerEntryData")
}

fn account_seq(entry: &Value) -> i64 {
    match entry_data(entry) {
        LedgerEntryData::Account(a) => a.seq_num.0,
        other => panic!("not an account: {other:?}"),
    }
}

fn pay(sim: &Simulator, from: &Key, to: &Key, offset: i64) -> Tx {
    Tx::new(
        from,
        seq(sim, from) + offset,
        vec![payment(None, to.muxed(), Asset::Native, XLM)],
    )
}

async fn send(app: &axum::Router, envelope: &str) -> Value {
    call_rpc(app, "sendTransaction", json!({ "transaction": envelope })).await
}

fn funded(cfg: SimConfig) -> (Arc<Simulator>, axum::Router, Key, Key) {
    let sim = Simulator::new(cfg).expect("starts");
    let app = router(Arc::clone(&sim));
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    fund(&sim, &[&alice, &bob], 100);
    (sim, app, alice, bob)
}

#[tokio::test]
async fn network_health_and_latest_ledger_describe_the_ledger() {
    let (sim, app, _, _) = funded(manual_config());
    sim.close_ledger();
    sim.close_ledger();
    let net = call_rpc(&app, "getNetwork", json!({})).await;
    assert_eq!(net["passphrase"], "Test SDF Network ; September 2015");
    assert_eq!(net["protocolVersion"], 23);
    assert!(net.get("friendbotUrl").is_none(), "no Host header, no URL");
    let health = call_rpc(&app, "getHealth", Value::Null).await;
    assert_eq!(
        health,
        json!({ "status": "healthy", "latestLedger": 3, "oldestLedger": 1, "ledgerRetentionWindow": 120_960 })
    );
    let latest = call_rpc(&app, "getLatestLedger", json!({})).await;
    assert_eq!(latest["sequence"], 3);
    assert_eq!(latest["protocolVersion"], 23);
    assert_eq!(latest["closeTime"], (GENESIS + 10).to_string());
    let id = latest["id"].as_str().expect("id");
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    sim.close_ledger();
    let next = call_rpc(&app, "getLatestLedger", json!({})).await;
    assert_ne!(next["id"], latest["id"], "each ledger its own id");

    // POST / is RPC too; GET / stays Horizon's root.
    let a = rpc_at(&app, "/", "getHealth", json!({})).await;
    assert_eq!(a.json["result"]["latestLedger"], 4);
    let root = get(&app, "/").await;
    assert_eq!(root.json["history_latest_ledger"], 4);
    assert_eq!(root.latest_ledger, Some(4));
}

#[tokio::test]
async fn get_network_names_this_simulators_friendbot_over_real_http() {
    let sim = Simulator::new(manual_config()).expect("starts");
    let handle = payoutd_simulator::spawn(sim, "127.0.0.1:0")
        .await
        .expect("spawns");
    let http = reqwest::Client::new();
    let answer: Value = http
        .post(format!("{}/rpc", handle.base_url))
        .json(&json!({ "jsonrpc": "2.0", "id": "a", "method": "getNetwork" }))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["id"], "a");
    assert_eq!(
        answer["result"]["friendbotUrl"],
        format!("{}/friendbot", handle.base_url)
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn send_transaction_is_pending_then_get_transaction_is_success_once_included() {
    let (sim, app, alice, bob) = funded(manual_config());
    let tx = pay(&sim, &alice, &bob, 1).memo(stellar_xdr::Memo::Id(9));
    let env = tx.sign(&[&alice]);
    let r = send(&app, &env).await;
    assert_eq!(
        r,
        json!({ "status": "PENDING", "hash": tx.hash(), "latestLedger": 1, "latestLedgerCloseTime": GENESIS.to_string() })
    );
    assert_eq!(sim.pending_count(), 1, "accepted, not waited for");
    let r = call_rpc(&app, "getTransaction", json!({ "hash": tx.hash() })).await;
    assert_eq!(
        r,
        json!({
            "status": "NOT_FOUND", "txHash": tx.hash(),
            "latestLedger": 1, "latestLedgerCloseTime": GENESIS.to_string(),
            "oldestLedger": 1, "oldestLedgerCloseTime": GENESIS.to_string(),
        })
    );
    // The same envelope again while pending is DUPLICATE; another from alice waits.
    assert_eq!(send(&app, &env).await["status"], "DUPLICATE");
    let other = pay(&sim, &alice, &bob, 1).memo(stellar_xdr::Memo::Id(10));
    assert_eq!(
        send(&app, &other.sign(&[&alice])).await["status"],
        "TRY_AGAIN_LATER"
    );

    sim.close_ledger();
    let r = call_rpc(&app, "getTransaction", json!({ "hash": tx.hash() })).await;
    assert_eq!(r["status"], "SUCCESS", "{r}");
    assert_eq!(r["txHash"], tx.hash());
    assert_eq!(r["ledger"], 2);
    assert_eq!(r["createdAt"], (GENESIS + 5).to_string());
    assert_eq!(r["applicationOrder"], 1);
    assert_eq!(r["feeBump"], false);
    assert_eq!(r["envelopeXdr"], env);
    assert_eq!(r["latestLedger"], 2);
    assert_eq!(r["latestLedgerCloseTime"], (GENESIS + 5).to_string());
    assert_eq!(r["oldestLedger"], 1);
    let result = decode_result(r["resultXdr"].as_str().expect("resultXdr"));
    assert!(matches!(
        result.result,
        TransactionResultResult::TxSuccess(_)
    ));
    assert_eq!(result.fee_charged, 100);
    let meta = TransactionMeta::from_xdr_base64(
        r["resultMetaXdr"].as_str().expect("resultMetaXdr"),
        Limits::none(),
    )
    .expect("a TransactionMeta");
    assert!(matches!(meta, TransactionMeta::V3(m) if m.operations.len() == 1));
    // Horizon sees the same transaction.
    let h = get(&app, &format!("/transactions/{}", tx.hash())).await;
    assert_eq!(h.json["result_xdr"], r["resultXdr"]);

    // Sent again once included: core says tx_bad_seq (RPC's DUPLICATE is for pending ones).
    let r = send(&app, &env).await;
    assert_eq!(r["status"], "ERROR");
    assert_eq!(r["hash"], tx.hash());
    assert_eq!(r["latestLedger"], 2);
    let err = decode_result(r["errorResultXdr"].as_str().expect("errorResultXdr"));
    assert_eq!(err.result, TransactionResultResult::TxBadSeq);
    assert_eq!(sim.balance(&bob.g(), None), Some(101 * XLM), "paid once");
}

#[tokio::test]
async fn send_transaction_errors_carry_a_decodable_error_result() {
    let (sim, app, alice, bob) = funded(manual_config());
    let ahead = pay(&sim, &alice, &bob, 2);
    let r = send(&app, &ahead.sign(&[&alice])).await;
    assert_eq!(r["status"], "ERROR");
    let err = decode_result(r["errorResultXdr"].as_str().expect("errorResultXdr"));
    assert_eq!(err.result, TransactionResultResult::TxBadSeq);
    assert_eq!(err.fee_charged, 100);
    let cheap = pay(&sim, &alice, &bob, 1).fee(10);
    let r = send(&app, &cheap.sign(&[&alice])).await;
    let err = decode_result(r["errorResultXdr"].as_str().expect("errorResultXdr"));
    assert_eq!(err.result, TransactionResultResult::TxInsufficientFee);
    let r = send(&app, &pay(&sim, &alice, &bob, 1).sign(&[&bob])).await;
    let err = decode_result(r["errorResultXdr"].as_str().expect("errorResultXdr"));
    assert_eq!(err.result, TransactionResultResult::TxBadAuth);
    let late = pay(&sim, &alice, &bob, 1).time_bounds(0, GENESIS);
    let r = send(&app, &late.sign(&[&alice])).await;
    let err = decode_result(r["errorResultXdr"].as_str().expect("errorResultXdr"));
    assert_eq!(err.result, TransactionResultResult::TxTooLate);
    assert_eq!(sim.pending_count(), 0);

    // A transaction that fails in the ledger is FAILED, with its result.
    let ghost = Key::new("ghost");
    let tx = pay(&sim, &alice, &ghost, 1);
    assert_eq!(send(&app, &tx.sign(&[&alice])).await["status"], "PENDING");
    sim.close_ledger();
    let r = call_rpc(&app, "getTransaction", json!({ "hash": tx.hash() })).await;
    assert_eq!(r["status"], "FAILED");
    let res = decode_result(r["resultXdr"].as_str().expect("resultXdr"));
    assert!(matches!(res.result, TransactionResultResult::TxFailed(_)));

    // Not an envelope: invalid params, as RPC says it.
    assert_eq!(
        rpc_error(&app, "sendTransaction", json!({ "transaction": "AAAA" })).await,
        (-32602, "invalid_xdr".to_owned())
    );
}

#[tokio::test]
async fn submission_faults_over_rpc() {
    let (sim, app, alice, bob) = funded(manual_config());
    // Core's queue is full: TRY_AGAIN_LATER without accepting.
    sim.set_faults(Faults {
        p_try_again_later: 1.0,
        ..Faults::default()
    });
    let tx = pay(&sim, &alice, &bob, 1);
    assert_eq!(
        send(&app, &tx.sign(&[&alice])).await["status"],
        "TRY_AGAIN_LATER"
    );
    assert_eq!(sim.pending_count(), 0);
    assert_eq!(sim.fault_counts().try_again_later_injected, 1);

    // reject_next: ERROR with the code.
    sim.set_faults(Faults {
        reject_next: Some(RejectNext {
            code: "tx_insufficient_fee".into(),
            count: 1,
        }),
        ..Faults::default()
    });
    let r = send(&app, &tx.sign(&[&alice])).await;
    assert_eq!(r["status"], "ERROR");
    let err = decode_result(r["errorResultXdr"].as_str().expect("errorResultXdr"));
    assert_eq!(err.result, TransactionResultResult::TxInsufficientFee);

    // 5xx before apply: an HTTP error with no JSON-RPC body, nothing accepted.
    sim.set_faults(Faults {
        p_5xx_before_apply: 1.0,
        ..Faults::default()
    });
    let a = rpc_at(
        &app,
        "/rpc",
        "sendTransaction",
        json!({ "transaction": tx.sign(&[&alice]) }),
    )
    .await;
    assert!(
        a.status == StatusCode::SERVICE_UNAVAILABLE
            || a.status == StatusCode::INTERNAL_SERVER_ERROR,
        "{:?}",
        a.status
    );
    assert_eq!(a.json, Value::Null, "not JSON: {}", a.body);
    assert_eq!(sim.pending_count(), 0);
    // Reads are not hit by it.
    assert_eq!(
        call_rpc(&app, "getHealth", json!({})).await["status"],
        "healthy"
    );

    // The answer lost after apply: HTTP 504, but the transaction is in.
    sim.set_faults(Faults {
        p_lose_answer_after_apply: 1.0,
        latency_ms: 1,
        ..Faults::default()
    });
    let a = rpc_at(
        &app,
        "/rpc",
        "sendTransaction",
        json!({ "transaction": tx.sign(&[&alice]) }),
    )
    .await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT, "{}", a.body);
    assert_eq!(sim.pending_count(), 1, "accepted");
    // Resent: DUPLICATE (not lost: only a fresh acceptance loses its answer).
    assert_eq!(send(&app, &tx.sign(&[&alice])).await["status"], "DUPLICATE");
    sim.close_ledger();
    sim.set_faults(Faults::default());
    let r = call_rpc(&app, "getTransaction", json!({ "hash": tx.hash() })).await;
    assert_eq!(r["status"], "SUCCESS");
    let counts = sim.fault_counts();
    assert_eq!(counts.answers_lost_after_apply, 1);
    assert!(counts.latency >= 2);
}

#[tokio::test]
async fn get_ledger_entries_returns_accounts_trustlines_and_claimable_balances() {
    let (sim, app, alice, bob) = funded(manual_config());
    let issuer = Key::new("issuer");
    fund(&sim, &[&issuer], 10);
    sim.add_trustline(&bob.g(), "USDC", &issuer.g(), 1_000 * XLM)
        .expect("trustline");
    sim.credit(&bob.g(), "USDC", &issuer.g(), 25 * XLM)
        .expect("mint");
    // Alice sends a transaction and locks a reserve in a claimable balance.
    let s = seq(&sim, &alice);
    let tx = Tx::new(
        &alice,
        s + 1,
        vec![create_balance(None, Asset::Native, 3 * XLM, &[&bob])],
    );
    assert_eq!(send(&app, &tx.sign(&[&alice])).await["status"], "PENDING");
    sim.close_ledger();
    let id = expected_balance_id(&alice, s + 1, 0);
    let mut id_hash = [0u8; 32];
    hex::decode_to_slice(&id[8..], &mut id_hash).expect("hex");

    let trust_key = LedgerKey::Trustline(LedgerKeyTrustLine {
        account_id: bob.account_id(),
        asset: match usdc(&issuer) {
            Asset::CreditAlphanum4(a) => TrustLineAsset::CreditAlphanum4(a),
            _ => unreachable!("USDC is alphanum4"),
        },
    })
    .to_xdr_base64(Limits::none())
    .expect("encodes");
    let cb_key = LedgerKey::ClaimableBalance(LedgerKeyClaimableBalance {
        balance_id: ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash(id_hash)),
    })
    .to_xdr_base64(Limits::none())
    .expect("encodes");
    let nobody = account_key(&Key::new("nobody"));
    let keys = vec![
        account_key(&alice),
        nobody.clone(),
        account_key(&bob),
        trust_key.clone(),
        cb_key.clone(),
    ];
    let r = call_rpc(&app, "getLedgerEntries", json!({ "keys": keys })).await;
    assert_eq!(r["latestLedger"], 2);
    let entries = r["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 4, "the missing account is simply absent");
    assert!(entries.iter().all(|e| e["key"] != nobody.as_str()));

    assert_eq!(entries[0]["key"], account_key(&alice));
    assert_eq!(entries[0]["lastModifiedLedgerSeq"], 2);
    assert!(entries[0].get("liveUntilLedgerSeq").is_none());
    let LedgerEntryData::Account(a) = entry_data(&entries[0]) else {
        panic!("an account")
    };
    assert_eq!(a.account_id, alice.account_id());
    assert_eq!(a.balance, 97 * XLM - 100);
    assert_eq!(a.seq_num.0, s + 1);
    assert_eq!(a.num_sub_entries, 0);
    assert_eq!(a.thresholds.0, [1, 0, 0, 0]);
    let AccountEntryExt::V1(v1) = &a.ext else {
        panic!("a used, sponsoring account has the extension chain")
    };
    let stellar_xdr::AccountEntryExtensionV1Ext::V2(v2) = &v1.ext else {
        panic!("V2")
    };
    assert_eq!(v2.num_sponsoring, 1);
    let stellar_xdr::AccountEntryExtensionV2Ext::V3(v3) = &v2.ext else {
        panic!("V3")
    };
    assert_eq!((v3.seq_ledger, v3.seq_time.0), (2, GENESIS + 5));

    let LedgerEntryData::Account(b) = entry_data(&entries[1]) else {
        panic!("an account")
    };
    assert_eq!((b.balance, b.num_sub_entries), (100 * XLM, 1));
    let LedgerEntryData::Trustline(t) = entry_data(&entries[2]) else {
        panic!("a trustline")
    };
    assert_eq!(entries[2]["key"], trust_key);
    assert_eq!((t.balance, t.limit, t.flags), (25 * XLM, 1_000 * XLM, 1));
    let LedgerEntryData::ClaimableBalance(cb) = entry_data(&entries[3]) else {
        panic!("a claimable balance")
    };
    assert_eq!(entries[3]["key"], cb_key);
    assert_eq!((cb.amount, cb.asset.clone()), (3 * XLM, Asset::Native));
    assert_eq!(cb.claimants.len(), 1);

    assert_eq!(
        call_rpc(&app, "getLedgerEntries", json!({ "keys": [] })).await["entries"],
        json!([])
    );
    let (code, message) = rpc_error(&app, "getLedgerEntries", json!({ "keys": ["not xdr"] })).await;
    assert_eq!(code, -32602);
    assert!(message.contains("index 0"), "{message}");
    let many = vec![account_key(&alice); 201];
    assert_eq!(
        rpc_error(&app, "getLedgerEntries", json!({ "keys": many }))
            .await
            .0,
        -32602
    );
}

#[tokio::test]
async fn transactions_outside_the_retention_window_are_not_found() {
    let (sim, app, alice, bob) = funded(SimConfig {
        rpc_retention_ledgers: 3,
        ..manual_config()
    });
    let tx = pay(&sim, &alice, &bob, 1);
    assert_eq!(send(&app, &tx.sign(&[&alice])).await["status"], "PENDING");
    sim.close_ledger();
    let lookup = json!({ "hash": tx.hash() });
    // Ledger 2 is in the window while the head is at most 4.
    for head in [2, 3, 4] {
        assert_eq!(sim.latest_ledger().sequence, head);
        let r = call_rpc(&app, "getTransaction", lookup.clone()).await;
        assert_eq!(r["status"], "SUCCESS", "head {head}");
        assert_eq!(r["oldestLedger"], (head - 2).max(1));
        sim.close_ledger();
    }
    let r = call_rpc(&app, "getTransaction", lookup.clone()).await;
    assert_eq!(r["status"], "NOT_FOUND");
    assert_eq!(
        (r["latestLedger"].clone(), r["oldestLedger"].clone()),
        (json!(5), json!(3))
    );
    assert_eq!(r["oldestLedgerCloseTime"], (GENESIS + 10).to_string());
    assert_eq!(sim.fault_counts().transactions_hidden_by_pruning, 1);
    let health = call_rpc(&app, "getHealth", json!({})).await;
    assert_eq!(
        (
            health["oldestLedger"].clone(),
            health["ledgerRetentionWindow"].clone()
        ),
        (json!(3), json!(3))
    );
    // Still there for Horizon, which keeps everything here.
    assert_eq!(
        get(&app, &format!("/transactions/{}", tx.hash()))
            .await
            .status,
        StatusCode::OK
    );

    // The pruning fault applies too; the smaller window wins.
    sim.set_faults(Faults {
        history_retention_ledgers: 2,
        ..Faults::default()
    });
    let health = call_rpc(&app, "getHealth", json!({})).await;
    assert_eq!(
        (
            health["oldestLedger"].clone(),
            health["ledgerRetentionWindow"].clone()
        ),
        (json!(4), json!(2))
    );
    let (code, message) = rpc_error(&app, "getTransactions", json!({ "startLedger": 3 })).await;
    assert_eq!(code, -32600);
    assert_eq!(
        message,
        "start ledger (3) must be between the oldest ledger: 4 and the latest ledger: 5 for this rpc instance"
    );
    assert!(
        Simulator::new(SimConfig {
            rpc_retention_ledgers: 0,
            ..manual_config()
        })
        .is_err(),
        "a window of 0 ledgers is refused"
    );
}

#[tokio::test]
async fn lagging_node_over_rpc_reports_its_ledger_and_older_account_state() {
    let (sim, app, alice, bob) = funded(manual_config());
    sim.close_ledger();
    sim.set_faults(Faults {
        lookup_lag_ledgers: 2,
        ..Faults::default()
    });
    let before = seq(&sim, &alice);
    // Ledger 3 includes alice's transaction.
    let tx = pay(&sim, &alice, &bob, 1);
    let r = send(&app, &tx.sign(&[&alice])).await;
    assert_eq!(r["status"], "PENDING");
    assert_eq!(
        r["latestLedger"], 1,
        "served by the lagging node: max(1, 2 - 2)"
    );
    sim.close_ledger();
    assert_eq!(seq(&sim, &alice), before + 1);
    let keys = json!({ "keys": [account_key(&alice)] });
    for head in [3, 4] {
        let health = call_rpc(&app, "getHealth", json!({})).await;
        assert_eq!(health["latestLedger"], head - 2, "head {head}");
        let latest = call_rpc(&app, "getLatestLedger", json!({})).await;
        assert_eq!(latest["sequence"], head - 2);
        let r = call_rpc(&app, "getTransaction", json!({ "hash": tx.hash() })).await;
        assert_eq!(r["status"], "NOT_FOUND", "head {head}");
        assert_eq!(r["latestLedger"], head - 2);
        let r = call_rpc(&app, "getLedgerEntries", keys.clone()).await;
        assert_eq!(r["latestLedger"], head - 2);
        assert_eq!(
            account_seq(&r["entries"][0]),
            before,
            "head {head}: the sequence number as of the lagging node's ledger"
        );
        assert_eq!(r["entries"][0]["lastModifiedLedgerSeq"], 1);
        // Horizon's account endpoint is always the head's.
        let h = get(&app, &format!("/accounts/{}", alice.g())).await;
        assert_eq!(h.json["sequence"], (before + 1).to_string());
        sim.close_ledger();
    }
    // Head 5: the lagging node has ingested ledger 3.
    let r = call_rpc(&app, "getTransaction", json!({ "hash": tx.hash() })).await;
    assert_eq!(r["status"], "SUCCESS");
    assert_eq!(r["latestLedger"], 3);
    let r = call_rpc(&app, "getLedgerEntries", keys.clone()).await;
    assert_eq!(account_seq(&r["entries"][0]), before + 1);
    assert_eq!(r["entries"][0]["lastModifiedLedgerSeq"], 3);
    // An account created after the lagging node's ledger is absent there.
    let carol = Key::new("carol");
    fund(&sim, &[&carol], 10);
    let r = call_rpc(
        &app,
        "getLedgerEntries",
        json!({ "keys": [account_key(&carol)] }),
    )
    .await;
    assert_eq!(r["entries"], json!([]));
    // The head node (p = 0) sees everything.
    sim.set_faults(Faults {
        lookup_lag_ledgers: 2,
        p_lookup_lagging: 0.0,
        ..Faults::default()
    });
    let r = call_rpc(
        &app,
        "getLedgerEntries",
        json!({ "keys": [account_key(&carol)] }),
    )
    .await;
    assert_eq!(r["latestLedger"], 5);
    assert_eq!(r["entries"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        call_rpc(&app, "getHealth", json!({})).await["latestLedger"],
        5
    );
}

#[tokio::test]
async fn get_transactions_pages_in_ledger_and_application_order() {
    let (sim, app, alice, bob) = funded(manual_config());
    let carol = Key::new("carol");
    fund(&sim, &[&carol], 100);
    // Ledger 2: two transactions; ledger 3: none; ledger 4: one.
    let t1 = pay(&sim, &alice, &bob, 1);
    let t2 = pay(&sim, &carol, &bob, 1);
    send(&app, &t1.sign(&[&alice])).await;
    send(&app, &t2.sign(&[&carol])).await;
    sim.close_ledger();
    sim.close_ledger();
    let t3 = pay(&sim, &alice, &bob, 1);
    send(&app, &t3.sign(&[&alice])).await;
    sim.close_ledger();
    let toid = |l: u64, o: u64| ((l << 32) | (o << 12) | 1).to_string();

    let r = call_rpc(
        &app,
        "getTransactions",
        json!({ "startLedger": 1, "pagination": { "limit": 2 } }),
    )
    .await;
    assert_eq!(r["latestLedger"], 4);
    assert_eq!(r["latestLedgerCloseTimestamp"], GENESIS + 15);
    assert_eq!(r["oldestLedger"], 1);
    assert_eq!(r["oldestLedgerCloseTimestamp"], GENESIS);
    let txs = r["transactions"].as_array().expect("transactions");
    let hashes: Vec<&str> = txs
        .iter()
        .map(|t| t["txHash"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        hashes,
        vec![t1.hash(), t2.hash()],
        "equal fees: arrival order"
    );
    assert_eq!(txs[0]["applicationOrder"], 1);
    assert_eq!(txs[1]["applicationOrder"], 2);
    assert_eq!(txs[0]["ledger"], 2);
    assert_eq!(txs[0]["status"], "SUCCESS");
    assert_eq!(txs[0]["feeBump"], false);
    assert_eq!(
        txs[0]["createdAt"],
        GENESIS + 5,
        "a number in getTransactions"
    );
    assert!(txs[0]["envelopeXdr"].is_string() && txs[0]["resultXdr"].is_string());
    assert!(txs[0]["resultMetaXdr"].is_string());
    assert_eq!(r["cursor"], toid(2, 2));

    let r = call_rpc(
        &app,
        "getTransactions",
        json!({ "pagination": { "cursor": toid(2, 2), "limit": 2 } }),
    )
    .await;
    let txs = r["transactions"].as_array().expect("transactions");
    assert_eq!(txs.len(), 1);
    assert_eq!(txs[0]["txHash"], t3.hash());
    assert_eq!(txs[0]["ledger"], 4);
    // The page ended early: the cursor is the latest ledger's last transaction.
    assert_eq!(r["cursor"], toid(4, 1));
    let r = call_rpc(
        &app,
        "getTransactions",
        json!({ "pagination": { "cursor": toid(4, 1) } }),
    )
    .await;
    assert_eq!(r["transactions"], json!([]));
    assert_eq!(
        r["cursor"],
        toid(4, 0),
        "nothing after the cursor in the latest ledger"
    );
    // Paging on once a new transaction arrives picks it up.
    let t4 = pay(&sim, &carol, &bob, 1);
    send(&app, &t4.sign(&[&carol])).await;
    sim.close_ledger();
    let r = call_rpc(
        &app,
        "getTransactions",
        json!({ "pagination": { "cursor": toid(4, 1) } }),
    )
    .await;
    assert_eq!(r["transactions"][0]["txHash"], t4.hash());
    // From a start ledger: everything from there, with the default limit.
    let r = call_rpc(&app, "getTransactions", json!({ "startLedger": 3 })).await;
    let hashes: Vec<&str> = r["transactions"]
        .as_array()
        .expect("transactions")
        .iter()
        .map(|t| t["txHash"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(hashes, vec![t3.hash(), t4.hash()]);

    for (params, code) in [
        (json!({ "startLedger": 6 }), -32600),
        (json!({ "startLedger": 0 }), -32600),
        (json!({}), -32600),
        (
            json!({ "startLedger": 2, "pagination": { "cursor": toid(2, 1) } }),
            -32600,
        ),
        (
            json!({ "startLedger": 2, "pagination": { "limit": 201 } }),
            -32600,
        ),
        (json!({ "pagination": { "cursor": "x" } }), -32602),
        (json!({ "startLedger": "2" }), -32602),
        (json!({ "startLedger": 2, "xdrFormat": "json" }), -32602),
    ] {
        assert_eq!(
            rpc_error(&app, "getTransactions", params.clone()).await.0,
            code,
            "{params}"
        );
    }
    // A cursor in a pruned ledger: RPC has no metadata for it.
    sim.set_faults(Faults {
        history_retention_ledgers: 2,
        ..Faults::default()
    });
    assert_eq!(
        rpc_error(
            &app,
            "getTransactions",
            json!({ "pagination": { "cursor": toid(2, 2) } })
        )
        .await,
        (
            -32602,
            "database does not contain metadata for ledger: 2".to_owned()
        )
    );
}

#[tokio::test]
async fn json_rpc_errors_have_the_standard_codes() {
    let (_sim, app, _, _) = funded(manual_config());
    let raw = |body: &'static str| {
        Request::post("/rpc")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("request")
    };
    let a = call(&app, raw("{not json")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["jsonrpc"], "2.0");
    assert_eq!(a.json["id"], Value::Null);
    assert_eq!(a.json["error"]["code"], -32700);
    let a = call(&app, raw(r#"{"id": 7, "method": "getHealth"}"#)).await;
    assert_eq!(
        (a.json["id"].clone(), a.json["error"]["code"].clone()),
        (json!(7), json!(-32600))
    );
    let a = call(
        &app,
        raw(r#"[{"jsonrpc": "2.0", "id": 1, "method": "getHealth"}]"#),
    )
    .await;
    assert_eq!(a.json["error"]["code"], -32600);
    let a = call(
        &app,
        raw(r#"{"jsonrpc": "2.0", "id": "x", "method": "getHealth", "params": [1]}"#),
    )
    .await;
    assert_eq!(
        (a.json["id"].clone(), a.json["error"]["code"].clone()),
        (json!("x"), json!(-32602))
    );

    let a = rpc_at(&app, "/rpc", "getFeeStats", json!({})).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["id"], 1);
    assert_eq!(a.json["error"]["code"], -32601);
    assert!(a.json["error"]["message"].is_string());
    for (method, params) in [
        ("getTransaction", json!({})),
        ("getTransaction", json!({ "hash": "abc" })),
        ("getTransaction", json!({ "hash": "zz".repeat(32) })),
        ("getLedgerEntries", json!({ "keys": "AAAA" })),
        ("sendTransaction", json!({ "transaction": 5 })),
    ] {
        let (code, _) = rpc_error(&app, method, params.clone()).await;
        assert_eq!(code, -32602, "{method} {params}");
    }
    // A notification (no id) is answered with a null id.
    let a = call(&app, raw(r#"{"jsonrpc": "2.0", "method": "getHealth"}"#)).await;
    assert_eq!(a.json["id"], Value::Null);
    assert_eq!(a.json["result"]["status"], "healthy");
    // Wrong HTTP method: RPC is POST only.
    assert_eq!(
        get(&app, "/rpc").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn ledger_close_times_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("payoutd-sim-rpc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let state_file = dir.join("sim.jsonl");
    let _ = std::fs::remove_file(&state_file);
    let cfg = || SimConfig {
        state_file: Some(state_file.clone()),
        rpc_retention_ledgers: 3,
        ..manual_config()
    };
    {
        let sim = Simulator::new(cfg()).expect("starts");
        for _ in 0..4 {
            sim.close_ledger();
        }
    }
    let sim = Simulator::new(cfg()).expect("restarts");
    let app = router(Arc::clone(&sim));
    sim.close_ledger();
    let r = call_rpc(&app, "getTransactions", json!({ "startLedger": 4 })).await;
    assert_eq!(r["latestLedger"], 6);
    assert_eq!(r["oldestLedger"], 4);
    assert_eq!(r["oldestLedgerCloseTimestamp"], GENESIS + 15);
    assert_eq!(r["latestLedgerCloseTimestamp"], GENESIS + 25);
    assert_eq!(
        get(&app, "/sim/status").await.json["rpc_retention_ledgers"],
        3
    );
    let _ = std::fs::remove_dir_all(&dir);
}
