//! Signed webhooks: every outbox event, POSTed as JSON to each configured endpoint that
//! wants its kind, at least once and in version order per payout, signed with
//! HMAC-SHA256 over `timestamp.body`; failures retried with backoff, then dead-lettered
//! and replayable (docs/webhooks.md).
//!
//! - [`settings`] — `[webhooks]` and its endpoints; secrets from the environment or files.
//! - [`signature`] — the `Payoutd-Signature` header, and its check as a receiver does it.
//! - [`store`] — every statement on `outbox` and `webhook_deliveries`.
//! - [`deliver`] — the dispatcher: fan-out, one loop per endpoint, retries, metrics.
//! - [`api`] — listing deliveries and replaying them (admin operations).

pub mod api;
pub mod deliver;
pub mod settings;
pub mod signature;

pub use settings::{EndpointSettings, WebhookSettings};
