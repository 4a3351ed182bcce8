//! The signature of a webhook delivery: the header
//! `Payoutd-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, one
//! `v1=` per secret while secrets rotate. The receiver recomputes the HMAC over the
//! timestamp, a dot and the raw body with its secret, compares in constant time, and
//! rejects a timestamp older than its tolerance (a replayed capture then fails).
//! docs/webhooks.md shows it in Python and Node.

use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Payoutd-Signature";
/// The header that carries the event id (also in the body): the same on every attempt.
pub const EVENT_ID_HEADER: &str = "Payoutd-Event-Id";
/// The header that counts attempts of this delivery, from 1.
pub const ATTEMPT_HEADER: &str = "Payoutd-Delivery-Attempt";

type HmacSha256 = hmac::Hmac<sha2_hmac::Sha256>;

/// The hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The value of [`SIGNATURE_HEADER`] for `body` sent at `timestamp`.
pub fn header_value(secrets: &[SecretString], timestamp: u64, body: &[u8]) -> String {
    let mut value = format!("t={timestamp}");
    for s in secrets {
        value.push_str(",v1=");
        value.push_str(&sign(s.expose_secret().as_bytes(), timestamp, body));
    }
    value
}

/// Checks a header value as a receiver would: some `v1` matches `secret` and the
/// timestamp is within `tolerance_s` of `now`. (payoutd never receives webhooks; this is
/// the reference the docs and the tests hold receivers to.)
pub fn verify(header: &str, secret: &[u8], body: &[u8], now: u64, tolerance_s: u64) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<u64>().ok(),
            Some(("v1", v)) => signatures.push(v),
            _ => {}
        }
    }
    let Some(t) = timestamp else { return false };
    if now.abs_diff(t) > tolerance_s {
        return false;
    }
    let expected = sign(secret, t, body);
    signatures
        .iter()
        .any(|s| crate::http::common::constant_time_eq(s.as_bytes(), expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_rfc_4231_test_case_2() {
        // HMAC-SHA256(key "Jefe", "what do ya want for nothing?").
        let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // The signed message is "<t>.<body>": the same vector, framed.
        assert_eq!(sign(b"Jefe", 1, b"what do ya want for nothing?"), {
            let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
            mac.update(b"1.what do ya want for nothing?");
            hex::encode(mac.finalize().into_bytes())
        });
    }

    #[test]
    fn verifies_and_rejects() {
        let secrets = [
            SecretString::from("old-secret-0123456789".to_owned()),
            SecretString::from("new-secret-0123456789".to_owned()),
        ];
        let body = br#"{"event_id":"p-1:3"}"#;
        let h = header_value(&secrets, 1_800_000_000, body);
        assert!(h.starts_with("t=1800000000,v1="));
        assert_eq!(h.matches("v1=").count(), 2);
        for s in &secrets {
            assert!(verify(
                &h,
                s.expose_secret().as_bytes(),
                body,
                1_800_000_100,
                300
            ));
        }
        assert!(!verify(
            &h,
            b"another-secret-0000000",
            body,
            1_800_000_000,
            300
        ));
        assert!(!verify(
            &h,
            b"new-secret-0123456789",
            b"{}",
            1_800_000_000,
            300
        ));
        // Too old: a replayed capture.
        assert!(!verify(
            &h,
            b"new-secret-0123456789",
            body,
            1_800_000_301,
            300
        ));
        assert!(!verify("v1=abc", b"new-secret-0123456789", body, 0, 300));
    }
}
