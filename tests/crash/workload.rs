//! The payouts of a run, drawn from the seed: destination (plain or muxed), asset, amount,
//! memo, whether the ledger will refuse it, how many times it is sent and how.
//!
//! With `reroute` (payoutd's `destinations.no_trust = "claimable_balance"` and
//! `no_account = "create_account"`), payouts of the asset to accounts without its trustline
//! are paid with claimable balances (muxed ones still fail), and XLM payouts to accounts
//! that do not exist create them: those go to plain addresses with at least the new
//! account's minimum balance, so each is paid whether it creates its account or finds it
//! created by another.

use payoutd_actors::domain::Destination;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use crate::support::keys::Accounts;

/// Stroops per XLM (and per unit of any asset).
const STROOPS_PER_UNIT: i64 = 10_000_000;
/// Largest amount a payout asks for, in stroops (1,000 units).
const AMOUNT_MAX_STROOPS: i64 = 1_000 * STROOPS_PER_UNIT;
/// A new account's minimum balance: two base reserves of 0.5 XLM (the simulator's and the
/// public network's), in stroops.
const NEW_ACCOUNT_MIN_STROOPS: i64 = STROOPS_PER_UNIT;

/// What the ledger should end up doing with a payout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Paid exactly once (by a payment).
    Paid,
    /// Paid exactly once by a claimable balance for a destination without the trustline.
    PaidByClaimableBalance,
    /// Paid exactly once by a payment or by creating the account (whichever payout to a
    /// new account gets there first creates it).
    PaidCreatingAccount,
    /// Included and failed (no such destination, no trustline): never paid.
    Fails,
}

/// The ingress one delivery goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `POST /v1/payouts`.
    Http,
    /// A JetStream publish on the request stream.
    Nats,
}

/// One payout as the feeder sends it and the verifier checks it.
#[derive(Debug, Clone)]
pub struct PayoutSpec {
    pub id: String,
    /// `G…` or `M…`.
    pub destination: String,
    /// `native` or `CODE:ISSUER`.
    pub asset: String,
    pub stroops: i64,
    /// `(type, value)` of the request memo, if any.
    pub memo: Option<(&'static str, String)>,
    /// The transaction memo in the simulator's `type:value` form.
    /// The memo its transaction must carry when the caller gave one (`id:…`, `text:…`);
    /// without one, payoutd names the payout or its batch.
    pub ledger_memo: Option<String>,
    pub expect: Expect,
    /// How many times the request is sent (1–3).
    pub sends: usize,
    /// The ingress of each send: HTTP only, NATS only, or both (the same payout arriving
    /// over two ingresses).
    pub via: Vec<Via>,
    /// All sends at once, or one after another with `gaps_ms` between them.
    pub concurrent: bool,
    pub gaps_ms: Vec<u64>,
    /// Pause before this payout's first send, after the previous payout's start.
    pub start_gap_ms: u64,
}

/// Stroops as a decimal string with no trailing zeros (`12.5`), or padded to seven
/// decimals (`12.5000000`): the same amount, written differently.
pub fn decimal(stroops: i64, padded: bool) -> String {
    let whole = stroops / STROOPS_PER_UNIT;
    let frac = stroops % STROOPS_PER_UNIT;
    if padded {
        return format!("{whole}.{frac:07}");
    }
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:07}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Decimal string to stroops (journal amounts); `None` if it is not one.
pub fn stroops(decimal: &str) -> Option<i64> {
    let (whole, frac) = decimal.split_once('.').unwrap_or((decimal, ""));
    if frac.len() > 7 || whole.is_empty() {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let frac: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<7}").parse().ok()?
    };
    whole.checked_mul(STROOPS_PER_UNIT)?.checked_add(frac)
}

impl PayoutSpec {
    /// The request body. Variant 0 is the plain form; other variants write the amount
    /// padded and XLM as `XLM`, which payoutd must treat as the same request.
    pub fn body(&self, variant: usize) -> Value {
        let alternate = variant % 2 == 1;
        let asset = if alternate && self.asset == "native" {
            "XLM".to_owned()
        } else {
            self.asset.clone()
        };
        let mut body = json!({
            "payout_id": self.id,
            "destination": self.destination,
            "asset": asset,
            "amount": decimal(self.stroops, alternate),
        });
        if let Some((kind, value)) = &self.memo {
            body["memo"] = json!({ "type": kind, "value": value });
        }
        body
    }
}

/// Draws `count` payouts for the run `run_seed`.
pub fn generate(
    count: usize,
    run_seed: u64,
    accounts: &Accounts,
    mean_gap_ms: u64,
    reroute: bool,
    rng: &mut StdRng,
) -> Vec<PayoutSpec> {
    let asset = accounts.asset();
    let trusting: Vec<_> = accounts
        .destinations
        .iter()
        .filter(|d| d.trusts_asset)
        .collect();
    let not_trusting: Vec<_> = accounts
        .destinations
        .iter()
        .filter(|d| !d.trusts_asset)
        .collect();
    (0..count)
        .map(|i| {
            let id = format!("crash-{:08x}-{i:06}", run_seed as u32);
            let roll = rng.random_range(0..100);
            // 2% to an account that does not exist, 2% of the asset without a trustline
            // (5% each with `reroute`), 24% of the asset, the rest XLM; a fifth of them to a
            // muxed address.
            let (ghosts, untrusted) = if reroute { (0..5, 5..10) } else { (0..2, 2..4) };
            let mut muxable = true;
            let (account, asset, expect) = match roll {
                r if ghosts.contains(&r) => {
                    let g = &accounts.ghosts[rng.random_range(0..accounts.ghosts.len())];
                    muxable = !reroute;
                    let expect = if reroute {
                        Expect::PaidCreatingAccount
                    } else {
                        Expect::Fails
                    };
                    (g.account, "native".to_owned(), expect)
                }
                r if untrusted.contains(&r) => {
                    let d = not_trusting[rng.random_range(0..not_trusting.len())];
                    let expect = if reroute {
                        Expect::PaidByClaimableBalance
                    } else {
                        Expect::Fails
                    };
                    (d.key.account, asset.clone(), expect)
                }
                r if r < 28 => {
                    let d = trusting[rng.random_range(0..trusting.len())];
                    (d.key.account, asset.clone(), Expect::Paid)
                }
                _ => {
                    let all = &accounts.destinations;
                    let d = &all[rng.random_range(0..all.len())];
                    (d.key.account, "native".to_owned(), Expect::Paid)
                }
            };
            let muxed = rng.random_bool(0.2) && muxable;
            // A muxed destination is never rerouted: it fails as without `reroute`.
            let expect = match expect {
                Expect::PaidByClaimableBalance if muxed => Expect::Fails,
                e => e,
            };
            let destination = if muxed {
                Destination::Muxed {
                    account,
                    id: rng.random(),
                }
                .to_strkey()
            } else {
                account.to_strkey()
            };
            let (memo, ledger_memo) = match rng.random_range(0..100) {
                0..15 => {
                    let v = 1_000_000_000u64 + i as u64;
                    (Some(("id", v.to_string())), Some(format!("id:{v}")))
                }
                15..30 => {
                    let v = format!("crash {i}");
                    (Some(("text", v.clone())), Some(format!("text:{v}")))
                }
                _ => (None, None),
            };
            let sends = rng.random_range(1..=3);
            let via = match rng.random_range(0..100) {
                0..60 => vec![Via::Http; sends],
                60..85 => vec![Via::Nats; sends],
                _ => {
                    let first_nats = rng.random_bool(0.5);
                    (0..sends)
                        .map(|k| {
                            if (k % 2 == 0) == first_nats {
                                Via::Nats
                            } else {
                                Via::Http
                            }
                        })
                        .collect()
                }
            };
            PayoutSpec {
                id,
                destination,
                asset,
                stroops: if expect == Expect::PaidCreatingAccount {
                    rng.random_range(NEW_ACCOUNT_MIN_STROOPS..=AMOUNT_MAX_STROOPS)
                } else {
                    rng.random_range(1..=AMOUNT_MAX_STROOPS)
                },
                memo,
                ledger_memo,
                expect,
                sends,
                via,
                concurrent: sends > 1 && rng.random_bool(0.4),
                gaps_ms: (1..sends).map(|_| rng.random_range(0..3_000)).collect(),
                start_gap_ms: rng.random_range(0..=2 * mean_gap_ms),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_round_trip() {
        for s in [1, 10, 125_000_000, 10_000_000, 123_456_789_012] {
            assert_eq!(stroops(&decimal(s, false)), Some(s));
            assert_eq!(stroops(&decimal(s, true)), Some(s));
        }
        assert_eq!(decimal(125_000_000, false), "12.5");
        assert_eq!(decimal(125_000_000, true), "12.5000000");
        assert_eq!(decimal(1, false), "0.0000001");
    }
}
