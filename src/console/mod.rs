//! The operator console at `/console` (docs/console.md): a page and a script served from
//! the binary, which read and act through the JSON API with the operator's token. The page
//! itself carries no data and no secret: the token is typed in, kept in the tab's session
//! storage, and sent as `Authorization: Bearer` with each API call, so the console is
//! behind the same tokens as the API (admin actions behind admin tokens).
//!
//! Everything that came from callers (payout ids, memos, reasons, errors) is put into the
//! page as text (`textContent`), never as markup; the Content-Security-Policy allows no
//! inline script and no other origin, so a memo holding markup is shown, never run.

pub mod api;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::http::common::ApiState;

const HTML: &str = include_str!("assets/console.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// Only this origin's own script, style and API; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The console's page and assets (open: they hold no data).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/console",
            get(|| async { asset("text/html; charset=utf-8", HTML) }),
        )
        .route(
            "/console/",
            get(|| async { Redirect::permanent("/console") }),
        )
        .route(
            "/console/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/console/console.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}
