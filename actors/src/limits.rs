//! Spending limits: how much of an asset may leave per payout, per hour and per day.
//!
//! The limits are configuration; what was spent is journaled, so they hold across restarts
//! and across every instance sharing one database. The journal checks them in the same
//! atomic write that journals an envelope (under a lock per asset, by the database's clock):
//! a prepare that would exceed one is refused with the members that must wait
//! ([`PrepareError::OverLimit`](crate::ports::journal::PrepareError::OverLimit)), and the
//! channel worker holds those and builds again without them.
//!
//! What counts as spent: every payout in an envelope journaled within the window that is
//! live or applied. An envelope that died or was included as failed moved no money, so its
//! payouts stop counting (they count again when a new envelope takes them). Windows slide:
//! "per hour" is the last 3,600,000 ms, "per day" the last 86,400,000 ms.
//!
//! A held payout is `held` with the reason (`held: daily limit for USDC reached (9950 of
//! 10000)`). With `when_reached = "wait"` it goes back to `accepted` by itself when its
//! window has moved on far enough that room may have opened (the oldest spend counted in
//! it leaves the window); with `"hold"` it stays for an operator (`POST
//! /v1/payouts/{id}/resume`). A payout above `per_payout_max`, or larger than a window's
//! whole amount, can never fit: it stays for an operator in both modes.

use std::collections::BTreeMap;

use crate::domain::{Amount, Asset, PayoutId};

/// One hour, the short window, in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;
/// One day, the long window, in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// What becomes of a payout that a window limit would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenReached {
    /// Held until its window allows, then paid without an operator.
    Wait,
    /// Held until an operator resumes it.
    Hold,
}

impl WhenReached {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "wait" => Some(Self::Wait),
            "hold" => Some(Self::Hold),
            _ => None,
        }
    }
}

/// The limits of one asset; `None` is no limit of that kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetLimit {
    pub asset: Asset,
    pub per_payout_max: Option<Amount>,
    pub hourly_amount_max: Option<Amount>,
    pub hourly_count_max: Option<u32>,
    pub daily_amount_max: Option<Amount>,
    pub daily_count_max: Option<u32>,
}

impl AssetLimit {
    /// Whether any window limit is set (the journal then reads the asset's usage).
    pub fn has_window(&self) -> bool {
        self.hourly_amount_max.is_some()
            || self.hourly_count_max.is_some()
            || self.daily_amount_max.is_some()
            || self.daily_count_max.is_some()
    }
}

/// Every limit in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub when_reached: WhenReached,
    pub assets: Vec<AssetLimit>,
}

impl Default for Limits {
    fn default() -> Self {
        Self::NONE
    }
}

/// What the journal has counted as spent of one asset, by its clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Stroops and payouts in the last hour.
    pub hour_amount: i64,
    pub hour_count: u64,
    /// Stroops and payouts in the last day.
    pub day_amount: i64,
    pub day_count: u64,
    /// When the oldest spend counted in each window was journaled (ms since the epoch).
    pub hour_oldest_ms: Option<i64>,
    pub day_oldest_ms: Option<i64>,
    /// The journal's clock now (ms since the epoch).
    pub now_ms: i64,
}

/// A payout that must wait, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub id: PayoutId,
    /// `held: …`, as the payout's reason shows it.
    pub reason: String,
    /// When it may go back to `accepted` by itself (ms since the epoch); `None`: only an
    /// operator resumes it.
    pub until_unix_ms: Option<i64>,
}

/// A member of a batch as the limits see it.
#[derive(Debug, Clone, Copy)]
pub struct Spend<'a> {
    pub id: &'a PayoutId,
    pub asset: &'a Asset,
    pub amount: Amount,
}

#[derive(Clone, Copy)]
enum Window {
    Hour,
    Day,
}

impl Window {
    fn name(self) -> &'static str {
        match self {
            Self::Hour => "hourly",
            Self::Day => "daily",
        }
    }
    fn length_ms(self) -> i64 {
        match self {
            Self::Hour => HOUR_MS,
            Self::Day => DAY_MS,
        }
    }
}

impl Limits {
    /// No limits.
    pub const NONE: Self = Self {
        when_reached: WhenReached::Wait,
        assets: Vec::new(),
    };

    pub fn is_empty(&self) -> bool {
        self.assets.is_empty()
    }

    pub fn of(&self, asset: &Asset) -> Option<&AssetLimit> {
        self.assets.iter().find(|l| &l.asset == asset)
    }

    /// The assets of `spends` whose window limits need the journal's usage, in a fixed
    /// order (the order the journal locks them in).
    pub fn windowed_assets<'a>(&self, spends: &[Spend<'a>]) -> Vec<&'a Asset> {
        let mut assets: BTreeMap<String, &'a Asset> = BTreeMap::new();
        for s in spends {
            if self.of(s.asset).is_some_and(AssetLimit::has_window) {
                assets.insert(s.asset.to_string(), s.asset);
            }
        }
        assets.into_values().collect()
    }

    /// The members that may not be paid now, in batch order; empty when all may. Members
    /// are taken in order and each that fits uses up its room, so the rest of a batch
    /// that does not fit whole still goes. `usage` holds every asset of
    /// [`windowed_assets`](Self::windowed_assets) (keyed by its text).
    pub fn check(&self, spends: &[Spend<'_>], usage: &BTreeMap<String, Usage>) -> Vec<Hold> {
        let mut used: BTreeMap<String, Usage> = usage.clone();
        let mut holds = Vec::new();
        for s in spends {
            let Some(limit) = self.of(s.asset) else {
                continue;
            };
            let label = asset_label(s.asset);
            if let Some(max) = limit.per_payout_max
                && s.amount > max
            {
                holds.push(Hold {
                    id: s.id.clone(),
                    reason: format!(
                        "held: the {label} limit per payout is {max} (this payout: {})",
                        s.amount
                    ),
                    until_unix_ms: None,
                });
                continue;
            }
            if !limit.has_window() {
                continue;
            }
            let key = s.asset.to_string();
            let u = used.entry(key).or_default();
            match self.window_refusal(limit, u, s.amount) {
                None => {
                    u.hour_amount = u.hour_amount.saturating_add(s.amount.stroops());
                    u.day_amount = u.day_amount.saturating_add(s.amount.stroops());
                    u.hour_count += 1;
                    u.day_count += 1;
                    // Room this batch takes opens again one window from now.
                    u.hour_oldest_ms.get_or_insert(u.now_ms);
                    u.day_oldest_ms.get_or_insert(u.now_ms);
                }
                Some((window, what, never)) => {
                    let oldest = match window {
                        Window::Hour => u.hour_oldest_ms,
                        Window::Day => u.day_oldest_ms,
                    };
                    let until = match (self.when_reached, never) {
                        (WhenReached::Wait, false) => Some(
                            oldest
                                .unwrap_or(u.now_ms)
                                .saturating_add(window.length_ms()),
                        ),
                        _ => None,
                    };
                    holds.push(Hold {
                        id: s.id.clone(),
                        reason: format!("held: {} {what}", window.name()),
                        until_unix_ms: until,
                    });
                }
            }
        }
        holds
    }

    /// Which window refuses `amount` more, described for the reason, and whether it never
    /// can take it (larger than the window's whole amount).
    fn window_refusal(
        &self,
        limit: &AssetLimit,
        u: &Usage,
        amount: Amount,
    ) -> Option<(Window, String, bool)> {
        let label = asset_label(&limit.asset);
        let windows = [
            (
                Window::Hour,
                limit.hourly_amount_max,
                limit.hourly_count_max,
                u.hour_amount,
                u.hour_count,
            ),
            (
                Window::Day,
                limit.daily_amount_max,
                limit.daily_count_max,
                u.day_amount,
                u.day_count,
            ),
        ];
        // The day first: its wait is the longer one, and the one to show.
        for (window, amount_max, count_max, spent, count) in windows.into_iter().rev() {
            if let Some(max) = amount_max {
                if amount > max {
                    return Some((
                        window,
                        format!("limit for {label} is {max}, less than this payout ({amount})"),
                        true,
                    ));
                }
                if spent.saturating_add(amount.stroops()) > max.stroops() {
                    return Some((
                        window,
                        format!(
                            "limit for {label} reached ({} of {max})",
                            stroops_text(spent)
                        ),
                        false,
                    ));
                }
            }
            if let Some(max) = count_max
                && count >= u64::from(max)
            {
                return Some((
                    window,
                    format!("payout count limit for {label} reached ({count} of {max})"),
                    false,
                ));
            }
        }
        None
    }
}

/// `USDC` for an issued asset, `XLM` for lumens (the issuer is in the configuration).
fn asset_label(asset: &Asset) -> String {
    match asset {
        Asset::Native => "XLM".to_owned(),
        Asset::Credit { code, .. } => code.as_str().to_owned(),
    }
}

fn stroops_text(stroops: i64) -> String {
    match Amount::from_stroops(stroops) {
        Some(a) => a.to_string(),
        None => "0".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usdc() -> Asset {
        Asset::parse("USDC:GBBD47IF6LWK7P7MDEVSCWR7DPUWV3NY3DTQEVFL4NAT4AQH3ZLLFLA5").unwrap()
    }
    fn amount(text: &str) -> Amount {
        Amount::parse(text).unwrap()
    }
    fn id(n: u32) -> PayoutId {
        PayoutId::parse(&format!("p-{n}")).unwrap()
    }
    fn limits(when: WhenReached) -> Limits {
        Limits {
            when_reached: when,
            assets: vec![AssetLimit {
                asset: usdc(),
                per_payout_max: Some(amount("1000")),
                hourly_amount_max: None,
                hourly_count_max: Some(3),
                daily_amount_max: Some(amount("10000")),
                daily_count_max: None,
            }],
        }
    }
    fn usage(day_amount: &str, now_ms: i64) -> BTreeMap<String, Usage> {
        let mut m = BTreeMap::new();
        m.insert(
            usdc().to_string(),
            Usage {
                day_amount: amount(day_amount).stroops(),
                day_count: 1,
                day_oldest_ms: Some(now_ms - 1_000),
                now_ms,
                ..Usage::default()
            },
        );
        m
    }

    #[test]
    fn members_that_fit_go_and_the_rest_wait_for_the_window() {
        let asset = usdc();
        let ids: Vec<PayoutId> = (0..3).map(id).collect();
        let spends: Vec<Spend> = ids
            .iter()
            .map(|id| Spend {
                id,
                asset: &asset,
                amount: amount("30"),
            })
            .collect();
        let l = limits(WhenReached::Wait);
        assert_eq!(l.windowed_assets(&spends).len(), 1);
        let holds = l.check(&spends, &usage("9950", 5_000_000));
        assert_eq!(holds.len(), 2, "{holds:?}");
        assert_eq!(holds[0].id, ids[1]);
        assert_eq!(
            holds[0].reason,
            "held: daily limit for USDC reached (9980 of 10000)"
        );
        assert_eq!(holds[0].until_unix_ms, Some(5_000_000 - 1_000 + DAY_MS));
        // Hold mode: the same, for an operator.
        let holds = limits(WhenReached::Hold).check(&spends, &usage("9950", 5_000_000));
        assert!(holds.iter().all(|h| h.until_unix_ms.is_none()));
    }

    #[test]
    fn a_payout_above_the_limit_per_payout_waits_for_an_operator() {
        let asset = usdc();
        let big = id(9);
        let holds = limits(WhenReached::Wait).check(
            &[Spend {
                id: &big,
                asset: &asset,
                amount: amount("1500"),
            }],
            &usage("0.0000001", 1),
        );
        assert_eq!(
            holds,
            vec![Hold {
                id: big,
                reason: "held: the USDC limit per payout is 1000 (this payout: 1500)".into(),
                until_unix_ms: None,
            }]
        );
    }

    #[test]
    fn the_count_limit_counts_payouts_and_other_assets_are_free() {
        let asset = usdc();
        let ids: Vec<PayoutId> = (0..5).map(id).collect();
        let spends: Vec<Spend> = ids
            .iter()
            .map(|id| Spend {
                id,
                asset: &asset,
                amount: amount("1"),
            })
            .collect();
        let mut u = usage("1", 10);
        u.get_mut(&usdc().to_string()).unwrap().hour_count = 1;
        let holds = limits(WhenReached::Wait).check(&spends, &u);
        // 1 counted + 2 of this batch = 3 per hour.
        assert_eq!(holds.len(), 3);
        assert_eq!(
            holds[0].reason,
            "held: hourly payout count limit for USDC reached (3 of 3)"
        );
        // Room taken by this batch alone opens one hour from now.
        assert_eq!(holds[0].until_unix_ms, Some(10 + HOUR_MS));
        let xlm = Asset::Native;
        let free = limits(WhenReached::Wait).check(
            &[Spend {
                id: &ids[0],
                asset: &xlm,
                amount: amount("100000"),
            }],
            &BTreeMap::new(),
        );
        assert!(free.is_empty());
    }
}
