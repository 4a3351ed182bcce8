//! Integration tests: one binary, real PostgreSQL (fresh database per test).

mod helpers;
mod journal;
mod stellar;
