//! The HTTP API (axum): submit, read, list, cancel and resume payouts; health, readiness,
//! Prometheus metrics and the OpenAPI document. `router(state)` is a pure function so tests
//! can drive it without a socket; errors are JSON with a stable `code` (an [`ErrorCode`]),
//! never database text.
//!
//! The router is built from one table of operations ([`operations`]); a test checks that
//! the OpenAPI document (`src/openapi.json`) documents exactly those, and that every code
//! it lists is answered with the status [`status_of`] gives it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use payoutd_actors::ErrorCode;
use payoutd_actors::domain::{JsonRequestError, PayoutId, RawPayoutRequest, ValidationError};
use payoutd_actors::ports::PayoutReads;
use payoutd_actors::state::{PayoutEvent, PayoutRecord, PayoutState};
use payoutd_actors::{PayoutError, Payouts, SubmitAnswer};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::postgres::PgPool;

use crate::metrics::render_prometheus;
use crate::storage::listing::ListFilter;

/// Largest page of `GET /v1/payouts`.
pub const LIST_LIMIT_MAX: u32 = 500;
/// Page size of `GET /v1/payouts` without `limit`.
pub const LIST_LIMIT_DEFAULT: u32 = 100;

#[derive(Clone)]
pub struct ApiState {
    pub payouts: Payouts,
    /// The payout listing.
    pub reads: Arc<dyn PayoutReads>,
    /// The database, for the reads and records of the API outside the core (console,
    /// audit trail, webhook deliveries, dead letters); every statement is in `storage`.
    pub db: PgPool,
    pub tokens: Arc<Vec<SecretString>>,
    /// Tokens of the admin API (`/v1/admin/*`), each with its name.
    pub admin_tokens: Arc<Vec<crate::config::AdminToken>>,
    pub request_timeout_ms: u64,
    /// `POST /v1/payouts/batch`: requests per body at most, and its body limit in bytes.
    pub batch_items_max: usize,
    pub batch_body_bytes_max: usize,
}

/// The HTTP status each code is answered with: the one place codes meet statuses. `None`:
/// the code is never an HTTP answer (it belongs to another ingress or to the CSV client).
pub fn status_of(code: ErrorCode) -> Option<StatusCode> {
    use ErrorCode as C;
    Some(match code {
        C::InvalidBody | C::InvalidQuery => StatusCode::BAD_REQUEST,
        C::Unauthenticated => StatusCode::UNAUTHORIZED,
        C::AdminTokenRequired | C::AdminDisabled => StatusCode::FORBIDDEN,
        C::PayoutNotFound | C::DeliveryNotFound | C::NotFound => StatusCode::NOT_FOUND,
        C::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        C::PayoutConflict | C::PayoutNotCancellable | C::PayoutNotParked | C::DeliveryPending => {
            StatusCode::CONFLICT
        }
        C::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        C::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        C::FieldMissing
        | C::FieldType
        | C::PayoutIdLength
        | C::PayoutIdCharset
        | C::PayoutIdIsSecret
        | C::DestinationInvalid
        | C::DestinationIsSecret
        | C::AssetFormat
        | C::AssetCode
        | C::AssetIssuer
        | C::AmountFormat
        | C::AmountPrecision
        | C::AmountTooLarge
        | C::AmountNotPositive
        | C::MemoType
        | C::MemoValueMissing
        | C::MemoValueUnexpected
        | C::MemoTextTooLong
        | C::MemoIdFormat
        | C::MemoHashFormat
        | C::BatchSize
        | C::ReasonTooLong
        | C::ReasonMissing
        | C::SecretInReason
        | C::StateInvalid
        | C::CursorInvalid
        | C::TimeInvalid
        | C::LimitInvalid => StatusCode::UNPROCESSABLE_ENTITY,
        C::Overloaded | C::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        C::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
        C::MessageTooLarge
        | C::InvalidUtf8
        | C::CsvQuote
        | C::CsvUnterminatedQuote
        | C::CsvColumnCount
        | C::MemoTypeMissing
        | C::Unexpected => return None,
    })
}

/// What an `unavailable` answer says.
const UNAVAILABLE: &str = "temporarily unavailable; the same request may be retried safely";

/// The bearer token of a request, if it carries one (`hint` names the kind of token in the
/// error when it does not).
pub(crate) fn bearer<'h>(headers: &'h HeaderMap, hint: &str) -> Result<&'h str, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                format!("missing bearer token (Authorization: Bearer <{hint}>)"),
            )
        })
}

/// An API error: a stable code (its HTTP status follows from it), a message for people,
/// the offending field if any, and the cause (logged, never sent).
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    field: Option<&'static str>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            source: None,
        }
    }

    /// The same error, naming the field or parameter at fault.
    pub fn field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }

    /// The database (or what serves the request) could not be reached: 503, safe to retry.
    pub(crate) fn unavailable(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::new(ErrorCode::Unavailable, UNAVAILABLE).caused_by(cause)
    }

    /// A query string that does not fit the operation: 400, naming the parameters it takes.
    pub(crate) fn bad_query(takes: &str, rejection: &QueryRejection) -> Self {
        Self::new(
            ErrorCode::InvalidQuery,
            format!(
                "the query takes {takes}, each at most once: {}",
                redact(&rejection.body_text())
            ),
        )
    }

    pub(crate) fn caused_by(
        mut self,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.source = Some(Box::new(cause));
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn status(&self) -> StatusCode {
        status_of(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// A field that breaks a rule (422, or whatever its code says).
    fn invalid(e: ValidationError) -> Self {
        Self::new(e.code, e.message).field(e.field)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error()
            && let Some(cause) = &self.source
        {
            let chain = crate::ingress::redact_secrets(&error_chain(cause.as_ref()));
            tracing::warn!(code = %self.code, error = %chain, "request could not be served");
        }
        let mut body = json!({ "error": { "code": self.code, "message": self.message } });
        if let Some(field) = self.field {
            body["error"]["field"] = json!(field);
        }
        (status, Json(body)).into_response()
    }
}

/// An error and its causes, one after the other.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl From<PayoutError> for ApiError {
    fn from(e: PayoutError) -> Self {
        let code = e.code();
        match &e {
            PayoutError::Unavailable(_) => {
                tracing::warn!(error = %e, "request could not be served");
                Self::new(code, UNAVAILABLE)
            }
            _ => Self::new(code, e.to_string()),
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

/// Which token an operation needs (when tokens are configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Auth {
    /// None: open to anyone.
    Open,
    /// A payout token (`server.api_tokens`).
    Payout,
    /// An admin token (`server.admin_tokens`; see `admin`).
    Admin,
}

/// One operation of the API: its method, its path (in the `{param}` form that axum and
/// OpenAPI share) and the token it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub auth: Auth,
}

/// Routes and the operations they serve, built together so that neither can be added
/// without the other.
pub(crate) struct Routes {
    pub(crate) router: Router<ApiState>,
    pub(crate) operations: Vec<Operation>,
    auth: Auth,
}

impl Routes {
    pub(crate) fn new(auth: Auth) -> Self {
        Self {
            router: Router::new(),
            operations: Vec::new(),
            auth,
        }
    }

    pub(crate) fn route(
        mut self,
        method: Method,
        path: &'static str,
        handler: MethodRouter<ApiState>,
    ) -> Self {
        self.operations.push(Operation {
            method: method_name(&method),
            path,
            auth: self.auth,
        });
        self.router = self.router.route(path, handler);
        self
    }
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "get",
        Method::POST => "post",
        Method::PUT => "put",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
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

/// A body that could not be read: too large (413), or the connection failed mid-body.
pub(crate) fn body_rejection(rejection: BytesRejection) -> ApiError {
    let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ErrorCode::BodyTooLarge
    } else {
        ErrorCode::InvalidBody
    };
    ApiError::new(code, rejection.body_text()).caused_by(rejection)
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

/// The payout id in a path: the same rules as in a body.
pub(crate) fn path_id(id: Result<Path<String>, PathRejection>) -> Result<PayoutId, ApiError> {
    match id {
        Ok(Path(id)) => PayoutId::parse(&id).map_err(ApiError::invalid),
        // The only way a one-segment path fails to be a string: it is not UTF-8 once
        // percent-decoded, so it has characters no payout id has.
        Err(rejection) => Err(ApiError::new(
            ErrorCode::PayoutIdCharset,
            "may contain only letters, digits and . _ : -",
        )
        .field("payout_id")
        .caused_by(rejection)),
    }
}

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

/// A time parameter: milliseconds since the Unix epoch, decimal digits only (at most 15,
/// which reaches past the year 30000).
fn unix_ms(text: Option<&str>, field: &'static str) -> Result<Option<i64>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    (1..=15)
        .contains(&text.len())
        .then_some(())
        .filter(|()| text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|()| text.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::TimeInvalid,
                "must be a whole number of milliseconds since the Unix epoch (at most 15 digits)",
            )
            .field(field)
        })
}

/// The filter of a listing or a progress count, from its query parameters.
pub(crate) fn list_filter(
    state: Option<&str>,
    id_prefix: Option<&str>,
    since_unix_ms: Option<&str>,
    until_unix_ms: Option<&str>,
) -> Result<ListFilter, ApiError> {
    let state = match state {
        None => None,
        Some(s) => Some(PayoutState::parse(s).ok_or_else(|| {
            let states: Vec<_> = PayoutState::ALL.iter().map(PayoutState::as_str).collect();
            ApiError::new(
                ErrorCode::StateInvalid,
                format!("must be one of {}", states.join(", ")),
            )
            .field("state")
        })?),
    };
    // A prefix follows the rules of an id (so it can never hold what no id holds).
    let id_prefix = id_prefix
        .map(|p| {
            PayoutId::parse(p)
                .map(|p| p.to_string())
                .map_err(|e| ApiError::new(e.code, e.message).field("id_prefix"))
        })
        .transpose()?;
    Ok(ListFilter {
        state,
        id_prefix,
        since_unix_ms: unix_ms(since_unix_ms, "since_unix_ms")?,
        until_unix_ms: unix_ms(until_unix_ms, "until_unix_ms")?,
    })
}

/// A page size: decimal digits only, 1 to [`LIST_LIMIT_MAX`].
fn list_limit(text: Option<&str>) -> Result<u32, ApiError> {
    page_limit(text, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)
}

/// A `limit` parameter: decimal digits only, 1 to `max` (`default` without it); anything
/// else is 422 limit_invalid, never clamped.
pub(crate) fn page_limit(text: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    let Some(text) = text else {
        return Ok(default);
    };
    text.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| text.parse::<u32>().ok())
        .flatten()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::LimitInvalid,
                format!("must be a whole number from 1 to {max}"),
            )
            .field("limit")
        })
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

/// The channel pool this instance drives, as `/readyz` and the console show it (usable,
/// busy, disabled, and each channel's state and envelope), and the warnings it calls for.
pub(crate) fn channel_pool(ctx: &payoutd_actors::Context) -> (serde_json::Value, Vec<String>) {
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
    let pool = json!({
        "usable": usable,
        "busy": busy,
        "disabled": statuses.values().filter(|s| s.disabled.is_some()).count(),
        "detail": channels,
    });
    (pool, warnings)
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
