"""Schemathesis hooks for payoutd's OpenAPI document (loaded with SCHEMATHESIS_HOOKS).

The document marks the strings whose rules a JSON Schema pattern cannot carry with formats
of its own: a StrKey's checksum (`stellar-destination`, `stellar-asset`) and a memo text's
limit in bytes of UTF-8 rather than characters (`stellar-memo-text`). Here each format gets
a generator of values that keep those rules, so that schema-valid requests are valid
requests; the patterns and lengths in the document still apply on top.
"""

import base64
import struct

import schemathesis
from hypothesis import strategies as st

ACCOUNT_ID = 6 << 3  # G…
MUXED_ACCOUNT = 12 << 3  # M…


def crc16_xmodem(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def strkey(version: int, payload: bytes) -> str:
    body = bytes([version]) + payload
    raw = body + struct.pack("<H", crc16_xmodem(body))
    return base64.b32encode(raw).decode("ascii").rstrip("=")


accounts = st.binary(min_size=32, max_size=32).map(lambda key: strkey(ACCOUNT_ID, key))
muxed = st.tuples(
    st.binary(min_size=32, max_size=32), st.integers(min_value=0, max_value=2**64 - 1)
).map(lambda t: strkey(MUXED_ACCOUNT, t[0] + struct.pack(">Q", t[1])))
asset_codes = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    min_size=1,
    max_size=12,
)

schemathesis.openapi.format("stellar-destination", st.one_of(accounts, muxed))
schemathesis.openapi.format(
    "stellar-asset",
    st.one_of(
        st.sampled_from(["native", "XLM"]),
        st.tuples(asset_codes, accounts).map(lambda t: f"{t[0]}:{t[1]}"),
    ),
)
schemathesis.openapi.format(
    "stellar-memo-text",
    st.text(max_size=28).filter(lambda t: len(t.encode("utf-8")) <= 28),
)


def strkey_decodes(text: str, version: int, payload_len: int) -> bool:
    """True when `text` is a StrKey of this version: canonical base32, right length, CRC."""
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError:
        return False
    if len(raw) != 1 + payload_len + 2 or raw[0] != version:
        return False
    if base64.b32encode(raw).decode("ascii").rstrip("=") != text:
        return False  # bits past the last byte must be zero
    return struct.unpack("<H", raw[-2:])[0] == crc16_xmodem(raw[:-2])


def _unexpressible_rule_broken(body: object, code: str) -> bool:
    """Whether a schema-valid payout request really breaks the rule `code` names, one of
    those the document can only describe: a StrKey checksum, a secret-seed payout id, a
    memo text's limit in bytes."""
    if not isinstance(body, dict):
        return False
    if code == "destination_invalid":
        d = body.get("destination", "")
        return not (strkey_decodes(d, ACCOUNT_ID, 32) or strkey_decodes(d, MUXED_ACCOUNT, 40))
    if code == "asset_issuer":
        issuer = str(body.get("asset", "")).partition(":")[2]
        return not strkey_decodes(issuer, ACCOUNT_ID, 32)
    if code == "payout_id_is_secret":
        return strkey_decodes(str(body.get("payout_id", "")), 18 << 3, 32)
    if code == "memo_text_too_long":
        memo = body.get("memo") or {}
        return len(str(memo.get("value", "")).encode("utf-8")) > 28
    return False


@schemathesis.check
def valid_payout_request_accepted(ctx, response, case):
    """POST /v1/payouts: a schema-valid request is accepted (2xx), or refused for a reason
    the schema states and the request really has: 401, 404, 409, 429, 5xx as for any
    operation, or 422 for one of the rules a JSON Schema cannot carry, checked here
    independently. (The built-in positive_data_acceptance check is off for this operation
    alone, in schemathesis.toml: it cannot know those rules.)"""
    meta = case.meta
    if case.operation.label != "POST /v1/payouts" or meta is None:
        return None
    if not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if 200 <= status < 300 or status in (401, 403, 404, 409, 429) or status >= 500:
        return None
    if status == 422:
        try:
            code = response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = None
        if code is not None and _unexpressible_rule_broken(case.body, code):
            return None
    raise AssertionError(
        f"a schema-valid payout request was refused with {status}, for a rule the document does not state"
    )
