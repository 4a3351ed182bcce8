//! The Horizon HTTP subset: root, accounts, transaction submission (sync and async) and
//! transaction lookup, with Horizon's field names, status codes and problem documents (the
//! account history listings are in `listings`, the ledger resource in `ledgers`).
//!
//! Every answer carries Horizon's `Latest-Ledger` header: the last ledger the answering node
//! has ingested. Lookups by hash and submissions say which node served them ([`Node`]); a
//! layer over these routes gives every other answer (root, accounts, refused requests) the
//! head node's.

use std::sync::Arc;

use axum::Form;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::format::{format_stroops, rfc3339};
use crate::hal::{
    HAL_JSON, LATEST_LEDGER, PROTOCOL_VERSION, bad_request, hal, problem, tx_resource,
    with_latest_ledger,
};
use crate::keys::{AccountKey, credit_asset_type};
use crate::sim::{
    Node, Outcome, Rejection, SimError, Simulator, Submission, SubmitKind, Submitted, Waiter,
};
use crate::state::TxRecord;

pub fn routes(sim: &Arc<Simulator>) -> Router<Arc<Simulator>> {
    Router::new()
        .route("/", get(root))
        .route("/accounts/{account_id}", get(account))
        .route("/transactions", post(submit_sync))
        .route("/transactions_async", post(submit_async))
        .route("/transactions/{hash}", get(transaction))
        .merge(crate::listings::routes())
        .merge(crate::ledgers::routes())
        .layer(axum::middleware::map_response_with_state(
            Arc::clone(sim),
            head_latest_ledger,
        ))
}

/// Gives an answer that no node marked (root, accounts, refused requests, axum's own 405s)
/// the head node's `Latest-Ledger`, read when the answer leaves.
async fn head_latest_ledger(State(sim): State<Arc<Simulator>>, resp: Response) -> Response {
    if resp.headers().contains_key(LATEST_LEDGER) {
        return resp;
    }
    let head = sim.latest_ledger().sequence;
    with_latest_ledger(resp, head)
}

fn not_found() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "not_found",
        "Resource Missing",
        "No resource exists at this URL: either the URL is wrong or nothing matches its parameters (yet).",
        None,
    )
}

async fn root(State(sim): State<Arc<Simulator>>) -> Response {
    sim.inject_latency().await;
    let h = sim.latest_ledger();
    let elder = sim.node_view(Node::Head).elder;
    hal(
        StatusCode::OK,
        &json!({
            "_links": {
                "account": { "href": "/accounts/{account_id}", "templated": true },
                "account_transactions": { "href": "/accounts/{account_id}/transactions{?cursor,limit,order}", "templated": true },
                "transaction": { "href": "/transactions/{hash}", "templated": true },
                "transactions": { "href": "/transactions" },
                "friendbot": { "href": "/friendbot{?addr}", "templated": true },
            },
            "horizon_version": concat!("payoutd-simulator-", env!("CARGO_PKG_VERSION")),
            "core_version": concat!("payoutd-simulator-", env!("CARGO_PKG_VERSION")),
            "ingest_latest_ledger": h.sequence,
            "history_latest_ledger": h.sequence,
            "history_latest_ledger_closed_at": rfc3339(h.close_time),
            "history_elder_ledger": elder,
            "core_latest_ledger": h.sequence,
            "network_passphrase": sim.network_passphrase(),
            "current_protocol_version": PROTOCOL_VERSION,
            "supported_protocol_version": PROTOCOL_VERSION,
            "core_supported_protocol_version": PROTOCOL_VERSION,
        }),
    )
}

async fn account(State(sim): State<Arc<Simulator>>, Path(id): Path<String>) -> Response {
    sim.inject_latency().await;
    if AccountKey::parse(&id).is_err() {
        return bad_request("account_id", "not a G… account id with a valid checksum");
    }
    let Some(a) = sim.account(&id) else {
        return not_found();
    };
    let mut balances: Vec<Value> = a
        .trustlines
        .iter()
        .map(|(key, line)| {
            let (code, issuer) = key.split_once(':').unwrap_or((key.as_str(), ""));
            json!({
                "balance": format_stroops(line.balance),
                "limit": format_stroops(line.limit),
                "buying_liabilities": "0.0000000",
                "selling_liabilities": "0.0000000",
                "last_modified_ledger": line.last_modified_ledger,
                "is_authorized": true,
                "is_authorized_to_maintain_liabilities": true,
                "asset_type": credit_asset_type(code),
                "asset_code": code,
                "asset_issuer": issuer,
            })
        })
        .collect();
    // Horizon lists the native balance last.
    balances.push(json!({
        "balance": format_stroops(a.balance),
        "buying_liabilities": "0.0000000",
        "selling_liabilities": "0.0000000",
        "asset_type": "native",
    }));
    hal(
        StatusCode::OK,
        &json!({
            "_links": { "self": { "href": format!("/accounts/{id}") } },
            "id": id,
            "account_id": id,
            "sequence": a.seq.to_string(),
            "sequence_ledger": a.seq_ledger,
            "sequence_time": a.seq_time.to_string(),
            "subentry_count": a.trustlines.len(),
            "last_modified_ledger": a.last_modified_ledger,
            "thresholds": { "low_threshold": 0, "med_threshold": 0, "high_threshold": 0 },
            "flags": { "auth_required": false, "auth_revocable": false, "auth_immutable": false, "auth_clawback_enabled": false },
            "balances": balances,
            "signers": [{ "weight": 1, "key": id, "type": "ed25519_public_key" }],
            "data": {},
            "num_sponsoring": a.num_sponsoring,
            "num_sponsored": 0,
            "paging_token": id,
        }),
    )
}

async fn transaction(State(sim): State<Arc<Simulator>>, Path(hash): Path<String>) -> Response {
    sim.inject_latency().await;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return bad_request("tx_id", "a transaction hash is 64 hexadecimal characters");
    }
    let lookup = sim.lookup_transaction(&hash);
    let resp = match &lookup.record {
        Some(rec) => hal(StatusCode::OK, &tx_resource(rec)),
        None => not_found(),
    };
    with_latest_ledger(resp, lookup.latest_ledger)
}

#[derive(Deserialize)]
struct TxForm {
    tx: Option<String>,
}

/// The `tx` field of a submission form, or the problem to answer.
/// The envelope of a submission form, after the injected latency (so a malformed form
/// is answered as late as a good one).
async fn form_tx(
    sim: &Simulator,
    form: Result<Form<TxForm>, FormRejection>,
) -> Result<String, Box<Response>> {
    sim.inject_latency().await;
    match form {
        Ok(Form(TxForm { tx: Some(tx) })) if !tx.trim().is_empty() => Ok(tx),
        Ok(_) => Err(Box::new(malformed(
            "the form has no `tx` field with a base64 envelope",
        ))),
        Err(e) => Err(Box::new(malformed(&format!(
            "the body is not a form with a `tx` field: {e}"
        )))),
    }
}

fn malformed(detail: &str) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "transaction_malformed",
        "Transaction Malformed",
        detail,
        None,
    )
}

fn server_error(status: u16) -> Response {
    if status == 503 {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "Service Unavailable",
            "The server cannot handle the request right now; the transaction was not submitted.",
            None,
        )
    } else {
        problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "Internal Server Error",
            "An error occurred while processing this request; the transaction was not submitted.",
            None,
        )
    }
}

fn timeout(hash: &str, envelope_xdr: &str) -> Response {
    problem(
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
        "Timeout",
        "The transaction was not seen in a ledger in time. It may still be included: look it up by hash or resubmit the same envelope.",
        Some(json!({ "hash": hash, "envelope_xdr": envelope_xdr })),
    )
}

fn try_again_later(hash: &str) -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "transaction_submission_try_again_later",
        "Try Again Later",
        "The source account already has a transaction in the open ledger (one per account per ledger); submit again after the next ledger closes.",
        Some(json!({ "hash": hash, "tx_status": "TRY_AGAIN_LATER" })),
    )
}

fn transaction_failed(
    envelope_xdr: &str,
    result_xdr: &str,
    code: &str,
    op_codes: &[String],
) -> Response {
    let mut codes = json!({ "transaction": code });
    if let (false, Some(obj)) = (op_codes.is_empty(), codes.as_object_mut()) {
        obj.insert("operations".to_owned(), json!(op_codes));
    }
    problem(
        StatusCode::BAD_REQUEST,
        "transaction_failed",
        "Transaction Failed",
        "The network did not apply the transaction; extras.result_codes says why.",
        Some(
            json!({ "envelope_xdr": envelope_xdr, "result_xdr": result_xdr, "result_codes": codes }),
        ),
    )
}

fn rejected(r: &Rejection) -> Response {
    transaction_failed(&r.envelope_xdr, &r.result_xdr, &r.code, &r.op_codes)
}

/// The answer for a transaction in a ledger: 200 with the resource, or 400 `tx_failed`.
pub fn included(rec: &TxRecord) -> Response {
    if rec.successful {
        hal(StatusCode::OK, &tx_resource(rec))
    } else {
        transaction_failed(
            &rec.envelope_xdr,
            &rec.result_xdr,
            &rec.result_code,
            &rec.operation_codes,
        )
    }
}

async fn submit_sync(
    State(sim): State<Arc<Simulator>>,
    form: Result<Form<TxForm>, FormRejection>,
) -> Response {
    let tx = match form_tx(&sim, form).await {
        Ok(tx) => tx,
        Err(resp) => return *resp,
    };
    let deadline = tokio::time::Instant::now() + sim.submit_wait();
    let Submitted { node, submission } = sim.submit(&tx, SubmitKind::Sync);
    let resp = match submission {
        Submission::Malformed(why) => malformed(&why),
        Submission::ServerError(status) => server_error(status),
        Submission::Rejected(r) => rejected(&r),
        Submission::TryAgainLater { hash } => try_again_later(&hash),
        Submission::Accepted {
            hash,
            envelope_xdr,
            waiter,
            lose_answer,
            ..
        } => {
            let outcome = match waiter {
                Waiter::Ready(o) => Some(o),
                Waiter::Wait(rx) => tokio::time::timeout_at(deadline, rx)
                    .await
                    .ok()
                    .and_then(Result::ok),
            };
            match outcome {
                None => timeout(&hash, &envelope_xdr),
                Some(Outcome::Dropped(r)) => rejected(&r),
                Some(Outcome::Included(_)) if lose_answer => {
                    sim.count_lost_answer();
                    timeout(&hash, &envelope_xdr)
                }
                // Horizon answers a submission once its own database has the ledger: the
                // lagging node only when it has ingested it, within the same wait.
                Some(Outcome::Included(rec))
                    if node == Node::Lagging
                        && !sim.wait_lagging_ingested(rec.ledger, deadline).await =>
                {
                    timeout(&hash, &envelope_xdr)
                }
                Some(Outcome::Included(rec)) => included(&rec),
            }
        }
    };
    with_latest_ledger(resp, sim.node_view(node).latest)
}

fn async_status(status: StatusCode, tx_status: &str, hash: &str) -> Response {
    let body = json!({ "tx_status": tx_status, "hash": hash, "status": status.as_u16() });
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(HAL_JSON))],
        body.to_string(),
    )
        .into_response()
}

async fn submit_async(
    State(sim): State<Arc<Simulator>>,
    form: Result<Form<TxForm>, FormRejection>,
) -> Response {
    let tx = match form_tx(&sim, form).await {
        Ok(tx) => tx,
        Err(resp) => return *resp,
    };
    let Submitted { node, submission } = sim.submit(&tx, SubmitKind::Async);
    let resp = match submission {
        Submission::Malformed(why) => malformed(&why),
        Submission::ServerError(status) => server_error(status),
        Submission::Rejected(r) => {
            let body = json!({
                "tx_status": "ERROR",
                "hash": r.hash,
                "errorResultXdr": r.result_xdr,
                "status": 400,
            });
            (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, HeaderValue::from_static(HAL_JSON))],
                body.to_string(),
            )
                .into_response()
        }
        Submission::TryAgainLater { hash } => {
            async_status(StatusCode::SERVICE_UNAVAILABLE, "TRY_AGAIN_LATER", &hash)
        }
        Submission::Accepted {
            hash,
            envelope_xdr,
            fresh: true,
            lose_answer: true,
            ..
        } => {
            sim.count_lost_answer();
            timeout(&hash, &envelope_xdr)
        }
        Submission::Accepted {
            hash, fresh: true, ..
        } => async_status(StatusCode::CREATED, "PENDING", &hash),
        Submission::Accepted { hash, .. } => async_status(StatusCode::CONFLICT, "DUPLICATE", &hash),
    };
    with_latest_ledger(resp, sim.node_view(node).latest)
}

/// The status code an admin error maps to.
pub fn sim_error_status(e: &SimError) -> StatusCode {
    match e {
        SimError::NoAccount(_) | SimError::NoTrustline { .. } => StatusCode::NOT_FOUND,
        SimError::InvalidAccount(_)
        | SimError::InvalidAsset(_)
        | SimError::InvalidAmount(_)
        | SimError::LineFull { .. }
        | SimError::SelfTrust
        | SimError::UnknownCode(_)
        | SimError::InvalidConfig(_) => StatusCode::BAD_REQUEST,
        SimError::StateFile(_) | SimError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
