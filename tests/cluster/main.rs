//! End-to-end tests of the batch core with real processes: payoutd (`payoutd serve`,
//! Horizon mode, seeds only in its environment) against the ledger simulator in a process
//! of its own (`payoutd simulator`) and the shared test PostgreSQL (a fresh database per
//! test), several payoutd processes on one database where a test needs them.
//!
//! - [`lagging`]: a Horizon node that lags (and a pruned history) never makes payoutd
//!   declare an applied envelope dead, so nothing is paid twice.
//! - [`failover`]: two and three instances with disjoint channel keys; one is killed for
//!   good with work in flight, the survivors settle its envelopes without its keys and
//!   adopt its payouts.
//! - [`unknown_ids`]: reads of unknown payouts spawn no actor.
//! - [`pruning_edge`]: a lookup that misses a transaction as it falls out of a pruned
//!   history proves nothing.
//!
//! The journal is held against the ledger by [`audit`]; the processes, keys and simulator
//! client are tests/support's (shared with tests/crash). Every test is seeded and awaits
//! conditions with bounded waits; a failing test keeps its run folder (logs, simulator
//! state) and prints where it is.

mod audit;
mod failover;
mod lagging;
mod pruning_edge;
#[path = "../support/mod.rs"]
mod support;
mod unknown_ids;
mod world;
