//! What every message-driven ingress (NATS, the Postgres inbox, CSV files) shares: parse a
//! raw payout request, hand it to the payout core, and dead-letter what cannot be accepted
//! — with its reason, its payload redacted of anything that looks like a secret seed. HTTP
//! requests that name their sender (`Payoutd-Source`, e.g. the BullMQ worker) are
//! dead-lettered the same way when they are refused.

use payoutd_actors::ErrorCode;
use payoutd_actors::domain::{JsonRequestError, PayoutRequest, RawPayoutRequest, ValidationError};
use payoutd_actors::state::PayoutState;
use payoutd_actors::{Payouts, SubmitAnswer};
use sqlx::{Executor, Postgres};

use crate::storage::dead_letters::{self, DeadLetter};

/// Largest message accepted from a broker or the inbox, in bytes.
pub const MESSAGE_BYTES_MAX: usize = 16 * 1024;

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// A new payout is durable.
    Created(PayoutState),
    /// Already known, same content: nothing written.
    Duplicate(PayoutState),
    /// Refused for good: dead-letter it with this code and reason.
    Rejected { code: ErrorCode, reason: String },
    /// Not durable and not refused (database down, overloaded): do not acknowledge; the
    /// message comes back.
    Retry(String),
}

impl IngestOutcome {
    /// True when the message may be acknowledged/removed (durable, or dead-lettered).
    pub fn is_final(&self) -> bool {
        !matches!(self, Self::Retry(_))
    }
}

/// Parses a raw message: size, UTF-8, JSON shape (no unknown fields), every field.
pub fn parse_message(bytes: &[u8]) -> Result<PayoutRequest, (ErrorCode, String)> {
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err((
            ErrorCode::MessageTooLarge,
            format!("message is larger than {MESSAGE_BYTES_MAX} bytes"),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| {
        (
            ErrorCode::InvalidUtf8,
            "message is not valid UTF-8".to_owned(),
        )
    })?;
    let field = |e: ValidationError| (e.code, format!("{}: {}", e.field, e.message));
    let raw = RawPayoutRequest::from_json_slice(text.as_bytes()).map_err(|e| match e {
        JsonRequestError::Body(detail) => (
            ErrorCode::InvalidBody,
            format!("not a valid payout request: {}", redact_secrets(&detail)),
        ),
        JsonRequestError::Field(e) => field(e),
    })?;
    raw.parse().map_err(field)
}

/// Hands one raw message to the core.
pub async fn ingest(payouts: &Payouts, bytes: &[u8]) -> IngestOutcome {
    let request = match parse_message(bytes) {
        Ok(r) => r,
        Err((code, reason)) => return IngestOutcome::Rejected { code, reason },
    };
    match payouts.submit(request).await {
        Ok(SubmitAnswer::Created(r)) => IngestOutcome::Created(r.state),
        Ok(SubmitAnswer::Duplicate(r)) => IngestOutcome::Duplicate(r.state),
        Err(e) => match e.code() {
            code if code.is_transient() => IngestOutcome::Retry(e.to_string()),
            code @ ErrorCode::PayoutConflict => IngestOutcome::Rejected {
                code,
                reason: e.to_string(),
            },
            // Not found, not cancellable, not parked: no answer a submission can give.
            _ => IngestOutcome::Rejected {
                code: ErrorCode::Unexpected,
                reason: e.to_string(),
            },
        },
    }
}

/// Records a dead letter (in the caller's transaction if `executor` is one). Text columns
/// cannot hold NUL: a NUL in the payload, reason or reference is stored as U+FFFD, so a
/// refusal is always recordable.
pub async fn dead_letter<'e>(
    executor: impl Executor<'e, Database = Postgres>,
    source: &str,
    source_ref: Option<&str>,
    payload: &[u8],
    code: ErrorCode,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let text = stored_payload(payload);
    let source_ref = source_ref.map(storable);
    let letter = DeadLetter {
        source,
        source_ref: source_ref.as_deref(),
        payload: &text,
        code: code.as_str(),
        reason: &storable(reason),
    };
    dead_letters::insert(executor, letter).await
}

/// A payload as a dead letter stores it: cut at [`MESSAGE_BYTES_MAX`], redacted of secret
/// seeds, without NUL. A redelivery looks its row up by this text.
pub fn stored_payload(payload: &[u8]) -> String {
    let payload = &payload[..payload.len().min(MESSAGE_BYTES_MAX)];
    storable(&redact_secrets(&String::from_utf8_lossy(payload)))
}

/// `text` without NUL characters (PostgreSQL text cannot hold them): each becomes U+FFFD.
pub fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// Sender names a client may give in the `Payoutd-Source` header of an HTTP request. The
/// dead letter of a refused request is filed under the name given if it is one of these
/// (compared ignoring ASCII case), else under [`HTTP_SOURCE_OTHER`]: callers never write
/// source names of their own choosing into `dead_letters`.
pub const HTTP_SOURCES: &[&str] = &["bullmq"];
/// Source of the dead letter of a request whose `Payoutd-Source` is not in [`HTTP_SOURCES`].
pub const HTTP_SOURCE_OTHER: &str = "http";
/// Longest `Payoutd-Source-Ref` kept, in bytes; a longer one is cut at a character boundary.
pub const SOURCE_REF_BYTES_MAX: usize = 256;

/// Records the dead letter of an HTTP payout request refused with a 4xx, for a request that
/// named its sender: `source` is the `Payoutd-Source` header, `source_ref` the
/// `Payoutd-Source-Ref` header (e.g. `payouts:1234`, queue and job id), both as sent.
/// The body is stored redacted like any dead letter (and cut at [`MESSAGE_BYTES_MAX`]).
pub async fn dead_letter_http_rejection<'e>(
    executor: impl Executor<'e, Database = Postgres>,
    source: &[u8],
    source_ref: Option<&[u8]>,
    body: &[u8],
    code: ErrorCode,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let source = HTTP_SOURCES
        .iter()
        .find(|s| s.as_bytes().eq_ignore_ascii_case(source))
        .copied()
        .unwrap_or(HTTP_SOURCE_OTHER);
    let source_ref = source_ref.map(|r| {
        // Header bytes are not necessarily UTF-8; control characters are dropped.
        let text: String = String::from_utf8_lossy(r)
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        let mut end = text.len().min(SOURCE_REF_BYTES_MAX);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        redact_secrets(&text[..end])
    });
    dead_letter(
        executor,
        source,
        source_ref.as_deref(),
        body,
        code,
        &redact_secrets(reason),
    )
    .await
}

/// Replaces every 56-character window that decodes as a Stellar secret seed (`S…` with a
/// valid checksum), whatever surrounds it, and every other run of 56 or more base32
/// characters that starts with `S`, so a secret sent by mistake is never stored or echoed.
pub fn redact_secrets(text: &str) -> String {
    const MARK: &str = "[redacted secret seed]";
    let bytes = text.as_bytes();
    let is_b32 = |b: u8| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b);
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'S' {
            let run = bytes[i..].iter().take_while(|b| is_b32(**b)).count();
            // A valid seed anywhere inside the run (the run may carry extra characters).
            if run >= 56 {
                out.push_str(MARK);
                i += run;
                continue;
            }
        }
        if is_b32(bytes[i]) {
            // A seed may start inside a longer base32 run: check each window.
            let run = bytes[i..].iter().take_while(|b| is_b32(**b)).count();
            if run >= 56 {
                let window_hits = (0..=run - 56).any(|k| {
                    bytes[i + k] == b'S'
                        && payoutd_actors::strkey::decode_seed(&text[i + k..i + k + 56]).is_ok()
                });
                if window_hits {
                    out.push_str(MARK);
                    i += run;
                    continue;
                }
            }
            out.push_str(&text[i..i + run.max(1)]);
            i += run.max(1);
            continue;
        }
        // Copy one UTF-8 character.
        let ch_len = text[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&text[i..i + ch_len]);
        i += ch_len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";

    #[test]
    fn seeds_are_redacted() {
        let text = format!(r#"{{"destination":"{SEED}","memo":"é"}}"#);
        let red = redact_secrets(&text);
        assert!(!red.contains(SEED));
        assert!(red.contains("[redacted secret seed]"));
        assert!(red.contains('é'));
        // Account ids stay.
        let g = "GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2";
        assert_eq!(redact_secrets(g), g);
    }

    #[test]
    fn seeds_inside_longer_runs_are_redacted() {
        for text in [
            format!("X{SEED}"),
            format!("{SEED}2"),
            format!("AB{SEED}CD"),
            format!("\"memo\": \"{SEED}2\""),
        ] {
            let red = redact_secrets(&text);
            assert!(!red.contains(&SEED[1..40]), "{red}");
        }
        let reason = parse_message(format!(r#"{{"payout_id":"a","destination":"G","asset":"native","amount":"1","memo":"{SEED}2"}}"#).as_bytes())
            .unwrap_err()
            .1;
        assert!(!reason.contains(&SEED[1..40]), "{reason}");
    }

    #[test]
    fn parse_message_codes() {
        assert_eq!(parse_message(b"\xff\xfe").unwrap_err().0, "invalid_utf8");
        assert_eq!(parse_message(b"{").unwrap_err().0, "invalid_body");
        assert_eq!(storable("a\0b"), "a\u{FFFD}b");
        assert_eq!(
            parse_message(&vec![b' '; MESSAGE_BYTES_MAX + 1])
                .unwrap_err()
                .0,
            "message_too_large"
        );
        let bad_amount = br#"{"payout_id":"a","destination":"GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2","asset":"native","amount":"1e5"}"#;
        assert_eq!(parse_message(bad_amount).unwrap_err().0, "amount_format");
    }
}
