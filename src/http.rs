//! The HTTP API (axum): submit, read, list and cancel payouts; health, readiness and
//! Prometheus metrics. `router(state)` is a pure function so tests can drive it without a
//! socket; errors are JSON with a stable `code`, never database text.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use payoutd_actors::domain::{JsonRequestError, PayoutId, RawPayoutRequest, ValidationError};
use payoutd_actors::state::{PayoutEvent, PayoutRecord, PayoutState};
use payoutd_actors::{PayoutError, Payouts, SubmitAnswer};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::journal::PgJournal;
use crate::metrics::render_prometheus;

/// Largest page of `GET /v1/payouts`.
pub const LIST_LIMIT_MAX: u32 = 500;

#[derive(Clone)]
pub struct ApiState {
    pub payouts: Payouts,
    pub journal: Arc<PgJournal>,
    pub tokens: Arc<Vec<SecretString>>,
    /// Tokens of the admin API (`/v1/admin/*`), each with its name.
    pub admin_tokens: Arc<Vec<crate::config::AdminToken>>,
    pub request_timeout_ms: u64,
    /// `POST /v1/payouts/batch`: requests per body at most, and its body limit in bytes.
    pub batch_items_max: usize,
    pub batch_body_bytes_max: usize,
}

/// An API error: HTTP status, stable code, message, and the offending field if any.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// An error about one field of the body or the query.
    pub fn field(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        field: &'static str,
    ) -> Self {
        Self {
            field: Some(field),
            ..Self::new(status, code, message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": { "code": self.code, "message": self.message } });
        if let Some(field) = self.field {
            body["error"]["field"] = json!(field);
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<PayoutError> for ApiError {
    fn from(e: PayoutError) -> Self {
        match &e {
            PayoutError::Conflict { .. } => {
                Self::new(StatusCode::CONFLICT, "payout_conflict", e.to_string())
            }
            PayoutError::NotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "payout_not_found", e.to_string())
            }
            PayoutError::NotCancellable { .. } => Self::new(
                StatusCode::CONFLICT,
                "payout_not_cancellable",
                e.to_string(),
            ),
            PayoutError::NotResumable { .. } => {
                Self::new(StatusCode::CONFLICT, "payout_not_parked", e.to_string())
            }
            PayoutError::Overloaded => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", e.to_string())
            }
            PayoutError::Unavailable(_) => {
                tracing::warn!(error = %e, "request could not be served");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "temporarily unavailable; the same request may be retried safely",
                )
            }
        }
    }
}

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
            events: None,
        }
    }
}

pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/v1/payouts", post(create_payout).get(list_payouts))
        .route(
            "/v1/payouts/batch",
            post(create_batch).layer(DefaultBodyLimit::max(state.batch_body_bytes_max)),
        )
        .route("/v1/payouts/{id}", get(get_payout))
        .route("/v1/payouts/{id}/cancel", post(cancel_payout))
        .route("/v1/payouts/{id}/resume", post(resume_payout))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(api)
        .merge(crate::admin::routes(state.clone()))
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    crate::openapi::DOCUMENT,
                )
            }),
        )
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
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
            StatusCode::GATEWAY_TIMEOUT,
            "request_timeout",
            "the request took too long; it may be retried safely",
        )
        .into_response(),
    }
}

/// Compares in time that depends only on the lengths, not on where the bytes differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
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
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "missing bearer token (Authorization: Bearer <token>)",
        )
        .into_response();
    };
    // Check every token (no early exit) so timing does not reveal which one matched.
    let ok = state.tokens.iter().fold(false, |acc, t| {
        acc | constant_time_eq(t.expose_secret().as_bytes(), presented.as_bytes())
    });
    if ok {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "invalid bearer token",
        )
        .into_response()
    }
}

/// Parses a JSON payout body per BRIEF §4: JSON content type, valid UTF-8, no unknown
/// fields, every field checked.
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
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/json",
        ))
    }
}

/// A request read as JSON, then checked field by field: 400 for a body that is not a
/// request at all, 422 for a field that breaks a rule (with the field named).
fn parse_raw(
    raw: Result<RawPayoutRequest, JsonRequestError>,
) -> Result<payoutd_actors::domain::PayoutRequest, ApiError> {
    let invalid = |e: ValidationError| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: e.code,
        message: e.message,
        field: Some(e.field),
    };
    match raw {
        Ok(raw) => raw.parse().map_err(invalid),
        Err(JsonRequestError::Field(e)) => Err(invalid(e)),
        Err(JsonRequestError::Body(detail)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!(
                "the body is not a valid payout request: {}",
                redact(&detail)
            ),
        )),
    }
}

/// serde_json errors quote input; a secret pasted into a field must not come back.
fn redact(message: &str) -> String {
    crate::ingress::redact_secrets(message)
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
        Err(rejection) => return refusal(&state, &headers, &[], body_rejection(&rejection)).await,
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
    code: Option<&'static str>,
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
async fn create_batch(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| body_rejection(&r))?;
    require_json(&headers)?;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Batch {
        payouts: Vec<serde_json::Value>,
    }
    let batch: Batch = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!(
                "the body is not {{\"payouts\": [payout request, …]}}: {}",
                redact(&e.to_string())
            ),
        )
    })?;
    let n = batch.payouts.len();
    if n == 0 || n > state.batch_items_max {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "batch_size",
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
                let status = match e {
                    PayoutError::Conflict { .. } => "conflict",
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

/// A body that could not be read: too large (413), or the connection failed mid-body.
fn body_rejection(rejection: &BytesRejection) -> ApiError {
    let status = rejection.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "body_too_large"
    } else {
        "invalid_body"
    };
    ApiError::new(status, code, rejection.body_text())
}

/// Answers an error; a 4xx to a request that named its sender is recorded first. A refusal
/// that cannot be recorded is answered 503 instead: the sender retries, and the retry is
/// refused and recorded, so no refusal of a named sender goes unseen in `dead_letters`.
async fn refusal(state: &ApiState, headers: &HeaderMap, body: &[u8], e: ApiError) -> Response {
    let source = match headers.get(SOURCE_HEADER) {
        Some(source) if e.status.is_client_error() => source.as_bytes(),
        _ => return e.into_response(),
    };
    let reason = match e.field {
        Some(field) => format!("{field}: {}", e.message),
        None => e.message.clone(),
    };
    let source_ref = headers.get(SOURCE_REF_HEADER).map(|v| v.as_bytes());
    match crate::ingress::dead_letter_http_rejection(
        state.journal.pool(),
        source,
        source_ref,
        body,
        e.code,
        &reason,
    )
    .await
    {
        Ok(()) => e.into_response(),
        Err(db) => ApiError::from(PayoutError::Unavailable(format!(
            "cannot record the dead letter of a refused request: {db}"
        )))
        .into_response(),
    }
}

fn path_id(id: &str) -> Result<PayoutId, ApiError> {
    PayoutId::parse(id).map_err(|e| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: e.code,
        message: e.message,
        field: Some(e.field),
    })
}

async fn get_payout(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<PayoutView>, ApiError> {
    let id = path_id(&id)?;
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

/// Longest operator reason accepted, in bytes.
const REASON_BYTES_MAX: usize = 500;

/// The reason an operator action carries: from the body if any, else `default`.
fn operator_reason(body: &[u8], default: &str) -> Result<String, ApiError> {
    let reason = if body.is_empty() {
        None
    } else {
        serde_json::from_slice::<ReasonBody>(body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()))?
            .reason
    };
    let reason = reason.unwrap_or_else(|| default.to_owned());
    if reason.len() > REASON_BYTES_MAX {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason_too_long",
            format!("reason is longer than {REASON_BYTES_MAX} bytes"),
        ));
    }
    Ok(reason)
}

async fn cancel_payout(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<PayoutView>, ApiError> {
    let id = path_id(&id)?;
    let reason = operator_reason(&body, "cancelled by API request")?;
    let record = state.payouts.cancel(&id, reason).await?;
    Ok(Json(PayoutView::from_record(&record)))
}

/// Resumes a parked payout: an operator has fixed what parked it.
async fn resume_payout(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<PayoutView>, ApiError> {
    let id = path_id(&id)?;
    let reason = operator_reason(&body, "resumed by API request")?;
    let record = state.payouts.resume(&id, reason).await?;
    Ok(Json(PayoutView::from_record(&record)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

async fn list_payouts(
    State(state): State<ApiState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let filter = match q.state.as_deref() {
        None => None,
        Some(s) => Some(PayoutState::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "state_invalid",
                format!("unknown state {s:?}"),
            )
        })?),
    };
    let after = q.after.as_deref().map(path_id).transpose()?;
    let limit = q.limit.unwrap_or(100).clamp(1, LIST_LIMIT_MAX);
    let records = state
        .journal
        .list(filter, after.as_ref(), limit)
        .await
        .map_err(|e| ApiError::from(PayoutError::Unavailable(e.to_string())))?;
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
    let db = crate::journal::ping(state.journal.pool()).await;
    let ctx = state.payouts.context();
    let ledger = ctx.ledger.latest_ledger().await.is_ok();
    let status = if db && ledger {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let statuses = ctx.channel_statuses();
    let channels: Vec<serde_json::Value> = statuses
        .iter()
        .map(|(account, s)| {
            let state = match (&s.disabled, &s.open, s.can_sign) {
                (Some(_), _, _) => "disabled",
                (None, Some(_), _) => "busy",
                (None, None, false) => "settling",
                (None, None, true) => "idle",
            };
            json!({
                "account": account.to_strkey(),
                "state": state,
                "envelope": s.open.as_ref().map(|o| o.hash.to_hex()),
                "payouts": s.open.as_ref().map(|o| o.payouts.len()),
                "held_for_ms": s.open.as_ref().map(|o| o.since.elapsed().as_millis() as u64),
                "unresolved_envelopes": s.unresolved,
                "disabled_reason": s.disabled,
                "beyond_history": s.beyond_history.iter().map(|b| json!({
                    "envelope": b.hash.to_hex(),
                    "payouts": b.payouts.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                    "reason": b.reason,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let usable = statuses
        .values()
        .filter(|s| s.can_sign && s.disabled.is_none())
        .count();
    let busy = statuses.values().filter(|s| s.open.is_some()).count();
    let oldest = ctx.queue.oldest_wait(std::time::Instant::now());
    let mut warnings = Vec::new();
    if usable == 0 {
        warnings.push("no usable channel account: payouts are accepted but not paid".to_owned());
    } else if busy >= usable && oldest.is_some_and(|w| w.as_secs() >= 30) {
        warnings.push(format!(
            "every usable channel is busy and the oldest queued payout has waited {} s",
            oldest.map(|w| w.as_secs()).unwrap_or(0)
        ));
    }
    let beyond: usize = statuses.values().map(|s| s.beyond_history.len()).sum();
    if beyond > 0 {
        warnings.push(format!(
            "{beyond} envelope(s) are older than the ledger server's history: their payouts wait for an operator (see beyond_history)"
        ));
    }
    let body = json!({
        "database": db,
        "ledger": ledger,
        "instance": ctx.instance,
        "queue": {
            "waiting": ctx.queue.len(),
            "oldest_wait_ms": oldest.map(|w| w.as_millis() as u64),
        },
        "channels": {
            "usable": usable,
            "busy": busy,
            "disabled": statuses.values().filter(|s| s.disabled.is_some()).count(),
            "detail": channels,
        },
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
    let text = render_prometheus(&ctx.metrics);
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
