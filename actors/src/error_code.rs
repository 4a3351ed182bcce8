//! The service's one vocabulary of error codes: every refusal payoutd gives — an HTTP error
//! body, a batch item, a NATS or inbox dead letter, a CSV row report — names one of these.
//!
//! Each code is written on the wire as its snake_case text (`payout_id_length`, …); that
//! text never changes once published (callers match on it, and `dead_letters.code` keeps
//! it). A new refusal gets a new code. `docs/errors.md` says, for every code, what it means
//! and what the caller should do; a test keeps that page and this enum in step, and the
//! HTTP status of each code is chosen in one place (`payoutd::http::status_of`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = $text:literal, )*) => {
        /// A stable, machine-readable reason for a refusal (see the module documentation).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code as written on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( ErrorCode::$variant => $text, )*
                }
            }
        }
    };
}

error_codes! {
    // The body or message as a whole.
    /// Not JSON, not an object, an unknown or repeated field, or a body that could not be read.
    InvalidBody = "invalid_body",
    /// A broker message or inbox row larger than the ingress accepts.
    MessageTooLarge = "message_too_large",
    /// A broker message that is not UTF-8 text.
    InvalidUtf8 = "invalid_utf8",
    /// An HTTP body larger than the endpoint's limit.
    BodyTooLarge = "body_too_large",
    /// An HTTP request whose Content-Type is not application/json.
    UnsupportedMediaType = "unsupported_media_type",
    /// A required field of the request is absent.
    FieldMissing = "field_missing",
    /// A field has the wrong JSON type (a number where a string belongs, …).
    FieldType = "field_type",

    // Field rules of a payout request.
    /// A payout id that is empty or longer than 64 characters.
    PayoutIdLength = "payout_id_length",
    /// A payout id with a character outside `A-Z a-z 0-9 . _ : -`.
    PayoutIdCharset = "payout_id_charset",
    /// A payout id that is a valid Stellar secret seed.
    PayoutIdIsSecret = "payout_id_is_secret",
    /// A destination that is not a valid G… or M… account.
    DestinationInvalid = "destination_invalid",
    /// A destination that looks like (or is) a secret seed.
    DestinationIsSecret = "destination_is_secret",
    /// An asset that is neither `native`, `XLM` nor `CODE:ISSUER`.
    AssetFormat = "asset_format",
    /// An asset code that is not 1–12 letters or digits.
    AssetCode = "asset_code",
    /// An asset issuer that is not a valid G… account.
    AssetIssuer = "asset_issuer",
    /// An amount that is not a plain decimal number.
    AmountFormat = "amount_format",
    /// An amount with more than 7 decimal places.
    AmountPrecision = "amount_precision",
    /// An amount above 922337203685.4775807.
    AmountTooLarge = "amount_too_large",
    /// An amount of zero.
    AmountNotPositive = "amount_not_positive",
    /// A memo type other than none, text, id and hash.
    MemoType = "memo_type",
    /// A text, id or hash memo without a value.
    MemoValueMissing = "memo_value_missing",
    /// A memo of type none with a value.
    MemoValueUnexpected = "memo_value_unexpected",
    /// A text memo longer than 28 bytes of UTF-8.
    MemoTextTooLong = "memo_text_too_long",
    /// An id memo that is not an unsigned 64-bit integer in decimal.
    MemoIdFormat = "memo_id_format",
    /// A hash memo that is not 64 hexadecimal characters.
    MemoHashFormat = "memo_hash_format",

    // What the payout's history allows.
    /// The payout id exists with other content; the stored payout is untouched.
    PayoutConflict = "payout_conflict",
    /// No payout has this id.
    PayoutNotFound = "payout_not_found",
    /// The payout can no longer be cancelled (a transaction envelope exists, or it is final).
    PayoutNotCancellable = "payout_not_cancellable",
    /// Resume asked of a payout that is neither parked nor held.
    PayoutNotParked = "payout_not_parked",

    // Other parts of the HTTP API.
    /// A batch with no request or more than the configured maximum.
    BatchSize = "batch_size",
    /// An operator reason longer than allowed (500 characters).
    ReasonTooLong = "reason_too_long",
    /// An admin action without a reason (absent, empty or only white space).
    ReasonMissing = "reason_missing",
    /// An admin action whose reason holds what looks like a secret seed.
    SecretInReason = "secret_in_reason",
    /// A `state` filter that is not one of the states of what is listed.
    StateInvalid = "state_invalid",
    /// A `limit` that is not a whole number from 1 to the largest page.
    LimitInvalid = "limit_invalid",
    /// A time parameter (`since_unix_ms`, `until_unix_ms`) that is not a whole number of
    /// milliseconds since the Unix epoch.
    TimeInvalid = "time_invalid",
    /// A paging cursor (`after`) that is not one the list hands out.
    CursorInvalid = "cursor_invalid",
    /// No webhook delivery has this id.
    DeliveryNotFound = "delivery_not_found",
    /// A replay asked of a webhook delivery that is still pending (it is being attempted).
    DeliveryPending = "delivery_pending",
    /// A query string that does not fit the operation (an unknown or repeated parameter).
    InvalidQuery = "invalid_query",
    /// Missing or wrong bearer token.
    Unauthenticated = "unauthenticated",
    /// An admin endpoint called with a payout token instead of an admin token.
    AdminTokenRequired = "admin_token_required",
    /// The admin API is off: payout tokens are configured but no admin token.
    AdminDisabled = "admin_disabled",
    /// No endpoint at this path.
    NotFound = "not_found",
    /// The endpoint exists but not with this HTTP method.
    MethodNotAllowed = "method_not_allowed",

    // Transient: the same request may be sent again.
    /// Too many payouts in flight right now.
    Overloaded = "overloaded",
    /// The database (or the actor serving the payout) could not be reached.
    Unavailable = "unavailable",
    /// The request took longer than the server allows.
    RequestTimeout = "request_timeout",

    // The CSV client (`payoutd submit`).
    /// A quote in the wrong place in a CSV field.
    CsvQuote = "csv_quote",
    /// A quoted CSV field that is never closed.
    CsvUnterminatedQuote = "csv_unterminated_quote",
    /// A CSV row with another number of columns than the header.
    CsvColumnCount = "csv_column_count",
    /// A CSV row with a memo_value but no memo_type.
    MemoTypeMissing = "memo_type_missing",

    /// An answer of the payout core that the ingress did not expect (a bug).
    Unexpected = "unexpected",
}

impl ErrorCode {
    /// The code with this wire text, if there is one.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == text)
    }

    /// True when the refusal is temporary: the same request, sent again later, may succeed.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::Overloaded | Self::Unavailable | Self::RequestTimeout
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not a known code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code")]
pub struct UnknownErrorCode;

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or(UnknownErrorCode)
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                !text.is_empty()
                    && text
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{text} is not snake_case"
            );
            assert_eq!(ErrorCode::parse(text), Some(code));
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
    }
}
