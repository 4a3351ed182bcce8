//! Cross-check with an independent implementation: the official Python SDK decodes the
//! envelopes this crate builds, recomputes their hashes and verifies their signatures
//! (tests/sdk_crosscheck.py). Needs `python3` with `stellar-sdk`; fails, saying how to
//! install it, when they are missing (a test never skips silently).

use std::io::Write;
use std::process::{Command, Stdio};

use payoutd_actors::domain::{AccountId, Amount, Asset, Destination, Memo};
use payoutd_actors::ports::{OpSpec, TxSpec};
use payoutd_actors::strkey;
use payoutd_stellar::{Keypair, Keyring, network_id, tx};
use serde_json::{Value, json};

const TESTNET: &str = "Test SDF Network ; September 2015";
const PUBLIC: &str = "Public Global Stellar Network ; September 2015";
const SEED: &str = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";
const DEST: &str = "GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2";
const INSTALL_HINT: &str = "install Python 3 and the official SDK: `pip install stellar-sdk` \
     (or point PAYOUTD_PYTHON at an interpreter that has it)";

fn channel_seed() -> String {
    strkey::encode(strkey::VERSION_SEED, &[7u8; 32])
}

fn base_spec(source: AccountId) -> TxSpec {
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
            kind: Default::default(),
        }],
    }
}

fn with_op(spec: &TxSpec, change: impl FnOnce(&mut OpSpec)) -> TxSpec {
    let mut spec = spec.clone();
    change(&mut spec.operations[0]);
    spec
}

/// What the SDK must find in the envelope built for `spec`.
fn case(name: &str, spec: &TxSpec, min_time: u64, passphrase: &str, ring: &Keyring) -> Value {
    let envelope =
        tx::build_and_sign_with_min_time(spec, min_time, &network_id(passphrase), ring).unwrap();
    let mut signers = vec![spec.source.to_strkey()];
    for op in &spec.operations {
        if op.payer != spec.source && !signers.contains(&op.payer.to_strkey()) {
            signers.push(op.payer.to_strkey());
        }
    }
    let operations: Vec<Value> = spec
        .operations
        .iter()
        .map(|op| {
            let (asset, asset_type) = match &op.asset {
                Asset::Native => ("native".to_owned(), "native"),
                Asset::Credit { code, .. } if code.is_alphanum4() => {
                    (op.asset.to_string(), "credit_alphanum4")
                }
                Asset::Credit { .. } => (op.asset.to_string(), "credit_alphanum12"),
            };
            json!({
                "op_source": (op.payer != spec.source).then(|| op.payer.to_strkey()),
                "destination": op.destination.to_strkey(),
                "asset": asset,
                "asset_type": asset_type,
                "amount": op.amount.to_string(),
            })
        })
        .collect();
    let memo = match &spec.memo {
        Memo::None => json!(["none", null]),
        Memo::Id(id) => json!(["id", id.to_string()]),
        Memo::Text(text) => json!(["text", text]),
        Memo::Hash(hash) => json!(["hash", hex::encode(hash)]),
    };
    json!({
        "name": name,
        "xdr": envelope.xdr,
        "passphrase": passphrase,
        "hash": envelope.hash.to_hex(),
        "source": spec.source.to_strkey(),
        "sequence": spec.sequence,
        "fee": spec.fee_stroops,
        "min_time": min_time,
        "max_time": spec.max_time,
        "ledger_bounds": spec.ledger_bounds.map(|(a, b)| vec![a, b]),
        "memo": memo,
        "operations": operations,
        "signers": signers,
    })
}

#[test]
fn official_python_sdk_agrees() {
    let channel_seed = channel_seed();
    let ring = Keyring::from_seeds([SEED, channel_seed.as_str()]).unwrap();
    let payer = Keypair::from_seed(SEED).unwrap().account();
    let channel = Keypair::from_seed(&channel_seed).unwrap().account();
    let issuer = AccountId::parse(DEST).unwrap();
    let golden = base_spec(payer);
    let cases = vec![
        case("golden", &golden, 12345, PUBLIC, &ring),
        case(
            "channel pattern",
            &TxSpec {
                source: channel,
                sequence: 9_000_000_001,
                memo: Memo::None,
                ..golden.clone()
            },
            0,
            TESTNET,
            &ring,
        ),
        case(
            "muxed destination, text memo",
            &TxSpec {
                memo: Memo::Text("reward-2026-11-0042".into()),
                ..with_op(&golden, |op| {
                    op.destination = Destination::Muxed {
                        account: issuer,
                        id: 1_234_567_890_123,
                    };
                    op.amount = Amount::parse("12.5").unwrap();
                })
            },
            0,
            TESTNET,
            &ring,
        ),
        case(
            "alphanum4, hash memo",
            &TxSpec {
                memo: Memo::Hash([0xab; 32]),
                ..with_op(&golden, |op| {
                    op.asset = Asset::parse(&format!("USDC:{DEST}")).unwrap();
                    op.amount = Amount::parse("0.1234567").unwrap();
                })
            },
            0,
            TESTNET,
            &ring,
        ),
        case(
            "alphanum12, ledger bounds, channel",
            &TxSpec {
                source: channel,
                ledger_bounds: Some((100, 200)),
                max_time: 1_900_000_000,
                ..with_op(&golden, |op| {
                    op.asset = Asset::parse(&format!("ABCDEFGHIJKL:{DEST}")).unwrap()
                })
            },
            0,
            TESTNET,
            &ring,
        ),
        case(
            "a batch of 100 payments from a channel, mixed assets and destinations",
            &TxSpec {
                source: channel,
                fee_stroops: 100 * 100,
                memo: Memo::Hash([0x5a; 32]),
                operations: (0..100u64)
                    .map(|i| OpSpec {
                        payer,
                        destination: if i % 3 == 0 {
                            Destination::Muxed {
                                account: issuer,
                                id: i,
                            }
                        } else {
                            Destination::parse(DEST).unwrap()
                        },
                        asset: if i % 2 == 0 {
                            Asset::Native
                        } else {
                            Asset::parse(&format!("USDC:{DEST}")).unwrap()
                        },
                        amount: Amount::from_stroops(1 + i as i64 * 1_234_567).unwrap(),
                        kind: Default::default(),
                    })
                    .collect(),
                ..golden.clone()
            },
            0,
            TESTNET,
            &ring,
        ),
    ];

    let python = std::env::var("PAYOUTD_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk_crosscheck.py");
    let mut child = Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}; {INSTALL_HINT}"));
    let input = serde_json::to_vec(&cases).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => assert!(
            stdout.contains(&format!("checked {} envelopes, 0 problems", cases.len())),
            "{stdout}"
        ),
        Some(2) => panic!("the Python SDK is missing ({stderr}); {INSTALL_HINT}"),
        _ => panic!("the official SDK disagrees:\n{stdout}\n{stderr}"),
    }
}
