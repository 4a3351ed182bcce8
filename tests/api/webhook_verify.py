"""The receiver's check of a payoutd webhook signature, as docs/webhooks.md shows it.

Run by tests/api/webhooks.rs with WEBHOOK_SECRET, WEBHOOK_SIGNATURE (the Payoutd-Signature
header) and WEBHOOK_BODY (the raw body); exits 0 when the signature verifies.
"""

import hashlib
import hmac
import os
import sys
import time

TOLERANCE_S = 300  # refuse signatures older than five minutes (replays)


def verify(secret: bytes, header: str, body: bytes, now: float) -> bool:
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    timestamps = [v for k, v in parts if k.strip() == "t"]
    signatures = [v for k, v in parts if k.strip() == "v1"]
    if len(timestamps) != 1 or not timestamps[0].isdigit():
        return False
    if abs(now - int(timestamps[0])) > TOLERANCE_S:
        return False
    signed = timestamps[0].encode() + b"." + body
    expected = hmac.new(secret, signed, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, s) for s in signatures)


if __name__ == "__main__":
    ok = verify(
        os.environ["WEBHOOK_SECRET"].encode(),
        os.environ["WEBHOOK_SIGNATURE"],
        os.environ["WEBHOOK_BODY"].encode(),
        time.time(),
    )
    sys.exit(0 if ok else 1)
