//! payoutd: pays Stellar payouts exactly once.
//!
//! Layout (ARCHITECTURE.md has the data flow and who owns what):
//! - [`app`] — wiring it all together (`Application::build`); `app::startup` the database
//!   and the start-up errors, `app::demo` the demo's keys.
//! - [`config`] — layered settings; secrets from the environment or files only; its
//!   `base` is what every section shares, its `ledger` the `[ledger]` section and the
//!   checks of the Stellar RPC settings.
//! - [`storage`] — every SQL statement: the Postgres implementation of the core's ports
//!   (`Journal`, `PayoutReads`) and the tables of the inbox, outbox, dead letters,
//!   webhooks, console and reconciliation.
//! - [`local_postgres`] — the private PostgreSQL cluster for the out-of-the-box run and the
//!   tests.
//! - [`http`] — the HTTP API (`http::common`: what every part of it shares); [`admin`] its
//!   admin part (`admin::auth`: admin tokens and the reason of an action); [`openapi`] its
//!   document;
//!   [`metrics`] the Prometheus text; [`ingress`] what every ingress shares.
//! - [`inbox`] — the Postgres inbox; [`nats`] the JetStream consumer; [`outbox`] the
//!   JetStream event publisher; [`webhooks`] signed webhooks.
//! - [`console`] — the operator console at `/console` and the reads it needs.
//! - [`reconcile`] — proves journal and ledger agree (`payoutd reconcile`, and scheduled).
//! - [`cli`] — the command-line tools (`payoutd submit`, `payoutd admin`).
//! - [`telemetry`] — logging setup; [`worker`] what the background workers share.
//!
//! The payout core (actors, state machine, ports) is the `payoutd-actors` crate; the
//! Stellar adapter is `payoutd-stellar`; the ledger simulator is `payoutd-simulator`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod console;

pub mod http;
pub mod inbox;
pub mod ingress;
pub mod local_postgres;
pub mod metrics;
pub mod nats;
pub mod openapi;
pub mod outbox;
pub mod reconcile;
pub mod storage;
pub mod telemetry;
pub mod webhooks;
pub mod worker;
