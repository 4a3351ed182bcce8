//! Horizon's history listings of an account, for reconciliation:
//! `GET /accounts/{id}/transactions`, `/operations` and `/payments`, as HAL pages
//! (`_embedded.records`, `_links.self/next/prev`) with Horizon's paging parameters
//! (`cursor`, `order` `asc`|`desc`, `limit` 1..=200 default 10, `include_failed`).
//!
//! Records are what Horizon shows: the transaction resource, or an operation resource with
//! its type-specific fields. `/payments` holds the payment and create-account operations
//! (Horizon lists claimable balance operations under `/operations` only). Without
//! `include_failed=true`, only successful transactions' records are listed.
//!
//! A page is served by the node drawn as for a lookup by hash and carries its
//! `Latest-Ledger`; it holds only ledgers `history_elder_ledger..=latest` of that node.
//! Pruned history answers as Horizon does: an ascending page whose cursor is before the elder
//! ledger starts at the oldest record held (so compare its first record with the cursor, or
//! the cursor with `history_elder_ledger` of `GET /`, to see that a range was pruned), and a
//! descending page whose cursor is at or before the elder ledger is a 410 `before_history`
//! problem.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Map, Value, json};
use stellar_xdr::MuxedAccount;

use crate::format::{format_stroops, rfc3339};
use crate::hal::{bad_request, hal, problem, tx_resource, with_latest_ledger};
use crate::history::OpBody;
use crate::keys::{AccountKey, AssetId, credit_asset_type};
use crate::sim::{Cursor, Listing, PageQuery, PageRecord, Simulator};

/// Horizon's default page size, in records.
const DEFAULT_LIMIT: usize = 10;
/// Horizon's largest page size, in records.
const MAX_LIMIT: usize = 200;

pub fn routes() -> Router<Arc<Simulator>> {
    Router::new()
        .route("/accounts/{account_id}/transactions", get(transactions))
        .route("/accounts/{account_id}/operations", get(operations))
        .route("/accounts/{account_id}/payments", get(payments))
}

async fn transactions(
    State(sim): State<Arc<Simulator>>,
    Path(id): Path<String>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    listing(&sim, &id, q, Listing::Transactions, "transactions").await
}

async fn operations(
    State(sim): State<Arc<Simulator>>,
    Path(id): Path<String>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    listing(&sim, &id, q, Listing::Operations, "operations").await
}

async fn payments(
    State(sim): State<Arc<Simulator>>,
    Path(id): Path<String>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    listing(&sim, &id, q, Listing::Payments, "payments").await
}

/// The page query of Horizon's parameters, or the problem to answer.
fn page_query(params: &HashMap<String, String>) -> Result<PageQuery, Box<Response>> {
    let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let descending = match get("order") {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => {
            return Err(Box::new(bad_request(
                "order",
                "order must be \"asc\" or \"desc\"",
            )));
        }
    };
    let limit = match get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(Box::new(bad_request(
                    "limit",
                    "limit must be an integer from 1 to 200",
                )));
            }
        },
    };
    let cursor = match get("cursor") {
        None => Cursor::Start,
        Some("now") => Cursor::Now,
        Some(c) => match c.parse::<u64>() {
            // Horizon's paging tokens are non-negative int64s.
            Ok(n) if i64::try_from(n).is_ok() => Cursor::At(n),
            _ => return Err(Box::new(bad_request("cursor", "invalid value"))),
        },
    };
    let include_failed = match get("include_failed") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(Box::new(bad_request(
                "include_failed",
                "invalid bool value",
            )));
        }
    };
    Ok(PageQuery {
        cursor,
        descending,
        limit,
        include_failed,
    })
}

/// A link to a page of this listing.
fn page_href(base: &str, cursor: &str, q: &PageQuery, descending: bool) -> String {
    let order = if descending { "desc" } else { "asc" };
    let failed = if q.include_failed {
        "&include_failed=true"
    } else {
        ""
    };
    format!(
        "{base}?cursor={cursor}&limit={}&order={order}{failed}",
        q.limit
    )
}

async fn listing(
    sim: &Simulator,
    id: &str,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    what: Listing,
    name: &str,
) -> Response {
    sim.inject_latency().await;
    if AccountKey::parse(id).is_err() {
        return bad_request("account_id", "not a G… account id with a valid checksum");
    }
    let params = match q {
        Ok(Query(p)) => p,
        Err(e) => return bad_request("query", &e.to_string()),
    };
    let query = match page_query(&params) {
        Ok(q) => q,
        Err(resp) => return *resp,
    };
    let page = match sim.account_page(id, what, &query) {
        Ok(Ok(page)) => page,
        Ok(Err(before)) => {
            return with_latest_ledger(before_history(), before.view.latest);
        }
        Err(e) => return bad_request("account_id", &e.to_string()),
    };
    let records: Vec<Value> = page
        .records
        .iter()
        .map(|r| match &r.op {
            None => tx_resource(&r.tx),
            Some(_) => op_resource(r),
        })
        .collect();
    let base = format!("/accounts/{id}/{name}");
    let request_cursor = match query.cursor {
        Cursor::Start => String::new(),
        Cursor::Now => "now".to_owned(),
        Cursor::At(c) => c.to_string(),
    };
    // Horizon's links: next continues after the last record, prev goes back from the first
    // in the other order; on an empty page both keep the request's cursor.
    let first = page
        .records
        .first()
        .map_or(request_cursor.clone(), |r| r.toid.to_string());
    let last = page
        .records
        .last()
        .map_or(request_cursor.clone(), |r| r.toid.to_string());
    let body = json!({
        "_links": {
            "self": { "href": page_href(&base, &request_cursor, &query, query.descending) },
            "next": { "href": page_href(&base, &last, &query, query.descending) },
            "prev": { "href": page_href(&base, &first, &query, !query.descending) },
        },
        "_embedded": { "records": records },
    });
    with_latest_ledger(hal(StatusCode::OK, &body), page.view.latest)
}

/// Horizon's answer to a descending page before the history it keeps.
fn before_history() -> Response {
    problem(
        StatusCode::GONE,
        "before_history",
        "Data Requested Is Before Recorded History",
        "This horizon instance is configured to only track a portion of the stellar network's latest history. This request is asking for results prior to the recorded history known to this horizon instance.",
        None,
    )
}

/// Sets `{prefix}` to the `G…` of `m`, and `{prefix}_muxed`/`{prefix}_muxed_id` if muxed.
fn account_fields(o: &mut Map<String, Value>, prefix: &str, m: &MuxedAccount) {
    o.insert(
        prefix.to_owned(),
        json!(AccountKey::from_muxed(m).to_string()),
    );
    if let MuxedAccount::MuxedEd25519(med) = m {
        o.insert(format!("{prefix}_muxed"), json!(m.to_string()));
        o.insert(format!("{prefix}_muxed_id"), json!(med.id.to_string()));
    }
}

/// Horizon's `asset_type`/`asset_code`/`asset_issuer` fields.
fn asset_fields(o: &mut Map<String, Value>, asset: Option<&AssetId>) {
    match asset {
        Some(AssetId::Credit { code, issuer }) => {
            o.insert("asset_type".into(), json!(credit_asset_type(code)));
            o.insert("asset_code".into(), json!(code));
            o.insert("asset_issuer".into(), json!(issuer.to_string()));
        }
        // Only valid assets enter a ledger, so `None` does not occur.
        Some(AssetId::Native) | None => {
            o.insert("asset_type".into(), json!("native"));
        }
    }
}

/// The operation resource, as Horizon's `/operations` and `/payments` show it.
fn op_resource(r: &PageRecord) -> Value {
    let Some(op) = &r.op else {
        return tx_resource(&r.tx);
    };
    let mut o = Map::new();
    let id = r.toid.to_string();
    o.insert(
        "_links".into(),
        json!({
            "self": { "href": format!("/operations/{id}") },
            "transaction": { "href": format!("/transactions/{}", r.tx.hash) },
        }),
    );
    o.insert("id".into(), json!(id));
    o.insert("paging_token".into(), json!(id));
    o.insert("transaction_successful".into(), json!(r.tx.successful));
    account_fields(&mut o, "source_account", &op.source);
    let (type_name, type_i) = op.body.type_name();
    o.insert("type".into(), json!(type_name));
    o.insert("type_i".into(), json!(type_i));
    o.insert("created_at".into(), json!(rfc3339(r.tx.close_time)));
    o.insert("transaction_hash".into(), json!(r.tx.hash));
    match &op.body {
        OpBody::Payment { to, asset, amount } => {
            asset_fields(&mut o, asset.as_ref());
            account_fields(&mut o, "from", &op.source);
            account_fields(&mut o, "to", to);
            o.insert("amount".into(), json!(format_stroops(*amount)));
        }
        OpBody::CreateAccount {
            account,
            starting_balance,
        } => {
            o.insert(
                "starting_balance".into(),
                json!(format_stroops(*starting_balance)),
            );
            account_fields(&mut o, "funder", &op.source);
            o.insert("account".into(), json!(account.to_string()));
        }
        OpBody::CreateClaimableBalance {
            asset,
            amount,
            claimants,
        } => {
            o.insert(
                "asset".into(),
                json!(asset.as_ref().map_or_else(String::new, AssetId::key)),
            );
            o.insert("amount".into(), json!(format_stroops(*amount)));
            let claimants: Vec<Value> = claimants
                .iter()
                .map(|k| json!({ "destination": k.to_string(), "predicate": { "unconditional": true } }))
                .collect();
            o.insert("claimants".into(), json!(claimants));
        }
        OpBody::ClaimClaimableBalance { balance_id } => {
            o.insert("balance_id".into(), json!(balance_id));
            account_fields(&mut o, "claimant", &op.source);
        }
        OpBody::Other => {}
    }
    Value::Object(o)
}
