//! The demo's keys: what the built-in simulator and `payoutd reconcile` against it share.

use payoutd_stellar::Keypair;
use sha2::{Digest, Sha256};

/// Demo keys for the built-in simulator: derived from fixed labels, so every fresh run has
/// the same accounts. They exist only on the simulator's own network (its passphrase is not
/// testnet's nor pubnet's), and horizon mode refuses to start without real seeds.
pub fn demo_keypair(label: &str) -> Keypair {
    let seed: [u8; 32] = Sha256::digest(format!("payoutd demo key: {label}").as_bytes()).into();
    let text = payoutd_actors::strkey::encode(payoutd_actors::strkey::VERSION_SEED, &seed);
    // Any 32 bytes are a valid ed25519 seed, and `text` is a well-formed StrKey by construction.
    Keypair::from_seed(&text).expect("a freshly encoded seed always decodes")
}
