//! StrKey: Stellar's base32 text form of keys (version byte ‖ payload ‖ CRC16-XModem LE).

/// Version byte of an ed25519 public key (`G…`).
pub const VERSION_ACCOUNT_ID: u8 = 6 << 3;
/// Version byte of a muxed account (`M…`): key ‖ 8-byte big-endian id.
pub const VERSION_MUXED_ACCOUNT: u8 = 12 << 3;
/// Version byte of an ed25519 secret seed (`S…`).
pub const VERSION_SEED: u8 = 18 << 3;

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Why a StrKey did not decode. The variants never echo the input: it may be a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StrKeyError {
    #[error("has the wrong length")]
    Length,
    #[error("contains characters outside the base32 alphabet")]
    Alphabet,
    #[error("has a checksum that does not match")]
    Checksum,
    #[error("is not of the expected kind")]
    Version,
    #[error("has non-canonical padding bits")]
    Padding,
}

/// CRC16-XModem (poly 0x1021, init 0), as StrKey uses.
pub fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn base32_decode(text: &str) -> Result<Vec<u8>, StrKeyError> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return Err(StrKeyError::Alphabet),
        };
        buffer = (buffer << 5) | u32::from(value);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    // Leftover bits must be zero, or two texts would decode to the same key.
    if bits > 0 && buffer & ((1 << bits) - 1) != 0 {
        return Err(StrKeyError::Padding);
    }
    Ok(out)
}

/// Encodes `payload` under `version` as a StrKey.
pub fn encode(version: u8, payload: &[u8]) -> String {
    let mut raw = Vec::with_capacity(payload.len() + 3);
    raw.push(version);
    raw.extend_from_slice(payload);
    let crc = crc16_xmodem(&raw);
    raw.extend_from_slice(&crc.to_le_bytes());
    base32_encode(&raw)
}

/// Decodes a StrKey, returning its version byte and payload after checking the checksum.
pub fn decode(text: &str) -> Result<(u8, Vec<u8>), StrKeyError> {
    // 56 chars: G/S (35 bytes); 69 chars: M (43 bytes).
    if text.len() != 56 && text.len() != 69 {
        return Err(StrKeyError::Length);
    }
    let raw = base32_decode(text)?;
    if raw.len() < 3 {
        return Err(StrKeyError::Length);
    }
    let (body, crc) = raw.split_at(raw.len() - 2);
    let expected = crc16_xmodem(body).to_le_bytes();
    if crc != expected {
        return Err(StrKeyError::Checksum);
    }
    let payload_len = match body[0] {
        VERSION_ACCOUNT_ID | VERSION_SEED => 32,
        VERSION_MUXED_ACCOUNT => 40,
        _ => return Err(StrKeyError::Version),
    };
    if body.len() - 1 != payload_len {
        return Err(StrKeyError::Length);
    }
    Ok((body[0], body[1..].to_vec()))
}

/// Decodes a `G…` key into its 32 bytes.
pub fn decode_account_id(text: &str) -> Result<[u8; 32], StrKeyError> {
    let (version, payload) = decode(text)?;
    if version != VERSION_ACCOUNT_ID {
        return Err(StrKeyError::Version);
    }
    payload.try_into().map_err(|_| StrKeyError::Length)
}

/// Decodes an `S…` seed into its 32 bytes. Callers must never log the input or the output.
pub fn decode_seed(text: &str) -> Result<[u8; 32], StrKeyError> {
    let (version, payload) = decode(text)?;
    if version != VERSION_SEED {
        return Err(StrKeyError::Version);
    }
    payload.try_into().map_err(|_| StrKeyError::Length)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN_ACCOUNT: &str = "GDF5O4OWEMVBY5FLDHWA5RZTYSV2U276XGKZZ6VSHDDR3THSQ6OQS7UM";

    #[test]
    fn crc16_known_value() {
        // CRC16-XModem of "123456789" is 0x31C3.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31c3);
    }

    #[test]
    fn account_round_trip() {
        let key = decode_account_id(GOLDEN_ACCOUNT).unwrap();
        assert_eq!(encode(VERSION_ACCOUNT_ID, &key), GOLDEN_ACCOUNT);
    }

    #[test]
    fn brief_invalid_checksums_are_refused() {
        assert_eq!(
            decode("GBPXXOA5N4JYPESHAADMQKBPWZWQDQ64ZV6ZL2S3LAGW4SY7NTCMWIVT"),
            Err(StrKeyError::Checksum)
        );
        assert_eq!(
            decode("SBGWKM3CD4IL47QN6X54N6Y33T3JDNVI6AIJ6CD5IM47HG3IG4O36XCX"),
            Err(StrKeyError::Checksum)
        );
    }

    #[test]
    fn seed_is_not_an_account() {
        let seed = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";
        assert_eq!(decode_account_id(seed), Err(StrKeyError::Version));
        assert!(decode_seed(seed).is_ok());
    }

    #[test]
    fn lowercase_is_refused() {
        assert_eq!(
            decode(&GOLDEN_ACCOUNT.to_lowercase()),
            Err(StrKeyError::Alphabet)
        );
    }
}
