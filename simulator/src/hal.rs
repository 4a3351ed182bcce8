//! Horizon's response shapes, shared by every Horizon route (`horizon`, `listings`,
//! `ledgers`): HAL documents, problem documents, the `Latest-Ledger` header, and the
//! transaction resource.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::format::rfc3339;
use crate::state::TxRecord;

/// The protocol version the simulator reports (classic payments behave the same in all
/// recent versions).
pub(crate) const PROTOCOL_VERSION: u32 = 23;
pub(crate) const HAL_JSON: &str = "application/hal+json; charset=utf-8";
pub(crate) const PROBLEM_JSON: &str = "application/problem+json; charset=utf-8";
pub(crate) const PROBLEM_BASE: &str = "https://stellar.org/horizon-errors/";
/// Horizon's header naming the last ledger the answering node has ingested.
pub const LATEST_LEDGER: HeaderName = HeaderName::from_static("latest-ledger");

/// Sets `Latest-Ledger` on an answer.
pub fn with_latest_ledger(mut resp: Response, ledger: u32) -> Response {
    resp.headers_mut()
        .insert(LATEST_LEDGER, HeaderValue::from(ledger));
    resp
}

/// A HAL JSON answer.
pub fn hal(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(HAL_JSON))],
        body.to_string(),
    )
        .into_response()
}

/// A problem document (RFC 7807) as Horizon writes them.
pub fn problem(
    status: StatusCode,
    slug: &str,
    title: &str,
    detail: &str,
    extras: Option<Value>,
) -> Response {
    let mut body = json!({
        "type": format!("{PROBLEM_BASE}{slug}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    if let (Some(extras), Some(obj)) = (extras, body.as_object_mut()) {
        obj.insert("extras".to_owned(), extras);
    }
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
        body.to_string(),
    )
        .into_response()
}

pub fn bad_request(field: &str, reason: &str) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "Bad Request",
        "The request has an invalid parameter; see extras for which one and why.",
        Some(json!({ "invalid_field": field, "reason": reason })),
    )
}

/// The transaction resource, as `GET /transactions/{hash}` and a successful submission show it.
pub fn tx_resource(rec: &TxRecord) -> Value {
    let mut o = Map::new();
    let toid = (u64::from(rec.ledger) << 32) | (u64::from(rec.application_order) << 12);
    o.insert(
        "_links".into(),
        json!({ "self": { "href": format!("/transactions/{}", rec.hash) } }),
    );
    o.insert("id".into(), json!(rec.hash));
    o.insert("paging_token".into(), json!(toid.to_string()));
    o.insert("successful".into(), json!(rec.successful));
    o.insert("hash".into(), json!(rec.hash));
    o.insert("ledger".into(), json!(rec.ledger));
    o.insert("created_at".into(), json!(rfc3339(rec.close_time)));
    o.insert("source_account".into(), json!(rec.source_account));
    if let Some(m) = &rec.source_account_muxed {
        o.insert("account_muxed".into(), json!(m));
    }
    o.insert(
        "source_account_sequence".into(),
        json!(rec.source_account_sequence.to_string()),
    );
    o.insert("fee_account".into(), json!(rec.source_account));
    o.insert("fee_charged".into(), json!(rec.fee_charged.to_string()));
    o.insert("max_fee".into(), json!(rec.max_fee.to_string()));
    o.insert("operation_count".into(), json!(rec.operation_count));
    o.insert("envelope_xdr".into(), json!(rec.envelope_xdr));
    o.insert("result_xdr".into(), json!(rec.result_xdr));
    o.insert("memo_type".into(), json!(rec.memo_type));
    if let Some(m) = &rec.memo {
        o.insert("memo".into(), json!(m));
    }
    if let Some(b) = &rec.memo_bytes {
        o.insert("memo_bytes".into(), json!(b));
    }
    o.insert("signatures".into(), json!(rec.signatures));
    let mut pre = Map::new();
    if let Some((min, max)) = rec.time_bounds {
        o.insert("valid_after".into(), json!(rfc3339(min)));
        let mut tb = Map::new();
        tb.insert("min_time".into(), json!(min.to_string()));
        if max != 0 {
            o.insert("valid_before".into(), json!(rfc3339(max)));
            tb.insert("max_time".into(), json!(max.to_string()));
        }
        pre.insert("timebounds".into(), Value::Object(tb));
    }
    if let Some((min, max)) = rec.ledger_bounds {
        pre.insert(
            "ledgerbounds".into(),
            json!({ "min_ledger": min, "max_ledger": max }),
        );
    }
    if !pre.is_empty() {
        o.insert("preconditions".into(), Value::Object(pre));
    }
    Value::Object(o)
}
