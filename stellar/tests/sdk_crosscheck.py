"""Independent check of envelopes built by payoutd-stellar, with the official Python SDK.

Reads a JSON list of cases on stdin; for each, decodes the envelope with stellar_sdk,
recomputes its hash for the given network passphrase, verifies every signature against the
expected signer (hint and ed25519), and compares the decoded fields with what was asked
for. Prints one line per problem and exits 1 if there is any; exits 2 if stellar_sdk is
missing (the Rust test turns that into a failure that says how to install it).
"""

import json
import sys
from decimal import Decimal

try:
    from stellar_sdk import Keypair, TransactionEnvelope
    from stellar_sdk.exceptions import BadSignatureError
    from stellar_sdk.operation import Payment
except ImportError:
    print("stellar_sdk is not installed", file=sys.stderr)
    sys.exit(2)


def check(case):
    problems = []

    def expect(what, got, want):
        if got != want:
            problems.append(f"{case['name']}: {what} is {got!r}, expected {want!r}")

    env = TransactionEnvelope.from_xdr(case["xdr"], case["passphrase"])
    tx = env.transaction
    expect("hash", env.hash_hex(), case["hash"])
    expect("source", tx.source.account_id, case["source"])
    expect("sequence", tx.sequence, case["sequence"])
    expect("fee", tx.fee, case["fee"])

    bounds = tx.preconditions.time_bounds
    expect("time bounds", (bounds.min_time, bounds.max_time), (case["min_time"], case["max_time"]))
    ledger_bounds = tx.preconditions.ledger_bounds
    got_ledger = None if ledger_bounds is None else [ledger_bounds.min_ledger, ledger_bounds.max_ledger]
    expect("ledger bounds", got_ledger, case["ledger_bounds"])

    memo = tx.memo
    kind = type(memo).__name__
    if kind == "NoneMemo":
        got_memo = ["none", None]
    elif kind == "IdMemo":
        got_memo = ["id", str(memo.memo_id)]
    elif kind == "TextMemo":
        got_memo = ["text", memo.memo_text.decode("utf-8")]
    elif kind == "HashMemo":
        got_memo = ["hash", memo.memo_hash.hex()]
    else:
        got_memo = [kind, None]
    expect("memo", got_memo, case["memo"])

    expect("operation count", len(tx.operations), len(case["operations"]))
    for i, (op, want) in enumerate(zip(tx.operations, case["operations"])):
        if not isinstance(op, Payment):
            problems.append(f"{case['name']}: operation {i} is {type(op).__name__}, expected Payment")
            continue
        source = None if op.source is None else op.source.account_id
        expect(f"operation {i} source", source, want["op_source"])
        expect(f"operation {i} destination", op.destination.universal_account_id, want["destination"])
        asset = "native" if op.asset.is_native() else f"{op.asset.code}:{op.asset.issuer}"
        expect(f"operation {i} asset", asset, want["asset"])
        expect(f"operation {i} asset type", op.asset.type, want["asset_type"])
        # The SDK writes small amounts in exponent form ("1E-7"): compare as decimals.
        expect(f"operation {i} amount", Decimal(op.amount), Decimal(want["amount"]))

    expect("signature count", len(env.signatures), len(case["signers"]))
    for sig, signer in zip(env.signatures, case["signers"]):
        key = Keypair.from_public_key(signer)
        expect("signature hint", sig.signature_hint, key.signature_hint())
        try:
            key.verify(env.hash(), sig.signature)
        except BadSignatureError:
            problems.append(f"{case['name']}: signature by {signer} does not verify")
    return problems


def main():
    cases = json.load(sys.stdin)
    problems = [p for case in cases for p in check(case)]
    for p in problems:
        print(p)
    print(f"checked {len(cases)} envelopes, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
