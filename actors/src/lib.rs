//! The payout core: domain types, the payout state machine, the per-payout actor and its
//! supervisor, the channel workers that batch payouts into Stellar transactions, the proof
//! of death, the cluster bookkeeping, and the ports (journal, ledger) they drive. No SQL and
//! no HTTP live here. docs/protocol.md describes the protocol this crate implements.
//!
//! Layout:
//! - [`error_code`]: the one vocabulary of error codes every ingress answers with.
//! - [`domain`]: request types parsed at the boundary (ids, StrKeys, amounts in stroops);
//!   [`strkey`]: Stellar's base32 key encoding with its CRC16 checksum.
//! - [`state`]: where a payout stands and the steps that move it (pure).
//! - [`ports`]: the `Journal`, `PayoutReads` and `Ledger` traits and the records they
//!   exchange.
//! - [`proof`]: when an envelope is provably dead, over facts that carry their ledger.
//! - [`policy`]: the bounds and the result-code tables; [`destinations`]: what pays a
//!   destination that has no trustline or no account yet.
//! - [`messages`]: what the payout actors and their supervisor are sent and answer
//!   (`PayoutError` and its code, `SubmitAnswer`).
//! - [`payout`]: the per-payout actor (accept, duplicate, conflict, cancel, resume);
//!   [`supervisor`]: routes to it, restarts it, passivates it.
//! - [`queue`]: accepted payouts waiting for a batch, in memo lanes.
//! - [`channel`]: one worker per channel account: batch, journal, submit, settle.
//! - [`cluster`]: heartbeats, channel leases, orphans; the workers' supervisor.
//! - [`context`]: what they all share; [`service`]: `Payouts`, the handle ingresses use.
//! - [`safety`]: the cluster-wide pause and the circuit breaker that pulls it.
//! - [`metrics`]: counters and gauges.
//! - `memory` (feature `test-support`): in-memory journal and ledger for tests and benches.
#![forbid(unsafe_code)]

pub mod channel;
pub mod cluster;
pub mod context;
pub mod destinations;
pub mod domain;
pub mod error_code;
pub mod limits;
#[cfg(feature = "test-support")]
pub mod memory;
pub mod messages;
pub mod metrics;
pub mod payout;
pub mod policy;
pub mod ports;
pub mod proof;
pub mod queue;
pub mod safety;
pub mod service;
pub mod state;
pub mod strkey;
pub mod supervisor;

pub use cluster::ClusterConfig;
pub use context::Context;
pub use error_code::ErrorCode;
pub use messages::{PayoutError, SubmitAnswer};
pub use policy::PayoutPolicy;
pub use service::{Payouts, ServiceConfig};
pub use supervisor::SupervisorConfig;
