//! Who may act as an admin, and what an admin action carries: the admin token check (the
//! actor's name goes into the audit trail) and the reason every action must give. Shared
//! by the admin API and the webhook deliveries' replay.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use payoutd_actors::ErrorCode;
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::config::AdminToken;
use crate::http::common::{ApiError, ApiState, constant_time_eq};

/// Longest reason an admin action may carry, in characters.
pub const ADMIN_REASON_CHARS_MAX: usize = 500;
/// The actor recorded when the API runs without any token.
pub const ANONYMOUS: &str = "anonymous";

/// Who made an admin request (set by the admin authentication).
#[derive(Debug, Clone)]
pub struct Actor(pub String);

pub(crate) async fn authenticate(
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
    let presented = match crate::http::common::bearer(&headers, "admin token") {
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
pub(crate) fn admin_reason(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<String, ApiError> {
    let body = body.map_err(crate::http::common::body_rejection)?;
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
    let parsed: AdminBody = serde_json::from_slice(&body).map_err(|e| {
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
