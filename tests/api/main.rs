//! Integration tests: one binary, real PostgreSQL (fresh database per test).

mod admin;
mod catalogue;
mod console;
mod contract;
mod csv;
mod destinations;
mod helpers;
mod http;
mod inbox;
mod journal;
mod limits;
mod nats;
mod reconcile;
mod rpc;
mod secrets;
mod stellar;
mod webhooks;
// The shared test cluster; the rest of tests/support is for process-level tests.
#[path = "../support/pg.rs"]
mod test_pg;
