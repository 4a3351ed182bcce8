//! Fuzz target: StrKey decoding (`strkey::decode`, `AccountId::parse`,
//! `Destination::parse`) against the official `stellar-strkey` codec, with round trips:
//! whatever decodes encodes back to the very same text, and whatever we encode decodes.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use payoutd_actors::domain::{AccountId, Destination};
use payoutd_actors::strkey::{self, VERSION_ACCOUNT_ID, VERSION_MUXED_ACCOUNT, VERSION_SEED};
use stellar_strkey::ed25519;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Kind {
    Account,
    Muxed,
    Seed,
}

#[derive(Arbitrary, Debug)]
enum Input {
    /// Any text.
    Text(String),
    /// A valid key of some kind, then a few characters replaced.
    Edited {
        kind: Kind,
        key: [u8; 32],
        id: u64,
        edits: Vec<(u8, u8)>,
    },
    /// Any version byte and payload through our encoder.
    Encoded { version: u8, payload: Vec<u8> },
}

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The official codec's reading of `text`: (version, payload) for the three kinds we use.
fn official(text: &str) -> Option<(u8, Vec<u8>)> {
    if let Ok(k) = ed25519::PublicKey::from_string(text) {
        return Some((VERSION_ACCOUNT_ID, k.0.to_vec()));
    }
    if let Ok(m) = ed25519::MuxedAccount::from_string(text) {
        let mut payload = m.ed25519.to_vec();
        payload.extend_from_slice(&m.id.to_be_bytes());
        return Some((VERSION_MUXED_ACCOUNT, payload));
    }
    if let Ok(s) = ed25519::PrivateKey::from_string(text) {
        return Some((VERSION_SEED, s.0.to_vec()));
    }
    None
}

fn check_text(text: &str) {
    let ours = strkey::decode(text).ok();
    assert_eq!(ours, official(text), "{text:?}: ours vs stellar-strkey");
    if let Some((version, payload)) = &ours {
        assert_eq!(strkey::encode(*version, payload), text, "decode→encode");
    }

    match AccountId::parse(text) {
        Ok(a) => {
            assert_eq!(a.to_strkey(), text);
            assert_eq!(ours.as_ref().map(|(v, _)| *v), Some(VERSION_ACCOUNT_ID));
        }
        Err(_) => assert_ne!(ours.as_ref().map(|(v, _)| *v), Some(VERSION_ACCOUNT_ID)),
    }

    match Destination::parse(text) {
        Ok(d) => {
            assert_eq!(d.to_strkey(), text);
            assert!(matches!(
                ours.as_ref().map(|(v, _)| *v),
                Some(VERSION_ACCOUNT_ID | VERSION_MUXED_ACCOUNT)
            ));
            let back = Destination::parse(&d.to_strkey()).expect("canonical form parses");
            assert_eq!(back, d);
        }
        Err(e) => {
            assert!(!matches!(
                ours.as_ref().map(|(v, _)| *v),
                Some(VERSION_ACCOUNT_ID | VERSION_MUXED_ACCOUNT)
            ));
            if text.starts_with('S') {
                assert_eq!(e.code, "destination_is_secret");
            }
            // The message never repeats a key-shaped input (it may be a secret).
            let key_shaped = text.len() >= 16 && text.bytes().all(|b| ALPHABET.contains(&b));
            if key_shaped {
                assert!(!e.message.contains(text) && !e.to_string().contains(text));
            }
        }
    }
}

fuzz_target!(|input: Input| match input {
    Input::Text(text) => check_text(&text),
    Input::Edited {
        kind,
        key,
        id,
        edits,
    } => {
        let valid = match kind {
            Kind::Account => ed25519::PublicKey(key).to_string().as_str().to_owned(),
            Kind::Muxed => ed25519::MuxedAccount { ed25519: key, id }
                .to_string()
                .as_str()
                .to_owned(),
            Kind::Seed => format!("{}", ed25519::PrivateKey(key).as_unredacted()),
        };
        check_text(&valid);
        let mut bytes = valid.clone().into_bytes();
        for (pos, c) in edits.iter().take(4) {
            let pos = usize::from(*pos) % bytes.len();
            bytes[pos] = ALPHABET[usize::from(*c) % ALPHABET.len()];
        }
        let edited = String::from_utf8(bytes).expect("alphabet is ASCII");
        check_text(&edited);
        // One changed character is always caught (CRC16 catches every burst of ≤ 16 bits;
        // a character carries 5).
        if edits.len() == 1 && edited != valid {
            assert!(strkey::decode(&edited).is_err(), "{valid} → {edited}");
        }
    }
    Input::Encoded { version, payload } => {
        let text = strkey::encode(version, &payload);
        let expected_len = match version {
            VERSION_ACCOUNT_ID | VERSION_SEED => Some(32),
            VERSION_MUXED_ACCOUNT => Some(40),
            _ => None,
        };
        match strkey::decode(&text) {
            Ok((v, p)) => {
                assert_eq!((v, &p), (version, &payload));
                assert_eq!(expected_len, Some(payload.len()));
            }
            Err(_) => assert_ne!(expected_len, Some(payload.len())),
        }
        check_text(&text);
    }
});
