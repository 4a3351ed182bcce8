//! payoutd: pays Stellar payouts exactly once.
//!
//! Layout (ARCHITECTURE.md has the data flow):
//! - [`config`] — layered settings; secrets from the environment or files only.
//! - [`pg`] — the private PostgreSQL cluster for the out-of-the-box run and the tests.
//! - [`journal`] — the Postgres implementation of the core's `Journal` port.
//! - [`http`] — the HTTP API; [`openapi`] its document; [`metrics`] the Prometheus text.
//! - [`console`] — the operator console at `/console` and the reads it needs.
//! - [`reconcile`] — proves journal and ledger agree (`payoutd reconcile`, and scheduled).
//! - [`telemetry`] — logging setup.
//! - [`webhooks`] — signed webhooks: delivery, retries, dead letters, replay.
//! - [`app`] — wiring it all together (`Application::build`).
//!
//! The payout core (actors, state machine, ports) is the `payoutd-actors` crate; the
//! Stellar adapter is `payoutd-stellar`; the ledger simulator is `payoutd-simulator`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod config;
pub mod console;
pub mod csv_submit;
pub mod http;
pub mod inbox;
pub mod ingress;
pub mod journal;
pub mod metrics;
pub mod nats;
pub mod openapi;
pub mod outbox;
pub mod pg;
pub mod reconcile;
pub mod rpc_config;
pub mod telemetry;
pub mod webhooks;
