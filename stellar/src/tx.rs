//! Building and signing one transaction of 1..=100 payments with stellar-xdr
//! (docs/protocol.md, "Stellar facts").
//!
//! The layout is fixed: one operation per payout (a `Payment`, or for a destination that
//! is not ready a `CreateClaimableBalance` or a `CreateAccount`), each sourced from the payer when the payer is
//! not the transaction source (the channel-account pattern), `TimeBounds` always carrying a
//! `max_time` so that expiry can be proven later, optional `LedgerBounds`, one memo for the
//! whole transaction. Pure functions: nothing here touches the network.

use payoutd_actors::destinations::OpKind;
use payoutd_actors::domain::{AccountId, Asset, Destination, Memo};
use payoutd_actors::policy::OPERATIONS_PER_TX_MAX;
use payoutd_actors::ports::{Envelope, LedgerError, OpSpec, TxHash, TxSpec};
use stellar_xdr::{
    AlphaNum4, AlphaNum12, AssetCode4, AssetCode12, ClaimPredicate, Claimant, ClaimantV0,
    CreateAccountOp, CreateClaimableBalanceOp, DecoratedSignature, LedgerBounds, Limits,
    MuxedAccount, MuxedAccountMed25519, Operation, OperationBody, PaymentOp, Preconditions,
    PreconditionsV2, PublicKey, SequenceNumber, Signature, SignatureHint, TimeBounds, TimePoint,
    Transaction, TransactionEnvelope, TransactionExt, TransactionV1Envelope, Uint256, WriteXdr,
};

use crate::keys::{Keypair, Keyring};

/// Longest asset code of `credit_alphanum4`, in bytes.
const ASSET_CODE4_BYTES_MAX: usize = 4;
/// Longest asset code of `credit_alphanum12`, in bytes.
const ASSET_CODE12_BYTES_MAX: usize = 12;

/// Builds the unsigned transaction for `spec`, with `TimeBounds { min_time, max_time }`.
///
/// The port's `TxSpec` has no `min_time` (the service always uses 0); this lower-level form
/// exists so that a fixed vector with another `min_time` (the public golden vector) can be reproduced.
pub fn build_payment_tx(spec: &TxSpec, min_time: u64) -> Result<Transaction, LedgerError> {
    if spec.max_time == 0 {
        // 0 means "no upper bound" to the network; such an envelope could never be proven
        // dead by time (docs/protocol.md), so it is never built.
        return Err(LedgerError::Build(
            "max_time must be set (0 means no expiry)".into(),
        ));
    }
    if min_time > spec.max_time {
        return Err(LedgerError::Build(format!(
            "min_time {min_time} is after max_time {}",
            spec.max_time
        )));
    }
    if spec.sequence <= 0 {
        return Err(LedgerError::Build(format!(
            "sequence number {} is not positive",
            spec.sequence
        )));
    }
    let time_bounds = TimeBounds {
        min_time: TimePoint(min_time),
        max_time: TimePoint(spec.max_time),
    };
    let cond = match spec.ledger_bounds {
        None => Preconditions::Time(time_bounds),
        Some((min_ledger, max_ledger)) => {
            if max_ledger != 0 && max_ledger < min_ledger {
                return Err(LedgerError::Build(format!(
                    "ledger bounds {min_ledger}..{max_ledger} are empty"
                )));
            }
            Preconditions::V2(PreconditionsV2 {
                time_bounds: Some(time_bounds),
                ledger_bounds: Some(LedgerBounds {
                    min_ledger,
                    max_ledger,
                }),
                min_seq_num: None,
                min_seq_age: stellar_xdr::Duration(0),
                min_seq_ledger_gap: 0,
                extra_signers: Default::default(),
            })
        }
    };
    if spec.operations.is_empty() || spec.operations.len() > OPERATIONS_PER_TX_MAX {
        return Err(LedgerError::Build(format!(
            "a transaction holds 1 to {OPERATIONS_PER_TX_MAX} operations, not {}",
            spec.operations.len()
        )));
    }
    let operations = spec
        .operations
        .iter()
        .map(|op| payment(spec, op))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Transaction {
        source_account: muxed_account(&spec.source),
        fee: spec.fee_stroops,
        seq_num: SequenceNumber(spec.sequence),
        cond,
        memo: memo(&spec.memo)?,
        operations: operations
            .try_into()
            .map_err(|_| build_error("operation list"))?,
        ext: TransactionExt::V0,
    })
}

fn payment(spec: &TxSpec, op: &OpSpec) -> Result<Operation, LedgerError> {
    let body = match op.kind {
        OpKind::Payment => OperationBody::Payment(PaymentOp {
            destination: destination(&op.destination),
            asset: asset(&op.asset)?,
            amount: op.amount.stroops(),
        }),
        // The destination's `G…` account: a claimant or a new account has no muxed form
        // (the core never reroutes a muxed destination, see `destinations`).
        OpKind::ClaimableBalance => {
            OperationBody::CreateClaimableBalance(CreateClaimableBalanceOp {
                asset: asset(&op.asset)?,
                amount: op.amount.stroops(),
                claimants: vec![Claimant::ClaimantTypeV0(ClaimantV0 {
                    destination: xdr_account_id(&op.destination.account()),
                    predicate: ClaimPredicate::Unconditional,
                })]
                .try_into()
                .map_err(|_| build_error("claimant list"))?,
            })
        }
        OpKind::CreateAccount => {
            if op.asset != Asset::Native {
                return Err(LedgerError::Build(
                    "an account can only be created with XLM".into(),
                ));
            }
            OperationBody::CreateAccount(CreateAccountOp {
                destination: xdr_account_id(&op.destination.account()),
                starting_balance: op.amount.stroops(),
            })
        }
    };
    Ok(Operation {
        // Same account: leave it to default to the transaction source (smaller, and what
        // the SDKs produce). Different: the channel pattern, the payer holds the money.
        source_account: (op.payer != spec.source).then(|| muxed_account(&op.payer)),
        body,
    })
}

/// A signed transaction: the envelope, its hash, and the envelope as base64 XDR.
#[derive(Debug, Clone)]
pub struct Signed {
    pub envelope: TransactionEnvelope,
    pub hash: [u8; 32],
    pub xdr_base64: String,
}

/// Hashes `tx` for `network_id` and signs the hash with each key, in the order given.
pub fn sign(
    tx: Transaction,
    network_id: &[u8; 32],
    signers: &[&Keypair],
) -> Result<Signed, LedgerError> {
    // sha256(network_id ‖ ENVELOPE_TYPE_TX ‖ tx XDR), as stellar-xdr implements it.
    let hash = tx
        .hash(*network_id)
        .map_err(|_| build_error("transaction hash"))?;
    let signatures = signers
        .iter()
        .map(|pair| {
            let signature = Signature(
                pair.sign(&hash)
                    .try_into()
                    .map_err(|_| build_error("signature"))?,
            );
            Ok(DecoratedSignature {
                hint: SignatureHint(pair.hint()),
                signature,
            })
        })
        .collect::<Result<Vec<_>, LedgerError>>()?;
    let envelope = TransactionEnvelope::Tx(TransactionV1Envelope {
        tx,
        signatures: signatures
            .try_into()
            .map_err(|_| build_error("too many signatures"))?,
    });
    let xdr_base64 = envelope
        .to_xdr_base64(Limits::none())
        .map_err(|_| build_error("envelope XDR"))?;
    Ok(Signed {
        envelope,
        hash,
        xdr_base64,
    })
}

/// Builds and signs `spec` with `TimeBounds { min_time, max_time }`: the source's key, and
/// the payer's when it is another account. Every key must be in `keyring`.
pub fn build_and_sign_with_min_time(
    spec: &TxSpec,
    min_time: u64,
    network_id: &[u8; 32],
    keyring: &Keyring,
) -> Result<Envelope, LedgerError> {
    let tx = build_payment_tx(spec, min_time)?;
    let key = |account: &AccountId| {
        keyring
            .get(account)
            .ok_or_else(|| LedgerError::NoKey(account.to_strkey()))
    };
    // The source signs; so does every other operation source (the payer), once each.
    let mut signers = vec![key(&spec.source)?];
    let mut signed = vec![spec.source];
    for op in &spec.operations {
        if !signed.contains(&op.payer) {
            signed.push(op.payer);
            signers.push(key(&op.payer)?);
        }
    }
    let signed = sign(tx, network_id, &signers)?;
    Ok(Envelope {
        xdr: signed.xdr_base64,
        hash: TxHash(signed.hash),
        source: spec.source,
        sequence: spec.sequence,
        fee_stroops: spec.fee_stroops,
        max_time: spec.max_time,
        ledger_bounds: spec.ledger_bounds,
    })
}

/// Builds and signs `spec` as the service does: `min_time` 0.
pub fn build_and_sign(
    spec: &TxSpec,
    network_id: &[u8; 32],
    keyring: &Keyring,
) -> Result<Envelope, LedgerError> {
    build_and_sign_with_min_time(spec, 0, network_id, keyring)
}

fn build_error(what: &str) -> LedgerError {
    LedgerError::Build(format!("cannot encode the {what}"))
}

fn muxed_account(account: &AccountId) -> MuxedAccount {
    MuxedAccount::Ed25519(Uint256(*account.as_bytes()))
}

fn destination(destination: &Destination) -> MuxedAccount {
    match destination {
        Destination::Account(account) => muxed_account(account),
        Destination::Muxed { account, id } => MuxedAccount::MuxedEd25519(MuxedAccountMed25519 {
            id: *id,
            ed25519: Uint256(*account.as_bytes()),
        }),
    }
}

pub(crate) fn xdr_account_id(account: &AccountId) -> stellar_xdr::AccountId {
    stellar_xdr::AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(
        *account.as_bytes(),
    )))
}

fn asset(asset: &Asset) -> Result<stellar_xdr::Asset, LedgerError> {
    Ok(match asset {
        Asset::Native => stellar_xdr::Asset::Native,
        Asset::Credit { code, issuer } => {
            let bytes = code.as_str().as_bytes();
            let bad_code = || {
                LedgerError::Build(format!(
                    "asset code {:?} has the wrong length",
                    code.as_str()
                ))
            };
            if bytes.is_empty() || bytes.len() > ASSET_CODE12_BYTES_MAX {
                return Err(bad_code());
            }
            // Codes are right-padded with zero bytes to the fixed width.
            if bytes.len() <= ASSET_CODE4_BYTES_MAX {
                let mut padded = [0u8; ASSET_CODE4_BYTES_MAX];
                padded[..bytes.len()].copy_from_slice(bytes);
                stellar_xdr::Asset::CreditAlphanum4(AlphaNum4 {
                    asset_code: AssetCode4(padded),
                    issuer: xdr_account_id(issuer),
                })
            } else {
                let mut padded = [0u8; ASSET_CODE12_BYTES_MAX];
                padded[..bytes.len()].copy_from_slice(bytes);
                stellar_xdr::Asset::CreditAlphanum12(AlphaNum12 {
                    asset_code: AssetCode12(padded),
                    issuer: xdr_account_id(issuer),
                })
            }
        }
    })
}

fn memo(memo: &Memo) -> Result<stellar_xdr::Memo, LedgerError> {
    Ok(match memo {
        Memo::None => stellar_xdr::Memo::None,
        Memo::Text(text) => stellar_xdr::Memo::Text(
            text.as_bytes()
                .to_vec()
                .try_into()
                .map_err(|_| LedgerError::Build("memo text is longer than 28 bytes".into()))?,
        ),
        Memo::Id(id) => stellar_xdr::Memo::Id(*id),
        Memo::Hash(hash) => stellar_xdr::Memo::Hash(stellar_xdr::Hash(*hash)),
    })
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Verifier, VerifyingKey};
    use payoutd_actors::domain::{Amount, PayoutId, PayoutRequest, RawMemo, RawPayoutRequest};
    use stellar_xdr::ReadXdr;

    use super::*;
    use crate::network_id;

    const PUBLIC: &str = "Public Global Stellar Network ; September 2015";
    const TESTNET: &str = "Test SDF Network ; September 2015";
    const SEED: &str = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";
    const DEST: &str = "GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2";
    const GOLDEN_XDR: &str = "AAAAAgAAAADL13HWIyocdKsZ7A7HM8Srqmv+uZWc+rI4xx3M8oedCQAAAMgAAAAAAAAAAQAAAAEAAAAAAAAwOQAAAAAAAN3VAAAAAgAAAAAAAABkAAAAAQAAAAAAAAABAAAAANKYxYFXEWWR6TIJ6Vx6W/8SGy4dP2GLaND8yO/l5eRwAAAAAAAAAAJUC+QAAAAAAAAAAAHyh50JAAAAQCXOQnmno3he687bKRtDc6+BXRUf8t+RnTuHy+sKf35UjfFiQbIge+txehmg0N61JsFWfwbL0JtgOjzyeZw5JAs=";
    const GOLDEN_HASH: &str = "40a1855a9afaa19fbef064c833132096ba0cd5283138c0013f6151dd0b21aee9";
    /// A second key for the channel pattern (any valid seed; made here, used only in tests).
    const CHANNEL_SEED_BYTES: [u8; 32] = [7u8; 32];

    fn channel_seed() -> String {
        payoutd_actors::strkey::encode(payoutd_actors::strkey::VERSION_SEED, &CHANNEL_SEED_BYTES)
    }

    fn golden_spec(source: AccountId) -> TxSpec {
        TxSpec {
            source,
            sequence: 1,
            fee_stroops: 200,
            max_time: 56789,
            ledger_bounds: None,
            memo: Memo::Id(100),
            operations: vec![OpSpec {
                payer: source,
                destination: Destination::parse(DEST).unwrap(),
                asset: Asset::Native,
                amount: Amount::from_stroops(10_000_000_000).unwrap(),
                kind: OpKind::Payment,
            }],
        }
    }

    fn with_op(mut spec: TxSpec, change: impl FnOnce(&mut OpSpec)) -> TxSpec {
        change(&mut spec.operations[0]);
        spec
    }

    #[test]
    fn a_batch_of_a_hundred_payments_from_a_channel() {
        let ring = Keyring::from_seeds([SEED, channel_seed().as_str()]).unwrap();
        let payer = Keypair::from_seed(SEED).unwrap().account();
        let channel = Keypair::from_seed(&channel_seed()).unwrap().account();
        let one = golden_spec(payer).operations[0].clone();
        let spec = TxSpec {
            source: channel,
            fee_stroops: 100 * 100,
            operations: (0..100)
                .map(|i| OpSpec {
                    amount: Amount::from_stroops(1 + i).unwrap(),
                    ..one.clone()
                })
                .collect(),
            ..golden_spec(payer)
        };
        let envelope = build_and_sign(&spec, &network_id(TESTNET), &ring).unwrap();
        let env = decode(&envelope.xdr);
        assert_eq!(env.tx.operations.len(), 100);
        assert_eq!(env.tx.fee, 10_000);
        for (i, op) in env.tx.operations.iter().enumerate() {
            assert_eq!(
                op.source_account,
                Some(MuxedAccount::Ed25519(Uint256(*payer.as_bytes())))
            );
            let OperationBody::Payment(p) = &op.body else {
                panic!("not a payment")
            };
            assert_eq!(p.amount, 1 + i as i64);
        }
        let hash = env.tx.hash(network_id(TESTNET)).unwrap();
        assert_signed_by(&env, &hash, &[channel, payer]);
        let too_many = TxSpec {
            operations: vec![one; 101],
            ..golden_spec(payer)
        };
        assert!(matches!(
            build_and_sign(&too_many, &network_id(TESTNET), &ring),
            Err(LedgerError::Build(_))
        ));
    }

    fn decode(xdr: &str) -> TransactionV1Envelope {
        match TransactionEnvelope::from_xdr_base64(xdr, Limits::none()).unwrap() {
            TransactionEnvelope::Tx(env) => env,
            other => panic!("expected a V1 envelope, got {other:?}"),
        }
    }

    fn payment(env: &TransactionV1Envelope) -> (&Operation, &PaymentOp) {
        assert_eq!(env.tx.operations.len(), 1);
        let op = &env.tx.operations[0];
        match &op.body {
            OperationBody::Payment(p) => (op, p),
            other => panic!("expected a payment, got {other:?}"),
        }
    }

    /// Every signature must verify against the hash with the key its hint names.
    fn assert_signed_by(env: &TransactionV1Envelope, hash: &[u8; 32], accounts: &[AccountId]) {
        assert_eq!(env.signatures.len(), accounts.len());
        for (sig, account) in env.signatures.iter().zip(accounts) {
            assert_eq!(sig.hint.0, account.as_bytes()[28..32]);
            let key = VerifyingKey::from_bytes(account.as_bytes()).unwrap();
            let bytes: [u8; 64] = sig.signature.0.as_slice().try_into().unwrap();
            key.verify(hash, &ed25519_dalek::Signature::from_bytes(&bytes))
                .unwrap();
        }
    }

    #[test]
    fn network_ids_match_the_brief() {
        assert_eq!(
            hex::encode(network_id(TESTNET)),
            "cee0302d59844d32bdca915c8203dd44b33fbb7edc19051ea37abedf28ecd472"
        );
        assert_eq!(
            hex::encode(network_id(PUBLIC)),
            "7ac33997544e3175d266bd022439b22cdb16508c01163f26e5cb2a3e1045a979"
        );
    }

    #[test]
    fn golden_vector_byte_for_byte() {
        let ring = Keyring::from_seeds([SEED]).unwrap();
        let source = ring.accounts().next().unwrap();
        let spec = golden_spec(source);
        let envelope =
            build_and_sign_with_min_time(&spec, 12345, &network_id(PUBLIC), &ring).unwrap();
        assert_eq!(envelope.xdr, GOLDEN_XDR);
        assert_eq!(envelope.hash.to_hex(), GOLDEN_HASH);
        assert_eq!(envelope.source, source);
        assert_eq!(
            (envelope.sequence, envelope.fee_stroops, envelope.max_time),
            (1, 200, 56789)
        );
        assert_eq!(envelope.ledger_bounds, None);
    }

    #[test]
    fn golden_decodes_back() {
        let env = decode(GOLDEN_XDR);
        let source = Keypair::from_seed(SEED).unwrap().account();
        assert_eq!(
            env.tx.source_account,
            MuxedAccount::Ed25519(Uint256(*source.as_bytes()))
        );
        assert_eq!(env.tx.fee, 200);
        assert_eq!(env.tx.seq_num, SequenceNumber(1));
        assert_eq!(env.tx.memo, stellar_xdr::Memo::Id(100));
        assert_eq!(
            env.tx.cond,
            Preconditions::Time(TimeBounds {
                min_time: TimePoint(12345),
                max_time: TimePoint(56789)
            })
        );
        let (op, pay) = payment(&env);
        assert_eq!(op.source_account, None);
        assert_eq!(pay.amount, 10_000_000_000);
        assert_eq!(pay.asset, stellar_xdr::Asset::Native);
        let hash = env.tx.hash(network_id(PUBLIC)).unwrap();
        assert_eq!(hex::encode(hash), GOLDEN_HASH);
        assert_signed_by(&env, &hash, &[source]);
    }

    #[test]
    fn service_default_min_time_is_zero() {
        let ring = Keyring::from_seeds([SEED]).unwrap();
        let spec = golden_spec(ring.accounts().next().unwrap());
        let envelope = build_and_sign(&spec, &network_id(PUBLIC), &ring).unwrap();
        assert_ne!(envelope.xdr, GOLDEN_XDR);
        let env = decode(&envelope.xdr);
        assert_eq!(
            env.tx.cond,
            Preconditions::Time(TimeBounds {
                min_time: TimePoint(0),
                max_time: TimePoint(56789)
            })
        );
    }

    #[test]
    fn channel_pattern_has_two_signatures_and_op_source() {
        let ring = Keyring::from_seeds([SEED, channel_seed().as_str()]).unwrap();
        let payer = Keypair::from_seed(SEED).unwrap().account();
        let channel = Keypair::from_seed(&channel_seed()).unwrap().account();
        let spec = TxSpec {
            source: channel,
            ..golden_spec(payer)
        };
        let envelope = build_and_sign(&spec, &network_id(TESTNET), &ring).unwrap();
        assert_eq!(envelope.source, channel);
        let env = decode(&envelope.xdr);
        assert_eq!(
            env.tx.source_account,
            MuxedAccount::Ed25519(Uint256(*channel.as_bytes()))
        );
        let (op, _) = payment(&env);
        assert_eq!(
            op.source_account,
            Some(MuxedAccount::Ed25519(Uint256(*payer.as_bytes())))
        );
        let hash = env.tx.hash(network_id(TESTNET)).unwrap();
        assert_eq!(envelope.hash.0, hash);
        assert_signed_by(&env, &hash, &[channel, payer]);
    }

    #[test]
    fn missing_key_is_named() {
        let ring = Keyring::from_seeds([SEED]).unwrap();
        let payer = Keypair::from_seed(SEED).unwrap().account();
        let channel = Keypair::from_seed(&channel_seed()).unwrap().account();
        let spec = TxSpec {
            source: channel,
            ..golden_spec(payer)
        };
        assert_eq!(
            build_and_sign(&spec, &network_id(TESTNET), &ring).unwrap_err(),
            LedgerError::NoKey(channel.to_strkey())
        );
        let empty = Keyring::new();
        assert_eq!(
            build_and_sign(&golden_spec(payer), &network_id(TESTNET), &empty).unwrap_err(),
            LedgerError::NoKey(payer.to_strkey())
        );
    }

    #[test]
    fn muxed_destination() {
        let ring = Keyring::from_seeds([SEED]).unwrap();
        let source = ring.accounts().next().unwrap();
        let dest_account = AccountId::parse(DEST).unwrap();
        let spec = with_op(golden_spec(source), |op| {
            op.destination = Destination::Muxed {
                account: dest_account,
                id: 0xdead_beef_0000_0042,
            }
        });
        let env = decode(
            &build_and_sign(&spec, &network_id(TESTNET), &ring)
                .unwrap()
                .xdr,
        );
        let (_, pay) = payment(&env);
        assert_eq!(
            pay.destination,
            MuxedAccount::MuxedEd25519(MuxedAccountMed25519 {
                id: 0xdead_beef_0000_0042,
                ed25519: Uint256(*dest_account.as_bytes())
            })
        );
    }

    #[test]
    fn credit_assets_are_zero_padded() {
        let ring = Keyring::from_seeds([SEED]).unwrap();
        let source = ring.accounts().next().unwrap();
        let issuer = AccountId::parse(DEST).unwrap();
        let xdr_issuer =
            stellar_xdr::AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(*issuer.as_bytes())));
        let cases = [
            (
                "USD",
                stellar_xdr::Asset::CreditAlphanum4(AlphaNum4 {
                    asset_code: AssetCode4(*b"USD\0"),
                    issuer: xdr_issuer.clone(),
                }),
            ),
            (
                "USDC",
                stellar_xdr::Asset::CreditAlphanum4(AlphaNum4 {
                    asset_code: AssetCode4(*b"USDC"),
                    issuer: xdr_issuer.clone(),
                }),
            ),
            (
                "ABCDE",
                stellar_xdr::Asset::CreditAlphanum12(AlphaNum12 {
                    asset_code: AssetCode12(*b"ABCDE\0\0\0\0\0\0\0"),
                    issuer: xdr_issuer.clone(),
                }),
            ),
            (
                "ABCDEFGHIJKL",
                stellar_xdr::Asset::CreditAlphanum12(AlphaNum12 {
                    asset_code: AssetCode12(*b"ABCDEFGHIJKL"),
                    issuer: xdr_issuer.clone(),
                }),
            ),
        ];
        for (code, expected) in cases {
            let spec = with_op(golden_spec(source), |op| {
                op.asset = Asset::parse(&format!("{code}:{DEST}")).unwrap()
            });
            let env = decode(
                &build_and_sign(&spec, &network_id(TESTNET), &ring)
                    .unwrap()
                    .xdr,
            );
            assert_eq!(payment(&env).1.asset, expected, "{code}");
        }
    }

    #[test]
    fn ledger_bounds_use_preconditions_v2() {
        let ring = Keyring::from_seeds([SEED]).unwrap();
        let source = ring.accounts().next().unwrap();
        let spec = TxSpec {
            ledger_bounds: Some((100, 200)),
            max_time: 1_800_000_000,
            ..golden_spec(source)
        };
        let envelope = build_and_sign(&spec, &network_id(TESTNET), &ring).unwrap();
        assert_eq!(envelope.ledger_bounds, Some((100, 200)));
        let env = decode(&envelope.xdr);
        let Preconditions::V2(v2) = &env.tx.cond else {
            panic!("expected V2 preconditions, got {:?}", env.tx.cond)
        };
        assert_eq!(
            v2.time_bounds,
            Some(TimeBounds {
                min_time: TimePoint(0),
                max_time: TimePoint(1_800_000_000)
            })
        );
        assert_eq!(
            v2.ledger_bounds,
            Some(LedgerBounds {
                min_ledger: 100,
                max_ledger: 200
            })
        );
        assert_eq!(v2.min_seq_num, None);
        assert_eq!(v2.min_seq_age, stellar_xdr::Duration(0));
        assert_eq!(v2.min_seq_ledger_gap, 0);
        assert!(v2.extra_signers.is_empty());
        // Open-ended upper ledger bound (0) is allowed.
        let spec = TxSpec {
            ledger_bounds: Some((100, 0)),
            ..spec
        };
        assert!(build_and_sign(&spec, &network_id(TESTNET), &ring).is_ok());
    }

    #[test]
    fn memos() {
        let ring = Keyring::from_seeds([SEED]).unwrap();
        let source = ring.accounts().next().unwrap();
        let parse = |kind: &str, value: &str| {
            RawMemo {
                kind: kind.into(),
                value: Some(value.into()),
            }
            .parse()
            .unwrap()
        };
        let hash_hex = "ab".repeat(32);
        let cases = [
            (Memo::None, stellar_xdr::Memo::None),
            (
                parse("text", "reward-2026-11-0042"),
                stellar_xdr::Memo::Text(b"reward-2026-11-0042".to_vec().try_into().unwrap()),
            ),
            (
                parse("text", &"é".repeat(14)),
                stellar_xdr::Memo::Text("é".repeat(14).into_bytes().try_into().unwrap()),
            ),
            (
                parse("id", "18446744073709551615"),
                stellar_xdr::Memo::Id(u64::MAX),
            ),
            (
                parse("hash", &hash_hex),
                stellar_xdr::Memo::Hash(stellar_xdr::Hash([0xab; 32])),
            ),
        ];
        for (memo, expected) in cases {
            let spec = TxSpec {
                memo,
                ..golden_spec(source)
            };
            let env = decode(
                &build_and_sign(&spec, &network_id(TESTNET), &ring)
                    .unwrap()
                    .xdr,
            );
            assert_eq!(env.tx.memo, expected);
        }
    }

    #[test]
    fn spec_from_a_parsed_request_round_trips() {
        // The path the service takes: a request parsed at the boundary, then a TxSpec.
        let request: PayoutRequest = RawPayoutRequest {
            payout_id: "reward-2026-11-0042".into(),
            destination: DEST.into(),
            asset: "native".into(),
            amount: "12.5".into(),
            memo: None,
        }
        .parse()
        .unwrap();
        assert_eq!(
            request.payout_id(),
            &PayoutId::parse("reward-2026-11-0042").unwrap()
        );
        let ring = Keyring::from_seeds([SEED]).unwrap();
        let source = ring.accounts().next().unwrap();
        let spec = TxSpec {
            memo: request.memo().cloned().unwrap_or_default(),
            operations: vec![OpSpec {
                payer: source,
                destination: *request.destination(),
                asset: request.asset().clone(),
                amount: request.amount(),
                kind: OpKind::Payment,
            }],
            ..golden_spec(source)
        };
        let env = decode(
            &build_and_sign(&spec, &network_id(TESTNET), &ring)
                .unwrap()
                .xdr,
        );
        assert_eq!(payment(&env).1.amount, 125_000_000);
    }

    #[test]
    fn refuses_specs_that_could_never_be_proven_dead() {
        let ring = Keyring::from_seeds([SEED]).unwrap();
        let source = ring.accounts().next().unwrap();
        let id = network_id(TESTNET);
        let no_expiry = TxSpec {
            max_time: 0,
            ..golden_spec(source)
        };
        assert!(matches!(
            build_and_sign(&no_expiry, &id, &ring),
            Err(LedgerError::Build(_))
        ));
        assert!(matches!(
            build_and_sign_with_min_time(&golden_spec(source), 56790, &id, &ring),
            Err(LedgerError::Build(_))
        ));
        let empty_bounds = TxSpec {
            ledger_bounds: Some((10, 9)),
            ..golden_spec(source)
        };
        assert!(matches!(
            build_and_sign(&empty_bounds, &id, &ring),
            Err(LedgerError::Build(_))
        ));
        let bad_seq = TxSpec {
            sequence: 0,
            ..golden_spec(source)
        };
        assert!(matches!(
            build_and_sign(&bad_seq, &id, &ring),
            Err(LedgerError::Build(_))
        ));
    }

    #[test]
    fn other_network_gives_other_hash() {
        let ring = Keyring::from_seeds([SEED]).unwrap();
        let spec = golden_spec(ring.accounts().next().unwrap());
        let public = build_and_sign(&spec, &network_id(PUBLIC), &ring).unwrap();
        let testnet = build_and_sign(&spec, &network_id(TESTNET), &ring).unwrap();
        assert_ne!(public.hash, testnet.hash);
        // Deterministic: same spec, same bytes (ed25519 signatures are deterministic).
        assert_eq!(
            public,
            build_and_sign(&spec, &network_id(PUBLIC), &ring).unwrap()
        );
    }

    /// The three kinds in one transaction: each operation is the XDR of its kind, and the
    /// core's claimable balance id (written out without XDR) is the sha256 of the XDR
    /// `HashIdPreimage::OpId` of the transaction source, sequence and operation index.
    #[test]
    fn every_operation_kind_builds_and_the_balance_id_matches_the_xdr_preimage() {
        use payoutd_actors::destinations::claimable_balance_id;
        use sha2::{Digest, Sha256};
        use stellar_xdr::{HashIdPreimage, HashIdPreimageOperationId};

        let payer = Keypair::from_seed(SEED).unwrap().account();
        let channel = Keypair::from_seed(&channel_seed()).unwrap().account();
        let dest = Destination::parse(DEST).unwrap();
        let usdc =
            Asset::parse("USDC:GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN").unwrap();
        let op = |kind, asset: &Asset| OpSpec {
            payer,
            destination: dest,
            asset: asset.clone(),
            amount: Amount::from_stroops(50_000_000).unwrap(),
            kind,
        };
        let spec = TxSpec {
            source: channel,
            sequence: 4_294_967_297,
            operations: vec![
                op(OpKind::Payment, &Asset::Native),
                op(OpKind::ClaimableBalance, &usdc),
                op(OpKind::CreateAccount, &Asset::Native),
            ],
            ..golden_spec(channel)
        };
        let tx = build_payment_tx(&spec, 0).unwrap();
        let bodies: Vec<_> = tx.operations.iter().map(|o| &o.body).collect();
        assert!(matches!(bodies[0], OperationBody::Payment(_)));
        match bodies[1] {
            OperationBody::CreateClaimableBalance(c) => {
                assert_eq!(c.amount, 50_000_000);
                assert_eq!(c.claimants.len(), 1);
                let Claimant::ClaimantTypeV0(v0) = &c.claimants[0];
                assert_eq!(v0.destination, xdr_account_id(&dest.account()));
                assert_eq!(v0.predicate, ClaimPredicate::Unconditional);
            }
            other => panic!("{other:?}"),
        }
        match bodies[2] {
            OperationBody::CreateAccount(c) => {
                assert_eq!(c.starting_balance, 50_000_000);
                assert_eq!(c.destination, xdr_account_id(&dest.account()));
            }
            other => panic!("{other:?}"),
        }
        for o in &tx.operations {
            assert_eq!(
                o.source_account,
                Some(muxed_account(&payer)),
                "sourced from the payer"
            );
        }
        for index in 0..3u32 {
            let preimage = HashIdPreimage::OpId(HashIdPreimageOperationId {
                source_account: xdr_account_id(&channel),
                seq_num: SequenceNumber(spec.sequence),
                op_num: index,
            });
            let hash = Sha256::digest(preimage.to_xdr(Limits::none()).unwrap());
            let want = format!("00000000{}", hex::encode(hash));
            assert_eq!(claimable_balance_id(&channel, spec.sequence, index), want);
        }
        // A credit asset cannot create an account.
        let bad = TxSpec {
            operations: vec![op(OpKind::CreateAccount, &usdc)],
            ..spec
        };
        assert!(build_payment_tx(&bad, 0).is_err());
    }
}
