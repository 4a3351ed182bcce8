//! `/v1/webhooks/deliveries`: the deliveries (dead letters among them) and their replay.
//! Admin operations (behind the admin tokens, like the kill switch): a replay changes what
//! is sent and goes into the audit trail with its reason.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use payoutd_actors::ErrorCode;
use payoutd_actors::domain::PayoutId;
use serde::Deserialize;
use serde_json::json;

use crate::admin::auth::Actor;
use crate::http::common::{ApiError, ApiState};
use crate::storage::webhooks::{self as store, ReplayError};

/// Largest page of deliveries.
pub const DELIVERIES_LIMIT_MAX: u32 = 500;
/// Page of deliveries without `limit`.
pub const DELIVERIES_LIMIT_DEFAULT: u32 = 50;
/// The states a delivery can be in.
pub const DELIVERY_STATES: [&str; 3] = ["pending", "delivered", "dead"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    state: Option<String>,
    payout_id: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// A delivery id: 1 to 18 digits, not zero.
fn delivery_id(text: &str) -> Option<i64> {
    (text.len() <= 18 && !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse::<i64>().ok())
        .flatten()
        .filter(|n| *n > 0)
}

/// `GET /v1/webhooks/deliveries`: newest first, filtered by state and payout.
pub(crate) async fn list(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::bad_query("state, payout_id, after and limit", &e))?;
    if let Some(s) = q.state.as_deref()
        && !DELIVERY_STATES.contains(&s)
    {
        return Err(ApiError::new(
            ErrorCode::StateInvalid,
            format!("must be one of {}", DELIVERY_STATES.join(", ")),
        )
        .field("state"));
    }
    let payout = q
        .payout_id
        .as_deref()
        .map(|p| {
            PayoutId::parse(p).map_err(|e| ApiError::new(e.code, e.message).field("payout_id"))
        })
        .transpose()?;
    let after = q
        .after
        .as_deref()
        .map(|a| {
            delivery_id(a).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::CursorInvalid,
                    "must be the next_cursor of a previous page (a delivery id)",
                )
                .field("after")
            })
        })
        .transpose()?;
    let limit = crate::http::common::page_limit(
        q.limit.as_deref(),
        DELIVERIES_LIMIT_DEFAULT,
        DELIVERIES_LIMIT_MAX,
    )?;
    let page = store::list(
        &state.db,
        q.state.as_deref(),
        payout.as_ref().map(|p| p.as_str()),
        after,
        limit,
    )
    .await
    .map_err(ApiError::unavailable)?;
    let next = (page.len() as u32 == limit)
        .then(|| page.last().map(|d| d.id.to_string()))
        .flatten();
    Ok(Json(json!({ "deliveries": page, "next_cursor": next })))
}

/// `POST /v1/webhooks/deliveries/{delivery_id}/replay` with `{"reason": "…"}`.
pub(crate) async fn replay(
    State(state): State<ApiState>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::new(
            ErrorCode::DeliveryNotFound,
            format!(
                "no webhook delivery {}",
                crate::ingress::redact_secrets(&id)
            ),
        )
    };
    let Some(n) = delivery_id(&id) else {
        return Err(not_found());
    };
    let reason = crate::admin::auth::admin_reason(&headers, body)?;
    match store::replay(&state.db, n, &actor, &reason).await {
        Ok(d) => Ok((StatusCode::ACCEPTED, Json(json!({ "delivery": d }))).into_response()),
        Err(ReplayError::NotFound(_)) => Err(not_found()),
        Err(ReplayError::Pending(_)) => Err(ApiError::new(
            ErrorCode::DeliveryPending,
            format!("webhook delivery {n} is pending: it is sent again by itself"),
        )),
        Err(ReplayError::Database(e)) => Err(ApiError::unavailable(e)),
    }
}
