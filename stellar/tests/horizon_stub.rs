//! The Horizon client against a tiny local Horizon stub (axum on 127.0.0.1:0): every
//! submission answer of docs/result-codes.md is classified right, and nothing uncertain is a failure.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Form, Path};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use payoutd_actors::domain::{AccountId, Amount, Asset, Destination, Memo};
use payoutd_actors::ports::{
    Coverage, Envelope, Inclusion, Ledger, LedgerError, Lookup, OpSpec, SequenceRead,
    SubmitOutcome, TxSpec,
};
use payoutd_stellar::{HorizonTimeouts, Keyring, StartupError, StellarLedger, network_id};
use serde_json::{Value, json};
use stellar_xdr::{
    Limits, OperationResult, OperationResultTr, PaymentResult, TransactionResult,
    TransactionResultExt, TransactionResultResult, WriteXdr,
};

const TESTNET: &str = "Test SDF Network ; September 2015";
const PUBLIC: &str = "Public Global Stellar Network ; September 2015";
const SEED: &str = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";
const ACCOUNT: &str = "GDF5O4OWEMVBY5FLDHWA5RZTYSV2U276XGKZZ6VSHDDR3THSQ6OQS7UM";
const DEST: &str = "GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2";
/// Short enough to keep the timeout test fast, long enough for a loaded 2-core machine.
const TEST_REQUEST_TIMEOUT_MS: u64 = 500;
/// How long the slow stub sleeps: well past the client's timeout.
const SLOW_HANDLER_DELAY_MS: u64 = 5_000;

fn timeouts() -> HorizonTimeouts {
    HorizonTimeouts {
        request_timeout_ms: 5_000,
        connect_timeout_ms: 1_000,
    }
}

/// `GET /` as Horizon answers it (the fields we read, and a few we ignore).
fn root_body(passphrase: &str) -> Value {
    json!({
        "_links": {"account": {"href": "/accounts/{account_id}", "templated": true}},
        "horizon_version": "stub",
        "core_version": "stub",
        "ingest_latest_ledger": 1234,
        "history_latest_ledger": 1234,
        "history_latest_ledger_closed_at": "2024-05-01T12:00:05Z",
        "history_elder_ledger": 2,
        "core_latest_ledger": 1234,
        "network_passphrase": passphrase,
        "current_protocol_version": 22,
        "supported_protocol_version": 22,
        "core_supported_protocol_version": 22
    })
}

fn transaction_body(
    hash: &str,
    ledger: u32,
    successful: bool,
    fee_charged: Value,
    result_xdr: &str,
) -> Value {
    json!({
        "_links": {"self": {"href": format!("/transactions/{hash}")}},
        "id": hash,
        "paging_token": "5299989564841984",
        "successful": successful,
        "hash": hash,
        "ledger": ledger,
        "created_at": "2024-05-01T12:00:05Z",
        "source_account": ACCOUNT,
        "source_account_sequence": "1",
        "fee_account": ACCOUNT,
        "fee_charged": fee_charged,
        "max_fee": "100",
        "operation_count": 1,
        "envelope_xdr": "AAAA",
        "result_xdr": result_xdr,
        "memo_type": "none",
        "signatures": []
    })
}

fn problem(status: u16, slug: &str, extras: Option<Value>) -> Value {
    let mut body = json!({
        "type": format!("https://stellar.org/horizon-errors/{slug}"),
        "title": slug,
        "status": status,
        "detail": "stub problem",
    });
    if let Some(extras) = extras {
        body["extras"] = extras;
    }
    body
}

fn tx_failed_problem(tx_code: &str, op_codes: &[&str]) -> Value {
    problem(
        400,
        "transaction_failed",
        Some(json!({
            "envelope_xdr": "AAAA",
            "result_codes": {"transaction": tx_code, "operations": op_codes},
            "result_xdr": "AAAA"
        })),
    )
}

fn failed_result_xdr(op: PaymentResult) -> String {
    TransactionResult {
        fee_charged: 100,
        result: TransactionResultResult::TxFailed(
            vec![OperationResult::OpInner(OperationResultTr::Payment(op))]
                .try_into()
                .unwrap(),
        ),
        ext: TransactionResultExt::V0,
    }
    .to_xdr_base64(Limits::none())
    .unwrap()
}

/// The stub is one consistent node that has ingested ledger 1234 (as `GET /` says).
fn reply(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("latest-ledger", "1234")],
        Json(body),
    )
        .into_response()
}

/// Serves `routes` plus `GET /` (network `passphrase`) on a free local port.
async fn serve_with(passphrase: &'static str, routes: Router) -> String {
    let app = routes.route("/", get(move || async move { Json(root_body(passphrase)) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn serve(routes: Router) -> String {
    serve_with(TESTNET, routes).await
}

fn keyring() -> Keyring {
    Keyring::from_seeds([SEED]).unwrap()
}

async fn connect(url: &str, timeouts: HorizonTimeouts) -> StellarLedger {
    StellarLedger::connect(url, TESTNET, keyring(), timeouts)
        .await
        .unwrap()
}

fn spec() -> TxSpec {
    let source = AccountId::parse(ACCOUNT).unwrap();
    TxSpec {
        source,
        sequence: 42,
        fee_stroops: 100,
        max_time: 1_714_564_865,
        ledger_bounds: None,
        memo: Memo::Id(7),
        operations: vec![OpSpec {
            payer: source,
            destination: Destination::parse(DEST).unwrap(),
            asset: Asset::Native,
            amount: Amount::from_stroops(125_000_000).unwrap(),
            kind: Default::default(),
        }],
    }
}

fn envelope(ledger: &StellarLedger) -> Envelope {
    ledger.build_and_sign(&spec()).unwrap()
}

/// The same envelope, built without any Horizon (building is pure).
fn offline_envelope() -> Envelope {
    payoutd_stellar::tx::build_and_sign(&spec(), &network_id(TESTNET), &keyring()).unwrap()
}

/// A ledger whose Horizon answers every `POST /transactions` with `status` and `body`.
async fn submit_answered_with(status: u16, body: Value) -> SubmitOutcome {
    let routes = Router::new().route(
        "/transactions",
        post(move || async move { reply(status, body) }),
    );
    let ledger = connect(&serve(routes).await, timeouts()).await;
    ledger.submit(&envelope(&ledger)).await
}

#[tokio::test]
async fn applied_200_sends_exactly_the_persisted_bytes() {
    let expected = offline_envelope();
    let hash = expected.hash.to_hex();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let recorder = seen.clone();
    let routes = Router::new().route(
        "/transactions",
        post(move |Form(form): Form<HashMap<String, String>>| {
            let recorder = recorder.clone();
            let hash = hash.clone();
            async move {
                recorder
                    .lock()
                    .unwrap()
                    .push(form.get("tx").cloned().unwrap_or_default());
                reply(200, transaction_body(&hash, 77, true, json!("100"), "AAAA"))
            }
        }),
    );
    let ledger = connect(&serve(routes).await, timeouts()).await;
    let env = envelope(&ledger);
    assert_eq!(env, expected);
    let outcome = ledger.submit(&env).await;
    assert_eq!(
        outcome,
        SubmitOutcome::Applied(Inclusion {
            ledger: 77,
            fee_charged: 100
        })
    );
    assert_eq!(*seen.lock().unwrap(), vec![env.xdr.clone()]);
}

#[tokio::test]
async fn applied_200_with_numeric_fee_charged() {
    let hash = offline_envelope().hash.to_hex();
    let outcome =
        submit_answered_with(200, transaction_body(&hash, 78, true, json!(250), "AAAA")).await;
    assert_eq!(
        outcome,
        SubmitOutcome::Applied(Inclusion {
            ledger: 78,
            fee_charged: 250
        })
    );
}

#[tokio::test]
async fn tx_failed_is_looked_up_for_ledger_and_fee() {
    let lookups = Arc::new(AtomicUsize::new(0));
    let counter = lookups.clone();
    let routes = Router::new()
        .route(
            "/transactions",
            post(|| async { reply(400, tx_failed_problem("tx_failed", &["op_no_destination"])) }),
        )
        .route(
            "/transactions/{hash}",
            get(move |Path(hash): Path<String>| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let xdr = failed_result_xdr(PaymentResult::NoDestination);
                    reply(200, transaction_body(&hash, 91, false, json!("100"), &xdr))
                }
            }),
        );
    let ledger = connect(&serve(routes).await, timeouts()).await;
    let outcome = ledger.submit(&envelope(&ledger)).await;
    assert_eq!(
        outcome,
        SubmitOutcome::Failed {
            inclusion: Inclusion {
                ledger: 91,
                fee_charged: 100
            },
            tx_code: "tx_failed".into(),
            op_codes: vec!["op_no_destination".into()],
        }
    );
    assert_eq!(lookups.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn tx_failed_not_found_yet_is_unknown_not_failed() {
    let routes = Router::new()
        .route(
            "/transactions",
            post(|| async { reply(400, tx_failed_problem("tx_failed", &["op_underfunded"])) }),
        )
        .route(
            "/transactions/{hash}",
            get(|| async { reply(404, problem(404, "not_found", None)) }),
        );
    let ledger = connect(&serve(routes).await, timeouts()).await;
    let outcome = ledger.submit(&envelope(&ledger)).await;
    assert!(
        matches!(outcome, SubmitOutcome::Unknown { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn tx_failed_with_lookup_error_is_unknown() {
    let routes = Router::new()
        .route(
            "/transactions",
            post(|| async { reply(400, tx_failed_problem("tx_failed", &["op_no_trust"])) }),
        )
        .route(
            "/transactions/{hash}",
            get(|| async { reply(503, problem(503, "service_unavailable", None)) }),
        );
    let ledger = connect(&serve(routes).await, timeouts()).await;
    let outcome = ledger.submit(&envelope(&ledger)).await;
    assert!(
        matches!(outcome, SubmitOutcome::Unknown { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn rejections_before_inclusion() {
    for code in [
        "tx_bad_seq",
        "tx_insufficient_fee",
        "tx_too_late",
        "tx_bad_auth",
    ] {
        let outcome = submit_answered_with(400, tx_failed_problem(code, &[])).await;
        assert_eq!(outcome, SubmitOutcome::Rejected { code: code.into() });
    }
}

#[tokio::test]
async fn gateway_timeout_504_is_unknown() {
    let outcome = submit_answered_with(504, problem(504, "timeout", None)).await;
    assert!(
        matches!(outcome, SubmitOutcome::Unknown { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn try_again_later_503_is_unknown() {
    let outcome = submit_answered_with(503, problem(503, "service_unavailable", None)).await;
    assert!(
        matches!(outcome, SubmitOutcome::Unknown { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn other_uncertain_answers_are_unknown() {
    for status in [500, 502, 429] {
        let outcome = submit_answered_with(status, problem(status, "whatever", None)).await;
        assert!(
            matches!(outcome, SubmitOutcome::Unknown { .. }),
            "{status}: {outcome:?}"
        );
    }
    // 200 with a body that is not a transaction resource.
    let outcome = submit_answered_with(200, json!({"hello": "world"})).await;
    assert!(
        matches!(outcome, SubmitOutcome::Unknown { .. }),
        "{outcome:?}"
    );
    // 400 that is not a problem document.
    let routes = Router::new().route(
        "/transactions",
        post(|| async { (StatusCode::BAD_REQUEST, "<html>oops</html>") }),
    );
    let ledger = connect(&serve(routes).await, timeouts()).await;
    let outcome = ledger.submit(&envelope(&ledger)).await;
    assert!(
        matches!(outcome, SubmitOutcome::Unknown { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn long_error_bodies_are_not_echoed() {
    let long = "x".repeat(50_000);
    let routes = Router::new().route(
        "/transactions",
        post(move || async move { (StatusCode::BAD_GATEWAY, long) }),
    );
    let ledger = connect(&serve(routes).await, timeouts()).await;
    let SubmitOutcome::Unknown { detail } = ledger.submit(&envelope(&ledger)).await else {
        panic!("expected unknown");
    };
    assert!(detail.len() < 400, "detail is {} bytes", detail.len());
}

#[tokio::test]
async fn connection_refused_is_unknown() {
    let ledger = connect(&serve(Router::new()).await, timeouts()).await;
    let env = envelope(&ledger);
    // A port that was free a moment ago and has nobody listening now.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = payoutd_stellar::HorizonClient::new(&dead_url, timeouts()).unwrap();
    let outcome = client.submit(&env.xdr, &env.hash).await;
    let SubmitOutcome::Unknown { detail } = &outcome else {
        panic!("expected unknown, got {outcome:?}")
    };
    assert!(detail.contains("cannot reach Horizon"), "{detail}");
    assert!(client.transaction(&env.hash).await.is_err());
    // And the service does not start against it.
    let err = StellarLedger::connect(&dead_url, TESTNET, keyring(), timeouts())
        .await
        .unwrap_err();
    assert!(matches!(err, StartupError::Horizon { .. }), "{err:?}");
}

#[tokio::test]
async fn client_timeout_is_unknown() {
    let routes = Router::new()
        .route(
            "/transactions",
            post(|| async {
                tokio::time::sleep(Duration::from_millis(SLOW_HANDLER_DELAY_MS)).await;
                reply(500, json!({}))
            }),
        )
        .route(
            "/transactions/{hash}",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(SLOW_HANDLER_DELAY_MS)).await;
                reply(404, json!({}))
            }),
        );
    let fast = HorizonTimeouts {
        request_timeout_ms: TEST_REQUEST_TIMEOUT_MS,
        connect_timeout_ms: 1_000,
    };
    let ledger = connect(&serve(routes).await, fast).await;
    let env = envelope(&ledger);
    let started = std::time::Instant::now();
    let outcome = ledger.submit(&env).await;
    let SubmitOutcome::Unknown { detail } = &outcome else {
        panic!("expected unknown, got {outcome:?}")
    };
    assert!(detail.contains("timeout"), "{detail}");
    assert!(
        started.elapsed() < Duration::from_millis(SLOW_HANDLER_DELAY_MS),
        "the timeout did not fire"
    );
    assert!(matches!(
        ledger.lookup(&env.hash).await,
        Err(LedgerError::Unavailable(_))
    ));
}

#[tokio::test]
async fn passphrase_mismatch_is_refused_at_connect() {
    let url = serve_with(PUBLIC, Router::new()).await;
    let err = StellarLedger::connect(&url, TESTNET, keyring(), timeouts())
        .await
        .unwrap_err();
    let StartupError::PassphraseMismatch {
        configured,
        horizon,
        ..
    } = &err
    else {
        panic!("expected a passphrase mismatch, got {err:?}");
    };
    assert_eq!((configured.as_str(), horizon.as_str()), (TESTNET, PUBLIC));
    let text = err.to_string();
    assert!(text.contains(TESTNET) && text.contains(PUBLIC), "{text}");
    assert!(!text.contains(SEED));
}

#[tokio::test]
async fn latest_ledger_comes_from_root() {
    let ledger = connect(&serve(Router::new()).await, timeouts()).await;
    let head = ledger.latest_ledger().await.unwrap();
    assert_eq!(head.sequence, 1234);
    assert_eq!(head.close_time, 1_714_564_805);
}

#[tokio::test]
async fn account_sequence_string_and_404() {
    let routes = Router::new().route(
        "/accounts/{id}",
        get(|Path(id): Path<String>| async move {
            if id == ACCOUNT {
                reply(200, json!({"id": id, "account_id": id, "sequence": "103420918407103888", "balances": []}))
            } else {
                reply(404, problem(404, "not_found", None))
            }
        }),
    );
    let ledger = connect(&serve(routes).await, timeouts()).await;
    let known = AccountId::parse(ACCOUNT).unwrap();
    assert_eq!(
        ledger.account_sequence(&known).await.unwrap(),
        SequenceRead {
            sequence: Some(103_420_918_407_103_888),
            as_of_ledger: Some(1234)
        }
    );
    let unknown = AccountId::parse(DEST).unwrap();
    assert_eq!(
        ledger.account_sequence(&unknown).await.unwrap().sequence,
        None
    );
}

#[tokio::test]
async fn a_not_found_without_latest_ledger_covers_nothing() {
    let routes = Router::new().route(
        "/transactions/{hash}",
        get(|| async {
            (StatusCode::NOT_FOUND, Json(problem(404, "not_found", None))).into_response()
        }),
    );
    let ledger = connect(&serve(routes).await, timeouts()).await;
    let absent = payoutd_actors::ports::TxHash([0; 32]);
    assert_eq!(
        ledger.lookup(&absent).await.unwrap(),
        Lookup::NotFound(None)
    );
}

/// A node whose `GET /` answers follow `roots` (one per call, the last one repeated) and
/// whose lookups are all 404 at `Latest-Ledger` 1234; every `GET /` is counted.
async fn pruning_node(roots: Vec<(u16, u32, u32)>) -> (StellarLedger, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = Router::new()
        .route(
            "/",
            get(move || {
                let call = counted.fetch_add(1, Ordering::SeqCst);
                let (status, latest, elder) = roots[call.min(roots.len() - 1)];
                async move {
                    let mut body = root_body(TESTNET);
                    body["history_latest_ledger"] = json!(latest);
                    body["history_elder_ledger"] = json!(elder);
                    if status == 200 {
                        Json(body).into_response()
                    } else {
                        reply(status, problem(status, "server_error", None))
                    }
                }
            }),
        )
        .route(
            "/transactions/{hash}",
            get(|| async { reply(404, problem(404, "not_found", None)) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (connect(&format!("http://{addr}"), timeouts()).await, calls)
}

/// The regression of tests/cluster/pruning_edge.rs: the history was pruned between the
/// `GET /` read at start (elder 2) and the lookup; the miss is covered from the elder read
/// after it (900), not from the earlier one, so it says nothing about ledgers 2..900.
#[tokio::test]
async fn a_not_found_is_covered_from_an_elder_read_after_it() {
    let (ledger, calls) = pruning_node(vec![(200, 1234, 2), (200, 1234, 900)]).await;
    let absent = payoutd_actors::ports::TxHash([0; 32]);
    assert_eq!(
        ledger.lookup(&absent).await.unwrap(),
        Lookup::NotFound(Some(Coverage {
            oldest: 900,
            latest: 1234
        }))
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one GET / at start, one after the miss"
    );
}

/// Behind a load balancer the read after the miss may reach a node that keeps more history
/// (a lower elder) than one seen before: the highest elder seen stays the floor.
#[tokio::test]
async fn a_not_found_is_never_covered_below_the_highest_elder_seen() {
    let (ledger, _) = pruning_node(vec![(200, 1234, 700), (200, 1234, 3)]).await;
    let absent = payoutd_actors::ports::TxHash([0; 32]);
    assert_eq!(
        ledger.lookup(&absent).await.unwrap(),
        Lookup::NotFound(Some(Coverage {
            oldest: 700,
            latest: 1234
        }))
    );
}

/// No elder read after the miss (an error), or one from a node behind the node that
/// answered the lookup (its elder is another node's): the miss covers nothing.
#[tokio::test]
async fn a_not_found_without_a_bounding_elder_covers_nothing() {
    let absent = payoutd_actors::ports::TxHash([0; 32]);
    let (ledger, _) = pruning_node(vec![(200, 1234, 2), (503, 1234, 2)]).await;
    assert_eq!(
        ledger.lookup(&absent).await.unwrap(),
        Lookup::NotFound(None)
    );
    let (ledger, _) = pruning_node(vec![(200, 1234, 2), (200, 1200, 2)]).await;
    assert_eq!(
        ledger.lookup(&absent).await.unwrap(),
        Lookup::NotFound(None)
    );
    let (ledger, _) = pruning_node(vec![(200, 1234, 2), (200, 1234, 0)]).await;
    assert_eq!(
        ledger.lookup(&absent).await.unwrap(),
        Lookup::NotFound(None)
    );
}

#[tokio::test]
async fn account_errors_are_unavailable_not_absent() {
    let routes = Router::new().route(
        "/accounts/{id}",
        get(|| async { reply(500, problem(500, "server_error", None)) }),
    );
    let ledger = connect(&serve(routes).await, timeouts()).await;
    let account = AccountId::parse(ACCOUNT).unwrap();
    assert!(matches!(
        ledger.account_sequence(&account).await,
        Err(LedgerError::Unavailable(_))
    ));
}

#[tokio::test]
async fn lookup_applied_failed_and_not_found() {
    let routes = Router::new().route(
        "/transactions/{hash}",
        get(|Path(hash): Path<String>| async move {
            match &hash[..2] {
                "00" => reply(404, problem(404, "not_found", None)),
                _ => reply(200, transaction_body(&hash, 5, true, json!("100"), "AAAA")),
            }
        }),
    );
    let ledger = connect(&serve(routes).await, timeouts()).await;
    let env = envelope(&ledger);
    assert_eq!(
        ledger.lookup(&env.hash).await.unwrap(),
        Lookup::Applied(Inclusion {
            ledger: 5,
            fee_charged: 100
        })
    );
    let absent = payoutd_actors::ports::TxHash([0; 32]);
    // Covered: from the elder the `GET /` after the miss reported (2) to the answer's
    // Latest-Ledger (1234).
    assert_eq!(
        ledger.lookup(&absent).await.unwrap(),
        Lookup::NotFound(Some(Coverage {
            oldest: 2,
            latest: 1234
        }))
    );

    let routes = Router::new().route(
        "/transactions/{hash}",
        get(|Path(hash): Path<String>| async move {
            let xdr = failed_result_xdr(PaymentResult::LineFull);
            reply(200, transaction_body(&hash, 6, false, json!("200"), &xdr))
        }),
    );
    let ledger = connect(&serve(routes).await, timeouts()).await;
    assert_eq!(
        ledger.lookup(&env.hash).await.unwrap(),
        Lookup::Failed {
            inclusion: Inclusion {
                ledger: 6,
                fee_charged: 200
            },
            tx_code: "tx_failed".into(),
            op_codes: vec!["op_line_full".into()],
        }
    );
}
