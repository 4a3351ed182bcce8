//! What every part of the API shares (the payouts, the admin API, the console, the
//! webhook deliveries): the state handlers get, errors as JSON with a stable code, the
//! table of routes and who may call them, and the extraction of tokens, ids, filters
//! and pages. It names none of those parts, so each of them can import it.

use std::sync::Arc;

use axum::extract::Path;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::{Json, Router};
use payoutd_actors::ErrorCode;
use payoutd_actors::domain::{PayoutId, ValidationError};
use payoutd_actors::ports::PayoutReads;
use payoutd_actors::state::PayoutState;
use payoutd_actors::{PayoutError, Payouts};
use secrecy::SecretString;
use serde_json::json;
use sqlx::postgres::PgPool;

use crate::storage::listing::ListFilter;

/// What every handler and middleware of the API shares. Cloned for each request by the
/// router, its middleware and every `State` extractor, so it is one `Arc`: a clone of the
/// fields themselves (a dozen reference counts) was 4.6% of all samples in a profile of
/// duplicates over HTTP (docs/performance.md).
#[derive(Clone)]
pub struct ApiState(Arc<ApiShared>);

impl ApiState {
    pub fn new(shared: ApiShared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for ApiState {
    type Target = ApiShared;

    fn deref(&self) -> &ApiShared {
        &self.0
    }
}

/// The fields of [`ApiState`].
pub struct ApiShared {
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
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    pub(crate) field: Option<&'static str>,
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
    pub(crate) fn invalid(e: ValidationError) -> Self {
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

/// A body that could not be read: too large (413), or the connection failed mid-body.
pub(crate) fn body_rejection(rejection: BytesRejection) -> ApiError {
    let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ErrorCode::BodyTooLarge
    } else {
        ErrorCode::InvalidBody
    };
    ApiError::new(code, rejection.body_text()).caused_by(rejection)
}

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

/// serde_json errors quote input; a secret pasted into a field must not come back.
pub(crate) fn redact(message: &str) -> String {
    crate::ingress::redact_secrets(message)
}
