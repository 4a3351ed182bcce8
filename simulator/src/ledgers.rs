//! Horizon's ledger resource, `GET /ledgers/{sequence}`: when a ledger closed (what a
//! client needs to turn a time range into a ledger range). A subset of Horizon's fields:
//! `id` and `hash` (a stand-in: there are no real ledger headers), `paging_token`,
//! `sequence`, `closed_at`, `protocol_version`. A ledger before the node's elder ledger is
//! Horizon's 410 `before_history`; one that has not closed is a 404.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::format::rfc3339;
use crate::hal::{PROTOCOL_VERSION, bad_request, hal, problem};
use crate::history::toid;
use crate::sim::{Node, Simulator};

pub fn routes() -> Router<Arc<Simulator>> {
    Router::new().route("/ledgers/{sequence}", get(ledger))
}

async fn ledger(State(sim): State<Arc<Simulator>>, Path(sequence): Path<String>) -> Response {
    sim.inject_latency().await;
    let Ok(sequence) = sequence.parse::<u32>() else {
        return bad_request("sequence", "a ledger sequence is a positive 32-bit integer");
    };
    let view = sim.node_view(Node::Head);
    if sequence < view.elder {
        return problem(
            StatusCode::GONE,
            "before_history",
            "Data Requested Is Before Recorded History",
            "This horizon instance is configured to only track a portion of the stellar network's latest history. This request is asking for results prior to the recorded history known to this horizon instance.",
            None,
        );
    }
    let Some(header) = sim.ledger_header(sequence) else {
        return problem(
            StatusCode::NOT_FOUND,
            "not_found",
            "Resource Missing",
            "No resource exists at this URL: either the URL is wrong or nothing matches its parameters (yet).",
            None,
        );
    };
    let hash = hex::encode(Sha256::digest(
        format!(
            "{} ; ledger {} ; {}",
            sim.network_passphrase(),
            header.sequence,
            header.close_time
        )
        .as_bytes(),
    ));
    hal(
        StatusCode::OK,
        &json!({
            "_links": { "self": { "href": format!("/ledgers/{sequence}") } },
            "id": hash,
            "paging_token": toid(sequence, 0, 0).to_string(),
            "hash": hash,
            "sequence": header.sequence,
            "closed_at": rfc3339(header.close_time),
            "protocol_version": PROTOCOL_VERSION,
        }),
    )
}
