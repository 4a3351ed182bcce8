//! The HTTP API (axum): submit, read, list, cancel and resume payouts; health, readiness,
//! Prometheus metrics and the OpenAPI document. `router(state)` is a pure function so tests
//! can drive it without a socket; errors are JSON with a stable `code` (an [`ErrorCode`]),
//! never database text.
//!
//! The router is built from one table of operations ([`operations`]); a test checks that
//! the OpenAPI document (`src/openapi.json`) documents exactly those, and that every code
//! it lists is answered with the status [`status_of`] gives it.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use payoutd_actors::ErrorCode;
use payoutd_actors::domain::{JsonRequestError, PayoutId, RawPayoutRequest};
use payoutd_actors::state::{PayoutEvent, PayoutRecord, PayoutState};
use payoutd_actors::{PayoutError, SubmitAnswer};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::metrics::render_prometheus;

pub mod common;

pub use common::*;

/// Largest page of `GET /v1/payouts`.
pub const LIST_LIMIT_MAX: u32 = 500;
/// Page size of `GET /v1/payouts` without `limit`.
pub const LIST_LIMIT_DEFAULT: u32 = 100;

/// A payout as the API shows it. Amounts are decimal strings and integer stroops.
#[derive(Debug, Serialize)]
pub struct PayoutView {
    pub payout_id: String,
    pub state: PayoutState,
    pub destination: String,
    pub asset: String,
    pub amount: String,
    pub amount_stroops: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memo: Option<payoutd_actors::domain::RawMemo>,
    pub attempts: u32,
    pub reason: Option<String>,
    /// The transaction the payout is in (or was settled by).
    pub tx_hash: Option<String>,
    /// Its operation's index in that transaction.
    pub op_index: Option<u32>,
    pub ledger: Option<u32>,
    /// The whole transaction's fee (shared by every payout in it), in stroops.
    pub fee_charged_stroops: Option<i64>,
    /// The operation that pays it: `payment`, `claimable_balance` or `create_account`.
    pub op_kind: &'static str,
    /// The claimable balance that paid it (Horizon's hex form of the id).
    pub balance_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<PayoutEvent>>,
}

impl PayoutView {
    pub fn from_record(r: &PayoutRecord) -> Self {
        let raw = r.request.raw();
        Self {
            payout_id: raw.payout_id,
            state: r.state,
            destination: raw.destination,
            asset: raw.asset,
            amount: raw.amount,
            amount_stroops: r.request.amount().stroops(),
            memo: raw.memo,
            attempts: r.attempt,
            reason: r.reason.clone(),
            tx_hash: r.envelope.map(|e| e.hash.to_hex()),
            op_index: r.envelope.map(|e| e.op_index),
            ledger: r.inclusion.map(|i| i.ledger),
            fee_charged_stroops: r.inclusion.map(|i| i.fee_charged),
            op_kind: r.op_kind.as_str(),
            balance_id: r.balance_id.clone(),
            events: None,
        }
    }
}

/// The operations that need the bearer token (when tokens are configured).
fn api_routes(batch_body_bytes_max: usize) -> Routes {
    Routes::new(Auth::Payout)
        .route(Method::POST, "/v1/payouts", post(create_payout))
        .route(Method::GET, "/v1/payouts", get(list_payouts))
        .route(
            Method::POST,
            "/v1/payouts/batch",
            post(create_batch).layer(DefaultBodyLimit::max(batch_body_bytes_max)),
        )
        .route(Method::GET, "/v1/payouts/{payout_id}", get(get_payout))
        .route(
            Method::GET,
            "/v1/payouts/{payout_id}/envelopes",
            get(crate::console::api::envelopes),
        )
        .route(
            Method::GET,
            "/v1/overview",
            get(crate::console::api::overview),
        )
        .route(
            Method::GET,
            "/v1/progress",
            get(crate::console::api::progress),
        )
        .route(
            Method::POST,
            "/v1/payouts/{payout_id}/cancel",
            post(cancel_payout),
        )
        .route(
            Method::POST,
            "/v1/payouts/{payout_id}/resume",
            post(resume_payout),
        )
}

/// The operations open to anyone: health, readiness, metrics, the document itself.
fn public_routes() -> Routes {
    Routes::new(Auth::Open)
        .route(
            Method::GET,
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route(Method::GET, "/readyz", get(readyz))
        .route(Method::GET, "/metrics", get(metrics))
        .route(Method::GET, crate::openapi::PATH, get(openapi_document))
        // Where the document was served before it moved under /v1 (kept for old clients).
        .route(Method::GET, "/openapi.json", get(openapi_document))
}

async fn openapi_document() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::DOCUMENT,
    )
        .into_response()
}

/// Every operation the router serves (the OpenAPI document must list exactly these).
pub fn operations() -> Vec<Operation> {
    let mut all = api_routes(0).operations;
    all.extend(crate::admin::admin_routes().operations);
    all.extend(public_routes().operations);
    all
}

pub fn router(state: ApiState) -> Router {
    let api = api_routes(state.batch_body_bytes_max)
        .router
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(api)
        .merge(crate::admin::routes(state.clone()))
        .merge(public_routes().router)
        .merge(crate::console::routes())
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this endpoint does not take that method (the Allow header lists those it takes)",
            )
        })
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such endpoint") })
        .layer(DefaultBodyLimit::max(16 * 1024))
        .layer(middleware::from_fn_with_state(state.clone(), timeout))
        .with_state(state)
}

/// Sets the body limit from configuration (the router default is 16 KiB).
pub fn with_body_limit(router: Router, bytes: usize) -> Router {
    router.layer(DefaultBodyLimit::max(bytes))
}

async fn timeout(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(
        Duration::from_millis(state.request_timeout_ms),
        next.run(request),
    )
    .await
    {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::RequestTimeout,
            "the request took too long; it may be retried safely",
        )
        .into_response(),
    }
}

async fn authenticate(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if state.tokens.is_empty() {
        return next.run(request).await;
    }
    let presented = match bearer(&headers, "token") {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    // Check every token (no early exit) so timing does not reveal which one matched.
    let ok = state.tokens.iter().fold(false, |acc, t| {
        acc | constant_time_eq(t.expose_secret().as_bytes(), presented.as_bytes())
    });
    if ok {
        next.run(request).await
    } else {
        ApiError::new(ErrorCode::Unauthenticated, "invalid bearer token").into_response()
    }
}

/// Parses a JSON payout body by the field rules (README): JSON content type, valid
/// UTF-8, no unknown fields, every field checked.
pub fn parse_body(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<payoutd_actors::domain::PayoutRequest, ApiError> {
    require_json(headers)?;
    parse_raw(RawPayoutRequest::from_json_slice(body))
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false);
    if json_type {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send Content-Type: application/json",
        ))
    }
}

/// A request read as JSON, then checked field by field: 400 for a body that is not a
/// request at all, 422 for a field that breaks a rule (with the field named).
fn parse_raw(
    raw: Result<RawPayoutRequest, JsonRequestError>,
) -> Result<payoutd_actors::domain::PayoutRequest, ApiError> {
    match raw {
        Ok(raw) => raw.parse().map_err(ApiError::invalid),
        Err(JsonRequestError::Field(e)) => Err(ApiError::invalid(e)),
        Err(JsonRequestError::Body(detail)) => Err(ApiError::new(
            ErrorCode::InvalidBody,
            format!(
                "the body is not a valid payout request: {}",
                redact(&detail)
            ),
        )),
    }
}

/// Header naming the sender of a request (see [`crate::ingress::HTTP_SOURCES`]): a refused
/// payout request that carries it is dead-lettered.
pub const SOURCE_HEADER: &str = "payoutd-source";
/// Header with the sender's own reference for the request (e.g. `queue:job id`).
pub const SOURCE_REF_HEADER: &str = "payoutd-source-ref";

async fn create_payout(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return refusal(&state, &headers, &[], body_rejection(rejection)).await,
    };
    match submit_payout(&state, &headers, &body).await {
        Ok(response) => response,
        Err(e) => refusal(&state, &headers, &body, e).await,
    }
}

async fn submit_payout(
    state: &ApiState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let request = parse_body(headers, body)?;
    let answer = state.payouts.submit(request).await?;
    let (status, record) = match &answer {
        SubmitAnswer::Created(r) => (StatusCode::ACCEPTED, r),
        SubmitAnswer::Duplicate(r) => (StatusCode::OK, r),
    };
    Ok((status, Json(PayoutView::from_record(record))).into_response())
}

/// One item of a batch's answer.
#[derive(Debug, Serialize)]
struct BatchItem {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    payout_id: Option<String>,
    /// created | duplicate | conflict | invalid | unavailable
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<ErrorCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payout: Option<PayoutView>,
}

impl BatchItem {
    fn refused(index: usize, payout_id: Option<String>, status: &'static str, e: ApiError) -> Self {
        Self {
            index,
            payout_id,
            status,
            code: Some(e.code),
            field: e.field,
            message: Some(e.message),
            payout: None,
        }
    }
}

/// `{"payouts": [request, …]}`: every request is handled as if sent alone (its own actor,
/// duplicate and conflict rules), concurrently; concurrent accepts share database
/// statements. One answer per item, in order; the HTTP status is 200 whenever the body was
/// a batch. `unavailable` items may be sent again.
// Long because: the batch endpoint's whole contract in one place: body checks, per-item
// parse, concurrent submits, one answer per item in order
async fn create_batch(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_rejection)?;
    require_json(&headers)?;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Batch {
        payouts: Vec<serde_json::Value>,
    }
    let batch: Batch = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidBody,
            format!(
                "the body is not {{\"payouts\": [payout request, …]}}: {}",
                redact(&e.to_string())
            ),
        )
    })?;
    let n = batch.payouts.len();
    if n == 0 || n > state.batch_items_max {
        return Err(ApiError::new(
            ErrorCode::BatchSize,
            format!(
                "a batch holds 1 to {} payout requests, not {n}",
                state.batch_items_max
            ),
        ));
    }
    let mut results: Vec<Option<BatchItem>> = Vec::with_capacity(n);
    let mut calls = Vec::new();
    for (index, item) in batch.payouts.into_iter().enumerate() {
        let id_hint = item
            .get("payout_id")
            .and_then(|v| v.as_str())
            .filter(|id| PayoutId::parse(id).is_ok())
            .map(str::to_owned);
        match parse_raw(RawPayoutRequest::from_json_value(item)) {
            Ok(request) => {
                let payouts = state.payouts.clone();
                calls.push((
                    index,
                    tokio::spawn(async move { payouts.submit(request).await }),
                ));
                results.push(None);
            }
            Err(e) => results.push(Some(BatchItem::refused(index, id_hint, "invalid", e))),
        }
    }
    for (index, call) in calls {
        let answer = call
            .await
            .unwrap_or_else(|e| Err(PayoutError::Unavailable(e.to_string())));
        results[index] = Some(match answer {
            Ok(answer) => {
                let (status, record) = match &answer {
                    SubmitAnswer::Created(r) => ("created", r),
                    SubmitAnswer::Duplicate(r) => ("duplicate", r),
                };
                BatchItem {
                    index,
                    payout_id: Some(record.id().to_string()),
                    status,
                    code: None,
                    field: None,
                    message: None,
                    payout: Some(PayoutView::from_record(record)),
                }
            }
            Err(e) => {
                let status = match e.code() {
                    ErrorCode::PayoutConflict => "conflict",
                    _ => "unavailable",
                };
                BatchItem::refused(index, None, status, ApiError::from(e))
            }
        });
    }
    let results: Vec<BatchItem> = results.into_iter().flatten().collect();
    let count = |s: &str| results.iter().filter(|r| r.status == s).count();
    let counts = json!({
        "created": count("created"),
        "duplicate": count("duplicate"),
        "conflict": count("conflict"),
        "invalid": count("invalid"),
        "unavailable": count("unavailable"),
    });
    Ok(Json(json!({ "results": results, "counts": counts })).into_response())
}

/// Answers an error; a 4xx to a request that named its sender is recorded first. A refusal
/// that cannot be recorded is answered 503 instead: the sender retries, and the retry is
/// refused and recorded, so no refusal of a named sender goes unseen in `dead_letters`.
async fn refusal(state: &ApiState, headers: &HeaderMap, body: &[u8], e: ApiError) -> Response {
    let source = match headers.get(SOURCE_HEADER) {
        Some(source) if e.status().is_client_error() => source.as_bytes(),
        _ => return e.into_response(),
    };
    let reason = match e.field {
        Some(field) => format!("{field}: {}", e.message),
        None => e.message.clone(),
    };
    let source_ref = headers.get(SOURCE_REF_HEADER).map(|v| v.as_bytes());
    match crate::ingress::dead_letter_http_rejection(
        &state.db, source, source_ref, body, e.code, &reason,
    )
    .await
    {
        Ok(()) => e.into_response(),
        Err(db) => ApiError::unavailable(DeadLetterFailed(db)).into_response(),
    }
}

/// The dead letter of a refused request could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot record the dead letter of a refused request")]
struct DeadLetterFailed(#[source] sqlx::Error);

async fn get_payout(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<PayoutView>, ApiError> {
    let id = path_id(id)?;
    let record = state
        .payouts
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::from(PayoutError::NotFound(id.to_string())))?;
    let mut view = PayoutView::from_record(&record);
    view.events = Some(state.payouts.events(&id).await?);
    Ok(Json(view))
}

/// The optional body of an operator action: `{"reason": "..."}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    #[serde(default)]
    reason: Option<String>,
}

/// Longest operator reason accepted, in characters.
pub const REASON_CHARS_MAX: usize = 500;

/// The reason an operator action carries: from the body if any, else `default`.
fn operator_reason(body: Result<Bytes, BytesRejection>, default: &str) -> Result<String, ApiError> {
    let body = body.map_err(body_rejection)?;
    let reason = if body.is_empty() {
        None
    } else {
        serde_json::from_slice::<ReasonBody>(&body)
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidBody,
                    format!(
                        "the body is not {{\"reason\": \"…\"}}: {}",
                        redact(&e.to_string())
                    ),
                )
            })?
            .reason
    };
    let reason = reason.unwrap_or_else(|| default.to_owned());
    if reason.chars().count() > REASON_CHARS_MAX {
        return Err(ApiError::new(
            ErrorCode::ReasonTooLong,
            format!("reason is longer than {REASON_CHARS_MAX} characters"),
        )
        .field("reason"));
    }
    // PostgreSQL text cannot hold NUL.
    Ok(crate::ingress::storable(&reason))
}

async fn cancel_payout(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PayoutView>, ApiError> {
    let id = path_id(id)?;
    let reason = operator_reason(body, "cancelled by API request")?;
    let record = state.payouts.cancel(&id, reason).await?;
    Ok(Json(PayoutView::from_record(&record)))
}

/// Resumes a parked payout: an operator has fixed what parked it.
async fn resume_payout(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PayoutView>, ApiError> {
    let id = path_id(id)?;
    let reason = operator_reason(body, "resumed by API request")?;
    let record = state.payouts.resume(&id, reason).await?;
    Ok(Json(PayoutView::from_record(&record)))
}

/// The query of `GET /v1/payouts`, as text: each value is checked below, so that a bad one
/// is answered 422 with its parameter named (an unknown or repeated parameter is 400).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    id_prefix: Option<String>,
    since_unix_ms: Option<String>,
    until_unix_ms: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// A page size: decimal digits only, 1 to [`LIST_LIMIT_MAX`].
fn list_limit(text: Option<&str>) -> Result<u32, ApiError> {
    page_limit(text, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)
}

async fn list_payouts(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| {
        ApiError::bad_query(
            "state, id_prefix, since_unix_ms, until_unix_ms, after and limit",
            &e,
        )
    })?;
    let filter = list_filter(
        q.state.as_deref(),
        q.id_prefix.as_deref(),
        q.since_unix_ms.as_deref(),
        q.until_unix_ms.as_deref(),
    )?;
    let after = q
        .after
        .as_deref()
        .map(|a| PayoutId::parse(a).map_err(|e| ApiError::new(e.code, e.message).field("after")))
        .transpose()?;
    let limit = list_limit(q.limit.as_deref())?;
    let records = state
        .reads
        .list(&filter, after.as_ref(), limit)
        .await
        .map_err(ApiError::unavailable)?;
    let next = (records.len() as u32 == limit)
        .then(|| records.last().map(|r| r.id().to_string()))
        .flatten();
    let items: Vec<PayoutView> = records.iter().map(PayoutView::from_record).collect();
    Ok(Json(json!({ "payouts": items, "next_cursor": next })))
}

/// Ready when the database and the ledger answer. The body also shows the channel pool
/// (what each channel this instance drives is doing, and how long the oldest queued payout
/// has waited), so a full or disabled pool is visible without logs.
async fn readyz(State(state): State<ApiState>) -> Response {
    let db = crate::storage::ping(&state.db).await;
    let ctx = state.payouts.context();
    let ledger = ctx.ledger.latest_ledger().await.is_ok();
    let status = if db && ledger {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let (channels, warnings) = channel_pool(ctx);
    let oldest = ctx.queue.oldest_wait(std::time::Instant::now());
    let body = json!({
        "database": db,
        "ledger": ledger,
        "instance": ctx.instance,
        "queue": {
            "waiting": ctx.queue.len(),
            "oldest_wait_ms": oldest.map(|w| w.as_millis() as u64),
        },
        "channels": channels,
        "warnings": warnings,
    });
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let ctx = state.payouts.context();
    // The queue knows its length better than the gauge the sweep loop last wrote.
    ctx.metrics
        .ready_queue
        .store(ctx.queue.len() as i64, std::sync::atomic::Ordering::Relaxed);
    let mut text = render_prometheus(&ctx.metrics);
    crate::webhooks::deliver::render_metrics(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn redact_hides_seeds() {
        let msg =
            "unknown field `SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH`, expected";
        assert!(!redact(msg).contains("SCCS5ZBI"));
    }
}
