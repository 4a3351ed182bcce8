//! Integration tests: one binary, real PostgreSQL (fresh database per test).

mod admin;
mod catalogue;
mod contract;
mod csv;
mod helpers;
mod http;
mod inbox;
mod journal;
mod limits;
mod nats;
mod secrets;
mod stellar;
