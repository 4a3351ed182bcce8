//! The Stellar RPC client against a tiny local JSON-RPC stub (axum on 127.0.0.1:0): every
//! `sendTransaction` status and `getTransaction` answer is classified right, provider errors
//! are never failures, a 429's `Retry-After` holds requests back, fee-bump results give the
//! inner operations' codes, and credentials in the URL never show.
//!
//! The ledger simulator's own RPC (tests/api/stellar.rs) covers the protocol end to end;
//! this stub gives the answers the simulator never gives (fee bumps, provider errors of
//! every kind, malformed bodies).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use payoutd_actors::domain::{AccountId, Amount, Asset, Destination, Memo};
use payoutd_actors::ports::{
    Coverage, Envelope, Inclusion, Ledger, LedgerError, Lookup, OpSpec, SequenceRead,
    SubmitOutcome, TxSpec,
};
use payoutd_stellar::{Keyring, RpcClient, RpcLedger, RpcTimeouts, StartupError, network_id};
use serde_json::{Value, json};
use stellar_xdr::{
    AccountEntry, AccountEntryExt, Hash, InnerTransactionResult, InnerTransactionResultExt,
    InnerTransactionResultPair, InnerTransactionResultResult, LedgerEntryData, Limits,
    OperationResult, OperationResultTr, PaymentResult, PublicKey, SequenceNumber, String32,
    Thresholds, TransactionResult, TransactionResultExt, TransactionResultResult, Uint256,
    WriteXdr,
};

const TESTNET: &str = "Test SDF Network ; September 2015";
const PUBLIC: &str = "Public Global Stellar Network ; September 2015";
const SEED: &str = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";
const ACCOUNT: &str = "GDF5O4OWEMVBY5FLDHWA5RZTYSV2U276XGKZZ6VSHDDR3THSQ6OQS7UM";
const DEST: &str = "GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2";
/// Short enough to keep the timeout test fast, long enough for a loaded 2-core machine.
const TEST_RPC_TIMEOUT_MS: u64 = 500;
/// How long the slow stub sleeps: well past the client's timeout.
const SLOW_HANDLER_DELAY_MS: u64 = 5_000;

fn timeouts() -> RpcTimeouts {
    RpcTimeouts {
        rpc_timeout_ms: 5_000,
        rpc_connect_timeout_ms: 1_000,
        rpc_retry_after_max_ms: 60_000,
    }
}

/// One request the stub received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    method: String,
    params: Value,
    cache_control: Option<String>,
}

type Handler = Arc<dyn Fn(&str, &Value) -> Response + Send + Sync>;

/// Serves JSON-RPC on every path: `getNetwork` and `getHealth` as a healthy testnet node
/// (unless `handler` answers them), everything else from `handler(method, params)`, which
/// answers with the request id put in by the stub. Returns the base URL and what it saw.
async fn serve(
    passphrase: &'static str,
    handler: impl Fn(&str, &Value) -> Option<Value> + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let raw: Handler = Arc::new(move |method: &str, params: &Value| {
        let answer = handler(method, params).or_else(|| match method {
            "getNetwork" => Some(json!({"passphrase": passphrase, "protocolVersion": 23})),
            "getHealth" => Some(json!({
                "status": "healthy", "latestLedger": 1234, "oldestLedger": 1000,
                "ledgerRetentionWindow": 235
            })),
            _ => None,
        });
        match answer {
            Some(v) => axum::Json(v).into_response(),
            None => (StatusCode::NOT_FOUND, "no such method in the stub").into_response(),
        }
    });
    serve_raw(raw).await
}

/// Serves `handler` for every POST; its JSON answers get the request's id filled in.
async fn serve_raw(handler: Handler) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let app = Router::new().fallback(
        move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
            let handler = handler.clone();
            let log = log.clone();
            async move {
                let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let method = request["method"].as_str().unwrap_or("").to_owned();
                let params = request.get("params").cloned().unwrap_or(json!({}));
                log.lock().unwrap().push(Seen {
                    path: uri.to_string(),
                    method: method.clone(),
                    params: params.clone(),
                    cache_control: headers
                        .get("cache-control")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                });
                let response = handler(&method, &params);
                // Wrap a bare result object into a JSON-RPC answer with the right id.
                let (parts, body) = response.into_parts();
                let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let body = match serde_json::from_slice::<Value>(&bytes) {
                    Ok(v) if parts.status == StatusCode::OK && v.get("jsonrpc").is_none() => {
                        json!({"jsonrpc": "2.0", "id": request["id"], "result": v}).to_string()
                    }
                    Ok(mut v) if parts.status == StatusCode::OK => {
                        if v.get("id") == Some(&json!("ID")) {
                            v["id"] = request["id"].clone();
                        }
                        v.to_string()
                    }
                    _ => String::from_utf8_lossy(&bytes).into_owned(),
                };
                Response::from_parts(parts, axum::body::Body::from(body))
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn keyring() -> Keyring {
    Keyring::from_seeds([SEED]).unwrap()
}

async fn connect(url: &str) -> RpcLedger {
    RpcLedger::connect(url, TESTNET, keyring(), timeouts())
        .await
        .unwrap()
}

fn spec(operations: usize) -> TxSpec {
    let source = AccountId::parse(ACCOUNT).unwrap();
    TxSpec {
        source,
        sequence: 42,
        fee_stroops: 100 * operations as u32,
        max_time: 1_714_564_865,
        ledger_bounds: None,
        memo: Memo::Id(7),
        operations: (0..operations)
            .map(|i| OpSpec {
                payer: source,
                destination: Destination::parse(DEST).unwrap(),
                asset: Asset::Native,
                amount: Amount::from_stroops(125_000_000 + i as i64).unwrap(),
                kind: Default::default(),
            })
            .collect(),
    }
}

fn offline_envelope(operations: usize) -> Envelope {
    payoutd_stellar::tx::build_and_sign(&spec(operations), &network_id(TESTNET), &keyring())
        .unwrap()
}

fn payment_results(codes: &[PaymentResult]) -> Vec<OperationResult> {
    codes
        .iter()
        .map(|c| OperationResult::OpInner(OperationResultTr::Payment(c.clone())))
        .collect()
}

fn result_xdr(fee_charged: i64, result: TransactionResultResult) -> String {
    TransactionResult {
        fee_charged,
        result,
        ext: TransactionResultExt::V0,
    }
    .to_xdr_base64(Limits::none())
    .unwrap()
}

fn tx_result(fee: i64, failed: bool, ops: &[PaymentResult]) -> String {
    let ops = payment_results(ops).try_into().unwrap();
    result_xdr(
        fee,
        if failed {
            TransactionResultResult::TxFailed(ops)
        } else {
            TransactionResultResult::TxSuccess(ops)
        },
    )
}

fn fee_bump_result(outer_fee: i64, inner_failed: bool, ops: &[PaymentResult]) -> String {
    let ops = payment_results(ops).try_into().unwrap();
    let inner = InnerTransactionResultPair {
        transaction_hash: Hash([9; 32]),
        result: InnerTransactionResult {
            fee_charged: 0,
            result: if inner_failed {
                InnerTransactionResultResult::TxFailed(ops)
            } else {
                InnerTransactionResultResult::TxSuccess(ops)
            },
            ext: InnerTransactionResultExt::V0,
        },
    };
    result_xdr(
        outer_fee,
        if inner_failed {
            TransactionResultResult::TxFeeBumpInnerFailed(inner)
        } else {
            TransactionResultResult::TxFeeBumpInnerSuccess(inner)
        },
    )
}

fn error_result(code: TransactionResultResult) -> String {
    result_xdr(0, code)
}

fn send_answer(status: &str, hash: &str, error_result_xdr: Option<String>) -> Value {
    let mut v = json!({
        "status": status, "hash": hash, "latestLedger": 1234,
        "latestLedgerCloseTime": "1714564800"
    });
    if let Some(x) = error_result_xdr {
        v["errorResultXdr"] = json!(x);
    }
    v
}

fn included(status: &str, hash: &str, ledger: u32, result_xdr: &str, fee_bump: bool) -> Value {
    json!({
        "status": status, "txHash": hash, "latestLedger": 1300,
        "latestLedgerCloseTime": "1714565000", "oldestLedger": 1000,
        "oldestLedgerCloseTime": "1714560000", "applicationOrder": 1, "feeBump": fee_bump,
        "envelopeXdr": "AAAA", "resultXdr": result_xdr, "resultMetaXdr": "AAAA",
        "ledger": ledger, "createdAt": "1714564900"
    })
}

fn not_found(hash: &str) -> Value {
    json!({
        "status": "NOT_FOUND", "txHash": hash, "latestLedger": 1300,
        "latestLedgerCloseTime": "1714565000", "oldestLedger": 1000,
        "oldestLedgerCloseTime": "1714560000"
    })
}

/// What `submit` gives when `sendTransaction` answers `answer` and `getTransaction`
/// answers `lookup` (or not found).
async fn submit_with(answer: Value, lookup: Option<Value>) -> SubmitOutcome {
    let env = offline_envelope(1);
    let hash = env.hash.to_hex();
    let (url, _) = serve(TESTNET, move |method, _| match method {
        "sendTransaction" => Some(answer.clone()),
        "getTransaction" => Some(lookup.clone().unwrap_or_else(|| not_found(&hash))),
        _ => None,
    })
    .await;
    connect(&url).await.submit(&env).await
}

#[tokio::test]
async fn pending_and_duplicate_are_pending_and_send_exactly_the_journaled_bytes() {
    let env = offline_envelope(1);
    let hash = env.hash.to_hex();
    let answers = Arc::new(AtomicUsize::new(0));
    let n = answers.clone();
    let h = hash.clone();
    let (url, seen) = serve(TESTNET, move |method, _| {
        (method == "sendTransaction").then(|| {
            let status = if n.fetch_add(1, Ordering::SeqCst) == 0 {
                "PENDING"
            } else {
                "DUPLICATE"
            };
            send_answer(status, &h, None)
        })
    })
    .await;
    let ledger = connect(&url).await;
    assert_eq!(ledger.submit(&env).await, SubmitOutcome::Pending);
    assert_eq!(ledger.submit(&env).await, SubmitOutcome::Pending);
    let counts = ledger.client().send_counts();
    assert_eq!((counts.pending, counts.duplicate), (1, 1));
    let seen = seen.lock().unwrap();
    let sends: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.method == "sendTransaction")
        .collect();
    assert_eq!(sends.len(), 2);
    for s in sends {
        assert_eq!(
            s.params,
            json!({"transaction": env.xdr}),
            "named params, same bytes"
        );
        assert_eq!(s.cache_control.as_deref(), Some("no-cache"));
    }
}

#[tokio::test]
async fn try_again_later_is_unknown_never_a_failure() {
    let hash = offline_envelope(1).hash.to_hex();
    let outcome = submit_with(send_answer("TRY_AGAIN_LATER", &hash, None), None).await;
    let SubmitOutcome::Unknown { detail } = &outcome else {
        panic!("expected unknown, got {outcome:?}")
    };
    assert!(detail.contains("TRY_AGAIN_LATER"), "{detail}");
}

#[tokio::test]
async fn errors_before_inclusion_are_rejections_classified_as_horizons() {
    let hash = offline_envelope(1).hash.to_hex();
    for (code, name) in [
        (TransactionResultResult::TxBadSeq, "tx_bad_seq"),
        (
            TransactionResultResult::TxInsufficientFee,
            "tx_insufficient_fee",
        ),
        (TransactionResultResult::TxTooLate, "tx_too_late"),
        (TransactionResultResult::TxTooEarly, "tx_too_early"),
        (TransactionResultResult::TxBadAuth, "tx_bad_auth"),
        (TransactionResultResult::TxNoAccount, "tx_no_source_account"),
        (TransactionResultResult::TxMalformed, "tx_malformed"),
    ] {
        let outcome =
            submit_with(send_answer("ERROR", &hash, Some(error_result(code))), None).await;
        assert_eq!(
            outcome,
            SubmitOutcome::Rejected { code: name.into() },
            "{name}"
        );
    }
}

#[tokio::test]
async fn an_error_naming_tx_failed_is_settled_only_by_get_transaction() {
    let hash = offline_envelope(1).hash.to_hex();
    let failed = tx_result(100, true, &[PaymentResult::Underfunded]);
    // Not in a ledger: not known, never failed.
    let outcome = submit_with(send_answer("ERROR", &hash, Some(failed.clone())), None).await;
    assert!(
        matches!(outcome, SubmitOutcome::Unknown { .. }),
        "{outcome:?}"
    );
    // In a ledger, failed: failed with the ledger's codes.
    let outcome = submit_with(
        send_answer("ERROR", &hash, Some(failed.clone())),
        Some(included("FAILED", &hash, 1250, &failed, false)),
    )
    .await;
    assert_eq!(
        outcome,
        SubmitOutcome::Failed {
            inclusion: Inclusion {
                ledger: 1250,
                fee_charged: 100
            },
            tx_code: "tx_failed".into(),
            op_codes: vec!["op_underfunded".into()],
        }
    );
}

#[tokio::test]
async fn unusable_send_answers_are_unknown() {
    let hash = offline_envelope(1).hash.to_hex();
    for answer in [
        send_answer("ERROR", &hash, None),
        send_answer("ERROR", &hash, Some("not xdr".into())),
        send_answer(
            "ERROR",
            &hash,
            Some(tx_result(100, false, &[PaymentResult::Success])),
        ),
        send_answer("SOMETHING_NEW", &hash, None),
        send_answer("PENDING", &"00".repeat(32), None),
        json!({"hash": hash}),
    ] {
        let outcome = submit_with(answer.clone(), None).await;
        assert!(
            matches!(outcome, SubmitOutcome::Unknown { .. }),
            "{answer}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn provider_errors_are_unknown_or_unavailable_never_failures() {
    let env = offline_envelope(1);
    let cases: Vec<(&str, Handler)> = vec![
        (
            "JSON-RPC error",
            Arc::new(|_: &str, _: &Value| {
                axum::Json(json!({"jsonrpc": "2.0", "id": "ID",
                    "error": {"code": -32603, "message": "internal error"}}))
                .into_response()
            }),
        ),
        (
            "HTTP 500",
            Arc::new(|_: &str, _: &Value| {
                (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response()
            }),
        ),
        (
            "HTTP 502",
            Arc::new(|_: &str, _: &Value| (StatusCode::BAD_GATEWAY, "<html>").into_response()),
        ),
        (
            "HTTP 504",
            Arc::new(|_: &str, _: &Value| {
                (StatusCode::GATEWAY_TIMEOUT, "gateway timeout").into_response()
            }),
        ),
        (
            "not JSON",
            Arc::new(|_: &str, _: &Value| (StatusCode::OK, "<html>hello</html>").into_response()),
        ),
        (
            "not JSON-RPC",
            Arc::new(|_: &str, _: &Value| axum::Json(json!([1, 2, 3])).into_response()),
        ),
        (
            "another request's answer",
            Arc::new(|_: &str, _: &Value| {
                axum::Json(json!({"jsonrpc": "2.0", "id": 987654321,
                    "result": {"status": "PENDING"}}))
                .into_response()
            }),
        ),
    ];
    for (name, handler) in cases {
        let (url, _) = serve_raw(handler).await;
        let client = RpcClient::new(&url, timeouts()).unwrap();
        let outcome = client.submit(&env.xdr, &env.hash).await;
        assert!(
            matches!(outcome, SubmitOutcome::Unknown { .. }),
            "{name}: {outcome:?}"
        );
        assert!(client.transaction(&env.hash).await.is_err(), "{name}");
        assert!(client.latest_ledger().await.is_err(), "{name}");
        assert!(
            client
                .account_sequence(&AccountId::parse(ACCOUNT).unwrap())
                .await
                .is_err(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn long_error_bodies_are_not_echoed() {
    let long = "x".repeat(50_000);
    let (url, _) = serve_raw(Arc::new(move |_: &str, _: &Value| {
        (StatusCode::BAD_GATEWAY, long.clone()).into_response()
    }))
    .await;
    let env = offline_envelope(1);
    let client = RpcClient::new(&url, timeouts()).unwrap();
    let SubmitOutcome::Unknown { detail } = client.submit(&env.xdr, &env.hash).await else {
        panic!("expected unknown");
    };
    assert!(detail.len() < 400, "detail is {} bytes", detail.len());
}

#[tokio::test]
async fn http_429_retry_after_holds_requests_back_up_to_the_cap() {
    let calls = Arc::new(AtomicUsize::new(0));
    let n = calls.clone();
    let (url, _) = serve_raw(Arc::new(move |_: &str, _: &Value| {
        n.fetch_add(1, Ordering::SeqCst);
        (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        )
            .into_response()
    }))
    .await;
    let env = offline_envelope(1);
    let client = RpcClient::new(&url, timeouts()).unwrap();
    let outcome = client.submit(&env.xdr, &env.hash).await;
    let SubmitOutcome::Unknown { detail } = &outcome else {
        panic!("expected unknown, got {outcome:?}")
    };
    assert!(detail.contains("429"), "{detail}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Within the second: nothing is sent, every call answers at once.
    let outcome = client.submit(&env.xdr, &env.hash).await;
    assert!(matches!(outcome, SubmitOutcome::Unknown { .. }));
    let err = client.latest_ledger().await.unwrap_err();
    assert!(err.to_string().contains("not sent"), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "held back");
    // Once the hint has passed, requests go out again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while calls.load(Ordering::SeqCst) == 1 {
        assert!(std::time::Instant::now() < deadline, "never sent again");
        let _ = client.latest_ledger().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A provider asking for an hour is honoured only up to rpc_retry_after_max_ms.
    let (url, _) = serve_raw(Arc::new(|_: &str, _: &Value| {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "3600")],
            "slow down",
        )
            .into_response()
    }))
    .await;
    let capped = RpcClient::new(
        &url,
        RpcTimeouts {
            rpc_retry_after_max_ms: 200,
            ..timeouts()
        },
    )
    .unwrap();
    let err = capped.latest_ledger().await.unwrap_err();
    assert!(err.to_string().contains("200 ms"), "{err}");
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_unknown() {
    // A slow server: the stub answers after the client gave up.
    let slow = Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_millis(SLOW_HANDLER_DELAY_MS)).await;
        "late"
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, slow).await.unwrap() });
    let client = RpcClient::new(
        &slow_url,
        RpcTimeouts {
            rpc_timeout_ms: TEST_RPC_TIMEOUT_MS,
            ..timeouts()
        },
    )
    .unwrap();
    let env = offline_envelope(1);
    let started = std::time::Instant::now();
    let SubmitOutcome::Unknown { detail } = client.submit(&env.xdr, &env.hash).await else {
        panic!("expected unknown");
    };
    assert!(detail.contains("rpc_timeout_ms"), "{detail}");
    assert!(started.elapsed() < Duration::from_millis(SLOW_HANDLER_DELAY_MS));
    // Nobody listening.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = RpcClient::new(&dead, timeouts()).unwrap();
    assert!(matches!(
        client.submit(&env.xdr, &env.hash).await,
        SubmitOutcome::Unknown { .. }
    ));
    let err = RpcLedger::connect(&dead, TESTNET, keyring(), timeouts())
        .await
        .unwrap_err();
    assert!(matches!(err, StartupError::Rpc { .. }), "{err:?}");
}

#[tokio::test]
async fn get_transaction_success_failed_and_per_operation_codes() {
    let env = offline_envelope(3);
    let hash = env.hash.to_hex();
    let ok = tx_result(
        300,
        false,
        &[
            PaymentResult::Success,
            PaymentResult::Success,
            PaymentResult::Success,
        ],
    );
    let third_fails = tx_result(
        300,
        true,
        &[
            PaymentResult::Success,
            PaymentResult::Success,
            PaymentResult::NoDestination,
        ],
    );
    for (answer, want) in [
        (
            included("SUCCESS", &hash, 1250, &ok, false),
            Lookup::Applied(Inclusion {
                ledger: 1250,
                fee_charged: 300,
            }),
        ),
        (
            included("FAILED", &hash, 1251, &third_fails, false),
            Lookup::Failed {
                inclusion: Inclusion {
                    ledger: 1251,
                    fee_charged: 300,
                },
                tx_code: "tx_failed".into(),
                op_codes: vec![
                    "op_success".into(),
                    "op_success".into(),
                    "op_no_destination".into(),
                ],
            },
        ),
    ] {
        let a = answer.clone();
        let (url, _) = serve(TESTNET, move |m, _| {
            (m == "getTransaction").then(|| a.clone())
        })
        .await;
        assert_eq!(connect(&url).await.lookup(&env.hash).await.unwrap(), want);
    }
}

#[tokio::test]
async fn fee_bump_statuses_report_the_outer_fee_and_the_inner_codes() {
    let env = offline_envelope(2);
    let hash = env.hash.to_hex();
    let success = fee_bump_result(
        400,
        false,
        &[PaymentResult::Success, PaymentResult::Success],
    );
    let failed = fee_bump_result(
        400,
        true,
        &[PaymentResult::Success, PaymentResult::LineFull],
    );
    for (answer, want) in [
        (
            included("SUCCESS", &hash, 1260, &success, true),
            Lookup::Applied(Inclusion {
                ledger: 1260,
                fee_charged: 400,
            }),
        ),
        (
            included("FAILED", &hash, 1261, &failed, true),
            Lookup::Failed {
                inclusion: Inclusion {
                    ledger: 1261,
                    fee_charged: 400,
                },
                tx_code: "tx_fee_bump_inner_failed".into(),
                op_codes: vec!["op_success".into(), "op_line_full".into()],
            },
        ),
    ] {
        let a = answer.clone();
        let (url, _) = serve(TESTNET, move |m, _| {
            (m == "getTransaction").then(|| a.clone())
        })
        .await;
        assert_eq!(connect(&url).await.lookup(&env.hash).await.unwrap(), want);
    }
    // The same through sendTransaction's ERROR tx_fee_bump_inner_failed: settled by the
    // lookup.
    let hash = offline_envelope(1).hash.to_hex();
    let outcome = submit_with(
        send_answer("ERROR", &hash.clone(), Some(failed.clone())),
        Some(included("FAILED", &hash, 1261, &failed, true)),
    )
    .await;
    assert_eq!(
        outcome,
        SubmitOutcome::Failed {
            inclusion: Inclusion {
                ledger: 1261,
                fee_charged: 400
            },
            tx_code: "tx_fee_bump_inner_failed".into(),
            op_codes: vec!["op_success".into(), "op_line_full".into()],
        }
    );
}

#[tokio::test]
async fn not_found_covers_only_the_answers_own_window() {
    let env = offline_envelope(1);
    let hash = env.hash.to_hex();
    let h = hash.clone();
    let (url, _) = serve(TESTNET, move |m, _| {
        (m == "getTransaction").then(|| not_found(&h))
    })
    .await;
    assert_eq!(
        connect(&url).await.lookup(&env.hash).await.unwrap(),
        Lookup::NotFound(Some(Coverage {
            oldest: 1000,
            latest: 1300
        }))
    );
    // Without a window it proves nothing.
    let h = hash.clone();
    let (url, _) = serve(TESTNET, move |m, _| {
        (m == "getTransaction")
            .then(|| json!({"status": "NOT_FOUND", "txHash": h, "latestLedger": 1300}))
    })
    .await;
    assert_eq!(
        connect(&url).await.lookup(&env.hash).await.unwrap(),
        Lookup::NotFound(None)
    );
}

#[tokio::test]
async fn unusable_transaction_answers_are_errors_never_outcomes() {
    let env = offline_envelope(1);
    let hash = env.hash.to_hex();
    let ok = tx_result(100, false, &[PaymentResult::Success]);
    let failed = tx_result(100, true, &[PaymentResult::NoTrust]);
    let mut no_ledger = included("SUCCESS", &hash, 1, &ok, false);
    no_ledger.as_object_mut().unwrap().remove("ledger");
    let mut no_result = included("FAILED", &hash, 1, &failed, false);
    no_result.as_object_mut().unwrap().remove("resultXdr");
    for answer in [
        no_ledger,
        no_result,
        included("SUCCESS", &hash, 1250, &failed, false),
        included("FAILED", &hash, 1250, &ok, false),
        included("SUCCESS", &"ab".repeat(32), 1250, &ok, false),
        included("SUCCESS", &hash, 1250, "garbage", false),
        json!({"status": "MAYBE", "txHash": hash}),
    ] {
        let a = answer.clone();
        let (url, _) = serve(TESTNET, move |m, _| {
            (m == "getTransaction").then(|| a.clone())
        })
        .await;
        let got = connect(&url).await.lookup(&env.hash).await;
        assert!(
            matches!(got, Err(LedgerError::Unavailable(_))),
            "{answer}: {got:?}"
        );
    }
}

fn account_entry_xdr(sequence: i64) -> String {
    let account = AccountId::parse(ACCOUNT).unwrap();
    LedgerEntryData::Account(AccountEntry {
        account_id: stellar_xdr::AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(
            *account.as_bytes(),
        ))),
        balance: 1_000_000_000,
        seq_num: SequenceNumber(sequence),
        num_sub_entries: 0,
        inflation_dest: None,
        flags: 0,
        home_domain: String32::default(),
        thresholds: Thresholds([1, 0, 0, 0]),
        signers: Default::default(),
        ext: AccountEntryExt::V0,
    })
    .to_xdr_base64(Limits::none())
    .unwrap()
}

#[tokio::test]
async fn account_sequence_from_the_entry_as_of_the_answers_latest_ledger() {
    let (url, seen) = serve(TESTNET, |m, params| {
        (m == "getLedgerEntries").then(|| {
            let key = params["keys"][0].as_str().unwrap().to_owned();
            json!({"entries": [{"key": key, "xdr": account_entry_xdr(77_000_000_005),
                "lastModifiedLedgerSeq": 1200}], "latestLedger": 1290})
        })
    })
    .await;
    let ledger = connect(&url).await;
    let account = AccountId::parse(ACCOUNT).unwrap();
    assert_eq!(
        ledger.account_sequence(&account).await.unwrap(),
        SequenceRead {
            sequence: Some(77_000_000_005),
            as_of_ledger: Some(1290)
        }
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|s| s.method == "getLedgerEntries"
                && s.params["keys"].as_array().unwrap().len() == 1)
    );
    // An account that does not exist: no entries.
    let (url, _) = serve(TESTNET, |m, _| {
        (m == "getLedgerEntries").then(|| json!({"latestLedger": 1291}))
    })
    .await;
    assert_eq!(
        connect(&url)
            .await
            .account_sequence(&account)
            .await
            .unwrap(),
        SequenceRead {
            sequence: None,
            as_of_ledger: Some(1291)
        }
    );
}

#[tokio::test]
async fn latest_ledger_reads_sequence_and_close_time() {
    let (url, _) = serve(TESTNET, |m, _| {
        (m == "getLatestLedger").then(|| {
            json!({"id": "ab".repeat(32), "protocolVersion": 23, "sequence": 1300,
                "closeTime": "1714565000"})
        })
    })
    .await;
    let head = connect(&url).await.latest_ledger().await.unwrap();
    assert_eq!((head.sequence, head.close_time), (1300, 1_714_565_000));
    // Without a close time the head is unusable (expiry is judged by it).
    let (url, _) = serve(TESTNET, |m, _| {
        (m == "getLatestLedger").then(|| json!({"sequence": 1300}))
    })
    .await;
    assert!(connect(&url).await.latest_ledger().await.is_err());
}

#[tokio::test]
async fn passphrase_mismatch_is_refused_at_connect() {
    let (url, _) = serve(PUBLIC, |_, _| None).await;
    let err = RpcLedger::connect(&url, TESTNET, keyring(), timeouts())
        .await
        .unwrap_err();
    let StartupError::RpcPassphraseMismatch {
        configured, served, ..
    } = &err
    else {
        panic!("expected a mismatch, got {err:?}")
    };
    assert_eq!((configured.as_str(), served.as_str()), (TESTNET, PUBLIC));
    assert!(err.to_string().contains("refusing to sign"), "{err}");
}

#[tokio::test]
async fn credentials_in_the_url_reach_the_server_and_never_show() {
    let (base, seen) = serve(TESTNET, |_, _| None).await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    let url = format!("http://user:hunter2@127.0.0.1:{port}/key-abc123/rpc?apikey=s3cr3t");
    let ledger = connect(&url).await;
    assert_eq!(
        seen.lock().unwrap()[0].path,
        "/key-abc123/rpc?apikey=s3cr3t",
        "POSTed to the URL as given"
    );
    let shown = ledger.client().display_url().to_owned();
    assert_eq!(shown, format!("http://127.0.0.1:{port}/…"));
    let mut texts = vec![format!("{ledger:?}"), format!("{:?}", ledger.client())];
    // Errors of every kind: a method the stub does not serve, and a mismatch at connect.
    texts.push(ledger.latest_ledger().await.unwrap_err().to_string());
    let (public, _) = serve(PUBLIC, |_, _| None).await;
    let public_port = public.rsplit(':').next().unwrap().to_owned();
    let mismatched =
        format!("http://user:hunter2@127.0.0.1:{public_port}/key-abc123?apikey=s3cr3t");
    texts.push(
        RpcLedger::connect(&mismatched, TESTNET, keyring(), timeouts())
            .await
            .unwrap_err()
            .to_string(),
    );
    // Nobody listening there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!(
        "http://user:hunter2@{}/key-abc123?apikey=s3cr3t",
        listener.local_addr().unwrap()
    );
    drop(listener);
    let err = RpcLedger::connect(&dead, TESTNET, keyring(), timeouts())
        .await
        .unwrap_err();
    texts.push(err.to_string());
    texts.push(format!("{err:?}"));
    let env = offline_envelope(1);
    let client = RpcClient::new(&dead, timeouts()).unwrap();
    texts.push(format!("{:?}", client.submit(&env.xdr, &env.hash).await));
    texts.push(client.transaction(&env.hash).await.unwrap_err().to_string());
    texts.push(
        RpcClient::new("ftp://user:hunter2@x/key-abc123?apikey=s3cr3t", timeouts())
            .unwrap_err()
            .to_string(),
    );
    for text in &texts {
        for secret in ["hunter2", "key-abc123", "s3cr3t"] {
            assert!(!text.contains(secret), "{secret} shows in: {text}");
        }
    }
}
