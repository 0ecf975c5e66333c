//! One node's items: a memory-bounded LRU with expiry times, with memcached's semantics.
//!
//! Every operation memcached's protocol has lives here as one method (set/add/replace/append/
//! prepend/cas as [`Store::store`] with a [`Mode`], incr/decr, touch, delete, flush_all), so
//! the protocol layer only parses and formats, and the gRPC API and replication reuse the
//! same rules.
//!
//! Memory: an item costs its key, its value and [`ITEM_OVERHEAD`] bytes; storing past the
//! bound evicts the least recently used items first (a get counts as a use). Expired items
//! are dropped when they are next looked at, and evicted like any other meanwhile, as
//! memcached does. Time comes in as an argument (`now`), so tests need no sleeping.
//!
//! Replicas: every write stamps the item with a [`Version`] from a hybrid clock (wall-clock
//! microseconds, never going backwards on this node); it is memcached's "cas unique" too, the
//! same on every replica. A replica takes what the coordinator sends through
//! [`Store::merge`]: the higher version wins (last writer wins), and a delete leaves a
//! tombstone for [`TOMBSTONE_TTL`] so an older copy arriving late (a hint, a read repair)
//! cannot bring the value back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lru::LruCache;

use crate::clock::HybridClock;

/// Bytes an item costs beyond its key and value (its header and the LRU's links), so a
/// cache of many tiny items is bounded too.
pub const ITEM_OVERHEAD: usize = 64;

/// The longest key memcached accepts, and so do we.
pub const MAX_KEY_LEN: usize = 250;

/// How long a delete is remembered against older copies of the value.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(60);

/// Tombstones kept at most (the oldest go first beyond it).
const MAX_TOMBSTONES: usize = 100_000;

/// An item's version: hybrid-clock microseconds. Higher wins.
pub type Version = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub value: Bytes,
    /// Opaque to the cache; memcached clients keep their serialization format here.
    pub flags: u32,
    /// `None`: never expires.
    pub expires: Option<Instant>,
    /// Its version: changes on every write of this key (the `cas` command's check).
    pub version: Version,
    /// When it was written (`flush_all` with a delay invalidates what was written before).
    stored: Instant,
}

impl Item {
    fn cost(key: &[u8], value: &[u8]) -> usize {
        key.len() + value.len() + ITEM_OVERHEAD
    }
}

/// How [`Store::store`] treats an existing (or missing) item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Store it, whatever was there.
    Set,
    /// Only if the key holds nothing.
    Add,
    /// Only if the key holds something.
    Replace,
    /// Add the bytes after the existing value (keeping its flags and expiry).
    Append,
    /// Add the bytes before the existing value (keeping its flags and expiry).
    Prepend,
    /// Only if the item's cas is still this one.
    Cas(u64),
}

/// The outcome of a store, named as memcached answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Stored {
    Stored,
    /// add on a present key; replace, append or prepend on a missing one.
    NotStored,
    /// cas: the item changed since the client read it.
    Exists,
    /// cas: no such item.
    NotFound,
    /// Larger than the whole cache may hold.
    TooLarge,
}

/// incr/decr on a value that is not a decimal number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot increment or decrement non-numeric value")]
pub struct NonNumeric;

/// What a coordinator sends a replica: an item's new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replica {
    Value {
        value: Bytes,
        flags: u32,
        expires: Option<Instant>,
        version: Version,
    },
    Deleted {
        version: Version,
    },
}

impl Replica {
    pub fn version(&self) -> Version {
        match self {
            Replica::Value { version, .. } | Replica::Deleted { version } => *version,
        }
    }

    /// A value that never expires, for tests.
    #[cfg(test)]
    pub(crate) fn test_value(value: &str, version: Version) -> Self {
        Replica::Value {
            value: Bytes::copy_from_slice(value.as_bytes()),
            flags: 0,
            expires: None,
            version,
        }
    }
}

/// Counters for `stats` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub items: usize,
    pub bytes: usize,
    pub limit: usize,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub expired: u64,
    pub total_items: u64,
}

pub struct Store {
    items: LruCache<Bytes, Item>,
    used: usize,
    limit: usize,
    /// Where versions come from (never goes back).
    clock: HybridClock,
    /// Deleted keys: the delete's version and until when it is remembered.
    tombstones: HashMap<Bytes, (Version, Instant)>,
    /// `flush_all`: items stored at or before this instant are gone once it has passed.
    flushed: Option<Instant>,
    stats: StoreStats,
}

impl Store {
    /// A store that holds at most `limit` bytes (keys, values and per-item overhead).
    pub fn new(limit: usize) -> Self {
        Self {
            items: LruCache::unbounded(),
            used: 0,
            limit,
            clock: HybridClock::default(),
            tombstones: HashMap::new(),
            flushed: None,
            stats: StoreStats::default(),
        }
    }

    fn live(&self, item: &Item, now: Instant) -> bool {
        let expired = item.expires.is_some_and(|at| at <= now);
        let flushed = self
            .flushed
            .is_some_and(|at| at <= now && item.stored <= at);
        !expired && !flushed
    }

    /// The live item under `key`, if any, without counting a hit or a miss or touching the
    /// LRU order; drops it if it is dead.
    fn peek_live(&mut self, key: &[u8], now: Instant) -> Option<&Item> {
        let item = self.items.peek(key)?;
        if self.live(item, now) {
            return self.items.peek(key);
        }
        self.remove(key);
        self.stats.expired += 1;
        None
    }

    fn remove(&mut self, key: &[u8]) -> Option<Item> {
        let (key, item) = self.items.pop_entry(key)?;
        self.used -= Item::cost(&key, &item.value);
        Some(item)
    }

    /// A new version from this store's hybrid clock.
    pub fn stamp(&mut self) -> Version {
        self.clock.stamp()
    }

    /// Moves the clock past a version seen from elsewhere, so a later local write wins.
    fn observe(&mut self, version: Version) {
        self.clock.observe(version);
    }

    /// The item under `key`, counted as a hit (and made most recently used) or a miss.
    pub fn get(&mut self, key: &[u8], now: Instant) -> Option<&Item> {
        if self.peek_live(key, now).is_none() {
            self.stats.misses += 1;
            return None;
        }
        self.stats.hits += 1;
        self.items.get(key)
    }

    /// Stores `value` under `key` as `mode` says; see [`Stored`] for the outcomes.
    pub fn store(
        &mut self,
        mode: Mode,
        key: Bytes,
        value: Bytes,
        flags: u32,
        expires: Option<Instant>,
        now: Instant,
    ) -> Stored {
        let existing = self.peek_live(&key, now).cloned();
        let (value, flags, expires) = match (mode, &existing) {
            (Mode::Set, _) | (Mode::Add, None) | (Mode::Replace, Some(_)) => {
                (value, flags, expires)
            }
            (Mode::Add, Some(_)) | (Mode::Replace | Mode::Append | Mode::Prepend, None) => {
                return Stored::NotStored;
            }
            (Mode::Cas(_), None) => return Stored::NotFound,
            (Mode::Cas(cas), Some(item)) if item.version != cas => return Stored::Exists,
            (Mode::Cas(_), Some(_)) => (value, flags, expires),
            (Mode::Append, Some(item)) => {
                let mut joined = Vec::with_capacity(item.value.len() + value.len());
                joined.extend_from_slice(&item.value);
                joined.extend_from_slice(&value);
                (Bytes::from(joined), item.flags, item.expires)
            }
            (Mode::Prepend, Some(item)) => {
                let mut joined = Vec::with_capacity(item.value.len() + value.len());
                joined.extend_from_slice(&value);
                joined.extend_from_slice(&item.value);
                (Bytes::from(joined), item.flags, item.expires)
            }
        };
        let version = self.stamp();
        self.put(key, value, flags, expires, version, now)
    }

    /// Writes the item, evicting least recently used items to make room.
    fn put(
        &mut self,
        key: Bytes,
        value: Bytes,
        flags: u32,
        expires: Option<Instant>,
        version: Version,
        now: Instant,
    ) -> Stored {
        let cost = Item::cost(&key, &value);
        if cost > self.limit {
            return Stored::TooLarge;
        }
        self.remove(&key);
        self.tombstones.remove(&key);
        while self.used + cost > self.limit {
            let Some((old_key, old)) = self.items.pop_lru() else {
                break;
            };
            self.used -= Item::cost(&old_key, &old.value);
            self.stats.evictions += 1;
        }
        self.used += cost;
        self.stats.total_items += 1;
        self.items.put(
            key,
            Item {
                value,
                flags,
                expires,
                version,
                stored: now,
            },
        );
        Stored::Stored
    }

    /// Removes the item, leaving a tombstone; false if there was none.
    pub fn delete(&mut self, key: &[u8], now: Instant) -> bool {
        if self.peek_live(key, now).is_none() {
            return false;
        }
        let version = self.stamp();
        self.bury(Bytes::copy_from_slice(key), version, now);
        true
    }

    fn bury(&mut self, key: Bytes, version: Version, now: Instant) {
        self.remove(&key);
        if self.tombstones.len() >= MAX_TOMBSTONES {
            self.tombstones.retain(|_, (_, until)| *until > now);
            if self.tombstones.len() >= MAX_TOMBSTONES {
                // Still full of live tombstones: forget the older half of the deletes.
                let mut versions: Vec<Version> = self.tombstones.values().map(|t| t.0).collect();
                let middle = versions.len() / 2;
                let (_, median, _) = versions.select_nth_unstable(middle);
                let median = *median;
                self.tombstones.retain(|_, (v, _)| *v > median);
            }
        }
        self.tombstones.insert(key, (version, now + TOMBSTONE_TTL));
    }

    /// The version of what this store holds for `key`: a live item's, or a remembered
    /// delete's. What read repair compares.
    pub fn version_of(&mut self, key: &[u8], now: Instant) -> Option<Version> {
        if let Some(item) = self.peek_live(key, now) {
            return Some(item.version);
        }
        match self.tombstones.get(key) {
            Some(&(version, until)) if until > now => Some(version),
            _ => None,
        }
    }

    /// The state of `key` to send a replica (None: nothing, not even a tombstone).
    pub fn replica_of(&mut self, key: &[u8], now: Instant) -> Option<Replica> {
        if let Some(item) = self.peek_live(key, now) {
            return Some(Replica::Value {
                value: item.value.clone(),
                flags: item.flags,
                expires: item.expires,
                version: item.version,
            });
        }
        match self.tombstones.get(key) {
            Some(&(version, until)) if until > now => Some(Replica::Deleted { version }),
            _ => None,
        }
    }

    /// Takes a replica's state from its coordinator if it is newer than what is here: true if
    /// it was taken. Never refused for space: a replica evicts like any write.
    pub fn merge(&mut self, key: Bytes, incoming: Replica, now: Instant) -> bool {
        let version = incoming.version();
        if self
            .version_of(&key, now)
            .is_some_and(|have| have >= version)
        {
            return false;
        }
        self.observe(version);
        match incoming {
            Replica::Value {
                value,
                flags,
                expires,
                version,
            } => self.put(key, value, flags, expires, version, now) == Stored::Stored,
            Replica::Deleted { version } => {
                self.bury(key, version, now);
                true
            }
        }
    }

    /// Every live item's key, least recently used first (what a rebalance walks over).
    pub fn keys(&self) -> Vec<Bytes> {
        self.items.iter().rev().map(|(k, _)| k.clone()).collect()
    }

    /// incr (`up`) or decr the decimal number under `key` by `delta`: incr wraps around at
    /// 2^64, decr stops at 0 (memcached's rules). `Ok(None)`: no such item.
    pub fn add_delta(
        &mut self,
        key: &[u8],
        delta: u64,
        up: bool,
        now: Instant,
    ) -> Result<Option<u64>, NonNumeric> {
        let Some(item) = self.peek_live(key, now) else {
            return Ok(None);
        };
        let current: u64 = std::str::from_utf8(&item.value)
            .ok()
            .map(str::trim_end)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or(NonNumeric)?;
        let next = if up {
            current.wrapping_add(delta)
        } else {
            current.saturating_sub(delta)
        };
        let (flags, expires) = (item.flags, item.expires);
        let key = Bytes::copy_from_slice(key);
        let version = self.stamp();
        self.put(
            key,
            Bytes::from(next.to_string()),
            flags,
            expires,
            version,
            now,
        );
        Ok(Some(next))
    }

    /// Sets a new expiry time on the item; false if there is none.
    pub fn touch(&mut self, key: &[u8], expires: Option<Instant>, now: Instant) -> bool {
        if self.peek_live(key, now).is_none() {
            return false;
        }
        match self.items.get_mut(key) {
            Some(item) => {
                item.expires = expires;
                true
            }
            None => false,
        }
    }

    /// Invalidates every item stored up to `at` once `at` has come (`flush_all [delay]`).
    pub fn flush_all(&mut self, at: Instant, now: Instant) {
        self.flushed = Some(at);
        if at <= now {
            // Nothing stored so far survives: free the memory now rather than lazily.
            self.stats.expired += self.items.len() as u64;
            self.items.clear();
            self.used = 0;
        }
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            items: self.items.len(),
            bytes: self.used,
            limit: self.limit,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn set(store: &mut Store, key: &str, value: &str, now: Instant) -> Stored {
        store.store(Mode::Set, b(key), b(value), 0, None, now)
    }

    fn value(store: &mut Store, key: &str, now: Instant) -> Option<String> {
        store
            .get(key.as_bytes(), now)
            .map(|i| String::from_utf8(i.value.to_vec()).unwrap())
    }

    #[test]
    fn modes_follow_memcached() {
        let now = Instant::now();
        let mut s = Store::new(1 << 20);
        assert_eq!(
            s.store(Mode::Replace, b("k"), b("x"), 0, None, now),
            Stored::NotStored
        );
        assert_eq!(
            s.store(Mode::Append, b("k"), b("x"), 0, None, now),
            Stored::NotStored
        );
        assert_eq!(
            s.store(Mode::Add, b("k"), b("a"), 7, None, now),
            Stored::Stored
        );
        assert_eq!(
            s.store(Mode::Add, b("k"), b("b"), 0, None, now),
            Stored::NotStored
        );
        assert_eq!(
            s.store(Mode::Append, b("k"), b("z"), 0, None, now),
            Stored::Stored
        );
        assert_eq!(
            s.store(Mode::Prepend, b("k"), b("<"), 0, None, now),
            Stored::Stored
        );
        assert_eq!(value(&mut s, "k", now).as_deref(), Some("<az"));
        // append and prepend keep the flags of the item they extend
        assert_eq!(s.get(b"k", now).unwrap().flags, 7);
        assert_eq!(
            s.store(Mode::Replace, b("k"), b("r"), 1, None, now),
            Stored::Stored
        );
        assert_eq!(value(&mut s, "k", now).as_deref(), Some("r"));
    }

    #[test]
    fn cas_checks_the_item_was_not_written_since() {
        let now = Instant::now();
        let mut s = Store::new(1 << 20);
        assert_eq!(
            s.store(Mode::Cas(1), b("k"), b("x"), 0, None, now),
            Stored::NotFound
        );
        set(&mut s, "k", "1", now);
        let cas = s.get(b"k", now).unwrap().version;
        set(&mut s, "k", "2", now);
        assert_eq!(
            s.store(Mode::Cas(cas), b("k"), b("3"), 0, None, now),
            Stored::Exists
        );
        let cas = s.get(b"k", now).unwrap().version;
        assert_eq!(
            s.store(Mode::Cas(cas), b("k"), b("3"), 0, None, now),
            Stored::Stored
        );
        assert_eq!(value(&mut s, "k", now).as_deref(), Some("3"));
    }

    #[test]
    fn items_expire_and_touch_moves_the_expiry() {
        let now = Instant::now();
        let later = |s| now + Duration::from_secs(s);
        let mut s = Store::new(1 << 20);
        s.store(Mode::Set, b("a"), b("1"), 0, Some(later(10)), now);
        s.store(Mode::Set, b("b"), b("1"), 0, Some(later(10)), now);
        assert!(s.touch(b"b", Some(later(30)), later(5)));
        assert_eq!(value(&mut s, "a", later(9)).as_deref(), Some("1"));
        assert_eq!(value(&mut s, "a", later(10)), None);
        assert_eq!(value(&mut s, "b", later(20)).as_deref(), Some("1"));
        assert!(
            !s.touch(b"a", None, later(20)),
            "an expired item cannot be touched"
        );
        // an expired key is free for add
        assert_eq!(
            s.store(Mode::Add, b("a"), b("2"), 0, None, later(20)),
            Stored::Stored
        );
        assert_eq!(s.stats().expired, 1);
    }

    #[test]
    fn the_memory_bound_evicts_least_recently_used_first() {
        let now = Instant::now();
        let cost = Item::cost(b"k0", b"0123456789");
        let mut s = Store::new(3 * cost);
        for k in ["k0", "k1", "k2"] {
            set(&mut s, k, "0123456789", now);
        }
        assert!(
            s.get(b"k0", now).is_some(),
            "k0 becomes the most recently used"
        );
        set(&mut s, "k3", "0123456789", now);
        assert_eq!(value(&mut s, "k1", now), None, "k1 was least recently used");
        assert!(s.get(b"k0", now).is_some());
        let stats = s.stats();
        assert_eq!(
            (stats.items, stats.bytes, stats.evictions),
            (3, 3 * cost, 1)
        );
        assert!(stats.bytes <= stats.limit);
        // an item larger than the whole cache is refused, and nothing is evicted for it
        let huge = Bytes::from(vec![b'x'; 4 * cost]);
        assert_eq!(
            s.store(Mode::Set, b("big"), huge, 0, None, now),
            Stored::TooLarge
        );
        assert_eq!(s.stats().items, 3);
    }

    #[test]
    fn overwrites_and_deletes_keep_the_byte_count_exact() {
        let now = Instant::now();
        let mut s = Store::new(1 << 20);
        set(&mut s, "k", "short", now);
        set(&mut s, "k", "a much longer value", now);
        assert_eq!(s.stats().bytes, Item::cost(b"k", b"a much longer value"));
        assert!(s.delete(b"k", now));
        assert!(!s.delete(b"k", now));
        assert_eq!((s.stats().bytes, s.stats().items), (0, 0));
    }

    #[test]
    fn incr_wraps_decr_stops_at_zero_and_text_is_refused() {
        let now = Instant::now();
        let mut s = Store::new(1 << 20);
        assert_eq!(s.add_delta(b"n", 1, true, now), Ok(None));
        set(&mut s, "n", "18446744073709551615", now);
        assert_eq!(s.add_delta(b"n", 2, true, now), Ok(Some(1)));
        assert_eq!(s.add_delta(b"n", 5, false, now), Ok(Some(0)));
        set(&mut s, "n", "10", now);
        assert_eq!(s.add_delta(b"n", 3, false, now), Ok(Some(7)));
        assert_eq!(value(&mut s, "n", now).as_deref(), Some("7"));
        set(&mut s, "t", "ten", now);
        assert_eq!(s.add_delta(b"t", 1, true, now), Err(NonNumeric));
        set(&mut s, "t", "", now);
        assert_eq!(s.add_delta(b"t", 1, true, now), Err(NonNumeric));
    }

    #[test]
    fn flush_all_now_empties_and_later_spares_newer_items() {
        let now = Instant::now();
        let later = |s| now + Duration::from_secs(s);
        let mut s = Store::new(1 << 20);
        set(&mut s, "old", "1", now);
        s.flush_all(later(10), now);
        assert!(s.get(b"old", later(5)).is_some(), "not yet");
        set(&mut s, "new", "1", later(11));
        assert!(s.get(b"old", later(11)).is_none());
        assert!(
            s.get(b"new", later(11)).is_some(),
            "written after the flush time"
        );
        s.flush_all(later(12), later(12));
        assert_eq!(s.stats().items, 0);
        assert_eq!(s.stats().bytes, 0);
    }

    #[test]
    fn hits_and_misses_are_counted() {
        let now = Instant::now();
        let mut s = Store::new(1 << 20);
        set(&mut s, "k", "v", now);
        s.get(b"k", now);
        s.get(b"nope", now);
        let stats = s.stats();
        assert_eq!((stats.hits, stats.misses, stats.total_items), (1, 1, 1));
    }
}

#[cfg(test)]
mod replica_tests {
    use std::time::Duration;

    use super::*;

    fn value(v: &str, version: Version) -> Replica {
        Replica::test_value(v, version)
    }

    #[test]
    fn versions_only_go_up_and_a_replica_moves_the_clock() {
        let now = Instant::now();
        let mut s = Store::new(1 << 20);
        s.store(Mode::Set, Bytes::from("a"), Bytes::from("1"), 0, None, now);
        let first = s.version_of(b"a", now).unwrap();
        s.store(Mode::Set, Bytes::from("a"), Bytes::from("2"), 0, None, now);
        assert!(s.version_of(b"a", now).unwrap() > first);
        // A version from a node whose clock is an hour ahead: the next local write still wins.
        let ahead = first + 3_600_000_000;
        assert!(s.merge(Bytes::from("b"), value("x", ahead), now));
        s.store(Mode::Set, Bytes::from("c"), Bytes::from("1"), 0, None, now);
        assert!(s.version_of(b"c", now).unwrap() > ahead);
    }

    #[test]
    fn the_newer_version_wins_whatever_order_copies_arrive_in() {
        let now = Instant::now();
        let mut a = Store::new(1 << 20);
        let mut b = Store::new(1 << 20);
        let copies = [
            value("old", 10),
            value("new", 20),
            Replica::Deleted { version: 15 },
        ];
        for c in copies.iter().cloned() {
            a.merge(Bytes::from("k"), c, now);
        }
        for c in copies.iter().rev().cloned() {
            b.merge(Bytes::from("k"), c, now);
        }
        for s in [&mut a, &mut b] {
            assert_eq!(s.get(b"k", now).unwrap().value, "new");
            assert_eq!(s.version_of(b"k", now), Some(20));
        }
    }

    #[test]
    fn a_delete_keeps_older_copies_out_until_its_tombstone_expires() {
        let now = Instant::now();
        let mut s = Store::new(1 << 20);
        assert!(s.merge(Bytes::from("k"), value("v", 10), now));
        assert!(s.merge(Bytes::from("k"), Replica::Deleted { version: 11 }, now));
        assert!(s.get(b"k", now).is_none());
        assert_eq!(
            s.replica_of(b"k", now),
            Some(Replica::Deleted { version: 11 })
        );
        assert!(
            !s.merge(Bytes::from("k"), value("v", 10), now),
            "a late hint"
        );
        let later = now + TOMBSTONE_TTL + Duration::from_secs(1);
        assert_eq!(s.version_of(b"k", later), None);
        assert!(s.merge(Bytes::from("k"), value("v", 10), later));
        // a local delete leaves a tombstone too
        assert!(s.delete(b"k", later));
        assert!(!s.merge(Bytes::from("k"), value("v", 10), later));
    }

    #[test]
    fn tombstones_are_bounded_and_the_newest_stay() {
        let now = Instant::now();
        let mut s = Store::new(1 << 20);
        for i in 0..(MAX_TOMBSTONES as u64 + 10) {
            let key = Bytes::from(format!("k{i}"));
            s.merge(key, Replica::Deleted { version: i + 1 }, now);
        }
        assert!(s.tombstones.len() <= MAX_TOMBSTONES);
        let newest = format!("k{}", MAX_TOMBSTONES + 9);
        assert!(s.version_of(newest.as_bytes(), now).is_some());
    }

    #[test]
    fn keys_lists_live_items_least_recent_first() {
        let now = Instant::now();
        let mut s = Store::new(1 << 20);
        for k in ["a", "b", "c"] {
            s.store(Mode::Set, Bytes::from(k), Bytes::from("1"), 0, None, now);
        }
        s.get(b"a", now);
        assert_eq!(s.keys(), ["b", "c", "a"]);
    }
}
