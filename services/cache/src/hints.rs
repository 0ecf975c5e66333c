//! Hinted handoff: writes kept for a replica that could not take them.
//!
//! When a write's replica is down, its coordinator stores the write on the next live node of
//! the ring beyond the key's replicas, as a *hint* naming the intended owner. That node keeps
//! the hint until the owner is alive again (SWIM says so) and then replays it; the owner
//! merges it like any replica write, so a hint older than what the owner has since learned
//! changes nothing. Hints are bounded (bytes) and expire: a cache may lose a hint, it must not
//! run out of memory keeping them.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::placement::MemberId;
use crate::store::{ITEM_OVERHEAD, Replica};

struct Hint {
    key: Bytes,
    replica: Replica,
    until: Instant,
}

impl Hint {
    fn cost(&self) -> usize {
        let value = match &self.replica {
            Replica::Value { value, .. } => value.len(),
            Replica::Deleted { .. } => 0,
        };
        self.key.len() + value + ITEM_OVERHEAD
    }
}

/// Counters for `/metrics` and the admin page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HintStats {
    pub stored: u64,
    pub replayed: u64,
    /// Refused because the queue was full.
    pub dropped: u64,
    pub expired: u64,
}

pub struct Hints {
    by_owner: BTreeMap<MemberId, VecDeque<Hint>>,
    bytes: usize,
    max_bytes: usize,
    ttl: Duration,
    stats: HintStats,
}

impl Hints {
    /// Hints for at most `max_bytes` (keys, values, overhead), each kept at most `ttl`.
    pub fn new(max_bytes: usize, ttl: Duration) -> Self {
        Self {
            by_owner: BTreeMap::new(),
            bytes: 0,
            max_bytes,
            ttl,
            stats: HintStats::default(),
        }
    }

    /// Keeps a write for `owner`; false if there is no room (the hint is dropped, counted).
    pub fn add(&mut self, owner: &str, key: Bytes, replica: Replica, now: Instant) -> bool {
        self.expire(now);
        let hint = Hint {
            key,
            replica,
            until: now + self.ttl,
        };
        if self.bytes + hint.cost() > self.max_bytes {
            self.stats.dropped += 1;
            return false;
        }
        self.bytes += hint.cost();
        self.stats.stored += 1;
        self.by_owner
            .entry(owner.to_string())
            .or_default()
            .push_back(hint);
        true
    }

    /// Up to `max` of `owner`'s hints, oldest first, taken out of the queue to replay. Give
    /// back what could not be delivered with [`Hints::give_back`].
    pub fn take(&mut self, owner: &str, max: usize, now: Instant) -> Vec<(Bytes, Replica)> {
        self.expire(now);
        let Some(queue) = self.by_owner.get_mut(owner) else {
            return Vec::new();
        };
        let taken: Vec<Hint> = queue.drain(..max.min(queue.len())).collect();
        if queue.is_empty() {
            self.by_owner.remove(owner);
        }
        self.bytes -= taken.iter().map(Hint::cost).sum::<usize>();
        self.stats.replayed += taken.len() as u64;
        taken.into_iter().map(|h| (h.key, h.replica)).collect()
    }

    /// Returns hints whose replay failed to the front of `owner`'s queue (their expiry
    /// starts again: the owner was just seen alive).
    pub fn give_back(&mut self, owner: &str, hints: Vec<(Bytes, Replica)>, now: Instant) {
        self.stats.replayed -= hints.len() as u64;
        let queue = self.by_owner.entry(owner.to_string()).or_default();
        for (key, replica) in hints.into_iter().rev() {
            let hint = Hint {
                key,
                replica,
                until: now + self.ttl,
            };
            self.bytes += hint.cost();
            queue.push_front(hint);
        }
    }

    /// Drops the hints past their time.
    pub fn expire(&mut self, now: Instant) {
        let mut freed = 0;
        let mut expired = 0;
        for queue in self.by_owner.values_mut() {
            // Queues are in arrival order, so expired hints are at the front (give_back puts
            // fresher ones there; they stop the scan early, which only delays expiry).
            while queue.front().is_some_and(|h| h.until <= now) {
                let hint = queue.pop_front().expect("checked above");
                freed += hint.cost();
                expired += 1;
            }
        }
        self.by_owner.retain(|_, q| !q.is_empty());
        self.bytes -= freed;
        self.stats.expired += expired;
    }

    /// Hints waiting per owner (the admin page's hint queues).
    pub fn depth(&self) -> BTreeMap<MemberId, usize> {
        self.by_owner
            .iter()
            .map(|(owner, q)| (owner.clone(), q.len()))
            .collect()
    }

    /// Hints waiting in all.
    pub fn len(&self) -> usize {
        self.by_owner.values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_owner.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn stats(&self) -> HintStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(v: &str, version: u64) -> Replica {
        Replica::test_value(v, version)
    }

    #[test]
    fn hints_are_kept_per_owner_and_replayed_oldest_first() {
        let now = Instant::now();
        let mut hints = Hints::new(1 << 20, Duration::from_secs(60));
        assert!(hints.add("n2", Bytes::from("a"), write("1", 1), now));
        assert!(hints.add("n3", Bytes::from("b"), write("2", 2), now));
        assert!(hints.add("n2", Bytes::from("c"), Replica::Deleted { version: 3 }, now));
        assert_eq!(
            hints.depth(),
            BTreeMap::from([("n2".into(), 2), ("n3".into(), 1)])
        );
        let first = hints.take("n2", 1, now);
        assert_eq!(first, [(Bytes::from("a"), write("1", 1))]);
        let rest = hints.take("n2", 10, now);
        assert_eq!(rest.len(), 1);
        assert!(hints.take("n2", 10, now).is_empty());
        assert_eq!(hints.len(), 1);
        assert_eq!(hints.stats().replayed, 2);
    }

    #[test]
    fn a_failed_replay_goes_back_in_front_in_order() {
        let now = Instant::now();
        let mut hints = Hints::new(1 << 20, Duration::from_secs(60));
        for (k, v) in [("a", 1), ("b", 2), ("c", 3)] {
            hints.add("n2", Bytes::from(k), write("x", v), now);
        }
        let bytes = hints.bytes();
        let taken = hints.take("n2", 2, now);
        hints.give_back("n2", taken, now);
        let keys: Vec<Bytes> = hints.take("n2", 10, now).into_iter().map(|h| h.0).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(hints.stats().replayed, 3);
        hints.give_back("n2", vec![(Bytes::from("a"), write("x", 1))], now);
        assert!(hints.bytes() < bytes);
    }

    #[test]
    fn the_byte_bound_drops_new_hints_and_counts_them() {
        let now = Instant::now();
        let one = Bytes::from("k").len() + 100 + ITEM_OVERHEAD;
        let mut hints = Hints::new(2 * one, Duration::from_secs(60));
        let value = "v".repeat(100);
        assert!(hints.add("n2", Bytes::from("k"), write(&value, 1), now));
        assert!(hints.add("n2", Bytes::from("k"), write(&value, 2), now));
        assert!(!hints.add("n2", Bytes::from("k"), write(&value, 3), now));
        assert_eq!(hints.stats().dropped, 1);
        assert_eq!(hints.bytes(), 2 * one);
    }

    #[test]
    fn hints_expire() {
        let now = Instant::now();
        let mut hints = Hints::new(1 << 20, Duration::from_secs(10));
        hints.add("n2", Bytes::from("a"), write("1", 1), now);
        hints.add(
            "n2",
            Bytes::from("b"),
            write("1", 2),
            now + Duration::from_secs(5),
        );
        hints.expire(now + Duration::from_secs(10));
        assert_eq!(hints.len(), 1);
        assert!(
            hints
                .take("n2", 10, now + Duration::from_secs(15))
                .is_empty()
        );
        assert!(hints.is_empty());
        assert_eq!((hints.bytes(), hints.stats().expired), (0, 2));
    }
}
