//! The ready queue: `accepted` payouts waiting, in memory, for a channel worker to put them
//! into a batch. Waiting costs nothing: no timer and no statement per payout; a worker with
//! nothing to do registers as idle and is woken by the next arrival.
//!
//! Payouts are kept in lanes by the memo their transaction must carry (a memo belongs to a
//! transaction, so only payouts with the same memo can share one; payouts without a
//! caller memo share the default lane). A worker takes from the lane whose front waited
//! longest among the lanes that are ready: full (`max` payouts), or lingered (its front has
//! waited `linger`). Taking is FIFO within a lane.
//!
//! The queue holds at most `len_max` payouts; past that, arrivals are not kept (they are
//! durable in the journal as `accepted`) and `spilled` is set so that the owner reads them
//! back from the journal once there is room.
//!
//! A payout a worker took stays *in hand* (named with the worker's channel) until the
//! worker settles it or gives it back. A read-back from the journal skips payouts in hand:
//! they are still `accepted` there while their batch is being prepared, and queuing them
//! again would put one payout into two batches at once (the second prepare is refused, but
//! the two prepares lock the same rows and can deadlock).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::{AccountId, Memo, PayoutId};
use crate::ports::journal::Ready;

/// Which transactions a payout may share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lane {
    /// No caller memo: the transaction's memo names the payout (alone) or the batch.
    Default,
    /// The caller's memo (including an explicit "none"): shared only with the same memo.
    Memo(Memo),
}

impl Lane {
    pub fn of(ready: &Ready) -> Self {
        match ready.request.memo() {
            None => Self::Default,
            Some(m) => Self::Memo(m.clone()),
        }
    }
}

/// Someone to wake when work arrives (a channel worker). `false`: it is gone.
pub trait Waker: Send + Sync {
    fn wake(&self) -> bool;
}

/// What `take` found.
#[derive(Debug)]
pub enum Take {
    /// A batch: payouts of one lane, oldest first.
    Batch(Lane, Vec<Ready>),
    /// Payouts wait, but no lane is ready before this instant.
    NotBefore(Instant),
    Empty,
}

struct Entry {
    seq: i64,
    arrived: Instant,
    ready: Ready,
}

#[derive(Default)]
struct Inner {
    /// Increasing for arrivals, decreasing for payouts put back at the front.
    next_back: i64,
    next_front: i64,
    lanes: HashMap<Lane, VecDeque<Entry>>,
    /// The front entry's sequence of every lane that has entries → the lane.
    fronts: BTreeMap<i64, Lane>,
    /// The live entry of every queued payout. Entries not named here are stale (removed or
    /// replaced) and are dropped when they reach a lane's front.
    index: HashMap<PayoutId, i64>,
    /// Payouts that may join a batch only later (after `op_underfunded`).
    delayed: BTreeMap<(Instant, i64), Ready>,
    /// Payouts taken by a channel worker (the channel) and not yet settled or given back.
    in_hand: HashMap<PayoutId, AccountId>,
    idle: VecDeque<Box<dyn Waker>>,
    spilled: bool,
}

pub struct ReadyQueue {
    inner: Mutex<Inner>,
    len_max: usize,
}

impl ReadyQueue {
    pub fn new(len_max: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                next_back: 0,
                next_front: -1,
                ..Inner::default()
            }),
            len_max: len_max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere while holding it; every update below
        // leaves the structure consistent between statements that could panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a payout (replacing an older entry of the same payout). `false` if the queue
    /// is full: the payout stays durable in the journal and is read back later.
    pub fn push(&self, ready: Ready) -> bool {
        let mut inner = self.lock();
        if !inner.index.contains_key(ready.id()) && inner.index.len() >= self.len_max {
            inner.spilled = true;
            return false;
        }
        let seq = inner.next_back;
        inner.next_back += 1;
        inner.insert(seq, Instant::now(), ready, false);
        inner.wake_one();
        true
    }

    /// Puts payouts back at the front of their lanes, in order (a batch that could not be
    /// journaled). They keep their place ahead of later arrivals.
    pub fn unshift(&self, items: Vec<Ready>, arrived: Instant) {
        let mut inner = self.lock();
        for ready in items.into_iter().rev() {
            let seq = inner.next_front;
            inner.next_front -= 1;
            inner.insert(seq, arrived, ready, true);
        }
        inner.wake_one();
    }

    /// Queues a payout that may join a batch only at `at`. An idle worker is woken to
    /// learn the time (it sets its own timer for it).
    pub fn push_at(&self, ready: Ready, at: Instant) {
        let mut inner = self.lock();
        let seq = inner.next_back;
        inner.next_back += 1;
        inner.in_hand.remove(ready.id());
        inner.index.insert(ready.id().clone(), seq);
        inner.delayed.insert((at, seq), ready);
        inner.wake_one();
    }

    /// Forgets a payout (it was cancelled, or moved on elsewhere).
    pub fn remove(&self, id: &PayoutId) {
        let mut inner = self.lock();
        inner.index.remove(id);
        inner.in_hand.remove(id);
    }

    /// Whether the payout is queued, or in a worker's hand.
    pub fn contains(&self, id: &PayoutId) -> bool {
        let inner = self.lock();
        inner.index.contains_key(id) || inner.in_hand.contains_key(id)
    }

    /// The worker is done with these payouts (settled, held or parked): they leave its hand.
    pub fn release<'a>(&self, ids: impl IntoIterator<Item = &'a PayoutId>) {
        let mut inner = self.lock();
        for id in ids {
            inner.in_hand.remove(id);
        }
    }

    /// Everything in the hand of `channel`'s worker leaves it (the worker starts again
    /// and reads its envelopes from the journal); returns how many there were.
    pub fn release_hand(&self, channel: &AccountId) -> usize {
        let mut inner = self.lock();
        let before = inner.in_hand.len();
        inner.in_hand.retain(|_, hand| hand != channel);
        before - inner.in_hand.len()
    }

    /// `channel`'s worker (re)starts or stops: what it still had in hand and never
    /// journaled is read back from the journal by the next sweep.
    pub fn abandon_hand(&self, channel: &AccountId) {
        if self.release_hand(channel) > 0 {
            self.mark_spilled();
        }
    }

    /// Payouts in the hands of workers.
    pub fn in_hand(&self) -> usize {
        self.lock().in_hand.len()
    }

    /// Payouts queued (including delayed ones).
    pub fn len(&self) -> usize {
        self.lock().index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn has_room(&self) -> bool {
        self.len() < self.len_max
    }

    /// Notes that payouts were left in the journal for lack of room.
    pub fn mark_spilled(&self) {
        self.lock().spilled = true;
    }

    /// Whether arrivals were dropped for lack of room since the last call; clears it.
    pub fn take_spilled(&self) -> bool {
        std::mem::take(&mut self.lock().spilled)
    }

    /// How long the oldest queued payout has waited.
    pub fn oldest_wait(&self, now: Instant) -> Option<Duration> {
        let mut inner = self.lock();
        inner.drop_stale_fronts();
        inner
            .fronts
            .values()
            .filter_map(|lane| inner.lanes.get(lane)?.front())
            .map(|e| now.saturating_duration_since(e.arrived))
            .max()
    }

    /// Takes a batch of at most `max` payouts of one lane, if a lane is ready at `now`.
    pub fn take(&self, max: usize, linger: Duration, now: Instant) -> Take {
        self.lock().take(max, linger, now)
    }

    /// Like [`take`](Self::take), but what it takes stays in the hand of `channel`'s
    /// worker, and when no lane is ready the worker's `waker` is registered under the same
    /// lock, so an arrival between the look and the wait still wakes it. A worker that goes
    /// idle with payouts lingering also sets its own timer for [`Take::NotBefore`].
    pub fn take_or_wait(
        &self,
        max: usize,
        linger: Duration,
        now: Instant,
        channel: &AccountId,
        waker: Box<dyn Waker>,
    ) -> Take {
        let mut inner = self.lock();
        let taken = inner.take(max, linger, now);
        match &taken {
            Take::Batch(_, items) => {
                for r in items {
                    inner.in_hand.insert(r.id().clone(), *channel);
                }
            }
            _ => inner.idle.push_back(waker),
        }
        taken
    }
}

impl Inner {
    fn take(&mut self, max: usize, linger: Duration, now: Instant) -> Take {
        let max = max.max(1);
        let inner = self;
        inner.release_due(now);
        inner.drop_stale_fronts();
        let mut not_before: Option<Instant> = inner.delayed.keys().next().map(|(at, _)| *at);
        let mut chosen = None;
        for lane in inner.fronts.values() {
            let Some(queue) = inner.lanes.get(lane) else {
                continue;
            };
            let Some(front) = queue.front() else { continue };
            let due = front.arrived + linger;
            if queue.len() >= max || due <= now {
                chosen = Some(lane.clone());
                break;
            }
            not_before = Some(not_before.map_or(due, |n| n.min(due)));
        }
        let Some(lane) = chosen else {
            return match not_before {
                Some(at) => Take::NotBefore(at),
                None => Take::Empty,
            };
        };
        let taken = inner.take_from(&lane, max);
        if taken.is_empty() {
            // Only stale entries were left in it; the next call looks again.
            return Take::NotBefore(now);
        }
        if !inner.index.is_empty() {
            // More may be ready for another idle worker.
            inner.wake_one();
        }
        Take::Batch(lane, taken)
    }

    fn insert(&mut self, seq: i64, arrived: Instant, ready: Ready, front: bool) {
        let lane = Lane::of(&ready);
        self.in_hand.remove(ready.id());
        self.index.insert(ready.id().clone(), seq);
        let queue = self.lanes.entry(lane.clone()).or_default();
        let old_front = queue.front().map(|e| e.seq);
        let entry = Entry {
            seq,
            arrived,
            ready,
        };
        if front {
            queue.push_front(entry);
        } else {
            queue.push_back(entry);
        }
        let new_front = queue.front().map(|e| e.seq);
        if old_front != new_front {
            if let Some(old) = old_front {
                self.fronts.remove(&old);
            }
            if let Some(new) = new_front {
                self.fronts.insert(new, lane);
            }
        }
    }

    fn is_live(&self, entry: &Entry) -> bool {
        self.index.get(entry.ready.id()) == Some(&entry.seq)
    }

    /// Pops stale entries off every lane's front, so that each front is a live payout.
    fn drop_stale_fronts(&mut self) {
        let stale_lanes: Vec<(i64, Lane)> = self
            .fronts
            .iter()
            .filter(|(_, lane)| {
                self.lanes
                    .get(*lane)
                    .and_then(|q| q.front())
                    .is_none_or(|e| !self.is_live(e))
            })
            .map(|(s, l)| (*s, l.clone()))
            .collect();
        for (seq, lane) in stale_lanes {
            self.fronts.remove(&seq);
            let index = &self.index;
            let Some(queue) = self.lanes.get_mut(&lane) else {
                continue;
            };
            while queue
                .front()
                .is_some_and(|e| index.get(e.ready.id()) != Some(&e.seq))
            {
                queue.pop_front();
            }
            match queue.front() {
                Some(e) => {
                    self.fronts.insert(e.seq, lane);
                }
                None => {
                    self.lanes.remove(&lane);
                }
            }
        }
    }

    fn take_from(&mut self, lane: &Lane, max: usize) -> Vec<Ready> {
        let Some(queue) = self.lanes.get_mut(lane) else {
            return Vec::new();
        };
        if let Some(front) = queue.front() {
            self.fronts.remove(&front.seq);
        }
        let mut taken = Vec::with_capacity(max.min(queue.len()));
        while taken.len() < max {
            let Some(entry) = queue.pop_front() else {
                break;
            };
            if self.index.get(entry.ready.id()) == Some(&entry.seq) {
                self.index.remove(entry.ready.id());
                taken.push(entry.ready);
            }
        }
        match queue.front() {
            Some(e) => {
                self.fronts.insert(e.seq, lane.clone());
            }
            None => {
                self.lanes.remove(lane);
            }
        }
        taken
    }

    fn release_due(&mut self, now: Instant) {
        while let Some(entry) = self.delayed.first_entry() {
            let (at, seq) = *entry.key();
            if at > now {
                break;
            }
            let ready = entry.remove();
            if self.index.get(ready.id()) == Some(&seq) {
                self.insert(seq, at, ready, false);
            }
        }
    }

    fn wake_one(&mut self) {
        while let Some(w) = self.idle.pop_front() {
            if w.wake() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::domain::{AccountId, Amount, Asset, Destination, PayoutRequest};

    fn ready(id: &str, memo: Option<Memo>) -> Ready {
        Ready {
            request: PayoutRequest::new(
                PayoutId::parse(id).unwrap(),
                Destination::Account(AccountId::from_bytes([9; 32])),
                Asset::Native,
                Amount::from_stroops(1).unwrap(),
                memo,
            ),
            version: 1,
            attempt: 0,
            op_kind: Default::default(),
        }
    }

    fn ids(take: Take) -> Vec<String> {
        match take {
            Take::Batch(_, items) => items.iter().map(|r| r.id().to_string()).collect(),
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    const LINGER: Duration = Duration::from_millis(50);
    const CHANNEL: AccountId = AccountId::from_bytes([3; 32]);

    #[test]
    fn full_lanes_go_at_once_and_partial_ones_after_the_linger() {
        let q = ReadyQueue::new(100);
        for i in 0..5 {
            q.push(ready(&format!("p{i}"), None));
        }
        let now = Instant::now();
        assert_eq!(ids(q.take(3, LINGER, now)), ["p0", "p1", "p2"]);
        assert!(matches!(q.take(3, LINGER, now), Take::NotBefore(_)));
        assert_eq!(ids(q.take(3, LINGER, now + LINGER)), ["p3", "p4"]);
        assert!(matches!(q.take(3, LINGER, now + LINGER), Take::Empty));
    }

    #[test]
    fn memos_keep_their_own_lanes() {
        let q = ReadyQueue::new(100);
        q.push(ready("a", None));
        q.push(ready("b", Some(Memo::Id(7))));
        q.push(ready("c", None));
        q.push(ready("d", Some(Memo::Id(7))));
        q.push(ready("e", Some(Memo::Id(8))));
        let later = Instant::now() + LINGER;
        assert_eq!(ids(q.take(10, LINGER, later)), ["a", "c"]);
        assert_eq!(ids(q.take(10, LINGER, later)), ["b", "d"]);
        let Take::Batch(lane, items) = q.take(10, LINGER, later) else {
            panic!()
        };
        assert_eq!((lane, items.len()), (Lane::Memo(Memo::Id(8)), 1));
    }

    #[test]
    fn removed_and_replaced_entries_are_skipped() {
        let q = ReadyQueue::new(100);
        q.push(ready("a", None));
        q.push(ready("b", None));
        q.push(ready("c", None));
        q.remove(&PayoutId::parse("a").unwrap());
        let mut newer = ready("b", None);
        newer.version = 5;
        q.push(newer);
        assert_eq!(q.len(), 2);
        let Take::Batch(_, items) = q.take(10, LINGER, Instant::now() + LINGER) else {
            panic!()
        };
        let got: Vec<(String, i64)> = items
            .iter()
            .map(|r| (r.id().to_string(), r.version))
            .collect();
        assert_eq!(got, [("c".to_owned(), 1), ("b".to_owned(), 5)]);
        assert!(q.is_empty());
    }

    #[test]
    fn unshifted_payouts_go_first_in_their_order() {
        let q = ReadyQueue::new(100);
        q.push(ready("late", None));
        q.unshift(vec![ready("x", None), ready("y", None)], Instant::now());
        assert_eq!(
            ids(q.take(10, LINGER, Instant::now() + LINGER)),
            ["x", "y", "late"]
        );
    }

    #[test]
    fn delayed_payouts_wait_for_their_time() {
        let q = ReadyQueue::new(100);
        let now = Instant::now();
        q.push_at(ready("u", None), now + Duration::from_secs(10));
        assert!(
            matches!(q.take(10, LINGER, now), Take::NotBefore(t) if t == now + Duration::from_secs(10))
        );
        assert_eq!(
            ids(q.take(10, Duration::ZERO, now + Duration::from_secs(10))),
            ["u"]
        );
    }

    #[test]
    fn a_full_queue_spills_and_says_so() {
        let q = ReadyQueue::new(2);
        assert!(q.push(ready("a", None)));
        assert!(q.push(ready("b", None)));
        assert!(!q.push(ready("c", None)));
        assert!(
            q.push(ready("a", None)),
            "a payout already queued is replaced"
        );
        assert!(q.take_spilled());
        assert!(!q.take_spilled());
    }

    struct Count(Arc<AtomicUsize>);
    impl Waker for Count {
        fn wake(&self) -> bool {
            self.0.fetch_add(1, Ordering::SeqCst);
            true
        }
    }

    #[test]
    fn an_arrival_wakes_one_idle_worker() {
        let q = ReadyQueue::new(10);
        let woken = Arc::new(AtomicUsize::new(0));
        let now = Instant::now();
        for _ in 0..2 {
            let waker = Box::new(Count(woken.clone()));
            assert!(matches!(
                q.take_or_wait(5, LINGER, now, &CHANNEL, waker),
                Take::Empty
            ));
        }
        q.push(ready("a", None));
        assert_eq!(woken.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_payout_for_later_wakes_an_idle_worker_to_learn_its_time() {
        let q = ReadyQueue::new(10);
        let woken = Arc::new(AtomicUsize::new(0));
        let now = Instant::now();
        let waker = Box::new(Count(woken.clone()));
        assert!(matches!(
            q.take_or_wait(5, LINGER, now, &CHANNEL, waker),
            Take::Empty
        ));
        q.push_at(ready("later", None), now + Duration::from_secs(5));
        assert_eq!(woken.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_worker_that_found_a_batch_is_not_registered() {
        let q = ReadyQueue::new(10);
        let woken = Arc::new(AtomicUsize::new(0));
        q.push(ready("a", None));
        let waker = Box::new(Count(woken.clone()));
        let taken = q.take_or_wait(5, Duration::ZERO, Instant::now(), &CHANNEL, waker);
        assert_eq!(ids(taken), ["a"]);
        q.push(ready("b", None));
        assert_eq!(woken.load(Ordering::SeqCst), 0);
    }

    struct Never;

    impl Waker for Never {
        fn wake(&self) -> bool {
            false
        }
    }

    #[test]
    fn taken_payouts_stay_in_hand_until_settled_given_back_or_their_worker_stops() {
        let q = ReadyQueue::new(10);
        for id in ["a", "b", "c"] {
            q.push(ready(id, None));
        }
        let taken = q.take_or_wait(5, Duration::ZERO, Instant::now(), &CHANNEL, Box::new(Never));
        assert_eq!(ids(taken), ["a", "b", "c"]);
        let id = |s: &str| PayoutId::parse(s).unwrap();
        // A read-back from the journal sees them still `accepted`: it must not queue them.
        assert!(q.contains(&id("a")) && q.is_empty());
        assert_eq!(q.in_hand(), 3);
        // Settled: out of hand. Given back: queued again, out of hand.
        q.release([&id("a")]);
        q.unshift(vec![ready("b", None)], Instant::now());
        assert!(!q.contains(&id("a")));
        assert!(q.contains(&id("b")) && q.len() == 1);
        assert_eq!(q.in_hand(), 1);
        // The worker stops: what it still held is no longer anyone's.
        let other = AccountId::from_bytes([4; 32]);
        assert_eq!(q.release_hand(&other), 0);
        assert_eq!(q.release_hand(&CHANNEL), 1);
        assert!(!q.contains(&id("c")));
    }
}
