//! The run's accounts, derived from a namespace (one per test binary) and the run seed: the
//! distribution account and the channel accounts (whose secret seeds reach payoutd only
//! through its environment), the issuer of the test asset, the destinations, and "ghost"
//! keys that never get an account.

use payoutd_actors::domain::AccountId;
use payoutd_stellar::Keypair;
use sha2::{Digest, Sha256};

/// Code of the credit asset the run pays besides XLM.
pub const ASSET_CODE: &str = "USDC";

/// A key pair as the harness needs it: the secret seed (`S…`) to hand to payoutd, and the
/// account id.
#[derive(Clone)]
pub struct Key {
    pub seed: String,
    pub account: AccountId,
}

impl Key {
    /// The key for `label` in the run `run_seed` of the tests named `namespace`.
    pub fn derive(namespace: &str, run_seed: u64, label: &str) -> Self {
        let bytes: [u8; 32] =
            Sha256::digest(format!("{namespace}|{run_seed}|{label}").as_bytes()).into();
        let seed = payoutd_actors::strkey::encode(payoutd_actors::strkey::VERSION_SEED, &bytes);
        // Any 32 bytes are an ed25519 seed and `seed` was just encoded: it always decodes.
        let account = Keypair::from_seed(&seed)
            .expect("a freshly encoded seed decodes")
            .account();
        Self { seed, account }
    }

    pub fn id(&self) -> String {
        self.account.to_strkey()
    }
}

/// A destination account that exists on the ledger.
pub struct Destination {
    pub key: Key,
    /// Holds a trustline to the test asset.
    pub trusts_asset: bool,
}

pub struct Accounts {
    pub distribution: Key,
    pub channels: Vec<Key>,
    pub issuer: Key,
    pub destinations: Vec<Destination>,
    pub ghosts: Vec<Key>,
}

/// How many accounts of each kind a run has.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub channels: usize,
    pub destinations: usize,
    pub ghosts: usize,
}

impl Accounts {
    pub fn derive(namespace: &str, run_seed: u64, shape: Shape) -> Self {
        let key = |label: &str| Key::derive(namespace, run_seed, label);
        Self {
            distribution: key("distribution"),
            channels: (0..shape.channels)
                .map(|i| key(&format!("channel {i}")))
                .collect(),
            issuer: key("issuer"),
            destinations: (0..shape.destinations)
                .map(|i| Destination {
                    key: key(&format!("destination {i}")),
                    trusts_asset: i % 2 == 0,
                })
                .collect(),
            ghosts: (0..shape.ghosts)
                .map(|i| key(&format!("ghost {i}")))
                .collect(),
        }
    }

    /// `CODE:ISSUER` of the test asset.
    pub fn asset(&self) -> String {
        format!("{ASSET_CODE}:{}", self.issuer.id())
    }

    /// `PAYOUTD__LEDGER__CHANNEL_SEEDS`: comma-separated secret seeds.
    pub fn channel_seeds(&self) -> String {
        seeds_of(&self.channels)
    }
}

/// `PAYOUTD__LEDGER__CHANNEL_SEEDS` for some of the channels: comma-separated secret seeds.
pub fn seeds_of(keys: &[Key]) -> String {
    keys.iter()
        .map(|c| c.seed.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// `PAYOUTD__LEDGER__CHANNEL_ACCOUNTS` for some of the channels: a TOML array of account ids.
pub fn accounts_of(keys: &[Key]) -> String {
    let ids: Vec<String> = keys.iter().map(|k| format!("\"{}\"", k.id())).collect();
    format!("[{}]", ids.join(","))
}
