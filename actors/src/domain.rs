//! Domain types parsed at the boundary: a raw string never reaches an actor.
//!
//! Each type has a private field and one way in (`parse`), so holding a value proves it was
//! checked against the field rules (README, "field rules"; docs/protocol.md). Money is `Amount`, an `i64` count of stroops.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error_code::ErrorCode;
use crate::strkey::{self, StrKeyError};

/// Stroops per lumen (or per unit of any Stellar asset): amounts have 7 decimals.
pub const STROOPS_PER_UNIT: i64 = 10_000_000;
/// Longest payout id accepted, in characters.
pub const PAYOUT_ID_LEN_MAX: usize = 64;
/// Longest text memo accepted, in bytes of UTF-8.
pub const MEMO_TEXT_BYTES_MAX: usize = 28;

/// A rejected field: which one, a stable machine code, and a message for people.
/// The message never repeats a secret the caller sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidationError {
    pub field: &'static str,
    pub code: ErrorCode,
    pub message: String,
}

impl ValidationError {
    fn new(field: &'static str, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            field,
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.field, self.message, self.code)
    }
}

impl std::error::Error for ValidationError {}

/// The caller's name for a payout: 1–64 characters of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PayoutId(String);

impl PayoutId {
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        if text.is_empty() || text.chars().count() > PAYOUT_ID_LEN_MAX {
            return Err(ValidationError::new(
                "payout_id",
                ErrorCode::PayoutIdLength,
                format!("must be 1 to {PAYOUT_ID_LEN_MAX} characters long"),
            ));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
        if !text.chars().all(allowed) {
            return Err(ValidationError::new(
                "payout_id",
                ErrorCode::PayoutIdCharset,
                "may contain only letters, digits and . _ : -",
            ));
        }
        // A valid `S…` seed as an id would be logged in every span and published in every
        // event subject: refuse it the way a seed is refused as a destination.
        if matches!(strkey::decode(text), Ok((strkey::VERSION_SEED, _))) {
            return Err(ValidationError::new(
                "payout_id",
                ErrorCode::PayoutIdIsSecret,
                "is a secret seed (S…); never send a secret key to anyone — choose another payout id",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for PayoutId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PayoutId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An ed25519 account (`G…`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId([u8; 32]);

impl AccountId {
    pub const fn from_bytes(key: [u8; 32]) -> Self {
        Self(key)
    }

    pub fn parse(text: &str) -> Result<Self, StrKeyError> {
        strkey::decode_account_id(text).map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_strkey(&self) -> String {
        strkey::encode(strkey::VERSION_ACCOUNT_ID, &self.0)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_strkey())
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({})", self.to_strkey())
    }
}

/// Where a payment goes: a plain account or a muxed account (account + 64-bit id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    Account(AccountId),
    Muxed { account: AccountId, id: u64 },
}

impl Destination {
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        const FIELD: &str = "destination";
        if text.starts_with('S') {
            return Err(ValidationError::new(
                FIELD,
                ErrorCode::DestinationIsSecret,
                "looks like a secret seed (S…); never send a secret key to anyone — give the account id (G…) instead",
            ));
        }
        let (version, payload) = strkey::decode(text).map_err(|e| {
            ValidationError::new(
                FIELD,
                ErrorCode::DestinationInvalid,
                format!("is not a valid Stellar account: it {e}"),
            )
        })?;
        match version {
            strkey::VERSION_ACCOUNT_ID => {
                let key: [u8; 32] = payload.try_into().map_err(|_| {
                    ValidationError::new(
                        FIELD,
                        ErrorCode::DestinationInvalid,
                        "has the wrong length",
                    )
                })?;
                Ok(Self::Account(AccountId(key)))
            }
            strkey::VERSION_MUXED_ACCOUNT => {
                let (key, id) = payload.split_at(32);
                let key: [u8; 32] = key.try_into().map_err(|_| {
                    ValidationError::new(
                        FIELD,
                        ErrorCode::DestinationInvalid,
                        "has the wrong length",
                    )
                })?;
                let id: [u8; 8] = id.try_into().map_err(|_| {
                    ValidationError::new(
                        FIELD,
                        ErrorCode::DestinationInvalid,
                        "has the wrong length",
                    )
                })?;
                Ok(Self::Muxed {
                    account: AccountId(key),
                    id: u64::from_be_bytes(id),
                })
            }
            strkey::VERSION_SEED => Err(ValidationError::new(
                FIELD,
                ErrorCode::DestinationIsSecret,
                "is a secret seed; never send a secret key to anyone — give the account id (G…) instead",
            )),
            _ => Err(ValidationError::new(
                FIELD,
                ErrorCode::DestinationInvalid,
                "must be a G… or M… account",
            )),
        }
    }

    /// The underlying account that receives the money.
    pub fn account(&self) -> AccountId {
        match self {
            Self::Account(a) | Self::Muxed { account: a, .. } => *a,
        }
    }

    pub fn to_strkey(&self) -> String {
        match self {
            Self::Account(a) => a.to_strkey(),
            Self::Muxed { account, id } => {
                let mut payload = [0u8; 40];
                payload[..32].copy_from_slice(account.as_bytes());
                payload[32..].copy_from_slice(&id.to_be_bytes());
                strkey::encode(strkey::VERSION_MUXED_ACCOUNT, &payload)
            }
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_strkey())
    }
}

/// An asset code: 1–12 ASCII alphanumerics (1–4 is alphanum4, 5–12 alphanum12).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssetCode(String);

impl AssetCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for codes of 1–4 characters (`credit_alphanum4`).
    pub fn is_alphanum4(&self) -> bool {
        self.0.len() <= 4
    }
}

/// What is paid: lumens or an issued asset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Asset {
    Native,
    Credit { code: AssetCode, issuer: AccountId },
}

impl Asset {
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        const FIELD: &str = "asset";
        if text == "native" || text == "XLM" {
            return Ok(Self::Native);
        }
        let Some((code, issuer)) = text.split_once(':') else {
            return Err(ValidationError::new(
                FIELD,
                ErrorCode::AssetFormat,
                "must be \"native\", \"XLM\" or \"CODE:ISSUER\"",
            ));
        };
        if code.is_empty() || code.len() > 12 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ValidationError::new(
                FIELD,
                ErrorCode::AssetCode,
                "code must be 1 to 12 letters or digits",
            ));
        }
        let issuer = AccountId::parse(issuer).map_err(|e| {
            ValidationError::new(
                FIELD,
                ErrorCode::AssetIssuer,
                format!("issuer is not a valid G… account: it {e}"),
            )
        })?;
        Ok(Self::Credit {
            code: AssetCode(code.to_owned()),
            issuer,
        })
    }
}

impl fmt::Display for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Native => f.write_str("native"),
            Self::Credit { code, issuer } => write!(f, "{}:{}", code.0, issuer),
        }
    }
}

/// A positive amount in stroops (1 unit = 10^7 stroops), at most `i64::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Amount(i64);

impl Amount {
    /// Parses a decimal string such as `"12.5"`: digits, an optional `.` and 1–7 more
    /// digits. No sign, no exponent, no spaces; zero is refused. Integer arithmetic only.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        const FIELD: &str = "amount";
        let bad = |code: ErrorCode, msg: &str| Err(ValidationError::new(FIELD, code, msg));
        let (whole, frac) = match text.split_once('.') {
            Some((w, f)) => (w, f),
            None => (text, ""),
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return bad(
                ErrorCode::AmountFormat,
                "must be a decimal number such as \"12.5\" (no sign, no exponent)",
            );
        }
        if text.contains('.') && frac.is_empty() {
            return bad(
                ErrorCode::AmountFormat,
                "must have digits after the decimal point",
            );
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return bad(
                ErrorCode::AmountFormat,
                "must be a decimal number such as \"12.5\" (no sign, no exponent)",
            );
        }
        if frac.len() > 7 {
            return bad(ErrorCode::AmountPrecision, "has more than 7 decimal places");
        }
        let whole = whole.trim_start_matches('0');
        let mut stroops: i64 = 0;
        for b in whole
            .bytes()
            .chain(frac.bytes())
            .chain(std::iter::repeat_n(b'0', 7 - frac.len()))
        {
            let digit = i64::from(b - b'0');
            stroops = match stroops.checked_mul(10).and_then(|v| v.checked_add(digit)) {
                Some(v) => v,
                None => {
                    return bad(
                        ErrorCode::AmountTooLarge,
                        "is more than 922337203685.4775807",
                    );
                }
            };
        }
        if stroops == 0 {
            return bad(ErrorCode::AmountNotPositive, "must be greater than zero");
        }
        Ok(Self(stroops))
    }

    pub fn from_stroops(stroops: i64) -> Option<Self> {
        (stroops > 0).then_some(Self(stroops))
    }

    pub fn stroops(&self) -> i64 {
        self.0
    }
}

impl fmt::Display for Amount {
    /// Canonical decimal form: trailing fractional zeros dropped (`12.5`, `100`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / STROOPS_PER_UNIT;
        let frac = self.0 % STROOPS_PER_UNIT;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{frac:07}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

/// The memo carried by the payment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Memo {
    #[default]
    None,
    Text(String),
    Id(u64),
    Hash([u8; 32]),
}

impl Memo {
    /// Canonical `type:value` form, also used by the ledger simulator's payment filter.
    pub fn canonical(&self) -> String {
        match self {
            Memo::None => "none".to_owned(),
            Memo::Text(t) => format!("text:{t}"),
            Memo::Id(id) => format!("id:{id}"),
            Memo::Hash(h) => format!("hash:{}", hex::encode(h)),
        }
    }
}

/// The wire form of a memo: `{"type": "text"|"id"|"hash"|"none", "value": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMemo {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl RawMemo {
    pub fn parse(&self) -> Result<Memo, ValidationError> {
        const FIELD: &str = "memo";
        let value = || {
            self.value.as_deref().ok_or_else(|| {
                ValidationError::new(
                    FIELD,
                    ErrorCode::MemoValueMissing,
                    "needs a \"value\" for this memo type",
                )
            })
        };
        match self.kind.as_str() {
            "none" if self.value.is_none() => Ok(Memo::None),
            "none" => Err(ValidationError::new(
                FIELD,
                ErrorCode::MemoValueUnexpected,
                "a memo of type none has no value",
            )),
            "text" => {
                let v = value()?;
                if v.len() > MEMO_TEXT_BYTES_MAX {
                    return Err(ValidationError::new(
                        FIELD,
                        ErrorCode::MemoTextTooLong,
                        format!("text memo is longer than {MEMO_TEXT_BYTES_MAX} bytes of UTF-8"),
                    ));
                }
                Ok(Memo::Text(v.to_owned()))
            }
            "id" => {
                let v = value()?;
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ValidationError::new(
                        FIELD,
                        ErrorCode::MemoIdFormat,
                        "id memo must be an unsigned 64-bit integer in decimal",
                    ));
                }
                v.parse::<u64>().map(Memo::Id).map_err(|_| {
                    ValidationError::new(
                        FIELD,
                        ErrorCode::MemoIdFormat,
                        "id memo must be an unsigned 64-bit integer in decimal",
                    )
                })
            }
            "hash" => {
                let v = value()?;
                let mut out = [0u8; 32];
                hex::decode_to_slice(v, &mut out).map_err(|_| {
                    ValidationError::new(
                        FIELD,
                        ErrorCode::MemoHashFormat,
                        "hash memo must be 64 hexadecimal characters (32 bytes)",
                    )
                })?;
                Ok(Memo::Hash(out))
            }
            _ => Err(ValidationError::new(
                FIELD,
                ErrorCode::MemoType,
                "memo type must be none, text, id or hash",
            )),
        }
    }

    fn from_memo(memo: &Memo) -> Self {
        let (kind, value) = match memo {
            Memo::None => {
                return Self {
                    kind: "none".to_owned(),
                    value: None,
                };
            }
            Memo::Text(t) => ("text", t.clone()),
            Memo::Id(id) => ("id", id.to_string()),
            Memo::Hash(h) => ("hash", hex::encode(h)),
        };
        Self {
            kind: kind.to_owned(),
            value: Some(value),
        }
    }
}

/// A payout request as it arrives on any ingress (JSON body, broker message, inbox row,
/// CSV line): strings only. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPayoutRequest {
    pub payout_id: String,
    pub destination: String,
    pub asset: String,
    pub amount: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<RawMemo>,
}

/// Why a JSON payout request could not be read as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonRequestError {
    /// Not JSON, not an object, an unknown or repeated field: the body as a whole is wrong.
    /// The text is serde's and may quote the input: redact it before showing it.
    Body(String),
    /// A known field is missing or of the wrong JSON type.
    Field(ValidationError),
}

/// The request's string fields, in the order they are reported.
const STRING_FIELDS: [&str; 4] = ["payout_id", "destination", "asset", "amount"];

impl RawPayoutRequest {
    /// Reads a request strictly (no unknown or repeated fields, every field a string, the
    /// memo an object); when that fails, says which field was wrong if one was.
    pub fn from_json_slice(bytes: &[u8]) -> Result<Self, JsonRequestError> {
        serde_json::from_slice::<Self>(bytes).map_err(|e| {
            let value = serde_json::from_slice::<serde_json::Value>(bytes).ok();
            Self::explain(value.as_ref(), &e)
        })
    }

    /// As `from_json_slice`, for one item of a larger document.
    pub fn from_json_value(value: serde_json::Value) -> Result<Self, JsonRequestError> {
        serde_json::from_value::<Self>(value.clone()).map_err(|e| Self::explain(Some(&value), &e))
    }

    fn explain(value: Option<&serde_json::Value>, e: &serde_json::Error) -> JsonRequestError {
        let body = || JsonRequestError::Body(e.to_string());
        let Some(obj) = value.and_then(|v| v.as_object()) else {
            return body();
        };
        let field = |field: &'static str, code: ErrorCode, message: &str| {
            JsonRequestError::Field(ValidationError::new(field, code, message))
        };
        for name in STRING_FIELDS {
            match obj.get(name) {
                None => return field(name, ErrorCode::FieldMissing, "is required"),
                Some(v) if !v.is_string() => {
                    return field(
                        name,
                        ErrorCode::FieldType,
                        "must be a JSON string (amounts too: \"12.5\", never a number)",
                    );
                }
                Some(_) => {}
            }
        }
        match obj.get("memo") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(m)) => {
                if !m.get("type").is_some_and(|t| t.is_string()) {
                    return field(
                        "memo",
                        ErrorCode::FieldType,
                        "needs a \"type\" that is a JSON string",
                    );
                }
                if m.get("value")
                    .is_some_and(|v| !v.is_string() && !v.is_null())
                {
                    return field(
                        "memo",
                        ErrorCode::FieldType,
                        "\"value\" must be a JSON string (ids too: \"42\")",
                    );
                }
            }
            Some(_) => {
                return field(
                    "memo",
                    ErrorCode::FieldType,
                    "must be an object {\"type\": …, \"value\": …}",
                );
            }
        }
        body()
    }

    /// Checks every field; the first failing field is reported.
    pub fn parse(&self) -> Result<PayoutRequest, ValidationError> {
        Ok(PayoutRequest {
            payout_id: PayoutId::parse(&self.payout_id)?,
            destination: Destination::parse(&self.destination)?,
            asset: Asset::parse(&self.asset)?,
            amount: Amount::parse(&self.amount)?,
            memo: self.memo.as_ref().map(RawMemo::parse).transpose()?,
        })
    }
}

/// A checked payout request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutRequest {
    payout_id: PayoutId,
    destination: Destination,
    asset: Asset,
    amount: Amount,
    /// `None`: the caller gave no memo, payoutd chooses one that names the payout (or its
    /// batch). `Some(Memo::None)`: the caller asked for no memo on the transaction.
    memo: Option<Memo>,
}

impl PayoutRequest {
    pub fn new(
        payout_id: PayoutId,
        destination: Destination,
        asset: Asset,
        amount: Amount,
        memo: Option<Memo>,
    ) -> Self {
        Self {
            payout_id,
            destination,
            asset,
            amount,
            memo,
        }
    }

    pub fn payout_id(&self) -> &PayoutId {
        &self.payout_id
    }
    pub fn destination(&self) -> &Destination {
        &self.destination
    }
    pub fn asset(&self) -> &Asset {
        &self.asset
    }
    pub fn amount(&self) -> Amount {
        self.amount
    }
    /// The caller's memo, if the caller gave one (`Some(Memo::None)`: explicitly none).
    pub fn memo(&self) -> Option<&Memo> {
        self.memo.as_ref()
    }

    /// The canonical text the fingerprint hashes: one field per line, canonical forms, so
    /// `"12.50"` and `"12.5"`, or `XLM` and `native`, are the same request.
    pub fn canonical(&self) -> String {
        format!(
            "payoutd-request-v1\n{}\n{}\n{}\n{}\n{}",
            self.payout_id,
            self.destination,
            self.asset,
            self.amount.stroops(),
            // Absent keeps the form it always had; an explicit "none" is another request
            // (it asks for a transaction without a memo).
            match &self.memo {
                None => "none".to_owned(),
                Some(Memo::None) => "none:explicit".to_owned(),
                Some(m) => m.canonical(),
            }
        )
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(Sha256::digest(self.canonical().as_bytes()).into())
    }

    /// The canonical raw form, for storage; `raw().parse()` gives back an equal request.
    pub fn raw(&self) -> RawPayoutRequest {
        RawPayoutRequest {
            payout_id: self.payout_id.to_string(),
            destination: self.destination.to_strkey(),
            asset: self.asset.to_string(),
            amount: self.amount.to_string(),
            memo: self.memo.as_ref().map(RawMemo::from_memo),
        }
    }
}

/// sha256 of a request's canonical form: same id + same fingerprint = duplicate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", &self.to_hex()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const DEST: &str = "GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2";
    const ISSUER: &str = "GDF5O4OWEMVBY5FLDHWA5RZTYSV2U276XGKZZ6VSHDDR3THSQ6OQS7UM";

    fn raw(id: &str, dest: &str, asset: &str, amount: &str) -> RawPayoutRequest {
        RawPayoutRequest {
            payout_id: id.into(),
            destination: dest.into(),
            asset: asset.into(),
            amount: amount.into(),
            memo: None,
        }
    }

    #[test]
    fn json_type_errors_name_the_field() {
        let field = |json: &str| match RawPayoutRequest::from_json_slice(json.as_bytes()) {
            Err(JsonRequestError::Field(e)) => (e.field, e.code.as_str()),
            other => panic!("{json}: {other:?}"),
        };
        let base = format!(r#""payout_id":"p","destination":"{DEST}","asset":"native""#);
        assert_eq!(
            field(&format!(r#"{{{base},"amount":12.5}}"#)),
            ("amount", "field_type")
        );
        assert_eq!(
            field(&format!(r#"{{{base}}}"#)),
            ("amount", "field_missing")
        );
        assert_eq!(
            field(&format!(
                r#"{{{base},"amount":"1","memo":{{"type":"id","value":42}}}}"#
            )),
            ("memo", "field_type")
        );
        assert_eq!(
            field(&format!(r#"{{{base},"amount":"1","memo":"x"}}"#)),
            ("memo", "field_type")
        );
        // The body as a whole: unknown or repeated fields, not JSON, not an object.
        for bad in [
            format!(r#"{{{base},"amount":"1","extra":1}}"#),
            format!(r#"{{{base},"amount":"1","amount":"2"}}"#),
            "[1]".to_owned(),
            "{".to_owned(),
        ] {
            assert!(
                matches!(
                    RawPayoutRequest::from_json_slice(bad.as_bytes()),
                    Err(JsonRequestError::Body(_))
                ),
                "{bad}"
            );
        }
        assert!(
            RawPayoutRequest::from_json_slice(
                format!(r#"{{{base},"amount":"1","memo":null}}"#).as_bytes()
            )
            .is_ok()
        );
    }

    #[test]
    fn a_seed_is_not_a_payout_id() {
        let seed = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";
        let err = PayoutId::parse(seed).unwrap_err();
        assert_eq!(err.code, "payout_id_is_secret");
        assert!(!err.to_string().contains(seed));
        // Seed-shaped but with a broken checksum: an ordinary (if odd) id.
        assert!(
            PayoutId::parse("SBGWKM3CD4IL47QN6X54N6Y33T3JDNVI6AIJ6CD5IM47HG3IG4O36XCX").is_ok()
        );
    }

    #[test]
    fn explicit_none_memo_is_another_request_than_no_memo() {
        let mut r = raw("p-1", DEST, "native", "1");
        let absent = r.parse().unwrap();
        assert_eq!(absent.memo(), None);
        r.memo = Some(RawMemo {
            kind: "none".into(),
            value: None,
        });
        let none = r.parse().unwrap();
        assert_eq!(none.memo(), Some(&Memo::None));
        assert_ne!(absent.fingerprint(), none.fingerprint());
        assert_eq!(none.raw().parse().unwrap(), none);
        assert_eq!(absent.raw().parse().unwrap(), absent);
    }

    #[test]
    fn payout_id_rules() {
        assert!(PayoutId::parse("reward-2026-11-0042").is_ok());
        assert!(PayoutId::parse("a.b_c:d-E9").is_ok());
        assert!(PayoutId::parse(&"x".repeat(64)).is_ok());
        assert_eq!(PayoutId::parse("").unwrap_err().code, "payout_id_length");
        assert_eq!(
            PayoutId::parse(&"x".repeat(65)).unwrap_err().code,
            "payout_id_length"
        );
        for bad in ["a b", "a/b", "é", "a\0", "a\n", "a,b", "<script>"] {
            assert_eq!(
                PayoutId::parse(bad).unwrap_err().code,
                "payout_id_charset",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn amount_rules() {
        assert_eq!(Amount::parse("12.5").unwrap().stroops(), 125_000_000);
        assert_eq!(Amount::parse("0.0000001").unwrap().stroops(), 1);
        assert_eq!(Amount::parse("1000").unwrap().stroops(), 10_000_000_000);
        assert_eq!(
            Amount::parse("922337203685.4775807").unwrap().stroops(),
            i64::MAX
        );
        assert_eq!(Amount::parse("007").unwrap().stroops(), 70_000_000);
        let code = |s: &str| Amount::parse(s).unwrap_err().code;
        assert_eq!(code("922337203685.4775808"), "amount_too_large");
        assert_eq!(code("99999999999999999999"), "amount_too_large");
        assert_eq!(code("0"), "amount_not_positive");
        assert_eq!(code("0.0000000"), "amount_not_positive");
        assert_eq!(code("0.00000001"), "amount_precision");
        for bad in [
            "", "+1", "-1", "1e5", "1E5", " 1", "1 ", "1.", ".5", "1,5", "0x10", "1.2.3", "NaN",
            "inf", "１",
        ] {
            assert_eq!(code(bad), "amount_format", "{bad:?}");
        }
    }

    #[test]
    fn amount_display_is_canonical() {
        assert_eq!(Amount::parse("12.50").unwrap().to_string(), "12.5");
        assert_eq!(Amount::parse("100").unwrap().to_string(), "100");
        assert_eq!(Amount::parse("0.0000001").unwrap().to_string(), "0.0000001");
    }

    #[test]
    fn destination_rules() {
        assert!(matches!(
            Destination::parse(DEST),
            Ok(Destination::Account(_))
        ));
        let muxed = Destination::Muxed {
            account: AccountId::parse(DEST).unwrap(),
            id: 42,
        };
        let text = muxed.to_strkey();
        assert!(text.starts_with('M'));
        assert_eq!(Destination::parse(&text).unwrap(), muxed);
        let code = |s: &str| Destination::parse(s).unwrap_err().code;
        assert_eq!(
            code("GBPXXOA5N4JYPESHAADMQKBPWZWQDQ64ZV6ZL2S3LAGW4SY7NTCMWIVT"),
            "destination_invalid"
        );
        assert_eq!(
            code("SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH"),
            "destination_is_secret"
        );
        assert_eq!(
            code("SBGWKM3CD4IL47QN6X54N6Y33T3JDNVI6AIJ6CD5IM47HG3IG4O36XCX"),
            "destination_is_secret"
        );
        assert_eq!(code(""), "destination_invalid");
        assert_eq!(code(&DEST.to_lowercase()), "destination_invalid");
        assert_eq!(code(&DEST[..55]), "destination_invalid");
    }

    #[test]
    fn secret_never_echoed() {
        let seed = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";
        let err = Destination::parse(seed).unwrap_err();
        assert!(!err.to_string().contains(seed));
        assert!(!format!("{err:?}").contains(seed));
    }

    #[test]
    fn asset_rules() {
        assert_eq!(Asset::parse("native").unwrap(), Asset::Native);
        assert_eq!(Asset::parse("XLM").unwrap(), Asset::Native);
        let usdc = Asset::parse(&format!("USDC:{ISSUER}")).unwrap();
        assert!(matches!(&usdc, Asset::Credit { code, .. } if code.is_alphanum4()));
        let long = Asset::parse(&format!("ABCDEFGHIJKL:{ISSUER}")).unwrap();
        assert!(matches!(&long, Asset::Credit { code, .. } if !code.is_alphanum4()));
        let code = |s: &str| Asset::parse(s).unwrap_err().code;
        assert_eq!(code("usd"), "asset_format");
        assert_eq!(code(&format!(":{ISSUER}")), "asset_code");
        assert_eq!(code(&format!("ABCDEFGHIJKLM:{ISSUER}")), "asset_code");
        assert_eq!(code(&format!("US-D:{ISSUER}")), "asset_code");
        assert_eq!(
            code("USDC:GBPXXOA5N4JYPESHAADMQKBPWZWQDQ64ZV6ZL2S3LAGW4SY7NTCMWIVT"),
            "asset_issuer"
        );
    }

    #[test]
    fn memo_rules() {
        let m = |kind: &str, value: Option<&str>| {
            RawMemo {
                kind: kind.into(),
                value: value.map(Into::into),
            }
            .parse()
        };
        assert_eq!(m("none", None).unwrap(), Memo::None);
        assert_eq!(
            m("text", Some("hello")).unwrap(),
            Memo::Text("hello".into())
        );
        assert!(m("text", Some(&"a".repeat(28))).is_ok());
        assert_eq!(
            m("text", Some(&"a".repeat(29))).unwrap_err().code,
            "memo_text_too_long"
        );
        assert_eq!(
            m("text", Some(&"é".repeat(15))).unwrap_err().code,
            "memo_text_too_long"
        );
        assert_eq!(
            m("id", Some("18446744073709551615")).unwrap(),
            Memo::Id(u64::MAX)
        );
        assert_eq!(
            m("id", Some("18446744073709551616")).unwrap_err().code,
            "memo_id_format"
        );
        assert_eq!(m("id", Some("-1")).unwrap_err().code, "memo_id_format");
        assert!(m("hash", Some(&"ab".repeat(32))).is_ok());
        assert_eq!(
            m("hash", Some(&"ab".repeat(31))).unwrap_err().code,
            "memo_hash_format"
        );
        assert_eq!(
            m("hash", Some(&"zz".repeat(32))).unwrap_err().code,
            "memo_hash_format"
        );
        assert_eq!(m("bogus", Some("x")).unwrap_err().code, "memo_type");
        assert_eq!(m("text", None).unwrap_err().code, "memo_value_missing");
    }

    #[test]
    fn unknown_json_fields_are_refused() {
        let body = format!(
            r#"{{"payout_id":"a","destination":"{DEST}","asset":"native","amount":"1","extra":1}}"#
        );
        assert!(serde_json::from_str::<RawPayoutRequest>(&body).is_err());
        let body =
            format!(r#"{{"payout_id":"a","destination":"{DEST}","asset":"native","amount":1}}"#);
        assert!(
            serde_json::from_str::<RawPayoutRequest>(&body).is_err(),
            "numeric amount must be refused"
        );
    }

    #[test]
    fn fingerprint_is_canonical() {
        let a = raw("p1", DEST, "XLM", "12.50").parse().unwrap();
        let b = raw("p1", DEST, "native", "12.5").parse().unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let c = raw("p1", DEST, "native", "12.5000001").parse().unwrap();
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.raw().parse().unwrap(), a);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn amount_round_trips(stroops in 1i64..=i64::MAX) {
                let a = Amount::from_stroops(stroops).unwrap();
                prop_assert_eq!(Amount::parse(&a.to_string()).unwrap(), a);
            }

            #[test]
            fn amount_never_panics(s in "\\PC{0,40}") {
                let _ = Amount::parse(&s);
            }

            #[test]
            fn payout_id_accepts_exactly_the_charset(s in "[A-Za-z0-9._:-]{1,64}") {
                prop_assert!(PayoutId::parse(&s).is_ok());
            }

            #[test]
            fn destination_never_panics(s in "[A-Z2-7]{0,80}") {
                let _ = Destination::parse(&s);
            }

            #[test]
            fn one_flipped_char_breaks_the_checksum(pos in 1usize..56, c in "[A-Z2-7]") {
                let mut bytes = DEST.as_bytes().to_vec();
                let c = c.as_bytes()[0];
                prop_assume!(bytes[pos] != c);
                bytes[pos] = c;
                let text = String::from_utf8(bytes).unwrap();
                prop_assert!(Destination::parse(&text).is_err());
            }

            #[test]
            fn muxed_round_trips(id in any::<u64>()) {
                let d = Destination::Muxed { account: AccountId::parse(DEST).unwrap(), id };
                prop_assert_eq!(Destination::parse(&d.to_strkey()).unwrap(), d);
            }

            #[test]
            fn request_raw_round_trips(id in "[A-Za-z0-9._:-]{1,64}", stroops in 1i64..=i64::MAX, memo in any::<u64>()) {
                let req = PayoutRequest::new(
                    PayoutId::parse(&id).unwrap(),
                    Destination::parse(DEST).unwrap(),
                    Asset::Native,
                    Amount::from_stroops(stroops).unwrap(),
                    Some(Memo::Id(memo)),
                );
                let back = req.raw().parse().unwrap();
                prop_assert_eq!(back.fingerprint(), req.fingerprint());
            }
        }
    }
}
