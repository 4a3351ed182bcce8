//! Integration tests: one binary, real PostgreSQL (fresh database per test).

mod helpers;
mod http;
mod inbox;
mod journal;
mod secrets;
mod stellar;
