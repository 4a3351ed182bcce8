//! The admin API (`/v1/admin/*`): the kill switch (pause, resume), its status, and the
//! audit trail. Behind admin tokens of its own, separate from the payout tokens: a leaked
//! payout token cannot lift a pause, and a pause names the token (by its name, never its
//! text) that made it.
//!
//! Who may call: with `server.admin_tokens` set, only a bearer of one of them (a payout
//! token gets 403). Without admin tokens, the admin API is open only when the whole API is
//! (no payout tokens either: a loopback demo), and the audit trail says `anonymous`;
//! otherwise it answers 403 and says how to configure it.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use payoutd_actors::ErrorCode;
use payoutd_actors::safety::Pause;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use crate::config::AdminToken;
use crate::http::{ApiError, ApiState, Auth, Routes, constant_time_eq};

/// Longest reason an admin action may carry, in characters.
pub const ADMIN_REASON_CHARS_MAX: usize = 500;
/// Largest page of the audit trail.
pub const AUDIT_LIMIT_MAX: u32 = 500;
/// Page of the audit trail without `limit`.
pub const AUDIT_LIMIT_DEFAULT: u32 = 50;
/// The actor recorded when the API runs without any token.
pub const ANONYMOUS: &str = "anonymous";

/// Who made an admin request (set by the admin authentication).
#[derive(Debug, Clone)]
pub struct Actor(pub String);

/// The admin operations (listed in the OpenAPI document like every other).
pub(crate) fn admin_routes() -> Routes {
    Routes::new(Auth::Admin)
        .route(Method::POST, "/v1/admin/pause", post(pause))
        .route(Method::POST, "/v1/admin/resume", post(resume))
        .route(Method::GET, "/v1/admin/status", get(status))
        .route(Method::GET, "/v1/admin/audit", get(audit))
        .route(
            Method::GET,
            "/v1/webhooks/deliveries",
            get(crate::webhooks::api::list),
        )
        .route(
            Method::POST,
            "/v1/webhooks/deliveries/{delivery_id}/replay",
            post(crate::webhooks::api::replay),
        )
}

/// The admin routes, with their own authentication.
pub fn routes(state: ApiState) -> Router<ApiState> {
    admin_routes()
        .router
        .route_layer(middleware::from_fn_with_state(state, authenticate))
}

async fn authenticate(
    State(state): State<ApiState>,
    headers: HeaderMap,
    mut request: Request,
    next: Next,
) -> Response {
    let admins: &Arc<Vec<AdminToken>> = &state.admin_tokens;
    if admins.is_empty() {
        if state.tokens.is_empty() {
            request.extensions_mut().insert(Actor(ANONYMOUS.to_owned()));
            return next.run(request).await;
        }
        return ApiError::new(
            ErrorCode::AdminDisabled,
            "no admin tokens are configured: set PAYOUTD__SERVER__ADMIN_TOKENS (name:token, comma-separated) or server.admin_tokens_file",
        )
        .into_response();
    }
    let presented = match crate::http::bearer(&headers, "admin token") {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    // Every token is compared (no early exit), so timing does not say which one matched.
    let mut matched: Option<&str> = None;
    for t in admins.iter() {
        if constant_time_eq(t.token.expose_secret().as_bytes(), presented.as_bytes()) {
            matched = Some(t.name.as_str());
        }
    }
    if let Some(name) = matched {
        request.extensions_mut().insert(Actor(name.to_owned()));
        return next.run(request).await;
    }
    let payout_token = state.tokens.iter().fold(false, |acc, t| {
        acc | constant_time_eq(t.expose_secret().as_bytes(), presented.as_bytes())
    });
    if payout_token {
        ApiError::new(
            ErrorCode::AdminTokenRequired,
            "this endpoint needs an admin token; payout tokens are not accepted",
        )
        .into_response()
    } else {
        ApiError::new(ErrorCode::Unauthenticated, "invalid bearer token").into_response()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminBody {
    reason: Option<String>,
}

/// The reason an admin action must carry: a JSON body `{"reason": "…"}`, 1 to
/// `ADMIN_REASON_CHARS_MAX` characters, not blank, without a secret seed.
pub(crate) fn admin_reason(headers: &HeaderMap, body: &[u8]) -> Result<String, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        });
    if !is_json {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send Content-Type: application/json with {\"reason\": \"…\"}",
        ));
    }
    let parsed: AdminBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidBody,
            format!(
                "the body must be {{\"reason\": \"…\"}}: {}",
                crate::ingress::redact_secrets(&e.to_string())
            ),
        )
    })?;
    let raw = parsed.reason.unwrap_or_default();
    // The length before trimming, and blank as JSON Schema's `\s` would say (the OpenAPI
    // document states both rules as they are checked here).
    if raw.chars().count() > ADMIN_REASON_CHARS_MAX {
        return Err(ApiError::new(
            ErrorCode::ReasonTooLong,
            format!("reason is longer than {ADMIN_REASON_CHARS_MAX} characters"),
        )
        .field("reason"));
    }
    let reason = raw.trim_matches(is_blank);
    if reason.is_empty() {
        return Err(ApiError::new(
            ErrorCode::ReasonMissing,
            "say why: the reason goes into the audit trail",
        )
        .field("reason"));
    }
    if crate::ingress::redact_secrets(reason) != reason {
        return Err(ApiError::new(
            ErrorCode::SecretInReason,
            "the reason looks like it holds a secret seed; never send one",
        )
        .field("reason"));
    }
    // PostgreSQL text cannot hold NUL.
    Ok(crate::ingress::storable(reason))
}

/// The characters a reason may not consist of only: the white space of JSON Schema's
/// (ECMAScript's) `\s`, which the document's pattern for `reason` excludes one by one.
pub(crate) fn is_blank(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

pub(crate) fn pause_json(p: &Pause) -> serde_json::Value {
    json!({ "by": p.by, "reason": p.reason, "since_unix_ms": p.since_unix_ms })
}

async fn pause(
    State(state): State<ApiState>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = body.map_err(crate::http::body_rejection)?;
    let reason = admin_reason(&headers, &body)?;
    let pause = state.payouts.pause(&actor, &reason).await?;
    Ok(Json(json!({ "paused": true, "pause": pause_json(&pause) })))
}

async fn resume(
    State(state): State<ApiState>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = body.map_err(crate::http::body_rejection)?;
    let reason = admin_reason(&headers, &body)?;
    let lifted = state.payouts.unpause(&actor, &reason).await?;
    Ok(Json(json!({
        "paused": false,
        "lifted": lifted.as_ref().map(pause_json),
    })))
}

async fn status(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    // The journal's answer, not this instance's last read: an operator sees the truth.
    let pause = state.payouts.read_pause().await?;
    let metrics = &state.payouts.context().metrics;
    Ok(Json(json!({
        "paused": pause.is_some(),
        "pause": pause.as_ref().map(pause_json),
        "breaker_trips": metrics.breaker_trips.load(std::sync::atomic::Ordering::Relaxed),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<String>,
}

async fn audit(
    State(state): State<ApiState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_query("limit", &e))?;
    let limit = crate::http::page_limit(q.limit.as_deref(), AUDIT_LIMIT_DEFAULT, AUDIT_LIMIT_MAX)?;
    let entries = crate::storage::listing::audit_trail(&state.db, limit)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(json!({ "entries": entries })))
}
