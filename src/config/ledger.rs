//! `[ledger]`: which ledger payoutd pays on (the built-in simulator, Horizon, or Stellar
//! RPC, docs/rpc.md), the keys' sources, and the checks of the RPC settings.

use std::path::PathBuf;

use payoutd_stellar::RpcTimeouts;
use secrecy::SecretString;
use serde::Deserialize;

use super::base::InvalidSetting;

/// Where payoutd pays: the built-in simulator, a Horizon server, or a Stellar RPC server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerMode {
    Simulator,
    Horizon,
    /// Stellar RPC at `ledger.rpc_url` (docs/rpc.md).
    Rpc,
}

/// Which of its two interfaces payoutd uses to talk to the built-in simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimulatorProtocol {
    Horizon,
    Rpc,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSettings {
    pub mode: LedgerMode,
    pub horizon_url: String,
    pub network_passphrase: String,
    pub request_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// `mode = "rpc"`: the Stellar RPC endpoint (may carry a provider's key: never shown).
    pub rpc_url: String,
    pub rpc_timeout_ms: u64,
    pub rpc_connect_timeout_ms: u64,
    pub rpc_retry_after_max_ms: u64,
    pub distribution_account: String,
    pub channel_accounts: Vec<String>,
    #[serde(default)]
    pub distribution_seed_file: Option<PathBuf>,
    #[serde(default)]
    pub channel_seeds_file: Option<PathBuf>,
    /// From the environment or `distribution_seed_file`, never from a config file.
    #[serde(skip)]
    pub distribution_seed: Option<SecretString>,
    #[serde(skip)]
    pub channel_seeds: Vec<SecretString>,
    pub simulator: SimulatorSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorSettings {
    pub close_interval_ms: u64,
    pub listen: String,
    pub state_file: PathBuf,
    pub channels: u32,
    pub ops_per_ledger_max: u32,
    /// The interface payoutd speaks to the built-in simulator (it serves both).
    pub protocol: SimulatorProtocol,
}

/// Checks the RPC settings of `ledger.mode = "rpc"`: the offending key and why. Never quotes
/// the URL (it may carry a provider's key). `signs`: the command pays (a read-only one such
/// as `payoutd reconcile` needs no seed).
pub fn validate_rpc(ledger: &LedgerSettings, signs: bool) -> Result<(), InvalidSetting> {
    let url = ledger.rpc_url.trim();
    if url.is_empty() {
        return Err(InvalidSetting::new(
            "ledger.rpc_url",
            "is required when ledger.mode = \"rpc\" (to use the built-in simulator over RPC instead, \
             keep ledger.mode = \"simulator\" and set ledger.simulator.protocol = \"rpc\")",
        ));
    }
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.fragment().is_none() => {}
        Ok(_) => {
            return Err(InvalidSetting::new(
                "ledger.rpc_url",
                "must be an http:// or https:// URL without a #fragment",
            ));
        }
        Err(e) => {
            return Err(InvalidSetting::new(
                "ledger.rpc_url",
                format!("is not a URL: {e}"),
            ));
        }
    }
    for (key, value) in [
        ("ledger.rpc_timeout_ms", ledger.rpc_timeout_ms),
        (
            "ledger.rpc_connect_timeout_ms",
            ledger.rpc_connect_timeout_ms,
        ),
        (
            "ledger.rpc_retry_after_max_ms",
            ledger.rpc_retry_after_max_ms,
        ),
    ] {
        if value == 0 {
            return Err(InvalidSetting::new(
                key,
                "must be at least 1 (milliseconds)",
            ));
        }
    }
    if signs && ledger.distribution_seed.is_none() {
        return Err(InvalidSetting::new(
            "ledger.distribution_seed",
            "is required in rpc mode: set PAYOUTD__LEDGER__DISTRIBUTION_SEED or ledger.distribution_seed_file",
        ));
    }
    Ok(())
}

/// The RPC client's timeouts from `[ledger]`.
pub fn rpc_timeouts(ledger: &LedgerSettings) -> RpcTimeouts {
    RpcTimeouts {
        rpc_timeout_ms: ledger.rpc_timeout_ms,
        rpc_connect_timeout_ms: ledger.rpc_connect_timeout_ms,
        rpc_retry_after_max_ms: ledger.rpc_retry_after_max_ms,
    }
}

/// The built-in simulator's JSON-RPC endpoint, from its base URL.
pub fn simulator_rpc_url(base_url: &str) -> String {
    format!("{}/rpc", base_url.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::config::tests::env;

    const SEED: &str = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";

    #[test]
    fn rpc_mode_needs_a_url_and_names_the_key() {
        let err = Settings::load(
            None,
            env(&[
                ("PAYOUTD__LEDGER__MODE", "rpc"),
                ("PAYOUTD__LEDGER__DISTRIBUTION_SEED", SEED),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ledger.rpc_url"), "{err}");
        assert!(err.contains("ledger.simulator.protocol"), "{err}");
    }

    #[test]
    fn rpc_mode_refuses_bad_urls_without_quoting_them() {
        for url in [
            "ftp://user:hunter2@rpc.example.com",
            "https://rpc.example.com/key-hunter2#frag",
            "not a url hunter2",
        ] {
            let err = Settings::load(
                None,
                env(&[
                    ("PAYOUTD__LEDGER__MODE", "rpc"),
                    ("PAYOUTD__LEDGER__RPC_URL", url),
                    ("PAYOUTD__LEDGER__DISTRIBUTION_SEED", SEED),
                ]),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("ledger.rpc_url"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn rpc_mode_needs_positive_bounds_and_a_seed() {
        let err = Settings::load(
            None,
            env(&[
                ("PAYOUTD__LEDGER__MODE", "rpc"),
                ("PAYOUTD__LEDGER__RPC_URL", "https://rpc.example.com"),
                ("PAYOUTD__LEDGER__RPC_TIMEOUT_MS", "0"),
                ("PAYOUTD__LEDGER__DISTRIBUTION_SEED", SEED),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ledger.rpc_timeout_ms"), "{err}");
        let err = Settings::load(
            None,
            env(&[
                ("PAYOUTD__LEDGER__MODE", "rpc"),
                ("PAYOUTD__LEDGER__RPC_URL", "https://rpc.example.com"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ledger.distribution_seed"), "{err}");
    }

    #[test]
    fn rpc_mode_loads() {
        let s = Settings::load(
            None,
            env(&[
                ("PAYOUTD__LEDGER__MODE", "rpc"),
                (
                    "PAYOUTD__LEDGER__RPC_URL",
                    "https://u:p@rpc.example.com/k?apikey=x",
                ),
                ("PAYOUTD__LEDGER__DISTRIBUTION_SEED", SEED),
            ]),
        )
        .unwrap();
        assert_eq!(s.ledger.mode, LedgerMode::Rpc);
        assert_eq!(s.ledger.rpc_timeout_ms, 10_000);
    }

    #[test]
    fn the_simulator_speaks_horizon_unless_told() {
        let s = Settings::load(None, env(&[])).unwrap();
        assert_eq!(s.ledger.simulator.protocol, SimulatorProtocol::Horizon);
        let s = Settings::load(
            None,
            env(&[("PAYOUTD__LEDGER__SIMULATOR__PROTOCOL", "rpc")]),
        )
        .unwrap();
        assert_eq!(s.ledger.simulator.protocol, SimulatorProtocol::Rpc);
        let err = Settings::load(
            None,
            env(&[("PAYOUTD__LEDGER__SIMULATOR__PROTOCOL", "soap")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("protocol"), "{err}");
    }
}
