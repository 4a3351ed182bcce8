//! The payout core: domain types, the payout state machine, the per-payout actor and its
//! supervisor, and the ports (journal, ledger) they drive. No SQL and no HTTP live here.
//!
//! Layout:
//! - [`domain`]: request types parsed at the boundary (ids, StrKeys, amounts in stroops).
//! - [`strkey`]: Stellar's base32 key encoding with its CRC16 checksum.
//! - [`ports`]: the `Journal` and `Ledger` traits and the records they exchange.
#![forbid(unsafe_code)]

pub mod actor;
pub mod domain;
pub mod memory;
pub mod metrics;
pub mod ports;
pub mod service;
pub mod strkey;
pub mod supervisor;

pub use actor::{Context, PayoutError, PayoutPolicy, SubmitAnswer};
pub use service::Payouts;
pub use supervisor::SupervisorConfig;
