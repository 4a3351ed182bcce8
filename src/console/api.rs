//! The reads the console needs beyond the payout API: `GET /v1/overview`,
//! `GET /v1/progress` and `GET /v1/payouts/{payout_id}/envelopes`. Payout tokens, like the
//! rest of the payout API.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use payoutd_actors::PayoutError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::common::{ApiError, ApiState};
use crate::storage::console as store;
use crate::storage::listing::ListFilter;

/// Minutes of confirmations the overview shows.
pub const RATE_MINUTES: i32 = 10;

/// Everything an operator looks at first: counts by state, payouts confirmed per minute,
/// the oldest unfinished payout, this instance's channels, the pause, the last
/// reconciliation and the webhook deliveries waiting.
pub(crate) async fn overview(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let pool = &state.db;
    let progress = store::progress(pool, &ListFilter::default())
        .await
        .map_err(ApiError::unavailable)?;
    let per_minute = store::confirmed_per_minute(pool, RATE_MINUTES)
        .await
        .map_err(ApiError::unavailable)?;
    let reconcile = store::last_reconcile(pool)
        .await
        .map_err(ApiError::unavailable)?;
    let (pending, dead) = crate::storage::webhooks::counts(pool)
        .await
        .map_err(ApiError::unavailable)?;
    let pause = state.payouts.read_pause().await?;
    let ctx = state.payouts.context();
    let (channels, warnings) = crate::http::common::channel_pool(ctx);
    Ok(Json(json!({
        "instance": ctx.instance,
        "total": progress["total"],
        "counts": progress["counts"],
        "oldest_unfinished": progress["oldest_unfinished"],
        "confirmed_per_minute": per_minute,
        "channels": channels,
        "warnings": warnings,
        "paused": pause.is_some(),
        "pause": pause.as_ref().map(crate::admin::pause_json),
        "last_reconcile": reconcile,
        "webhooks": { "pending": pending, "dead": dead },
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProgressQuery {
    id_prefix: Option<String>,
    since_unix_ms: Option<String>,
    until_unix_ms: Option<String>,
}

/// How a run (a CSV file, a burst from NATS: the payouts whose ids share a prefix, or that
/// were created in a time range) is going: done, pending, failed, waiting for an operator,
/// and how many were confirmed in the last minute.
pub(crate) async fn progress(
    State(state): State<ApiState>,
    query: Result<Query<ProgressQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::bad_query("id_prefix, since_unix_ms and until_unix_ms", &e))?;
    let filter = crate::http::common::list_filter(
        None,
        q.id_prefix.as_deref(),
        q.since_unix_ms.as_deref(),
        q.until_unix_ms.as_deref(),
    )?;
    let progress = store::progress(&state.db, &filter)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(progress))
}

/// The envelopes a payout was in, oldest first: hash, status, ledger, fee and its
/// operation's index.
pub(crate) async fn envelopes(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = crate::http::common::path_id(id)?;
    if state.payouts.get(&id).await?.is_none() {
        return Err(ApiError::from(PayoutError::NotFound(id.to_string())));
    }
    let envelopes = store::envelopes(&state.db, id.as_str())
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(json!({ "envelopes": envelopes })))
}
