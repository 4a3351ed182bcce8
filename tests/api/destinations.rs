//! Destinations that are not ready, end to end over HTTP to the simulator (real Postgres,
//! the real Stellar adapter, the simulator applying create-account and claimable balances
//! by the ledger's rules): a destination without a trustline is paid with a claimable
//! balance, one without an account has it created, each exactly once, inside batches, and
//! the journal records which operation paid and the balance's id. Over Horizon and RPC.

use payoutd_actors::destinations::{
    DestinationPolicy, NoAccount, NoTrust, OpKind, claimable_balance_id,
};
use payoutd_actors::domain::{AccountId, Amount, Asset, Destination, PayoutId, PayoutRequest};
use payoutd_actors::ports::PayoutStore;
use payoutd_actors::state::PayoutState;
use payoutd_simulator::PaymentFilter;
use payoutd_simulator::PaymentKind;

use crate::stellar::{Api, Stack, StackOptions, XLM, keypair, stack};

fn both_on(api: Api) -> StackOptions {
    StackOptions {
        api,
        channels: 1,
        // Long enough for the payouts of a test to join one batch.
        batch_linger_ms: 500,
        destinations: DestinationPolicy {
            no_trust: NoTrust::ClaimableBalance,
            no_account: NoAccount::CreateAccount,
            ..DestinationPolicy::default()
        },
        ..StackOptions::default()
    }
}

/// An issuer of USDC whose asset the distribution account holds (1,000 USDC).
fn usdc(s: &Stack) -> Asset {
    let issuer = keypair("usdc issuer").account();
    let sim = s.sim();
    sim.create_account(&issuer.to_strkey(), 10 * XLM).unwrap();
    sim.add_trustline(
        &s.distribution.to_strkey(),
        "USDC",
        &issuer.to_strkey(),
        1_000_000 * XLM,
    )
    .unwrap();
    sim.credit(
        &s.distribution.to_strkey(),
        "USDC",
        &issuer.to_strkey(),
        1_000 * XLM,
    )
    .unwrap();
    Asset::parse(&format!("USDC:{issuer}")).unwrap()
}

fn request(id: &str, to: AccountId, asset: &Asset, amount: &str) -> PayoutRequest {
    PayoutRequest::new(
        PayoutId::parse(id).unwrap(),
        Destination::Account(to),
        asset.clone(),
        Amount::parse(amount).unwrap(),
        None,
    )
}

/// Operations of `kind` on the simulated ledger that paid `req` (by destination or
/// claimant, asset and amount).
fn paid(s: &Stack, req: &PayoutRequest, kind: PaymentKind) -> usize {
    let to = req.destination().to_strkey();
    s.sim()
        .payments(&PaymentFilter {
            memo: None,
            destination: Some(to.clone()),
        })
        .iter()
        .filter(|p| {
            p.kind == kind
                && p.amount_stroops == req.amount().stroops()
                && p.asset == req.asset().to_string()
        })
        .count()
}

async fn event_kinds(s: &Stack, id: &str) -> Vec<String> {
    s.journal
        .events(&PayoutId::parse(id).unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

async fn no_trustline_is_paid_once_with_a_claimable_balance_and_its_id(api: Api) {
    let s = stack(both_on(api)).await;
    let usdc = usdc(&s);
    // The stack's destination exists and trusts nothing but XLM.
    let plain = request("cb-plain", s.destination, &Asset::Native, "1.5");
    let untrusting = request("cb-untrusting", s.destination, &usdc, "12.5");
    for r in [&plain, &untrusting] {
        s.payouts.submit(r.clone()).await.unwrap();
    }
    let rec = s.run_until("cb-untrusting", PayoutState::Confirmed).await;
    assert_eq!(rec.op_kind, OpKind::ClaimableBalance);
    let envelope = rec.envelope.unwrap();
    let row = s.envelope(&envelope.hash).await;
    let expected = claimable_balance_id(
        &AccountId::parse(&row.source).unwrap(),
        row.sequence,
        envelope.op_index,
    );
    assert_eq!(rec.balance_id.as_deref(), Some(expected.as_str()));
    // The ledger has that balance, for the destination, of the payout's asset and amount.
    let cb = s
        .sim()
        .claimable_balance(&expected)
        .expect("the balance exists");
    assert_eq!(cb.amount_stroops, 125_000_000);
    assert_eq!(cb.asset, usdc.to_string());
    assert_eq!(
        cb.claimants
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>(),
        vec![s.destination.to_strkey()]
    );
    assert_eq!(
        paid(&s, &untrusting, PaymentKind::CreateClaimableBalance),
        1
    );
    assert_eq!(paid(&s, &untrusting, PaymentKind::Payment), 0);
    let kinds = event_kinds(&s, "cb-untrusting").await;
    assert!(kinds.contains(&"rerouted".to_owned()), "{kinds:?}");
    // Its sibling in the failed first transaction was paid once, by a payment.
    s.run_until("cb-plain", PayoutState::Confirmed).await;
    assert_eq!(paid(&s, &plain, PaymentKind::Payment), 1);
}

async fn no_account_is_created_once_when_the_amount_covers_the_reserve(api: Api) {
    let s = stack(both_on(api)).await;
    let fresh = keypair("fresh account").account();
    let poor = keypair("account too poor to create").account();
    let create = request("ca-create", fresh, &Asset::Native, "5");
    let small = request("ca-small", poor, &Asset::Native, "0.9");
    for r in [&create, &small] {
        s.payouts.submit(r.clone()).await.unwrap();
    }
    let rec = s.run_until("ca-create", PayoutState::Confirmed).await;
    assert_eq!(rec.op_kind, OpKind::CreateAccount);
    assert_eq!(rec.balance_id, None);
    assert_eq!(s.sim().balance(&fresh.to_strkey(), None), Some(5 * XLM));
    assert_eq!(paid(&s, &create, PaymentKind::CreateAccount), 1);
    let failed = s.run_until("ca-small", PayoutState::Failed).await;
    let why = failed.reason.unwrap();
    assert!(
        why.contains("op_no_destination") && why.contains("two base reserves"),
        "{why}"
    );
    assert_eq!(s.sim().account(&poor.to_strkey()).map(|_| ()), None);
    // The next payout to the account it created is a plain payment.
    let again = request("ca-again", fresh, &Asset::Native, "2");
    s.payouts.submit(again.clone()).await.unwrap();
    let rec = s.run_until("ca-again", PayoutState::Confirmed).await;
    assert_eq!(rec.op_kind, OpKind::Payment);
    assert_eq!(paid(&s, &again, PaymentKind::Payment), 1);
    assert_eq!(s.sim().balance(&fresh.to_strkey(), None), Some(7 * XLM));
}

async fn off_by_default_the_codes_fail_the_payouts(api: Api) {
    let s = stack(StackOptions {
        api,
        channels: 1,
        batch_linger_ms: 500,
        ..StackOptions::default()
    })
    .await;
    let usdc = usdc(&s);
    let untrusting = request("off-untrusting", s.destination, &usdc, "3");
    let missing = request(
        "off-missing",
        keypair("never created").account(),
        &Asset::Native,
        "5",
    );
    for r in [&untrusting, &missing] {
        s.payouts.submit(r.clone()).await.unwrap();
    }
    for (id, code) in [
        ("off-untrusting", "op_no_trust"),
        ("off-missing", "op_no_destination"),
    ] {
        let rec = s.run_until(id, PayoutState::Failed).await;
        assert!(rec.reason.as_deref().unwrap().contains(code), "{rec:?}");
        assert_eq!(rec.op_kind, OpKind::Payment);
    }
    assert!(s.sim().claimable_balances(None).unwrap().is_empty());
}

/// A muxed destination is never rerouted: the claimable balance would drop its id.
async fn muxed_destinations_fail_with_the_reason(api: Api) {
    let s = stack(both_on(api)).await;
    let usdc = usdc(&s);
    let req = PayoutRequest::new(
        PayoutId::parse("mux-untrusting").unwrap(),
        Destination::Muxed {
            account: s.destination,
            id: 9,
        },
        usdc,
        Amount::parse("4").unwrap(),
        None,
    );
    s.payouts.submit(req).await.unwrap();
    let rec = s.run_until("mux-untrusting", PayoutState::Failed).await;
    let why = rec.reason.unwrap();
    assert!(
        why.contains("op_no_trust") && why.contains("muxed"),
        "{why}"
    );
    assert!(s.sim().claimable_balances(None).unwrap().is_empty());
}

/// One batch of the three kinds; every envelope that paid them decodes, hashes, verifies
/// and holds the operations the journal says, by the official Python SDK, which computes
/// the claimable balance's id on its own.
async fn every_kind_decodes_and_verifies_with_the_official_python_sdk(api: Api) {
    let s = stack(both_on(api)).await;
    let usdc = usdc(&s);
    let reqs = [
        request("sdk-payment", s.destination, &Asset::Native, "1.25"),
        request("sdk-claimable", s.destination, &usdc, "7"),
        request(
            "sdk-create",
            keypair("sdk new account").account(),
            &Asset::Native,
            "3",
        ),
    ];
    for r in &reqs {
        s.payouts.submit(r.clone()).await.unwrap();
    }
    let mut by_tx: std::collections::BTreeMap<String, Vec<(u32, serde_json::Value)>> =
        Default::default();
    for r in &reqs {
        let rec = s
            .run_until(r.payout_id().as_str(), PayoutState::Confirmed)
            .await;
        let e = rec.envelope.unwrap();
        by_tx.entry(e.hash.to_hex()).or_default().push((
            e.op_index,
            serde_json::json!({
                "kind": rec.op_kind.as_str(),
                "destination": r.destination().to_strkey(),
                "asset": r.asset().to_string(),
                "amount_stroops": r.amount().stroops(),
                "balance_id": rec.balance_id,
            }),
        ));
    }
    let mut items = Vec::new();
    for (hash, mut ops) in by_tx {
        ops.sort_by_key(|(i, _)| *i);
        let tx = s.sim().transaction(&hash).unwrap();
        assert!(tx.successful);
        assert_eq!(
            ops.len(),
            tx.operation_count as usize,
            "every member confirmed"
        );
        let row = s
            .envelope(&payoutd_actors::ports::TxHash::from_hex(&hash).unwrap())
            .await;
        let journaled: String =
            sqlx::query_scalar("SELECT envelope_xdr FROM envelopes WHERE tx_hash = $1")
                .bind(&hash)
                .fetch_one(s.journal.pool())
                .await
                .unwrap();
        let mut signers = vec![row.source.clone()];
        if row.source != s.distribution.to_strkey() {
            signers.push(s.distribution.to_strkey());
        }
        items.push(serde_json::json!({
            "xdr": tx.envelope_xdr,
            "journaled_xdr": journaled,
            "passphrase": crate::stellar::PASSPHRASE,
            "hash": hash,
            "source": row.source,
            "sequence": row.sequence,
            "operations": tx.operation_count,
            "signers": signers,
            "ops": ops.into_iter().map(|(_, o)| o).collect::<Vec<_>>(),
        }));
    }
    let kinds: Vec<_> = items
        .iter()
        .flat_map(|i| {
            i["ops"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["kind"].clone())
        })
        .collect();
    for k in ["payment", "claimable_balance", "create_account"] {
        assert!(kinds.contains(&serde_json::json!(k)), "{kinds:?}");
    }
    crate::rpc::check_with_the_official_sdk(&items);
}

macro_rules! over_both {
    ($($name:ident),* $(,)?) => {
        mod over_horizon {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Api::Horizon).await
            })*
        }
        mod over_rpc {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Api::Rpc).await
            })*
        }
    };
}

over_both!(
    no_trustline_is_paid_once_with_a_claimable_balance_and_its_id,
    no_account_is_created_once_when_the_amount_covers_the_reserve,
    off_by_default_the_codes_fail_the_payouts,
    muxed_destinations_fail_with_the_reason,
    every_kind_decodes_and_verifies_with_the_official_python_sdk,
);
