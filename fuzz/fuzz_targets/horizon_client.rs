//! Fuzz target: the Horizon client's reading of answers, over its public path — a real
//! `HorizonClient` against a local stub (axum on 127.0.0.1:0) that answers with the status
//! and body the input describes. Checked on every input: the client never panics, posts
//! exactly the envelope it was given, and never calls anything applied or failed unless the
//! ledger's resource says so for this very hash; a status other than 200 and 400 is always
//! `Unknown` (docs/result-codes.md). For bodies built from a structure, whose meaning is known, the
//! classification must also be exactly right.
#![no_main]

use std::sync::{Mutex, OnceLock};

use arbitrary::Arbitrary;
use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use libfuzzer_sys::fuzz_target;
use payoutd_actors::domain::AccountId;
use payoutd_actors::ports::{Inclusion, Lookup, SubmitOutcome, TxHash};
use payoutd_stellar::horizon::{HorizonClient, HorizonTimeouts, parse_rfc3339, result_codes};
use serde_json::{Value, json};
use stellar_xdr::{Limits, ReadXdr, TransactionResult, WriteXdr};

const HASH: &str = "40a1855a9afaa19fbef064c833132096ba0cd5283138c0013f6151dd0b21aee9";
const ACCOUNT: &str = "GDF5O4OWEMVBY5FLDHWA5RZTYSV2U276XGKZZ6VSHDDR3THSQ6OQS7UM";
const ENVELOPE: &str = "AAAAAgAAAADL13HWIyocdKsZ7A7HM8Srqmv+uZWc+rI4xx3M8oedCQAAAMgAAAAAAAAAAQAAAAEAAAAAAAAwOQAAAAAAAN3VAAAAAgAAAAAAAABkAAAAAQAAAAAAAAABAAAAANKYxYFXEWWR6TIJ6Vx6W/8SGy4dP2GLaND8yO/l5eRwAAAAAAAAAAJUC+QAAAAAAAAAAAHyh50JAAAAQCXOQnmno3he687bKRtDc6+BXRUf8t+RnTuHy+sKf35UjfFiQbIge+txehmg0N61JsFWfwbL0JtgOjzyeZw5JAs=";
/// Nesting and size bounds the client decodes `result_xdr` with.
const XDR_LIMITS: Limits = Limits {
    depth: 200,
    len: 1024 * 1024,
};

#[derive(Arbitrary, Debug, Clone)]
enum Status {
    Ok,
    BadRequest,
    NotFound,
    GatewayTimeout,
    Unavailable,
    TooMany,
    Other(u16),
}

impl Status {
    fn code(&self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::BadRequest => 400,
            Self::NotFound => 404,
            Self::GatewayTimeout => 504,
            Self::Unavailable => 503,
            Self::TooMany => 429,
            // Final statuses only: 1xx are not answers.
            Self::Other(n) => 200 + n % 400,
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
enum Number {
    Int(i64),
    Text(String),
    DigitsText(u64),
    Float(f64),
    Null,
}

impl Number {
    fn json(&self) -> Value {
        match self {
            Self::Int(n) => json!(n),
            Self::Text(t) => json!(t),
            Self::DigitsText(n) => json!(n.to_string()),
            Self::Float(f) => json!(f),
            Self::Null => Value::Null,
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
enum ResultXdr {
    Absent,
    Null,
    Generated(TransactionResult),
    Bytes(Vec<u8>),
    Text(String),
}

#[derive(Arbitrary, Debug, Clone)]
enum Body {
    Raw(Vec<u8>),
    /// Horizon's transaction resource.
    Resource {
        right_hash: bool,
        uppercase: bool,
        ledger: Number,
        successful: Option<bool>,
        fee_charged: Number,
        result_xdr: ResultXdr,
        extra: Option<(String, String)>,
    },
    /// Horizon's problem document for a 400.
    Problem {
        slug: Option<String>,
        transaction: Option<TxCode>,
        operations: Option<Vec<String>>,
        inner_operations: Option<Vec<String>>,
        with_extras: bool,
    },
    Account {
        sequence: Number,
    },
    Root {
        passphrase: String,
        ledger: Number,
        closed_at: String,
    },
}

#[derive(Arbitrary, Debug, Clone)]
struct Reply {
    status: Status,
    body: Body,
}

#[derive(Arbitrary, Debug, Clone)]
struct Input {
    submit: Reply,
    lookup: Reply,
    account: Reply,
    root: Reply,
}

/// Transaction codes Horizon reports, and anything else.
#[derive(Arbitrary, Debug, Clone)]
enum TxCode {
    Failed,
    FeeBumpInnerFailed,
    BadSeq,
    InsufficientFee,
    TooLate,
    BadAuth,
    Other(String),
}

impl TxCode {
    fn name(&self) -> &str {
        match self {
            Self::Failed => "tx_failed",
            Self::FeeBumpInnerFailed => "tx_fee_bump_inner_failed",
            Self::BadSeq => "tx_bad_seq",
            Self::InsufficientFee => "tx_insufficient_fee",
            Self::TooLate => "tx_too_late",
            Self::BadAuth => "tx_bad_auth",
            Self::Other(s) => s,
        }
    }
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Raw(b) => b.clone(),
            Self::Resource {
                right_hash,
                uppercase,
                ledger,
                successful,
                fee_charged,
                result_xdr,
                extra,
            } => {
                let mut hash = if *right_hash {
                    HASH.to_owned()
                } else {
                    "ab".repeat(32)
                };
                if *uppercase {
                    hash = hash.to_uppercase();
                }
                let mut o = json!({
                    "hash": hash, "ledger": ledger.json(), "fee_charged": fee_charged.json(),
                    "id": hash, "paging_token": "1", "created_at": "2024-05-01T12:00:05Z",
                });
                if let Some(s) = successful {
                    o["successful"] = json!(s);
                }
                match result_xdr {
                    ResultXdr::Absent => {}
                    ResultXdr::Null => o["result_xdr"] = Value::Null,
                    ResultXdr::Generated(r) => {
                        o["result_xdr"] = json!(r.to_xdr_base64(Limits::none()).unwrap_or_default())
                    }
                    ResultXdr::Bytes(b) => o["result_xdr"] = json!(BASE64.encode(b)),
                    ResultXdr::Text(t) => o["result_xdr"] = json!(t),
                }
                if let Some((k, v)) = extra {
                    o[format!("x_{k}")] = json!(v);
                }
                serde_json::to_vec(&o).expect("serialises")
            }
            Self::Problem {
                slug,
                transaction,
                operations,
                inner_operations,
                with_extras,
            } => {
                let slug = slug.clone().unwrap_or_else(|| "transaction_failed".into());
                let mut o = json!({
                    "type": format!("https://stellar.org/horizon-errors/{slug}"),
                    "title": "Transaction Failed", "status": 400,
                });
                if *with_extras {
                    let mut codes = json!({});
                    if let Some(t) = transaction {
                        codes["transaction"] = json!(t.name());
                    }
                    if let Some(ops) = operations {
                        codes["operations"] = json!(ops);
                    }
                    if let Some(ops) = inner_operations {
                        codes["inner_transaction"] =
                            json!({"transaction": "tx_failed", "operations": ops});
                    }
                    o["extras"] = json!({"envelope_xdr": ENVELOPE, "result_codes": codes});
                }
                serde_json::to_vec(&o).expect("serialises")
            }
            Self::Account { sequence } => {
                serde_json::to_vec(&json!({"id": ACCOUNT, "sequence": sequence.json()}))
                    .expect("serialises")
            }
            Self::Root {
                passphrase,
                ledger,
                closed_at,
            } => serde_json::to_vec(&json!({
                "network_passphrase": passphrase,
                "history_latest_ledger": ledger.json(),
                "history_latest_ledger_closed_at": closed_at,
                "horizon_version": "stub",
            }))
            .expect("serialises"),
        }
    }

    /// Built from a structure (no duplicate keys, no oddities): the reading must be exact.
    fn structured(&self) -> bool {
        !matches!(self, Self::Raw(_))
    }
}

/// What the stub answers now, and what it was asked.
#[derive(Default)]
struct Stub {
    replies: Option<Input>,
    posted: Vec<String>,
}

fn stub() -> &'static Mutex<Stub> {
    static STUB: OnceLock<Mutex<Stub>> = OnceLock::new();
    STUB.get_or_init(Mutex::default)
}

fn answer(reply: &Reply) -> Response {
    let status = StatusCode::from_u16(reply.status.code()).expect("200..600 is valid");
    (status, reply.body.bytes()).into_response()
}

async fn handle(request: Request) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_else(|_| Bytes::new());
    let mut stub = stub().lock().unwrap_or_else(|p| p.into_inner());
    if method == Method::POST && path == "/transactions" {
        stub.posted
            .push(String::from_utf8_lossy(&body).into_owned());
    }
    let Some(replies) = stub.replies.clone() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match (method, path.as_str()) {
        (Method::POST, "/transactions") => answer(&replies.submit),
        (Method::GET, p) if p == format!("/transactions/{HASH}") => answer(&replies.lookup),
        (Method::GET, p) if p == format!("/accounts/{ACCOUNT}") => answer(&replies.account),
        (Method::GET, "/") => answer(&replies.root),
        _ => StatusCode::IM_A_TEAPOT.into_response(),
    }
}

struct World {
    runtime: tokio::runtime::Runtime,
    client: HorizonClient,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let address = listener.local_addr().expect("address");
        runtime.spawn(async move {
            let app = Router::new().fallback(handle);
            axum::serve(listener, app).await.expect("serve");
        });
        let timeouts = HorizonTimeouts {
            request_timeout_ms: 5_000,
            connect_timeout_ms: 1_000,
        };
        let client = HorizonClient::new(&format!("http://{address}"), timeouts).expect("client");
        World { runtime, client }
    })
}

/// An independent reading of a transaction resource: `None` when unreadable.
fn resource(status: u16, body: &[u8]) -> Option<(bool, Lookup)> {
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    let o = v.as_object()?;
    let hash = o.get("hash")?.as_str()?;
    let ledger = u32::try_from(o.get("ledger")?.as_u64()?).ok()?;
    let successful = o.get("successful")?.as_bool()?;
    let fee_charged = match o.get("fee_charged")? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()?
        }
        _ => return None,
    };
    let result_xdr = match o.get("result_xdr") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return None,
    };
    let inclusion = Inclusion {
        ledger,
        fee_charged,
    };
    let lookup = if successful {
        Lookup::Applied(inclusion)
    } else {
        let (tx_code, op_codes) = result_xdr
            .and_then(|x| TransactionResult::from_xdr_base64(&x, XDR_LIMITS).ok())
            .map(|r| result_codes(&r.result))
            .unwrap_or_else(|| ("unknown".into(), Vec::new()));
        Lookup::Failed {
            inclusion,
            tx_code,
            op_codes,
        }
    };
    Some((hash.eq_ignore_ascii_case(HASH), lookup))
}

/// `result_codes` as Horizon's problem gives them: `Some((tx, ops))`, or `None` if absent;
/// `Err` when the document does not read.
type Codes = Option<(String, Vec<String>)>;

/// One `result_codes` object: the transaction's code, its operations' codes, and the inner
/// transaction's operations' codes (fee bumps).
struct ResultCodes {
    transaction: String,
    operations: Vec<String>,
    inner_operations: Option<Vec<String>>,
}

fn problem_codes(v: &Value) -> Result<Codes, ()> {
    fn codes(v: &Value) -> Result<ResultCodes, ()> {
        let o = v.as_object().ok_or(())?;
        let transaction = o
            .get("transaction")
            .and_then(Value::as_str)
            .ok_or(())?
            .to_owned();
        let operations = match o.get("operations") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|s| s.as_str().map(str::to_owned).ok_or(()))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(()),
        };
        let inner_operations = match o.get("inner_transaction") {
            None | Some(Value::Null) => None,
            Some(i) => Some(codes(i)?.operations),
        };
        Ok(ResultCodes {
            transaction,
            operations,
            inner_operations,
        })
    }
    let o = v.as_object().ok_or(())?;
    o.get("type").and_then(Value::as_str).ok_or(())?;
    let extras = match o.get("extras") {
        None | Some(Value::Null) => return Ok(None),
        Some(e) => e.as_object().ok_or(())?,
    };
    let result_codes = match extras.get("result_codes") {
        None | Some(Value::Null) => return Ok(None),
        Some(c) => c,
    };
    let codes = codes(result_codes)?;
    let ops = match codes.inner_operations {
        Some(inner) if codes.operations.is_empty() => inner,
        _ => codes.operations,
    };
    Ok(Some((codes.transaction, ops)))
}

/// What the submission must give for a structured input (the client's rules, restated).
fn expected_submit(input: &Input) -> Option<SubmitOutcome> {
    let submit = &input.submit;
    let status = submit.status.code();
    let body = submit.body.bytes();
    let unknown = SubmitOutcome::Unknown {
        detail: String::new(),
    };
    Some(match status {
        200 => match resource(200, &body) {
            Some((true, Lookup::Applied(i))) => SubmitOutcome::Applied(i),
            Some((
                true,
                Lookup::Failed {
                    inclusion,
                    tx_code,
                    op_codes,
                },
            )) => SubmitOutcome::Failed {
                inclusion,
                tx_code,
                op_codes,
            },
            _ => unknown,
        },
        400 => {
            let v: Value = serde_json::from_slice(&body).ok()?;
            let Ok(codes) = problem_codes(&v) else {
                return Some(unknown);
            };
            let kind = v["type"].as_str().unwrap_or_default();
            let slug = kind.rsplit('/').next().unwrap_or_default();
            if slug != "transaction_failed" {
                return Some(SubmitOutcome::Rejected {
                    code: slug.to_owned(),
                });
            }
            let Some((tx_code, op_codes)) = codes else {
                return Some(unknown);
            };
            if tx_code != "tx_failed" && tx_code != "tx_fee_bump_inner_failed" {
                return Some(SubmitOutcome::Rejected { code: tx_code });
            }
            let lookup = &input.lookup;
            match resource(lookup.status.code(), &lookup.body.bytes()) {
                Some((true, Lookup::Failed { inclusion, .. })) => SubmitOutcome::Failed {
                    inclusion,
                    tx_code,
                    op_codes,
                },
                Some((true, Lookup::Applied(i))) => SubmitOutcome::Applied(i),
                _ => unknown,
            }
        }
        _ => unknown,
    })
}

/// The value of `name` in an `application/x-www-form-urlencoded` body.
fn form_field(body: &str, name: &str) -> Option<String> {
    let value = body
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?;
    let mut out = Vec::new();
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

fn same_kind(a: &SubmitOutcome, b: &SubmitOutcome) -> bool {
    match (a, b) {
        (SubmitOutcome::Unknown { .. }, SubmitOutcome::Unknown { .. }) => true,
        _ => a == b,
    }
}

fuzz_target!(|input: Input| {
    let world = world();
    {
        let mut stub = stub().lock().unwrap_or_else(|p| p.into_inner());
        stub.replies = Some(input.clone());
        stub.posted.clear();
    }
    let hash = TxHash::from_hex(HASH).expect("hex");
    let account = AccountId::parse(ACCOUNT).expect("valid");
    let client = &world.client;
    let (outcome, lookup, sequence, head) = world.runtime.block_on(async {
        (
            client.submit(ENVELOPE, &hash).await,
            client.transaction(&hash).await,
            client.account_sequence(&account).await,
            client.latest_ledger().await,
        )
    });
    let posted = std::mem::take(&mut stub().lock().unwrap_or_else(|p| p.into_inner()).posted);

    // Exactly the envelope, once, as the form field `tx`.
    let sent: Vec<Option<String>> = posted.iter().map(|body| form_field(body, "tx")).collect();
    assert_eq!(sent, vec![Some(ENVELOPE.to_owned())]);

    // Submission: the negative rules hold whatever the bodies are.
    let submit_status = input.submit.status.code();
    let submit_resource = resource(submit_status, &input.submit.body.bytes());
    let lookup_resource = resource(input.lookup.status.code(), &input.lookup.body.bytes());
    match &outcome {
        SubmitOutcome::Applied(i) => {
            let said = |r: &Option<(bool, Lookup)>| matches!(r, Some((true, Lookup::Applied(j))) if j == i);
            assert!(
                (submit_status == 200 && said(&submit_resource))
                    || (submit_status == 400 && said(&lookup_resource)),
                "applied without the ledger saying so: {input:?}"
            );
        }
        SubmitOutcome::Failed { inclusion, .. } => {
            let said = |r: &Option<(bool, Lookup)>| matches!(r, Some((true, Lookup::Failed { inclusion: j, .. })) if j == inclusion);
            assert!(
                (submit_status == 200 && said(&submit_resource))
                    || (submit_status == 400 && said(&lookup_resource)),
                "failed without the ledger saying so: {input:?}"
            );
        }
        SubmitOutcome::Rejected { .. } => assert_eq!(submit_status, 400),
        SubmitOutcome::Unknown { .. } => {}
    }
    if submit_status != 200 && submit_status != 400 {
        assert!(
            matches!(outcome, SubmitOutcome::Unknown { .. }),
            "{submit_status}: {outcome:?}"
        );
    }
    if input.submit.body.structured()
        && (submit_status != 400 || input.lookup.body.structured())
        && let Some(expected) = expected_submit(&input)
    {
        assert!(
            same_kind(&outcome, &expected),
            "got {outcome:?}, expected {expected:?}"
        );
    }

    // Lookup by hash.
    match (input.lookup.status.code(), &lookup) {
        (404, l) => assert_eq!(l.as_ref().ok(), Some(&Lookup::NotFound)),
        (200, Ok(l)) => {
            let Some((true, expected)) = &lookup_resource else {
                panic!("a lookup read {l:?} from an unreadable or foreign resource");
            };
            assert_eq!(l, expected);
        }
        (200, Err(_)) => {
            if input.lookup.body.structured() {
                assert!(!matches!(lookup_resource, Some((true, _))), "{input:?}");
            }
        }
        (_, l) => assert!(l.is_err(), "{l:?}"),
    }

    // Account sequence: "123" or 123; 404 is "no such account"; anything else an error.
    let account_status = input.account.status.code();
    match (&input.account.body, account_status, &sequence) {
        (_, 404, s) => assert_eq!(s, &Ok(None)),
        (_, 200, Ok(None)) | (_, 300.., Ok(_)) | (_, 201..=299, Ok(_)) => {
            panic!("{account_status}: {sequence:?}")
        }
        (Body::Account { sequence: n }, 200, s) => {
            let expected = match n {
                Number::Int(i) => Some(*i),
                Number::DigitsText(d) => i64::try_from(*d).ok(),
                Number::Text(t) => {
                    let digits = t.strip_prefix('-').unwrap_or(t);
                    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| t.parse().ok())
                        .flatten()
                }
                Number::Float(_) | Number::Null => None,
            };
            assert_eq!(s.as_ref().ok().copied().flatten(), expected, "{n:?}");
        }
        _ => {}
    }

    // The ledger head: only a 200 with a valid RFC 3339 close time; never a later time than
    // the text says (expiry must not come early).
    match (&input.root.body, input.root.status.code(), &head) {
        (_, status, Ok(_)) if status != 200 => panic!("{status}: {head:?}"),
        (
            Body::Root {
                ledger, closed_at, ..
            },
            200,
            h,
        ) => {
            // Only a JSON integer reads as a u32 (serde_json writes every f64 as a float).
            let sequence = match ledger {
                Number::Int(i) => u32::try_from(*i).ok(),
                _ => None,
            };
            let close = parse_rfc3339(closed_at);
            match (sequence, close, h) {
                (Some(seq), Some(t), Ok(h)) => {
                    assert_eq!(h.sequence, seq);
                    assert_eq!(h.close_time, u64::try_from(t).unwrap_or(0));
                }
                (Some(_), Some(_), Err(e)) => panic!("a valid root did not read: {e}"),
                (_, _, Ok(h)) => panic!("an invalid root read as {h:?}"),
                _ => {}
            }
        }
        _ => {}
    }
});
