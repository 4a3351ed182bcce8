//! What the test binaries that run payoutd as real processes share (tests/crash,
//! tests/cluster), and the test database the in-process ones use too (tests/api): the
//! processes (PostgreSQL, the ledger simulator, NATS, payoutd), the run's keys, the
//! simulator's admin client, and a fresh database per test in the shared cluster.
//!
//! A process-level binary includes this folder with `#[path = "../support/mod.rs"] mod
//! support;`; tests/api takes only `pg.rs`.

// Each binary uses only part of it.
#![allow(dead_code)]

pub mod keys;
pub mod pg;
pub mod procs;
pub mod simadmin;
