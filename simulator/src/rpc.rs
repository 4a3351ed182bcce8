//! Stellar RPC: JSON-RPC 2.0 over HTTP POST (`/rpc`, and `/`, whose Horizon root is GET
//! only) with named parameters, on the same ledger, nodes and faults as Horizon.
//!
//! Methods: `getHealth`, `getNetwork`, `getLatestLedger`, `getLedgerEntries` (account,
//! trustline and claimable balance keys; other kinds are absent), `sendTransaction` (core's
//! answer, never waiting for inclusion), `getTransaction` and `getTransactions`. Fields are
//! RPC's: camelCase, ledger numbers as JSON numbers, close times as strings of unix seconds
//! except `getTransactions`' `createdAt`, `latestLedgerCloseTimestamp` and
//! `oldestLedgerCloseTimestamp`, which RPC sends as numbers. Only `xdrFormat` `base64` (the
//! default) is served; `json` is an invalid-params error.
//!
//! JSON-RPC answers are HTTP 200: a body that is not JSON is -32700, a request that is not a
//! JSON-RPC 2.0 object (a batch array included) -32600, an unknown method -32601, bad
//! parameters (positional ones included, as RPC refuses them) -32602. A request without an
//! `id` is answered like one with a null id.
//!
//! Faults: every answer waits `latency_ms`. A `sendTransaction` hit by `p_5xx_before_apply`
//! is HTTP 503 or 500 with a plain-text body and no JSON-RPC answer (what the proxy in front
//! of a provider's RPC answers); one accepted and then hit by `p_lose_answer_after_apply` is
//! HTTP 504, plain text (accepted all the same). `reject_next` and `p_try_again_later` come
//! back as the `ERROR` and `TRY_AGAIN_LATER` statuses. Requests that read the ledger (all
//! but `getNetwork`) are served by the node drawn as Horizon's lookups are: the lagging node
//! reports its own `latestLedger` and does not see later transactions or account changes.
//! RPC has no `Latest-Ledger` header; the `latestLedger` fields are what counts.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use stellar_xdr::{
    ExtensionPoint, LedgerEntryChanges, LedgerKey, Limits, OperationMeta, ReadXdr, TransactionMeta,
    TransactionMetaV3, VecM, WriteXdr,
};

use crate::hal::PROTOCOL_VERSION;
use crate::sim::{RpcPageError, RpcRange, RpcStart, Simulator, Submission, SubmitKind};
use crate::state::TxRecord;

/// JSON-RPC 2.0 error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
/// Most keys one `getLedgerEntries` may ask for (RPC's limit).
const MAX_LEDGER_KEYS: usize = 200;
/// `getTransactions` page size when `pagination.limit` is absent or 0, in transactions
/// (RPC's default).
const DEFAULT_TRANSACTIONS_LIMIT: usize = 50;
/// Largest `getTransactions` page, in transactions (RPC's maximum).
const MAX_TRANSACTIONS_LIMIT: usize = 200;
/// Nesting depth allowed while decoding a ledger key.
const MAX_KEY_XDR_DEPTH: u32 = 20;
/// Largest ledger key accepted, in XDR bytes (classic keys are well under 200 bytes).
const MAX_KEY_XDR_BYTES: usize = 1024;

pub fn routes() -> Router<Arc<Simulator>> {
    Router::new().route("/rpc", post(rpc)).route("/", post(rpc))
}

/// What a method answers.
enum Answer {
    Result(Value),
    Error(i64, String),
    /// An HTTP failure with a plain-text body instead of a JSON-RPC answer.
    Http(StatusCode, &'static str),
}

fn invalid_params(message: impl Into<String>) -> Answer {
    Answer::Error(INVALID_PARAMS, message.into())
}

fn json_response(body: &Value) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

fn error_body(id: Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

async fn rpc(State(sim): State<Arc<Simulator>>, headers: HeaderMap, body: Bytes) -> Response {
    sim.inject_latency().await;
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return json_response(&error_body(
                Value::Null,
                PARSE_ERROR,
                &format!("parse error: {e}"),
            ));
        }
    };
    let Value::Object(request) = request else {
        let why = if request.is_array() {
            "batch requests are not supported"
        } else {
            "a request is a JSON object"
        };
        return json_response(&error_body(Value::Null, INVALID_REQUEST, why));
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    if request.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return json_response(&error_body(
            id,
            INVALID_REQUEST,
            "invalid request: \"jsonrpc\" must be \"2.0\"",
        ));
    }
    let Some(method) = request.get("method").and_then(Value::as_str) else {
        return json_response(&error_body(
            id,
            INVALID_REQUEST,
            "invalid request: no method",
        ));
    };
    let params = match request.get("params") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return json_response(&error_body(
                id,
                INVALID_PARAMS,
                "invalid parameters: positional (array) parameters are not allowed",
            ));
        }
    };
    let answer = match method {
        "getHealth" => get_health(&sim, params),
        "getNetwork" => get_network(&sim, &headers, params),
        "getLatestLedger" => get_latest_ledger(&sim, params),
        "getLedgerEntries" => get_ledger_entries(&sim, params),
        "sendTransaction" => send_transaction(&sim, params),
        "getTransaction" => get_transaction(&sim, params),
        "getTransactions" => get_transactions(&sim, params),
        "getLedgers" => get_ledgers(&sim, params),
        _ => Answer::Error(METHOD_NOT_FOUND, format!("method not found: {method}")),
    };
    match answer {
        Answer::Result(result) => {
            json_response(&json!({ "jsonrpc": "2.0", "id": id, "result": result }))
        }
        Answer::Error(code, message) => json_response(&error_body(id, code, &message)),
        Answer::Http(status, text) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            text,
        )
            .into_response(),
    }
}

/// The named parameters of a method, or the invalid-params answer.
fn params<T: DeserializeOwned>(params: Value) -> Result<T, Answer> {
    serde_json::from_value(params).map_err(|e| invalid_params(format!("invalid parameters: {e}")))
}

/// `xdrFormat`: only base64 (the default) is served.
fn check_format(format: Option<&str>) -> Result<(), Answer> {
    match format {
        None | Some("" | "base64") => Ok(()),
        Some("json") => Err(invalid_params(
            "xdrFormat \"json\" is not supported by the simulator; use \"base64\"",
        )),
        Some(_) => Err(invalid_params(
            "expected 'base64' or 'json' for 'xdrFormat'",
        )),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NoParams {}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LedgerEntriesParams {
    keys: Vec<String>,
    xdr_format: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendParams {
    transaction: String,
    xdr_format: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransactionParams {
    hash: String,
    xdr_format: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransactionsParams {
    #[serde(default)]
    start_ledger: u32,
    pagination: Option<Pagination>,
    xdr_format: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pagination {
    #[serde(default)]
    cursor: String,
    /// Transactions per page; 0 = the default.
    #[serde(default)]
    limit: usize,
}

macro_rules! try_answer {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(answer) => return answer,
        }
    };
}

fn get_health(sim: &Simulator, p: Value) -> Answer {
    let NoParams {} = try_answer!(params(p));
    let range = sim.rpc_range(None);
    Answer::Result(json!({
        "status": "healthy",
        "latestLedger": range.latest,
        "oldestLedger": range.oldest,
        "ledgerRetentionWindow": range.window,
    }))
}

/// The friendbot of this simulator, at the address the client used (`Host`), if it said.
fn get_network(sim: &Simulator, headers: &HeaderMap, p: Value) -> Answer {
    let NoParams {} = try_answer!(params(p));
    let mut result = Map::new();
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        result.insert(
            "friendbotUrl".into(),
            json!(format!("http://{host}/friendbot")),
        );
    }
    result.insert("passphrase".into(), json!(sim.network_passphrase()));
    result.insert("protocolVersion".into(), json!(PROTOCOL_VERSION));
    Answer::Result(Value::Object(result))
}

/// A stand-in ledger hash: the simulator has no ledger headers to hash, so this is the
/// sha256 of the network id, sequence and close time (stable, distinct per ledger).
fn ledger_hash(sim: &Simulator, sequence: u32, close_time: u64) -> String {
    let mut h = Sha256::new();
    h.update(sim.network_id());
    h.update(sequence.to_be_bytes());
    h.update(close_time.to_be_bytes());
    hex::encode(h.finalize())
}

fn get_latest_ledger(sim: &Simulator, p: Value) -> Answer {
    let NoParams {} = try_answer!(params(p));
    let range = sim.rpc_range(None);
    Answer::Result(json!({
        "id": ledger_hash(sim, range.latest, range.latest_close_time),
        "protocolVersion": PROTOCOL_VERSION,
        "sequence": range.latest,
        "closeTime": range.latest_close_time.to_string(),
    }))
}

fn get_ledger_entries(sim: &Simulator, p: Value) -> Answer {
    let req: LedgerEntriesParams = try_answer!(params(p));
    try_answer!(check_format(req.xdr_format.as_deref()));
    if req.keys.len() > MAX_LEDGER_KEYS {
        return invalid_params(format!(
            "key count ({}) exceeds maximum supported ({MAX_LEDGER_KEYS})",
            req.keys.len()
        ));
    }
    let limits = Limits {
        depth: MAX_KEY_XDR_DEPTH,
        len: MAX_KEY_XDR_BYTES,
    };
    let mut keys = Vec::with_capacity(req.keys.len());
    for (i, k) in req.keys.iter().enumerate() {
        match LedgerKey::from_xdr_base64(k, limits.clone()) {
            Ok(key) => keys.push(key),
            Err(_) => {
                return invalid_params(format!("cannot unmarshal key value {k} at index {i}"));
            }
        }
    }
    let (range, found) = sim.rpc_ledger_entries(&keys);
    let entries: Vec<Value> = req
        .keys
        .iter()
        .zip(found)
        .filter_map(|(key, entry)| {
            let entry = entry?;
            // Writing a well-formed in-memory value without limits cannot fail.
            let xdr = entry.data.to_xdr_base64(Limits::none()).ok()?;
            Some(json!({
                "key": key,
                "xdr": xdr,
                "lastModifiedLedgerSeq": entry.last_modified_ledger,
            }))
        })
        .collect();
    Answer::Result(json!({ "entries": entries, "latestLedger": range.latest }))
}

fn send_transaction(sim: &Simulator, p: Value) -> Answer {
    let req: SendParams = try_answer!(params(p));
    try_answer!(check_format(req.xdr_format.as_deref()));
    let submitted = sim.submit(&req.transaction, SubmitKind::Async);
    let range = sim.rpc_range(Some(submitted.node));
    let status = |status: &str, hash: &str| {
        json!({
            "status": status,
            "hash": hash,
            "latestLedger": range.latest,
            "latestLedgerCloseTime": range.latest_close_time.to_string(),
        })
    };
    match submitted.submission {
        Submission::Malformed(_) => invalid_params("invalid_xdr"),
        Submission::ServerError(503) => {
            Answer::Http(StatusCode::SERVICE_UNAVAILABLE, "503 Service Unavailable\n")
        }
        Submission::ServerError(_) => Answer::Http(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error\n",
        ),
        Submission::Rejected(r) => {
            let mut body = status("ERROR", &r.hash);
            if let Some(o) = body.as_object_mut() {
                o.insert("errorResultXdr".into(), json!(r.result_xdr));
            }
            Answer::Result(body)
        }
        Submission::TryAgainLater { hash } => Answer::Result(status("TRY_AGAIN_LATER", &hash)),
        Submission::Accepted {
            fresh: true,
            lose_answer: true,
            ..
        } => {
            sim.count_lost_answer();
            Answer::Http(StatusCode::GATEWAY_TIMEOUT, "504 Gateway Timeout\n")
        }
        Submission::Accepted {
            hash, fresh: true, ..
        } => Answer::Result(status("PENDING", &hash)),
        Submission::Accepted { hash, .. } => Answer::Result(status("DUPLICATE", &hash)),
    }
}

/// A minimal valid `TransactionMeta` for a transaction of `operations` operations: V3 with
/// one empty operation meta per operation and no ledger entry changes (the simulator does not
/// report changes).
fn result_meta_xdr(operations: u32) -> String {
    let ops: Vec<OperationMeta> = (0..operations)
        .map(|_| OperationMeta {
            changes: LedgerEntryChanges(VecM::default()),
        })
        .collect();
    let meta = TransactionMeta::V3(TransactionMetaV3 {
        ext: ExtensionPoint::V0,
        tx_changes_before: LedgerEntryChanges(VecM::default()),
        // At most 100 operations per transaction.
        operations: ops.try_into().unwrap_or_default(),
        tx_changes_after: LedgerEntryChanges(VecM::default()),
        soroban_meta: None,
    });
    // Writing a well-formed in-memory value without limits cannot fail.
    meta.to_xdr_base64(Limits::none()).unwrap_or_default()
}

/// The fields RPC shows of an included transaction.
fn tx_details(rec: &TxRecord, o: &mut Map<String, Value>) {
    o.insert(
        "status".into(),
        json!(if rec.successful { "SUCCESS" } else { "FAILED" }),
    );
    o.insert("applicationOrder".into(), json!(rec.application_order));
    // Fee-bump envelopes are refused at submission, so none is ever included.
    o.insert("feeBump".into(), json!(false));
    o.insert("envelopeXdr".into(), json!(rec.envelope_xdr));
    o.insert("resultXdr".into(), json!(rec.result_xdr));
    o.insert(
        "resultMetaXdr".into(),
        json!(result_meta_xdr(rec.operation_count)),
    );
    o.insert("ledger".into(), json!(rec.ledger));
}

fn range_fields(range: &RpcRange, o: &mut Map<String, Value>) {
    o.insert("latestLedger".into(), json!(range.latest));
    o.insert(
        "latestLedgerCloseTime".into(),
        json!(range.latest_close_time.to_string()),
    );
    o.insert("oldestLedger".into(), json!(range.oldest));
    o.insert(
        "oldestLedgerCloseTime".into(),
        json!(range.oldest_close_time.to_string()),
    );
}

fn get_transaction(sim: &Simulator, p: Value) -> Answer {
    let req: TransactionParams = try_answer!(params(p));
    try_answer!(check_format(req.xdr_format.as_deref()));
    if req.hash.len() != 64 {
        return invalid_params(format!("unexpected hash length ({})", req.hash.len()));
    }
    let mut hash = [0u8; 32];
    if let Err(e) = hex::decode_to_slice(&req.hash, &mut hash) {
        return invalid_params(format!("incorrect hash: {e}"));
    }
    let (range, record) = sim.rpc_transaction(&hash);
    let mut o = Map::new();
    range_fields(&range, &mut o);
    o.insert("txHash".into(), json!(req.hash));
    match record {
        None => {
            o.insert("status".into(), json!("NOT_FOUND"));
        }
        Some(rec) => {
            tx_details(&rec, &mut o);
            // getTransaction sends createdAt as a string, unlike getTransactions.
            o.insert("createdAt".into(), json!(rec.close_time.to_string()));
        }
    }
    Answer::Result(Value::Object(o))
}

impl TransactionsParams {
    /// The cursor (none when empty) and the limit (0: the default) of the pagination.
    fn page(&self) -> (Option<&str>, usize) {
        let pg = self.pagination.as_ref();
        (
            pg.map(|pg| pg.cursor.as_str()).filter(|c| !c.is_empty()),
            pg.map_or(0, |pg| pg.limit),
        )
    }
}

fn get_transactions(sim: &Simulator, p: Value) -> Answer {
    let req: TransactionsParams = try_answer!(params(p));
    try_answer!(check_format(req.xdr_format.as_deref()));
    let (cursor, limit) = req.page();
    if let Some(c) = cursor
        && req.start_ledger != 0
    {
        return Answer::Error(
            INVALID_REQUEST,
            format!(
                "startLedger ({}) and cursor ({c}) cannot both be set",
                req.start_ledger
            ),
        );
    }
    if limit > MAX_TRANSACTIONS_LIMIT {
        return Answer::Error(
            INVALID_REQUEST,
            format!("limit must not exceed {MAX_TRANSACTIONS_LIMIT}"),
        );
    }
    let start = match cursor {
        None => RpcStart::Ledger(req.start_ledger),
        Some(c) => match c.parse::<u64>() {
            // RPC's cursors are non-negative int64 TOIDs.
            Ok(n) if i64::try_from(n).is_ok() => RpcStart::Cursor(n),
            _ => return invalid_params(format!("invalid cursor {c:?}")),
        },
    };
    let limit = if limit == 0 {
        DEFAULT_TRANSACTIONS_LIMIT
    } else {
        limit
    };
    let (range, txs, cursor) = match sim.rpc_transactions(start, limit) {
        Ok(page) => page,
        Err(RpcPageError::OutOfRange { start, range }) => {
            return Answer::Error(
                INVALID_REQUEST,
                format!(
                    "start ledger ({start}) must be between the oldest ledger: {} and the latest ledger: {} for this rpc instance",
                    range.oldest, range.latest
                ),
            );
        }
        Err(RpcPageError::Pruned { ledger }) => {
            return invalid_params(format!(
                "database does not contain metadata for ledger: {ledger}"
            ));
        }
    };
    let transactions: Vec<Value> = txs
        .iter()
        .map(|rec| {
            let mut o = Map::new();
            tx_details(rec, &mut o);
            o.insert("txHash".into(), json!(rec.hash));
            o.insert("createdAt".into(), json!(rec.close_time));
            Value::Object(o)
        })
        .collect();
    Answer::Result(json!({
        "transactions": transactions,
        "latestLedger": range.latest,
        "latestLedgerCloseTimestamp": range.latest_close_time,
        "oldestLedger": range.oldest,
        "oldestLedgerCloseTimestamp": range.oldest_close_time,
        "cursor": cursor.to_string(),
    }))
}

/// `getLedgers`: closed ledgers from `startLedger` (or after `cursor`, a ledger sequence),
/// within the answering node's range, with `sequence`, `ledgerCloseTime` (unix seconds as a
/// string) and a stand-in `hash`; real RPC also sends `headerXdr` and `metadataXdr`, which
/// this simulator has no real form of and leaves out.
fn get_ledgers(sim: &Simulator, p: Value) -> Answer {
    let req: TransactionsParams = try_answer!(params(p));
    try_answer!(check_format(req.xdr_format.as_deref()));
    let (cursor, limit) = req.page();
    if limit > MAX_TRANSACTIONS_LIMIT {
        return Answer::Error(
            INVALID_REQUEST,
            format!("limit must not exceed {MAX_TRANSACTIONS_LIMIT}"),
        );
    }
    let limit = if limit == 0 {
        DEFAULT_TRANSACTIONS_LIMIT
    } else {
        limit
    };
    let range = sim.rpc_range(None);
    let start = match (cursor, req.start_ledger) {
        (Some(c), 0) => match c.parse::<u32>() {
            Ok(n) => n.saturating_add(1),
            Err(_) => return invalid_params(format!("invalid cursor {c:?}")),
        },
        (Some(c), start) => {
            return Answer::Error(
                INVALID_REQUEST,
                format!("startLedger ({start}) and cursor ({c}) cannot both be set"),
            );
        }
        (None, start) if start < range.oldest || start > range.latest => {
            return Answer::Error(
                INVALID_REQUEST,
                format!(
                    "start ledger ({start}) must be between the oldest ledger: {} and the latest ledger: {} for this rpc instance",
                    range.oldest, range.latest
                ),
            );
        }
        (None, start) => start,
    };
    let mut ledgers = Vec::new();
    let mut last = start.saturating_sub(1);
    for sequence in start..=range.latest {
        if ledgers.len() >= limit {
            break;
        }
        let Some(header) = sim.ledger_header(sequence) else {
            break;
        };
        last = sequence;
        ledgers.push(json!({
            "hash": hex::encode(Sha256::digest(format!("{}:{sequence}", sim.network_passphrase()))),
            "sequence": sequence,
            "ledgerCloseTime": header.close_time.to_string(),
        }));
    }
    let mut o = Map::new();
    o.insert("ledgers".into(), Value::Array(ledgers));
    range_fields(&range, &mut o);
    o.insert("cursor".into(), json!(last.to_string()));
    Answer::Result(Value::Object(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_meta_is_a_decodable_transaction_meta() {
        let b64 = result_meta_xdr(3);
        let meta = TransactionMeta::from_xdr_base64(&b64, Limits::none()).expect("decodes");
        let TransactionMeta::V3(v3) = meta else {
            panic!("V3")
        };
        assert_eq!(v3.operations.len(), 3);
    }
}
