//! Fuzz target: a payout request as the broker or the inbox delivers it (raw bytes) through
//! `payoutd::ingress::parse_message`, compared with the core's own path (JSON →
//! `RawPayoutRequest` → `parse()`). What parses round-trips through its canonical raw form
//! with the same fingerprint; what is refused says why without repeating a secret seed;
//! and `redact_secrets` leaves no valid seed behind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use payoutd::ingress::{MESSAGE_BYTES_MAX, parse_message, redact_secrets};
use payoutd_actors::domain::{PAYOUT_ID_LEN_MAX, RawPayoutRequest};
use payoutd_actors::strkey;

/// Length of a StrKey of a 32-byte key (`G…`, `S…`).
const STRKEY_LEN: usize = 56;

/// Every valid secret seed that appears anywhere in `text`.
fn seeds_in(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(STRKEY_LEN - 1))
        .filter(|&i| bytes[i] == b'S')
        .filter_map(|i| std::str::from_utf8(&bytes[i..i + STRKEY_LEN]).ok())
        .filter(|window| strkey::decode_seed(window).is_ok())
        .map(str::to_owned)
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let ingress = parse_message(data);

    // The core's path, for messages within the size limit that are UTF-8 JSON.
    let core = (data.len() <= MESSAGE_BYTES_MAX)
        .then(|| std::str::from_utf8(data).ok())
        .flatten()
        .map(|text| serde_json::from_str::<RawPayoutRequest>(text).map(|raw| raw.parse()));
    match (&ingress, &core) {
        (Ok(request), Some(Ok(Ok(core_request)))) => assert_eq!(request, core_request),
        (Err((code, _)), Some(Ok(Err(e)))) => assert_eq!(code, e.code),
        (Err((code, _)), Some(Err(_))) => assert_eq!(code, "invalid_body"),
        (Err((code, _)), None) => {
            assert!(
                code == "message_too_large" || code == "invalid_utf8",
                "{code}"
            )
        }
        _ => panic!("ingress and core disagree: {ingress:?}"),
    }

    match &ingress {
        Ok(request) => {
            let raw = request.raw();
            let again = raw.parse().expect("the canonical raw form parses");
            assert_eq!(&again, request);
            assert_eq!(again.fingerprint(), request.fingerprint());
            let json = serde_json::to_vec(&raw).expect("serialises");
            assert_eq!(parse_message(&json).as_ref().ok(), Some(request));
            let id = request.payout_id().as_str();
            assert!(!id.is_empty() && id.chars().count() <= PAYOUT_ID_LEN_MAX);
            assert!(request.amount().stroops() > 0);
        }
        Err((code, reason)) => {
            assert!(!code.is_empty());
            let leaked = seeds_in(reason);
            assert!(
                leaked.is_empty(),
                "the refusal repeats a secret seed: {reason:?}"
            );
        }
    }

    if let Ok(text) = std::str::from_utf8(data) {
        let redacted = redact_secrets(text);
        let leaked = seeds_in(&redacted);
        assert!(leaked.is_empty(), "a seed survives redaction: {redacted:?}");
    }
});
