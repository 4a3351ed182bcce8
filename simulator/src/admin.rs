//! Admin endpoints under `/sim/` (not Horizon) and a testnet-like `/friendbot`.
//!
//! They set up accounts and trustlines, close ledgers by hand, switch faults and base fee,
//! show the simulator's status, and list the payments applied and the claimable balances
//! open, for tests, benchmarks and reconciliation in the demo.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Faults;
use crate::format::format_stroops;
use crate::hal::{hal, problem};
use crate::horizon::sim_error_status;
use crate::keys::AccountKey;
use crate::sim::{Node, PaymentFilter, SimError, Simulator};

/// What friendbot gives a new account: 10,000 XLM, like testnet's.
pub const FRIENDBOT_STROOPS: i64 = 10_000 * crate::STROOPS_PER_XLM;

pub fn routes() -> Router<Arc<Simulator>> {
    Router::new()
        .route("/sim/close_ledger", post(close_ledger))
        .route("/sim/accounts", post(create_account))
        .route("/sim/trustlines", post(add_trustline))
        .route("/sim/credit", post(credit))
        .route("/sim/sequence", put(set_sequence))
        .route("/sim/faults", put(set_faults).get(fault_counts))
        .route("/sim/base_fee", put(set_base_fee))
        .route("/sim/status", get(status))
        .route("/sim/payments", get(payments))
        .route("/sim/claimable_balances", get(claimable_balances))
        .route("/sim/claimable_balances/{id}", get(claimable_balance))
        .route("/friendbot", get(friendbot).post(friendbot))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    account: String,
    xlm_stroops: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTrustline {
    account: String,
    asset_code: String,
    issuer: String,
    limit_stroops: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credit {
    account: String,
    asset_code: String,
    issuer: String,
    amount_stroops: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sequence {
    account: String,
    sequence: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BaseFee {
    stroops: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BalanceQuery {
    claimant: Option<String>,
}

#[derive(Deserialize)]
struct FriendbotQuery {
    addr: Option<String>,
}

fn ok(body: Value) -> Response {
    (StatusCode::OK, Json(body)).into_response()
}

fn sim_error(e: &SimError) -> Response {
    let status = sim_error_status(e);
    (
        status,
        Json(json!({ "error": e.to_string(), "status": status.as_u16() })),
    )
        .into_response()
}

fn body_error(e: &dyn std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": e.to_string(), "status": 400 })),
    )
        .into_response()
}

fn done(r: Result<(), SimError>) -> Response {
    match r {
        Ok(()) => ok(json!({ "ok": true })),
        Err(e) => sim_error(&e),
    }
}

async fn close_ledger(State(sim): State<Arc<Simulator>>) -> Response {
    // Closing writes the state file; keep that off the async worker threads.
    match tokio::task::spawn_blocking(move || sim.close_ledger()).await {
        Ok(h) => ok(json!({ "sequence": h.sequence, "close_time": h.close_time })),
        Err(e) => body_error(&e),
    }
}

async fn create_account(
    State(sim): State<Arc<Simulator>>,
    body: Result<Json<NewAccount>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(b)) => done(sim.create_account(&b.account, b.xlm_stroops)),
        Err(e) => body_error(&e),
    }
}

async fn add_trustline(
    State(sim): State<Arc<Simulator>>,
    body: Result<Json<NewTrustline>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(b)) => {
            done(sim.add_trustline(&b.account, &b.asset_code, &b.issuer, b.limit_stroops))
        }
        Err(e) => body_error(&e),
    }
}

async fn credit(
    State(sim): State<Arc<Simulator>>,
    body: Result<Json<Credit>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(b)) => done(sim.credit(&b.account, &b.asset_code, &b.issuer, b.amount_stroops)),
        Err(e) => body_error(&e),
    }
}

async fn set_sequence(
    State(sim): State<Arc<Simulator>>,
    body: Result<Json<Sequence>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(b)) => done(sim.set_account_sequence(&b.account, b.sequence)),
        Err(e) => body_error(&e),
    }
}

async fn set_faults(
    State(sim): State<Arc<Simulator>>,
    body: Result<Json<Faults>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(f)) => done(sim.try_set_faults(f)),
        Err(e) => body_error(&e),
    }
}

async fn fault_counts(State(sim): State<Arc<Simulator>>) -> Response {
    ok(json!(sim.fault_counts()))
}

/// The ledger, capacity and what waits for it, what each Horizon node holds, and the faults
/// with their counts.
async fn status(State(sim): State<Arc<Simulator>>) -> Response {
    let h = sim.latest_ledger();
    ok(json!({
        "latest_ledger": h.sequence,
        "latest_ledger_close_time": h.close_time,
        "base_fee_stroops": sim.base_fee(),
        "ops_per_ledger_max": sim.ops_per_ledger_max(),
        "rpc_retention_ledgers": sim.rpc_retention_ledgers(),
        "pending_transactions": sim.pending_count(),
        "pending_operations": sim.pending_operations(),
        "head_node": sim.node_view(Node::Head),
        "lagging_node": sim.node_view(Node::Lagging),
        "faults": sim.faults(),
        "fault_counts": sim.fault_counts(),
    }))
}

async fn set_base_fee(
    State(sim): State<Arc<Simulator>>,
    body: Result<Json<BaseFee>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(b)) if b.stroops >= 0 => {
            sim.set_base_fee(b.stroops);
            ok(json!({ "ok": true }))
        }
        Ok(Json(b)) => sim_error(&SimError::InvalidAmount(b.stroops)),
        Err(e) => body_error(&e),
    }
}

async fn payments(
    State(sim): State<Arc<Simulator>>,
    q: Result<Query<PaymentFilter>, QueryRejection>,
) -> Response {
    match q {
        Ok(Query(filter)) => {
            let list = sim.payments(&filter);
            ok(json!({ "count": list.len(), "payments": list }))
        }
        Err(e) => body_error(&e),
    }
}

/// The open claimable balances, all or those a `claimant` may claim.
async fn claimable_balances(
    State(sim): State<Arc<Simulator>>,
    q: Result<Query<BalanceQuery>, QueryRejection>,
) -> Response {
    let claimant = match q {
        Ok(Query(q)) => q.claimant,
        Err(e) => return body_error(&e),
    };
    match sim.claimable_balances(claimant.as_deref()) {
        Ok(list) => ok(json!({ "count": list.len(), "claimable_balances": list })),
        Err(e) => sim_error(&e),
    }
}

/// One open claimable balance; 404 once claimed (or if it never existed).
async fn claimable_balance(State(sim): State<Arc<Simulator>>, Path(id): Path<String>) -> Response {
    match sim.claimable_balance(&id) {
        Some(cb) => ok(json!(cb)),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no open claimable balance {id}"), "status": 404 })),
        )
            .into_response(),
    }
}

/// Creates the account with 10,000 XLM; refuses an account that exists, as testnet's does.
async fn friendbot(
    State(sim): State<Arc<Simulator>>,
    q: Result<Query<FriendbotQuery>, QueryRejection>,
) -> Response {
    sim.inject_latency().await;
    let addr = match q {
        Ok(Query(FriendbotQuery { addr: Some(a) })) => a,
        _ => return bad_addr("the `addr` query parameter is missing"),
    };
    if AccountKey::parse(&addr).is_err() {
        return bad_addr("`addr` is not a G… account id with a valid checksum");
    }
    if sim.account(&addr).is_some() {
        return problem(
            StatusCode::BAD_REQUEST,
            "transaction_failed",
            "Transaction Failed",
            "friendbot funds new accounts only; this account already exists.",
            Some(
                json!({ "result_codes": { "transaction": "tx_failed", "operations": ["op_already_exists"] } }),
            ),
        );
    }
    if let Err(e) = sim.create_account(&addr, FRIENDBOT_STROOPS) {
        return sim_error(&e);
    }
    let ledger = sim.latest_ledger();
    hal(
        StatusCode::OK,
        &json!({
            "successful": true,
            "account": addr,
            "starting_balance": format_stroops(FRIENDBOT_STROOPS),
            "ledger": ledger.sequence,
        }),
    )
}

fn bad_addr(reason: &str) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "Bad Request",
        "The request has an invalid parameter; see extras for which one and why.",
        Some(json!({ "invalid_field": "addr", "reason": reason })),
    )
}
