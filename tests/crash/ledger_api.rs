//! Which ledger interface each payoutd of the run speaks: Horizon or Stellar RPC, both
//! served by the one simulator (one ledger, one set of faults). With one instance on each,
//! a payout's envelope may be sent over one interface and settled over the other, after a
//! kill or a takeover.
//!
//! Chosen from the seed (so a rerun repeats it), or by `PAYOUTD_CRASH_LEDGER`: `horizon`,
//! `rpc`, `mixed` (the main instance over Horizon, the second over RPC) or `mixed-rpc` (the
//! other way round).

use std::fmt;

pub const ENV_LEDGER: &str = "PAYOUTD_CRASH_LEDGER";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerApi {
    Horizon,
    Rpc,
}

impl fmt::Display for LedgerApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Horizon => "Horizon",
            Self::Rpc => "Stellar RPC",
        })
    }
}

/// The interface of the main instance and of the second one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Apis {
    pub main: LedgerApi,
    pub twin: LedgerApi,
}

impl Apis {
    pub fn choose(seed: u64) -> Self {
        use LedgerApi::{Horizon, Rpc};
        let (main, twin) = match std::env::var(ENV_LEDGER).ok().as_deref().map(str::trim) {
            None | Some("") => match seed % 4 {
                0 => (Horizon, Horizon),
                1 => (Rpc, Rpc),
                2 => (Horizon, Rpc),
                _ => (Rpc, Horizon),
            },
            Some("horizon") => (Horizon, Horizon),
            Some("rpc") => (Rpc, Rpc),
            Some("mixed") => (Horizon, Rpc),
            Some("mixed-rpc") => (Rpc, Horizon),
            Some(other) => {
                panic!("{ENV_LEDGER}={other:?}: expected horizon, rpc, mixed or mixed-rpc")
            }
        };
        Self { main, twin }
    }

    /// What the report and the rerun command say.
    pub fn name(&self) -> &'static str {
        use LedgerApi::{Horizon, Rpc};
        match (self.main, self.twin) {
            (Horizon, Horizon) => "horizon",
            (Rpc, Rpc) => "rpc",
            (Horizon, Rpc) => "mixed",
            (Rpc, Horizon) => "mixed-rpc",
        }
    }
}

/// Points one payoutd's environment at the simulator over `api`.
pub fn apply(env: &mut Vec<(String, String)>, api: LedgerApi, simulator_url: &str) {
    env.retain(|(k, _)| {
        !matches!(
            k.as_str(),
            "PAYOUTD__LEDGER__MODE"
                | "PAYOUTD__LEDGER__RPC_URL"
                | "PAYOUTD__LEDGER__RPC_TIMEOUT_MS"
        )
    });
    let set = |env: &mut Vec<(String, String)>, k: &str, v: String| env.push((k.to_owned(), v));
    match api {
        LedgerApi::Horizon => set(env, "PAYOUTD__LEDGER__MODE", "horizon".into()),
        LedgerApi::Rpc => {
            set(env, "PAYOUTD__LEDGER__MODE", "rpc".into());
            set(
                env,
                "PAYOUTD__LEDGER__RPC_URL",
                format!("{}/rpc", simulator_url.trim_end_matches('/')),
            );
            set(env, "PAYOUTD__LEDGER__RPC_TIMEOUT_MS", "4000".into());
        }
    }
}
