"""Independent check, with the official Python SDK, of envelopes payoutd sent over RPC.

Reads a JSON list on stdin; each item has the envelope as the ledger server returned it
(`xdr`), the bytes payoutd journaled (`journaled_xdr`), the network passphrase, the hash
payoutd journaled, the source and sequence it journaled, and the accounts that must have
signed, and optionally (`ops`) what each operation must be: its kind (`payment`,
`claimable_balance`, `create_account`), destination, asset, amount in stroops and, for a
claimable balance, the balance id payoutd recorded. For each, the SDK decodes the envelope,
recomputes its hash for the passphrase, verifies every signature and checks each listed
operation, computing a claimable balance's id itself. Prints one line per problem and exits 1 if there is any; exits 2
if stellar_sdk is missing (the Rust test turns that into a failure saying how to install
it).
"""

import json
import sys

from decimal import Decimal

try:
    from stellar_sdk import (
        CreateAccount,
        CreateClaimableBalance,
        Keypair,
        Payment,
        TransactionEnvelope,
    )
    from stellar_sdk.exceptions import BadSignatureError
    from stellar_sdk.operation.create_claimable_balance import ClaimPredicateType
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
    for index, want in enumerate(item.get("ops", [])):
        check_op(tx, index, want, expect)
    return problems


def asset_name(asset):
    return "native" if asset.is_native() else f"{asset.code}:{asset.issuer}"


STROOPS_PER_UNIT = Decimal(10_000_000)


def check_op(tx, index, want, expect):
    op = tx.operations[index]
    what = f"operation {index}"
    amount = Decimal(want["amount_stroops"]) / STROOPS_PER_UNIT
    kind = want["kind"]
    if kind == "payment":
        expect(f"{what} type", type(op).__name__, "Payment")
        if isinstance(op, Payment):
            expect(f"{what} destination", op.destination.universal_account_id, want["destination"])
            expect(f"{what} asset", asset_name(op.asset), want["asset"])
            expect(f"{what} amount", Decimal(op.amount), amount)
    elif kind == "claimable_balance":
        expect(f"{what} type", type(op).__name__, "CreateClaimableBalance")
        if isinstance(op, CreateClaimableBalance):
            expect(f"{what} asset", asset_name(op.asset), want["asset"])
            expect(f"{what} amount", Decimal(op.amount), amount)
            expect(
                f"{what} claimants",
                [c.destination for c in op.claimants],
                [want["destination"]],
            )
            expect(
                f"{what} predicate",
                [c.predicate.claim_predicate_type for c in op.claimants],
                [ClaimPredicateType.CLAIM_PREDICATE_UNCONDITIONAL],
            )
            expect(f"{what} balance id", tx.get_claimable_balance_id(index), want["balance_id"])
    elif kind == "create_account":
        expect(f"{what} type", type(op).__name__, "CreateAccount")
        if isinstance(op, CreateAccount):
            expect(f"{what} destination", op.destination, want["destination"])
            expect(f"{what} asset", "native", want["asset"])
            expect(f"{what} starting balance", Decimal(op.starting_balance), amount)
    else:
        expect(f"{what} kind", kind, "payment | claimable_balance | create_account")


def main():
    items = json.load(sys.stdin)
    problems = [p for item in items for p in check(item)]
    for p in problems:
        print(p)
    print(f"checked {len(items)} envelopes, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
