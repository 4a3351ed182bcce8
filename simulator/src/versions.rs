//! Past versions of account entries, so a lagging node's ledger-entry reads show an account
//! as it was at the end of the last ledger that node has ingested.
//!
//! Only kept while a lag is set ([`crate::Faults::lookup_lag_ledgers`] > 0): each change of
//! an account appends (ledger, entry after the change), after first remembering the entry
//! as it was before. Versions no node can ask for any more (superseded at or before the
//! lagging node's latest ledger) are dropped, and at most [`ACCOUNT_VERSIONS_MAX`] are kept
//! per account. An account without versions reads as it is now, so history starts when the
//! lag is set: a lag set at runtime cannot show changes made before it was set, and neither
//! can a node after a restart (versions are not in the state file).

use std::collections::{HashMap, VecDeque};

use crate::keys::AccountKey;
use crate::state::Account;

/// Most versions kept per account (in versions, one per ledger in which the account
/// changed). A lagging node further behind than this many changes of an account sees the
/// oldest version kept.
pub const ACCOUNT_VERSIONS_MAX: usize = 64;

/// The versions of every account changed while a lag was set.
#[derive(Debug, Default)]
pub struct AccountVersions {
    /// Per account, (ledger, entry at the end of that ledger; `None`: did not exist), in
    /// ledger order.
    map: HashMap<AccountKey, VecDeque<(u32, Option<Account>)>>,
}

impl AccountVersions {
    /// Records that `key` changed in ledger `ledger` from `old` to `new`, keeping what a
    /// node whose latest ledger is `keep_from` or later can ask for.
    pub fn record(
        &mut self,
        key: AccountKey,
        old: Option<Account>,
        new: Option<&Account>,
        ledger: u32,
        keep_from: u32,
    ) {
        let versions = self.map.entry(key).or_insert_with(|| {
            // The entry before the change dates from its last change; a missing one is
            // missing since before genesis.
            let since = old.as_ref().map_or(0, |a| a.last_modified_ledger);
            VecDeque::from([(since, old)])
        });
        match versions.back_mut() {
            Some(last) if last.0 == ledger => last.1 = new.cloned(),
            _ => versions.push_back((ledger, new.cloned())),
        }
        // A node at keep_from or later finds its version at index 1 or beyond.
        while versions.len() >= 2 && versions[1].0 <= keep_from {
            versions.pop_front();
        }
        while versions.len() > ACCOUNT_VERSIONS_MAX {
            versions.pop_front();
        }
    }

    /// Forgets the versions of `key` (no lag: it reads as it is now).
    pub fn forget(&mut self, key: &AccountKey) {
        self.map.remove(key);
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Whether `key`'s entry at the end of `ledger` is known exactly: `None` if no versions
    /// are kept (the current entry is right if it has not changed since `ledger`), `false`
    /// if `ledger` is before the oldest version kept.
    pub fn known_at(&self, key: &AccountKey, ledger: u32) -> Option<bool> {
        let versions = self.map.get(key)?;
        Some(versions.front().is_some_and(|(since, _)| *since <= ledger))
    }

    /// `key`'s entry at the end of `ledger`: `None` if no versions are kept (read the
    /// current entry), `Some(None)` if it did not exist then. Before the oldest version kept,
    /// the oldest one.
    pub fn at(&self, key: &AccountKey, ledger: u32) -> Option<Option<&Account>> {
        let versions = self.map.get(key)?;
        let found = versions
            .iter()
            .rev()
            .find(|(since, _)| *since <= ledger)
            .or_else(|| versions.front());
        Some(found.and_then(|(_, a)| a.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(seq: i64, ledger: u32) -> Account {
        Account {
            balance: 1,
            seq,
            seq_ledger: ledger,
            seq_time: 0,
            last_modified_ledger: ledger,
            trustlines: Default::default(),
            num_sponsoring: 0,
        }
    }

    #[test]
    fn a_lagging_read_sees_the_version_of_its_ledger() {
        let k = AccountKey([1; 32]);
        let mut v = AccountVersions::default();
        assert_eq!(v.at(&k, 5), None, "no versions: read the current entry");
        // Created in ledger 3, changed in 5 and 6; the lagging node is at 1.
        v.record(k, None, Some(&account(10, 3)), 3, 1);
        v.record(k, Some(account(10, 3)), Some(&account(11, 5)), 5, 1);
        v.record(k, Some(account(11, 5)), Some(&account(12, 6)), 6, 1);
        assert_eq!(v.at(&k, 2), Some(None), "not created yet");
        assert_eq!(v.at(&k, 4).flatten().map(|a| a.seq), Some(10));
        assert_eq!(v.at(&k, 5).flatten().map(|a| a.seq), Some(11));
        assert_eq!(v.at(&k, 9).flatten().map(|a| a.seq), Some(12));
        // The lagging node moved to 5: versions before 5 go.
        v.record(k, Some(account(12, 6)), Some(&account(13, 7)), 7, 5);
        assert_eq!(v.at(&k, 5).flatten().map(|a| a.seq), Some(11));
        assert_eq!(
            v.at(&k, 2).flatten().map(|a| a.seq),
            Some(11),
            "oldest kept"
        );
    }

    #[test]
    fn an_entry_is_known_only_from_its_oldest_version_on() {
        let k = AccountKey([3; 32]);
        let mut v = AccountVersions::default();
        assert_eq!(v.known_at(&k, 1), None, "no versions");
        // A lag set at runtime: the first change seen is in ledger 35, of an entry last
        // changed in 20. Its entry at ledger 1 is not known.
        v.record(k, Some(account(10, 20)), Some(&account(11, 35)), 35, 1);
        assert_eq!(v.known_at(&k, 1), Some(false));
        assert_eq!(v.known_at(&k, 20), Some(true));
        assert_eq!(v.known_at(&k, 40), Some(true));
    }

    #[test]
    fn versions_are_bounded() {
        let k = AccountKey([2; 32]);
        let mut v = AccountVersions::default();
        for l in 1..200u32 {
            let old = account(i64::from(l) - 1, l - 1);
            v.record(k, Some(old), Some(&account(i64::from(l), l)), l, 0);
        }
        assert_eq!(v.map[&k].len(), ACCOUNT_VERSIONS_MAX);
    }
}
