"""Independent check, with the official Python SDK, of envelopes payoutd sent over RPC.

Reads a JSON list on stdin; each item has the envelope as the ledger server returned it
(`xdr`), the bytes payoutd journaled (`journaled_xdr`), the network passphrase, the hash
payoutd journaled, the source and sequence it journaled, and the accounts that must have
signed. For each, the SDK decodes the envelope, recomputes its hash for the passphrase and
verifies every signature. Prints one line per problem and exits 1 if there is any; exits 2
if stellar_sdk is missing (the Rust test turns that into a failure saying how to install
it).
"""

import json
import sys

try:
    from stellar_sdk import Keypair, TransactionEnvelope
    from stellar_sdk.exceptions import BadSignatureError
except ImportError:
    print("stellar_sdk is not installed", file=sys.stderr)
    sys.exit(2)


def check(item):
    problems = []
    name = item["hash"][:12]

    def expect(what, got, want):
        if got != want:
            problems.append(f"{name}: {what} is {got!r}, expected {want!r}")

    expect("the ledger's copy of the envelope", item["xdr"], item["journaled_xdr"])
    env = TransactionEnvelope.from_xdr(item["xdr"], item["passphrase"])
    tx = env.transaction
    expect("hash", env.hash_hex(), item["hash"])
    expect("source", tx.source.account_id, item["source"])
    expect("sequence", tx.sequence, item["sequence"])
    expect("operation count", len(tx.operations), item["operations"])
    expect("signature count", len(env.signatures), len(item["signers"]))
    for sig, signer in zip(env.signatures, item["signers"]):
        key = Keypair.from_public_key(signer)
        expect("signature hint", sig.signature_hint, key.signature_hint())
        try:
            key.verify(env.hash(), sig.signature)
        except BadSignatureError:
            problems.append(f"{name}: the signature by {signer} does not verify")
    return problems


def main():
    items = json.load(sys.stdin)
    problems = [p for item in items for p in check(item)]
    for p in problems:
        print(p)
    print(f"checked {len(items)} envelopes, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
