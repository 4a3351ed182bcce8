//! Test helpers: keys, transaction building and signing, and HTTP calls into the router.
#![allow(dead_code)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use ed25519_dalek::{Signer as _, SigningKey};
use http_body_util::BodyExt as _;
use payoutd_simulator::{CloseMode, SimConfig, Simulator, TESTNET_PASSPHRASE, router};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use stellar_xdr::{
    AccountId, AlphaNum4, Asset, AssetCode4, ClaimClaimableBalanceOp, ClaimPredicate,
    ClaimableBalanceId, Claimant, ClaimantV0, CreateAccountOp, CreateClaimableBalanceOp,
    DecoratedSignature, Hash, Limits, Memo, MuxedAccount, MuxedAccountMed25519, Operation,
    OperationBody, PaymentOp, Preconditions, PublicKey, SequenceNumber, Signature, SignatureHint,
    TimeBounds, TimePoint, Transaction, TransactionEnvelope, TransactionExt, TransactionV1Envelope,
    Uint256, WriteXdr,
};

/// Ledger 1's close time in the tests (Manual mode then steps 5 s per ledger).
pub const GENESIS: u64 = 1_700_000_000;
pub const XLM: i64 = 10_000_000;

/// A keypair derived from a label, so tests are reproducible.
#[derive(Clone)]
pub struct Key {
    pub sk: SigningKey,
}

impl Key {
    pub fn new(label: &str) -> Self {
        let seed: [u8; 32] = Sha256::digest(label.as_bytes()).into();
        Self {
            sk: SigningKey::from_bytes(&seed),
        }
    }

    pub fn from_secret(s: &str) -> Self {
        let sk = stellar_strkey::ed25519::PrivateKey::from_string(s).expect("valid secret seed");
        Self {
            sk: SigningKey::from_bytes(&sk.0),
        }
    }

    pub fn public(&self) -> [u8; 32] {
        self.sk.verifying_key().to_bytes()
    }

    pub fn g(&self) -> String {
        PublicKey::PublicKeyTypeEd25519(Uint256(self.public())).to_string()
    }

    pub fn muxed(&self) -> MuxedAccount {
        MuxedAccount::Ed25519(Uint256(self.public()))
    }

    pub fn muxed_id(&self, id: u64) -> MuxedAccount {
        MuxedAccount::MuxedEd25519(MuxedAccountMed25519 {
            id,
            ed25519: Uint256(self.public()),
        })
    }

    pub fn account_id(&self) -> AccountId {
        AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(self.public())))
    }
}

pub fn usdc(issuer: &Key) -> Asset {
    Asset::CreditAlphanum4(AlphaNum4 {
        asset_code: AssetCode4(*b"USDC"),
        issuer: issuer.account_id(),
    })
}

pub fn payment(source: Option<&Key>, dest: MuxedAccount, asset: Asset, amount: i64) -> Operation {
    Operation {
        source_account: source.map(Key::muxed),
        body: OperationBody::Payment(PaymentOp {
            destination: dest,
            asset,
            amount,
        }),
    }
}

pub fn create_account(source: Option<&Key>, dest: &Key, starting_balance: i64) -> Operation {
    Operation {
        source_account: source.map(Key::muxed),
        body: OperationBody::CreateAccount(CreateAccountOp {
            destination: dest.account_id(),
            starting_balance,
        }),
    }
}

/// A claimable balance for `claimants`, all unconditional.
pub fn create_balance(
    source: Option<&Key>,
    asset: Asset,
    amount: i64,
    claimants: &[&Key],
) -> Operation {
    let claimants: Vec<Claimant> = claimants
        .iter()
        .map(|k| {
            Claimant::ClaimantTypeV0(ClaimantV0 {
                destination: k.account_id(),
                predicate: ClaimPredicate::Unconditional,
            })
        })
        .collect();
    Operation {
        source_account: source.map(Key::muxed),
        body: OperationBody::CreateClaimableBalance(CreateClaimableBalanceOp {
            asset,
            amount,
            claimants: claimants.try_into().expect("at most 10 claimants"),
        }),
    }
}

/// Claims the balance with Horizon-form id `id_hex` (`00000000` + 64 hex).
pub fn claim(source: Option<&Key>, id_hex: &str) -> Operation {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&id_hex[8..], &mut hash).expect("a 72-hex-character balance id");
    Operation {
        source_account: source.map(Key::muxed),
        body: OperationBody::ClaimClaimableBalance(ClaimClaimableBalanceOp {
            balance_id: ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash(hash)),
        }),
    }
}

/// The id of the claimable balance that operation `op_index` of a transaction from
/// `tx_source` with sequence number `seq` creates, in Horizon's hex form, computed from the
/// byte layout of the XDR `HashIdPreimage` (not through the XDR library): the envelope type
/// ENVELOPE_TYPE_OP_ID (6), the account's key type (0, ed25519) and 32 key bytes, the
/// sequence number (8 bytes) and the operation index (4 bytes), all big-endian; hashed with
/// sha256, then prefixed with the id's type (4 bytes of 0).
pub fn expected_balance_id(tx_source: &Key, seq: i64, op_index: u32) -> String {
    let mut preimage = Vec::with_capacity(4 + 4 + 32 + 8 + 4);
    preimage.extend_from_slice(&6u32.to_be_bytes());
    preimage.extend_from_slice(&0u32.to_be_bytes());
    preimage.extend_from_slice(&tx_source.public());
    preimage.extend_from_slice(&seq.to_be_bytes());
    preimage.extend_from_slice(&op_index.to_be_bytes());
    let hash: [u8; 32] = Sha256::digest(&preimage).into();
    format!("00000000{}", hex::encode(hash))
}

/// A transaction with the usual shape: one fee per op of 100, no bounds, no memo.
pub struct Tx {
    pub source: MuxedAccount,
    pub seq: i64,
    pub fee: u32,
    pub cond: Preconditions,
    pub memo: Memo,
    pub ops: Vec<Operation>,
}

impl Tx {
    pub fn new(source: &Key, seq: i64, ops: Vec<Operation>) -> Self {
        let fee = 100 * u32::try_from(ops.len()).expect("few ops");
        Self {
            source: source.muxed(),
            seq,
            fee,
            cond: Preconditions::None,
            memo: Memo::None,
            ops,
        }
    }

    pub fn memo(mut self, memo: Memo) -> Self {
        self.memo = memo;
        self
    }

    pub fn fee(mut self, fee: u32) -> Self {
        self.fee = fee;
        self
    }

    pub fn time_bounds(mut self, min: u64, max: u64) -> Self {
        self.cond = Preconditions::Time(TimeBounds {
            min_time: TimePoint(min),
            max_time: TimePoint(max),
        });
        self
    }

    pub fn build(&self) -> Transaction {
        Transaction {
            source_account: self.source.clone(),
            fee: self.fee,
            seq_num: SequenceNumber(self.seq),
            cond: self.cond.clone(),
            memo: self.memo.clone(),
            operations: self.ops.clone().try_into().expect("at most 100 ops"),
            ext: TransactionExt::V0,
        }
    }

    /// The base64 envelope signed by `signers` for `passphrase`.
    pub fn sign_for(&self, passphrase: &str, signers: &[&Key]) -> String {
        let tx = self.build();
        let network_id: [u8; 32] = Sha256::digest(passphrase.as_bytes()).into();
        let hash = tx.hash(network_id).expect("hashable");
        let signatures: Vec<DecoratedSignature> = signers
            .iter()
            .map(|k| {
                let pk = k.public();
                DecoratedSignature {
                    hint: SignatureHint([pk[28], pk[29], pk[30], pk[31]]),
                    signature: Signature(
                        k.sk.sign(&hash)
                            .to_bytes()
                            .to_vec()
                            .try_into()
                            .expect("64 bytes"),
                    ),
                }
            })
            .collect();
        let env = TransactionEnvelope::Tx(TransactionV1Envelope {
            tx,
            signatures: signatures.try_into().expect("at most 20 signatures"),
        });
        env.to_xdr_base64(Limits::none()).expect("encodable")
    }

    pub fn sign(&self, signers: &[&Key]) -> String {
        self.sign_for(TESTNET_PASSPHRASE, signers)
    }

    pub fn hash(&self) -> String {
        let network_id: [u8; 32] = Sha256::digest(TESTNET_PASSPHRASE.as_bytes()).into();
        hex::encode(self.build().hash(network_id).expect("hashable"))
    }
}

pub fn manual_config() -> SimConfig {
    SimConfig {
        close_mode: CloseMode::Manual,
        genesis_close_time: Some(GENESIS),
        submit_wait_ms: 5_000,
        ..SimConfig::default()
    }
}

pub fn manual_sim() -> (Arc<Simulator>, Router) {
    let sim = Simulator::new(manual_config()).expect("simulator starts");
    let app = router(Arc::clone(&sim));
    (sim, app)
}

/// An HTTP answer: status, raw body, the body as JSON, and its `Latest-Ledger` header.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
    pub json: Value,
    /// `None` if the header is missing or not a number.
    pub latest_ledger: Option<u32>,
}

pub async fn call(app: &Router, req: Request<Body>) -> Answer {
    use tower::ServiceExt as _;
    let resp = app
        .clone()
        .oneshot(req)
        .await
        .expect("router is infallible");
    let status = resp.status();
    let latest_ledger = resp
        .headers()
        .get("latest-ledger")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let body = String::from_utf8(bytes.to_vec()).expect("utf-8 body");
    let json = serde_json::from_str(&body).unwrap_or(Value::Null);
    Answer {
        status,
        body,
        json,
        latest_ledger,
    }
}

pub async fn get(app: &Router, path: &str) -> Answer {
    call(
        app,
        Request::get(path).body(Body::empty()).expect("request"),
    )
    .await
}

pub async fn post_json(app: &Router, path: &str, body: Value) -> Answer {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    call(app, req).await
}

pub async fn put_json(app: &Router, path: &str, body: Value) -> Answer {
    let req = Request::put(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    call(app, req).await
}

/// Percent-encodes a form value (base64 has `+`, `/` and `=`).
pub fn form_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn post_tx(app: &Router, path: &str, envelope: &str) -> Answer {
    let req = Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("tx={}", form_encode(envelope))))
        .expect("request");
    call(app, req).await
}

/// `POST /transactions` in Manual mode: posts, and once the transaction is pending, closes
/// a ledger; answers whatever the POST answers (at once, for a rejection).
pub async fn submit_and_close(sim: &Arc<Simulator>, app: &Router, envelope: &str) -> Answer {
    let before = sim.pending_count();
    let task = tokio::spawn({
        let app = app.clone();
        let envelope = envelope.to_owned();
        async move { post_tx(&app, "/transactions", &envelope).await }
    });
    for _ in 0..2_000 {
        if task.is_finished() || sim.pending_count() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    if !task.is_finished() {
        sim.close_ledger();
    }
    task.await.expect("post task")
}

/// The result codes of a `transaction_failed` problem.
pub fn result_codes(a: &Answer) -> (String, Option<Vec<String>>) {
    let rc = &a.json["extras"]["result_codes"];
    let tx = rc["transaction"].as_str().unwrap_or_default().to_owned();
    let ops = rc["operations"].as_array().map(|v| {
        v.iter()
            .map(|s| s.as_str().unwrap_or_default().to_owned())
            .collect()
    });
    (tx, ops)
}

/// Funds `keys` with `xlm` each.
pub fn fund(sim: &Simulator, keys: &[&Key], xlm: i64) {
    for k in keys {
        sim.create_account(&k.g(), xlm * XLM)
            .expect("create account");
    }
}

pub fn seq(sim: &Simulator, k: &Key) -> i64 {
    sim.account_sequence(&k.g()).expect("account exists")
}

/// Waits (yielding to the tasks posting) until `n` transactions are pending.
pub async fn until_pending(sim: &Simulator, n: usize) {
    for _ in 0..5_000 {
        if sim.pending_count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("{n} transactions never became pending");
}

/// Posts `envelope` to `POST /transactions` in a task, to be answered once it leaves the
/// pending set (or the submit wait runs out).
pub fn post_in_task(app: &Router, envelope: &str) -> tokio::task::JoinHandle<Answer> {
    let (app, envelope) = (app.clone(), envelope.to_owned());
    tokio::spawn(async move { post_tx(&app, "/transactions", &envelope).await })
}

pub fn decode_result(b64: &str) -> stellar_xdr::TransactionResult {
    use stellar_xdr::ReadXdr as _;
    stellar_xdr::TransactionResult::from_xdr_base64(b64, Limits::none())
        .expect("result_xdr is a TransactionResult")
}

pub fn muxed_str(m: &MuxedAccount) -> String {
    m.to_string()
}

pub fn parse_muxed(s: &str) -> MuxedAccount {
    MuxedAccount::from_str(s).expect("valid G or M")
}
