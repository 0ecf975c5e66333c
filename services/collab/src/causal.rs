//! Causality: who wrote what, and what each replica has seen.
//!
//! Every unit of change (an inserted character, a deleted character) gets a [`Dot`]: the
//! replica that made it and that replica's counter, counting from 0 without gaps. A
//! [`VersionVector`] says, per replica, how many of its dots a document holds; because a
//! replica's dots are applied in counter order, "how many" names exactly which ones. A
//! [`Frontier`] is the same knowledge as its few maximal dots (the heads of the causal graph):
//! what a new operation names as its parents.
//!
//! Kept apart from the text (diamond-types keeps its causal graph apart from its list CRDT the
//! same way): the version vector is what anti-entropy compares, the frontier is what the
//! history shows.

use std::collections::BTreeMap;

use smallvec::SmallVec;
use std::fmt;

/// A replica's name: a random 64-bit number chosen when the replica is created. Concurrent
/// insertions at the same place are ordered by it, so it must be unique per replica.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ReplicaId(pub u64);

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One unit of change: the `seq`-th (from 0) character inserted or deleted by `replica`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Dot {
    pub replica: ReplicaId,
    pub seq: u64,
}

impl Dot {
    pub fn new(replica: ReplicaId, seq: u64) -> Dot {
        Dot { replica, seq }
    }

    /// The dot `n` further on in the same replica's sequence.
    pub fn plus(self, n: u64) -> Dot {
        Dot::new(self.replica, self.seq + n)
    }
}

impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.replica, self.seq)
    }
}

/// Per replica, how many of its dots are held (so dots `0..n` of it are).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VersionVector(BTreeMap<ReplicaId, u64>);

impl VersionVector {
    pub fn new() -> VersionVector {
        VersionVector::default()
    }

    /// How many of `replica`'s dots are held.
    pub fn get(&self, replica: ReplicaId) -> u64 {
        self.0.get(&replica).copied().unwrap_or(0)
    }

    pub fn contains(&self, dot: Dot) -> bool {
        dot.seq < self.get(dot.replica)
    }

    /// Record that `replica`'s dots up to (not including) `count` are held.
    pub fn advance(&mut self, replica: ReplicaId, count: u64) {
        let held = self.0.entry(replica).or_insert(0);
        *held = (*held).max(count);
    }

    /// The pointwise maximum: everything either side holds.
    pub fn merge(&mut self, other: &VersionVector) {
        for (&replica, &count) in &other.0 {
            self.advance(replica, count);
        }
    }

    /// Whether everything `other` holds is held here too.
    pub fn includes(&self, other: &VersionVector) -> bool {
        other
            .0
            .iter()
            .all(|(&replica, &count)| self.get(replica) >= count)
    }

    /// How many dots `other` holds that this does not: how far behind `other` this is.
    pub fn behind(&self, other: &VersionVector) -> u64 {
        other
            .0
            .iter()
            .map(|(&replica, &count)| count.saturating_sub(self.get(replica)))
            .sum()
    }

    /// The total number of dots held.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (ReplicaId, u64)> + '_ {
        self.0.iter().map(|(&replica, &count)| (replica, count))
    }
}

impl FromIterator<(ReplicaId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (ReplicaId, u64)>>(iter: I) -> VersionVector {
        let mut vv = VersionVector::new();
        for (replica, count) in iter {
            vv.advance(replica, count);
        }
        vv
    }
}

impl fmt::Display for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (replica, count)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{replica}: {count}")?;
        }
        f.write_str("}")
    }
}

/// The maximal dots of a causal history: every other held dot is an ancestor of one of them.
/// A new operation's parents. Usually one dot (the last thing this replica saw); more while
/// concurrent edits have not yet been built upon.
///
/// Kept inline for up to two dots: every operation carries one, and a heap allocation per
/// keystroke showed in the trace benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Frontier(SmallVec<[Dot; 2]>);

impl Frontier {
    pub fn new() -> Frontier {
        Frontier::default()
    }

    pub fn from_dots(dots: Vec<Dot>) -> Frontier {
        let mut dots = SmallVec::from_vec(dots);
        dots.sort();
        dots.dedup();
        Frontier(dots)
    }

    pub fn dots(&self) -> &[Dot] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Only `dot`: the common case of an operation whose parent is the one before it.
    pub fn is_only(&self, dot: Dot) -> bool {
        self.0.len() == 1 && self.0[0] == dot
    }

    /// An operation with these `parents` whose last dot is `last` was applied: its parents
    /// are no longer maximal, and it is. Callers apply operations in causal order, so a head
    /// that is not a parent is not an ancestor of the operation either (an ancestor of a
    /// parent would not be a head), except an earlier dot of the operation's own replica,
    /// which always is.
    pub fn advance(&mut self, parents: &[Dot], last: Dot) {
        if parents == self.0.as_slice() {
            // Made on everything held (a local edit): it is the only head now.
            self.0.clear();
            self.0.push(last);
            return;
        }
        self.0
            .retain(|dot| !parents.contains(dot) && dot.replica != last.replica);
        self.0.push(last);
        self.0.sort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ReplicaId = ReplicaId(1);
    const B: ReplicaId = ReplicaId(2);

    #[test]
    fn a_version_vector_holds_each_replicas_prefix() {
        let mut vv = VersionVector::new();
        vv.advance(A, 3);
        assert!(vv.contains(Dot::new(A, 2)));
        assert!(!vv.contains(Dot::new(A, 3)));
        assert!(!vv.contains(Dot::new(B, 0)));
        vv.advance(A, 1);
        assert_eq!(vv.get(A), 3, "advancing never goes back");
    }

    #[test]
    fn behind_counts_what_the_other_holds_and_this_lacks() {
        let a: VersionVector = [(A, 5), (B, 1)].into_iter().collect();
        let b: VersionVector = [(A, 2), (B, 4)].into_iter().collect();
        assert_eq!(a.behind(&b), 3);
        assert_eq!(b.behind(&a), 3);
        let mut both = a.clone();
        both.merge(&b);
        assert!(both.includes(&a) && both.includes(&b));
        assert_eq!(both.behind(&a), 0);
        assert_eq!(both.total(), 9);
    }

    #[test]
    fn the_frontier_keeps_concurrent_heads_until_an_operation_joins_them() {
        let mut f = Frontier::new();
        f.advance(&[], Dot::new(A, 0));
        f.advance(&[], Dot::new(B, 2));
        assert_eq!(f.dots(), &[Dot::new(A, 0), Dot::new(B, 2)]);
        f.advance(&[Dot::new(A, 0), Dot::new(B, 2)], Dot::new(A, 1));
        assert!(f.is_only(Dot::new(A, 1)));
    }
}
