//! Integration tests: one binary, real PostgreSQL (fresh database per test).

mod admin;
mod catalogue;
mod csv;
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
