//! The admin API (`/v1/admin/*`): the kill switch (pause, resume), its status, and the
//! audit trail. Behind admin tokens of its own, separate from the payout tokens: a leaked
//! payout token cannot lift a pause, and a pause names the token (by its name, never its
//! text) that made it.
//!
//! Who may call: with `server.admin_tokens` set, only a bearer of one of them (a payout
//! token gets 403). Without admin tokens, the admin API is open only when the whole API is
//! (no payout tokens either: a loopback demo), and the audit trail says `anonymous`;
//! otherwise it answers 403 and says how to configure it.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::{self};
use axum::routing::{get, post};
use payoutd_actors::safety::Pause;
use serde::Deserialize;
use serde_json::json;

use crate::http::common::{ApiError, ApiState, Auth, Routes};

pub mod auth;

pub use auth::{ADMIN_REASON_CHARS_MAX, ANONYMOUS, Actor};
use auth::{admin_reason, authenticate};

/// Largest page of the audit trail.
pub const AUDIT_LIMIT_MAX: u32 = 500;
/// Page of the audit trail without `limit`.
pub const AUDIT_LIMIT_DEFAULT: u32 = 50;

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

pub(crate) fn pause_json(p: &Pause) -> serde_json::Value {
    json!({ "by": p.by, "reason": p.reason, "since_unix_ms": p.since_unix_ms })
}

async fn pause(
    State(state): State<ApiState>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let reason = admin_reason(&headers, body)?;
    let pause = state.payouts.pause(&actor, &reason).await?;
    Ok(Json(json!({ "paused": true, "pause": pause_json(&pause) })))
}

async fn resume(
    State(state): State<ApiState>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let reason = admin_reason(&headers, body)?;
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
    let limit =
        crate::http::common::page_limit(q.limit.as_deref(), AUDIT_LIMIT_DEFAULT, AUDIT_LIMIT_MAX)?;
    let entries = crate::storage::listing::audit_trail(&state.db, limit)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(json!({ "entries": entries })))
}
