//! Property tests of the Horizon client's reading of answers, through its public path: a
//! real `HorizonClient` against a local stub (axum on 127.0.0.1:0) that answers with
//! generated statuses and bodies. Whatever Horizon (or a proxy in front of it) sends:
//!
//! - the client never panics;
//! - a 5xx, a 429, any status but 200 and 400, a timeout or a dropped connection is
//!   `Unknown` — never a failure, never applied, never a rejection (docs/result-codes.md);
//! - `Applied` and `Failed` only ever come from a transaction resource for this very hash
//!   that says so (read independently here, as plain JSON);
//! - a lookup is `NotFound` only on a 404, and an error on any status but 200 and 404.
//!
//! `PROPTEST_CASES` sets the number of cases (default: `DEFAULT_CASES`, a second or two).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use payoutd_actors::ports::{Inclusion, Lookup, SubmitOutcome, TxHash};
use payoutd_stellar::horizon::{HorizonClient, HorizonTimeouts};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

/// The public golden envelope and its hash.
const ENVELOPE: &str = "AAAAAgAAAADL13HWIyocdKsZ7A7HM8Srqmv+uZWc+rI4xx3M8oedCQAAAMgAAAAAAAAAAQAAAAEAAAAAAAAwOQAAAAAAAN3VAAAAAgAAAAAAAABkAAAAAQAAAAAAAAABAAAAANKYxYFXEWWR6TIJ6Vx6W/8SGy4dP2GLaND8yO/l5eRwAAAAAAAAAAJUC+QAAAAAAAAAAAHyh50JAAAAQCXOQnmno3he687bKRtDc6+BXRUf8t+RnTuHy+sKf35UjfFiQbIge+txehmg0N61JsFWfwbL0JtgOjzyeZw5JAs=";
const HASH: &str = "40a1855a9afaa19fbef064c833132096ba0cd5283138c0013f6151dd0b21aee9";

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 1_024;
/// Cases of the (slow) late-answer property unless `PROPTEST_CASES` says otherwise.
const DEFAULT_LATE_CASES: u32 = 4;
/// Seed of case generation unless `PROPTEST_RNG_SEED` says otherwise.
const DEFAULT_SEED: u64 = 0x0068_6f72_697a_6f6e;
/// The client's whole-request timeout where answers come in time, in milliseconds.
const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// The client's whole-request timeout in the late-answer property, in milliseconds…
const SHORT_TIMEOUT_MS: u64 = 200;
/// …and how late the stub answers there, in milliseconds.
const LATE_BY_MS: u64 = 600;

/// What the stub answers, per endpoint.
#[derive(Debug, Clone)]
struct Canned {
    status: u16,
    body: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
struct Replies {
    submit: Option<Canned>,
    lookup: Option<Canned>,
    /// Answer every request this late, in milliseconds.
    delay_ms: u64,
}

type Shared = Arc<Mutex<Replies>>;

fn respond(canned: Option<Canned>) -> Response {
    match canned {
        Some(c) => {
            let status = StatusCode::from_u16(c.status).expect("a final status");
            (status, c.body).into_response()
        }
        None => StatusCode::IM_A_TEAPOT.into_response(),
    }
}

async fn handle(State(shared): State<Shared>, request: Request) -> Response {
    let replies = shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if replies.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(replies.delay_ms)).await;
    }
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    match (method, path.as_str()) {
        (Method::POST, "/transactions") => respond(replies.submit),
        (Method::GET, p) if p == format!("/transactions/{HASH}") => respond(replies.lookup),
        _ => StatusCode::NOT_IMPLEMENTED.into_response(),
    }
}

/// A stub Horizon and a client for it, on a runtime of their own.
struct World {
    runtime: tokio::runtime::Runtime,
    client: HorizonClient,
    replies: Shared,
}

impl World {
    fn new(request_timeout_ms: u64) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let replies = Shared::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a local port");
        let address = listener.local_addr().expect("its address");
        let app = Router::new().fallback(handle).with_state(replies.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        let timeouts = HorizonTimeouts {
            request_timeout_ms,
            connect_timeout_ms: 1_000,
        };
        let client = HorizonClient::new(&format!("http://{address}"), timeouts).expect("client");
        Self {
            runtime,
            client,
            replies,
        }
    }

    fn answer_with(&self, replies: Replies) {
        *self.replies.lock().unwrap_or_else(|p| p.into_inner()) = replies;
    }

    fn submit(&self) -> SubmitOutcome {
        let hash = TxHash::from_hex(HASH).expect("hex");
        self.runtime.block_on(self.client.submit(ENVELOPE, &hash))
    }

    fn lookup(&self) -> Result<Lookup, payoutd_stellar::HorizonError> {
        let hash = TxHash::from_hex(HASH).expect("hex");
        self.runtime.block_on(self.client.transaction(&hash))
    }
}

/// What a transaction resource says, read independently as plain JSON: whether it is for
/// our hash, and applied or failed with which inclusion. `None` if it is not one.
fn resource(body: &[u8]) -> Option<(bool, bool, Inclusion)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let o = v.as_object()?;
    let ours = o.get("hash")?.as_str()?.eq_ignore_ascii_case(HASH);
    let successful = o.get("successful")?.as_bool()?;
    let ledger = u32::try_from(o.get("ledger")?.as_u64()?).ok()?;
    let fee_charged = match o.get("fee_charged")? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    Some((
        ours,
        successful,
        Inclusion {
            ledger,
            fee_charged,
        },
    ))
}

/// Does this answer say "applied" (or "failed", with `applied == false`) for our hash?
fn says(canned: &Canned, applied: bool, inclusion: &Inclusion) -> bool {
    canned.status == 200
        && resource(&canned.body)
            .is_some_and(|(ours, ok, i)| ours && ok == applied && i == *inclusion)
}

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => Just(200u16),
        3 => Just(400u16),
        1 => Just(404u16),
        1 => Just(429u16),
        3 => 500u16..=599,
        1 => 200u16..=599,
    ]
}

fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n.to_string())),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(|s| json!(s)),
        Just(Value::Null),
    ]
}

/// A transaction resource: mostly for our hash, with fields of the right type or not.
fn resource_body() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            4 => Just(HASH.to_owned()),
            1 => Just(HASH.to_uppercase()),
            1 => "[0-9a-f]{64}",
        ],
        prop_oneof![4 => (0u32..100_000).prop_map(|n| json!(n)), 1 => json_number()],
        prop_oneof![4 => any::<bool>().prop_map(|b| json!(b)), 1 => json_number()],
        prop_oneof![
            2 => (0i64..1_000_000).prop_map(|n| json!(n.to_string())),
            2 => (0i64..1_000_000).prop_map(|n| json!(n)),
            1 => json_number()
        ],
        prop::option::of("[A-Za-z0-9+/=]{0,64}"),
    )
        .prop_map(|(hash, ledger, successful, fee, result_xdr)| {
            let mut o = json!({
                "id": hash, "hash": hash, "ledger": ledger, "successful": successful,
                "fee_charged": fee, "envelope_xdr": ENVELOPE,
            });
            if let Some(x) = result_xdr {
                o["result_xdr"] = json!(x);
            }
            serde_json::to_vec(&o).expect("serialises")
        })
}

/// Horizon's problem document for a 400.
fn problem_body() -> impl Strategy<Value = Vec<u8>> {
    let slug = prop_oneof![
        4 => Just("transaction_failed".to_owned()),
        1 => Just("transaction_malformed".to_owned()),
        1 => "[a-z_]{0,20}",
    ];
    let tx_code = prop_oneof![
        Just("tx_failed".to_owned()),
        Just("tx_fee_bump_inner_failed".to_owned()),
        Just("tx_bad_seq".to_owned()),
        Just("tx_insufficient_fee".to_owned()),
        Just("tx_too_late".to_owned()),
        "[a-z_]{0,16}",
    ];
    let ops = prop::collection::vec(
        prop_oneof![
            Just("op_underfunded".to_owned()),
            Just("op_no_destination".to_owned()),
            "[a-z_]{0,16}"
        ],
        0..3,
    );
    (slug, prop::option::of((tx_code, prop::option::of(ops)))).prop_map(|(slug, codes)| {
        let mut o = json!({
            "type": format!("https://stellar.org/horizon-errors/{slug}"),
            "title": "Transaction Failed", "status": 400,
        });
        if let Some((tx, ops)) = codes {
            let mut result_codes = json!({ "transaction": tx });
            if let Some(ops) = ops {
                result_codes["operations"] = json!(ops);
            }
            o["extras"] = json!({ "envelope_xdr": ENVELOPE, "result_codes": result_codes });
        }
        serde_json::to_vec(&o).expect("serialises")
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => resource_body(),
        3 => problem_body(),
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => "\\PC{0,64}".prop_map(String::into_bytes),
        1 => Just(b"<html><body>502 Bad Gateway</body></html>".to_vec()),
        1 => Just(Vec::new()),
    ]
}

fn canned() -> impl Strategy<Value = Canned> {
    (status(), body()).prop_map(|(status, body)| Canned { status, body })
}

fn config(default_cases: u32) -> ProptestConfig {
    // `default()` reads the PROPTEST_* variables; the case count and seed get our defaults
    // unless they are set.
    let defaults = ProptestConfig::default();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    let rng_seed = if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
        defaults.rng_seed
    } else {
        RngSeed::Fixed(DEFAULT_SEED)
    };
    ProptestConfig {
        cases,
        rng_seed,
        failure_persistence: None,
        ..defaults
    }
}

// ---------------------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    #[test]
    fn submission_answers_are_classified_safely(submit in canned(), lookup in canned()) {
        let world = submit_world();
        world.answer_with(Replies {
            submit: Some(submit.clone()),
            lookup: Some(lookup.clone()),
            delay_ms: 0,
        });
        let outcome = world.submit();
        match &outcome {
            SubmitOutcome::Applied(i) => prop_assert!(
                says(&submit, true, i) || (submit.status == 400 && says(&lookup, true, i)),
                "applied, but no resource for this hash says so: {outcome:?}"
            ),
            SubmitOutcome::Failed { inclusion, .. } => prop_assert!(
                says(&submit, false, inclusion)
                    || (submit.status == 400 && says(&lookup, false, inclusion)),
                "failed, but no resource for this hash says so: {outcome:?}"
            ),
            SubmitOutcome::Rejected { .. } => prop_assert_eq!(submit.status, 400),
            SubmitOutcome::Unknown { .. } | SubmitOutcome::Pending => {}
        }
        if submit.status != 200 && submit.status != 400 {
            prop_assert!(
                matches!(outcome, SubmitOutcome::Unknown { .. }),
                "HTTP {} must be unknown, got {outcome:?}", submit.status
            );
        }
    }

    #[test]
    fn lookups_are_classified_safely(lookup in canned()) {
        let world = lookup_world();
        world.answer_with(Replies { submit: None, lookup: Some(lookup.clone()), delay_ms: 0 });
        let answer = world.lookup();
        match (lookup.status, &answer) {
            (404, a) => prop_assert!(matches!(a, Ok(Lookup::NotFound(_))), "{a:?}"),
            (200, _) => {}
            (status, a) => prop_assert!(a.is_err(), "HTTP {status} read as {a:?}"),
        }
        match &answer {
            Ok(Lookup::Applied(i)) => prop_assert!(says(&lookup, true, i)),
            Ok(Lookup::Failed { inclusion, .. }) => prop_assert!(says(&lookup, false, inclusion)),
            Ok(Lookup::NotFound(_)) => prop_assert_eq!(lookup.status, 404),
            Err(_) => {}
        }
    }
}

/// One world per fast property, kept across its cases (which run one after another; the
/// properties themselves run in parallel, so they do not share one).
fn submit_world() -> &'static World {
    static WORLD: std::sync::OnceLock<World> = std::sync::OnceLock::new();
    WORLD.get_or_init(|| World::new(REQUEST_TIMEOUT_MS))
}

fn lookup_world() -> &'static World {
    static WORLD: std::sync::OnceLock<World> = std::sync::OnceLock::new();
    WORLD.get_or_init(|| World::new(REQUEST_TIMEOUT_MS))
}

proptest! {
    #![proptest_config(config(DEFAULT_LATE_CASES))]

    /// Horizon answers after the client gave up: whatever the late answer would have said
    /// (applied, failed, rejected), the client must say it does not know.
    #[test]
    fn an_answer_after_the_timeout_is_unknown(submit in canned()) {
        let world = World::new(SHORT_TIMEOUT_MS);
        world.answer_with(Replies {
            submit: Some(submit),
            lookup: Some(Canned { status: 404, body: Vec::new() }),
            delay_ms: LATE_BY_MS,
        });
        let outcome = world.submit();
        prop_assert!(matches!(outcome, SubmitOutcome::Unknown { .. }), "{outcome:?}");
    }
}

#[test]
fn a_dropped_connection_is_unknown() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let address = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let address = listener.local_addr().expect("its address");
        // Reads part of the request, then hangs up without a word.
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = [0u8; 64];
                let _ = socket.read(&mut buffer).await;
                drop(socket);
            }
        });
        address
    });
    let timeouts = HorizonTimeouts {
        request_timeout_ms: REQUEST_TIMEOUT_MS,
        connect_timeout_ms: 1_000,
    };
    let client = HorizonClient::new(&format!("http://{address}"), timeouts).expect("client");
    let hash = TxHash::from_hex(HASH).expect("hex");
    let outcome = runtime.block_on(client.submit(ENVELOPE, &hash));
    assert!(
        matches!(outcome, SubmitOutcome::Unknown { .. }),
        "{outcome:?}"
    );
}

#[test]
fn nobody_listening_is_unknown() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    // A port that was free a moment ago and has no listener now.
    let address = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        listener.local_addr().expect("its address")
    });
    let timeouts = HorizonTimeouts {
        request_timeout_ms: REQUEST_TIMEOUT_MS,
        connect_timeout_ms: 1_000,
    };
    let client = HorizonClient::new(&format!("http://{address}"), timeouts).expect("client");
    let hash = TxHash::from_hex(HASH).expect("hex");
    let outcome = runtime.block_on(client.submit(ENVELOPE, &hash));
    assert!(
        matches!(outcome, SubmitOutcome::Unknown { .. }),
        "{outcome:?}"
    );
}

/// Found while writing these properties: serde reads a struct from a JSON array too, so a
/// positional array `[hash, ledger, successful, fee_charged]` passes for a transaction
/// resource and a submission reads it as applied. Horizon never sends one; a proxy or a
/// broken server could. Fixed: the client reads only JSON objects.
#[test]
fn a_positional_array_is_not_a_resource() {
    let world = World::new(REQUEST_TIMEOUT_MS);
    let array = format!(r#"["{HASH}", 7, true, "100"]"#).into_bytes();
    world.answer_with(Replies {
        submit: Some(Canned {
            status: 200,
            body: array.clone(),
        }),
        lookup: Some(Canned {
            status: 200,
            body: array,
        }),
        delay_ms: 0,
    });
    let outcome = world.submit();
    assert!(
        matches!(outcome, SubmitOutcome::Unknown { .. }),
        "{outcome:?}"
    );
    assert!(world.lookup().is_err());
}
