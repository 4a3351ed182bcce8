//! The run's accounts, derived from the run seed: the distribution account and the channel
//! accounts (whose secret seeds reach payoutd only through its environment), the issuer of
//! the test asset, the destinations, and "ghost" keys that never get an account.

use payoutd_actors::domain::AccountId;
use payoutd_stellar::Keypair;
use sha2::{Digest, Sha256};

use crate::config::{CHANNELS, DESTINATIONS, GHOSTS};

/// Code of the credit asset the run pays besides XLM.
pub const ASSET_CODE: &str = "USDC";

/// A key pair as the harness needs it: the secret seed (`S…`) to hand to payoutd, and the
/// account id.
pub struct Key {
    pub seed: String,
    pub account: AccountId,
}

impl Key {
    /// The key for `label` in the run `run_seed`.
    pub fn derive(run_seed: u64, label: &str) -> Self {
        let bytes: [u8; 32] =
            Sha256::digest(format!("payoutd crash harness|{run_seed}|{label}").as_bytes()).into();
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

impl Accounts {
    pub fn derive(run_seed: u64) -> Self {
        Self {
            distribution: Key::derive(run_seed, "distribution"),
            channels: (0..CHANNELS)
                .map(|i| Key::derive(run_seed, &format!("channel {i}")))
                .collect(),
            issuer: Key::derive(run_seed, "issuer"),
            destinations: (0..DESTINATIONS)
                .map(|i| Destination {
                    key: Key::derive(run_seed, &format!("destination {i}")),
                    trusts_asset: i % 2 == 0,
                })
                .collect(),
            ghosts: (0..GHOSTS)
                .map(|i| Key::derive(run_seed, &format!("ghost {i}")))
                .collect(),
        }
    }

    /// `CODE:ISSUER` of the test asset.
    pub fn asset(&self) -> String {
        format!("{ASSET_CODE}:{}", self.issuer.id())
    }

    /// `PAYOUTD__LEDGER__CHANNEL_SEEDS`: comma-separated secret seeds.
    pub fn channel_seeds(&self) -> String {
        self.channels
            .iter()
            .map(|c| c.seed.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}
