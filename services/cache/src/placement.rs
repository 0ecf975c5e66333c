//! Which members hold a key: a consistent-hashing ring with virtual nodes, or rendezvous
//! (highest random weight) hashing, behind one trait.
//!
//! Both answer the same question — the `n` distinct members that hold a key, the first being
//! the one that coordinates it — and both move few keys when a member joins or leaves: the
//! ring only the arcs next to the member's virtual nodes, rendezvous only the keys whose
//! highest weight was (or now is) that member's. The lab compares them
//! (`proj1-join-leave-movement`).
//!
//! Members are named by id (`n1`); positions come from a 64-bit xxh3 hash, the same on every
//! node and every run, so every node computes the same owners from the same member list.

use std::collections::BTreeSet;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// A member's id, as given to the node (`--id n1`) and named in gossip.
pub type MemberId = String;

/// Where keys live, for one set of members. Immutable: a membership change builds a new one
/// (see [`PlacementKind::build`]), so a lookup never sees a half-changed ring.
pub trait Placement: Send + Sync {
    /// The members, in id order.
    fn members(&self) -> &[MemberId];

    /// The `n` distinct members that hold `key` (fewer if there are fewer members), the
    /// first being its primary: the one that coordinates its writes.
    fn replicas(&self, key: &[u8], n: usize) -> Vec<&MemberId>;

    /// The primary of `key`, if there is any member.
    fn primary(&self, key: &[u8]) -> Option<&MemberId> {
        self.replicas(key, 1).into_iter().next()
    }

    /// The share of keys each member is primary for, in [`Placement::members`] order; the
    /// shares sum to 1 (or the list is empty).
    fn ownership(&self) -> Vec<(MemberId, f64)>;

    /// What this placement is: `ring(256 vnodes)`, `rendezvous`.
    fn describe(&self) -> String;
}

/// The placement flag: `--placement ring|rendezvous` (and `--vnodes` for the ring).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementKind {
    Ring { vnodes: usize },
    Rendezvous,
}

impl PlacementKind {
    /// The default number of virtual nodes per member: with 256, a member's share of the ring
    /// varies by about 6% (one over the square root of the count) around the ideal 1/N.
    pub const DEFAULT_VNODES: usize = 256;

    /// Builds the placement of `members` (duplicates are ignored; order does not matter).
    pub fn build<I, S>(self, members: I) -> Box<dyn Placement>
    where
        I: IntoIterator<Item = S>,
        S: Into<MemberId>,
    {
        let members: Vec<MemberId> = members
            .into_iter()
            .map(Into::into)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        match self {
            PlacementKind::Ring { vnodes } => Box::new(Ring::new(members, vnodes)),
            PlacementKind::Rendezvous => Box::new(Rendezvous::new(members)),
        }
    }

    /// Parses the flag's value: `ring` or `rendezvous` (the ring takes its vnode count apart).
    pub fn parse(name: &str, vnodes: usize) -> Result<Self, String> {
        match name {
            "ring" if vnodes == 0 => Err("--vnodes must be at least 1".into()),
            "ring" => Ok(PlacementKind::Ring { vnodes }),
            "rendezvous" => Ok(PlacementKind::Rendezvous),
            other => Err(format!(
                "unknown placement {other:?}: expected ring or rendezvous"
            )),
        }
    }
}

/// The position of a key on the ring, and the input of every weight: one hash for both kinds.
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// Consistent hashing: each member puts `vnodes` tokens on a 64-bit ring; a key belongs to the
/// first token at or after its hash (wrapping), and its replicas to the next distinct members
/// walking on clockwise.
pub struct Ring {
    members: Vec<MemberId>,
    vnodes: usize,
    /// (token, index in `members`), sorted by token.
    tokens: Vec<(u64, u32)>,
}

impl Ring {
    pub fn new(members: Vec<MemberId>, vnodes: usize) -> Self {
        let vnodes = vnodes.max(1);
        let mut tokens: Vec<(u64, u32)> = members
            .iter()
            .enumerate()
            .flat_map(|(m, id)| {
                (0..vnodes).map(move |v| (xxh3_64(format!("{id}#{v}").as_bytes()), m as u32))
            })
            .collect();
        // Equal tokens (astronomically rare) are ordered by member, the same everywhere.
        tokens.sort_unstable();
        Self {
            members,
            vnodes,
            tokens,
        }
    }

    /// Every token and the member that put it there, in ring order: what the console draws.
    pub fn tokens(&self) -> impl Iterator<Item = (u64, &MemberId)> {
        self.tokens
            .iter()
            .map(|&(t, m)| (t, &self.members[m as usize]))
    }
}

impl Placement for Ring {
    fn members(&self) -> &[MemberId] {
        &self.members
    }

    fn replicas(&self, key: &[u8], n: usize) -> Vec<&MemberId> {
        let n = n.min(self.members.len());
        let mut found: Vec<u32> = Vec::with_capacity(n);
        if n == 0 {
            return Vec::new();
        }
        let start = self.tokens.partition_point(|&(t, _)| t < key_hash(key));
        for i in 0..self.tokens.len() {
            let (_, m) = self.tokens[(start + i) % self.tokens.len()];
            if !found.contains(&m) {
                found.push(m);
                if found.len() == n {
                    break;
                }
            }
        }
        found
            .into_iter()
            .map(|m| &self.members[m as usize])
            .collect()
    }

    fn ownership(&self) -> Vec<(MemberId, f64)> {
        let mut owned = vec![0u128; self.members.len()];
        // Token i owns the arc (token i-1, token i]; the first token also owns the wrap-around.
        for (i, &(token, m)) in self.tokens.iter().enumerate() {
            let previous = if i == 0 {
                self.tokens[self.tokens.len() - 1].0
            } else {
                self.tokens[i - 1].0
            };
            let arc = token.wrapping_sub(previous);
            owned[m as usize] += if arc == 0 && self.tokens.len() == 1 {
                1u128 << 64
            } else {
                arc as u128
            };
        }
        let total: u128 = owned.iter().sum::<u128>().max(1);
        self.members
            .iter()
            .zip(owned)
            .map(|(id, o)| (id.clone(), o as f64 / total as f64))
            .collect()
    }

    fn describe(&self) -> String {
        format!("ring({} vnodes)", self.vnodes)
    }
}

/// Rendezvous hashing: every member weighs every key (a hash of the key seeded by the
/// member); the key belongs to the heaviest, its replicas to the next heaviest. No tokens to
/// keep, but a lookup weighs every member.
pub struct Rendezvous {
    members: Vec<MemberId>,
    seeds: Vec<u64>,
}

impl Rendezvous {
    /// Keys sampled to estimate [`Placement::ownership`] (rendezvous has no arcs to measure).
    const OWNERSHIP_SAMPLES: u64 = 20_000;

    pub fn new(members: Vec<MemberId>) -> Self {
        let seeds = members.iter().map(|id| xxh3_64(id.as_bytes())).collect();
        Self { members, seeds }
    }

    fn weight(&self, member: usize, key: &[u8]) -> u64 {
        xxh3_64_with_seed(key, self.seeds[member])
    }
}

impl Placement for Rendezvous {
    fn members(&self) -> &[MemberId] {
        &self.members
    }

    fn replicas(&self, key: &[u8], n: usize) -> Vec<&MemberId> {
        let mut weighed: Vec<(u64, usize)> = (0..self.members.len())
            .map(|m| (self.weight(m, key), m))
            .collect();
        // Heaviest first; equal weights by member order, the same everywhere.
        weighed.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        weighed
            .into_iter()
            .take(n)
            .map(|(_, m)| &self.members[m])
            .collect()
    }

    fn ownership(&self) -> Vec<(MemberId, f64)> {
        let mut owned = vec![0u64; self.members.len()];
        if self.members.is_empty() {
            return Vec::new();
        }
        for sample in 0..Self::OWNERSHIP_SAMPLES {
            let key = sample.to_le_bytes();
            let heaviest = (0..self.members.len())
                .max_by_key(|&m| (self.weight(m, &key), std::cmp::Reverse(m)))
                .expect("members is not empty");
            owned[heaviest] += 1;
        }
        self.members
            .iter()
            .zip(owned)
            .map(|(id, o)| (id.clone(), o as f64 / Self::OWNERSHIP_SAMPLES as f64))
            .collect()
    }

    fn describe(&self) -> String {
        "rendezvous".into()
    }
}

/// How many of `keys` change primary between two placements: the cost of a membership change
/// in keys to move (each such key's data must reach its new primary).
pub fn primaries_moved<'k>(
    before: &dyn Placement,
    after: &dyn Placement,
    keys: impl IntoIterator<Item = &'k [u8]>,
) -> usize {
    keys.into_iter()
        .filter(|key| before.primary(key) != after.primary(key))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [PlacementKind; 2] = [
        PlacementKind::Ring {
            vnodes: PlacementKind::DEFAULT_VNODES,
        },
        PlacementKind::Rendezvous,
    ];

    fn ids(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    fn keys(count: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| format!("key-{i}").into_bytes())
            .collect()
    }

    #[test]
    fn replicas_are_distinct_members_and_the_same_whatever_the_member_order() {
        for kind in KINDS {
            let forward = kind.build(ids(5));
            let backward = kind.build(ids(5).into_iter().rev());
            for key in keys(2_000) {
                let replicas = forward.replicas(&key, 3);
                assert_eq!(replicas.len(), 3);
                let distinct: BTreeSet<_> = replicas.iter().collect();
                assert_eq!(distinct.len(), 3, "{kind:?}: {replicas:?}");
                assert_eq!(replicas, backward.replicas(&key, 3), "{kind:?}");
                assert_eq!(forward.primary(&key), Some(replicas[0]));
            }
        }
    }

    #[test]
    fn fewer_members_than_replicas_gives_every_member_once() {
        for kind in KINDS {
            let placement = kind.build(ids(2));
            assert_eq!(placement.replicas(b"k", 3).len(), 2);
            assert!(
                kind.build(Vec::<String>::new())
                    .replicas(b"k", 3)
                    .is_empty()
            );
            assert_eq!(kind.build(Vec::<String>::new()).primary(b"k"), None);
        }
    }

    #[test]
    fn ownership_sums_to_one_and_is_near_fair() {
        for kind in KINDS {
            let placement = kind.build(ids(5));
            let shares = placement.ownership();
            let sum: f64 = shares.iter().map(|(_, s)| s).sum();
            assert!((sum - 1.0).abs() < 1e-9, "{kind:?}: {sum}");
            for (id, share) in &shares {
                assert!(
                    (0.15..0.25).contains(share),
                    "{kind:?}: {id} owns {share:.3}, not near 1/5"
                );
            }
        }
    }

    #[test]
    fn ring_ownership_matches_where_keys_land() {
        let placement = PlacementKind::Ring { vnodes: 64 }.build(ids(4));
        let keys = keys(40_000);
        let shares = placement.ownership();
        for (id, share) in shares {
            let landed = keys
                .iter()
                .filter(|k| placement.primary(k) == Some(&id))
                .count() as f64
                / keys.len() as f64;
            assert!(
                (landed - share).abs() < 0.01,
                "{id}: {landed:.3} of keys vs a {share:.3} share of the ring"
            );
        }
    }

    /// The bound: a join or a leave moves at most 1.25 x K/N keys (N counted with the
    /// member that joined, or before the one that left), and only to or from that member.
    #[test]
    fn a_join_or_a_leave_moves_few_keys_and_only_its_own() {
        let keys = keys(50_000);
        for kind in KINDS {
            for n in [3, 5, 8] {
                let small = kind.build(ids(n));
                let large = kind.build(ids(n + 1));
                let newcomer = format!("n{}", n + 1);
                let moved = primaries_moved(&*small, &*large, keys.iter().map(Vec::as_slice));
                let ideal = keys.len() as f64 / (n + 1) as f64;
                assert!(
                    (moved as f64) <= 1.25 * ideal,
                    "{kind:?}, {n} -> {}: {moved} keys moved, ideal {ideal:.0}",
                    n + 1
                );
                for key in &keys {
                    if small.primary(key) != large.primary(key) {
                        assert_eq!(large.primary(key), Some(&newcomer), "{kind:?}");
                    }
                }
                // Leaving is the same change backwards.
                assert_eq!(
                    moved,
                    primaries_moved(&*large, &*small, keys.iter().map(Vec::as_slice))
                );
            }
        }
    }

    #[test]
    fn ring_tokens_are_sorted_and_vnodes_per_member() {
        let ring = Ring::new(ids(3), 16);
        let tokens: Vec<_> = ring.tokens().collect();
        assert_eq!(tokens.len(), 48);
        assert!(tokens.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(tokens.iter().filter(|(_, m)| *m == "n2").count(), 16);
        assert_eq!(ring.describe(), "ring(16 vnodes)");
    }

    #[test]
    fn the_flag_parses_and_rejects_clearly() {
        assert_eq!(
            PlacementKind::parse("ring", 8),
            Ok(PlacementKind::Ring { vnodes: 8 })
        );
        assert_eq!(
            PlacementKind::parse("rendezvous", 8),
            Ok(PlacementKind::Rendezvous)
        );
        assert!(
            PlacementKind::parse("ring", 0)
                .unwrap_err()
                .contains("--vnodes")
        );
        assert!(
            PlacementKind::parse("maglev", 8)
                .unwrap_err()
                .contains("maglev")
        );
    }
}
