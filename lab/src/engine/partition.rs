//! Partition shapes, by the names Jepsen gives them, as sets of directed node links to cut.
//!
//! | spec | cut |
//! | --- | --- |
//! | `n1,n2 \| n3,n4,n5` | every link between different groups (unlisted nodes form one more group) |
//! | `isolate n3` | every link to and from n3 (`isolate n1,n2`: those two together, cut from the rest) |
//! | `majority-minority` | a random split: a minority of ⌊n/2⌋ nodes cut from the majority (`majority-minority n1`: n1 is in the minority) |
//! | `bridge` | two halves cut from each other, except one node in the middle that sees both |
//! | `ring` | every node sees a majority, no two nodes the same one (needs 5+ nodes) |
//! | `n1 -> n2` | one way: n1's traffic to n2 is dropped, n2's to n1 still flows (`n1,n2 -> n3` too) |
//!
//! Anywhere a node is named, `leader` names the node that leads when the step runs
//! ([`with_leader`]): `isolate leader`, `majority-minority leader` (the leader cut off with
//! a minority: it cannot commit, the majority elects another).
//!
//! Random shapes draw from the run's seeded RNG: the same seed gives the same partitions.
//! Pure functions of (spec, nodes, rng): the engine applies the cuts through the link proxies.

use std::collections::BTreeSet;

use rand::Rng;
use rand::seq::SliceRandom;

/// A partition shape, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partition {
    Groups(Vec<Vec<String>>),
    Isolate(Vec<String>),
    /// A random minority, which holds these nodes.
    MajorityMinority(Vec<String>),
    Bridge,
    Ring,
    OneWay {
        from: Vec<String>,
        to: Vec<String>,
    },
}

/// A directed node link to cut: (from, to).
pub type CutLink = (String, String);

fn names(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl Partition {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        if let Some(rest) = spec.strip_prefix("isolate") {
            let nodes = names(rest);
            if nodes.is_empty() {
                return Err("isolate needs a node: isolate n1".into());
            }
            return Ok(Self::Isolate(nodes));
        }
        if let Some(rest) = spec.strip_prefix("majority-minority") {
            return Ok(Self::MajorityMinority(names(rest)));
        }
        match spec {
            "bridge" => return Ok(Self::Bridge),
            "ring" => return Ok(Self::Ring),
            _ => {}
        }
        if let Some((from, to)) = spec.split_once("->") {
            let (from, to) = (names(from), names(to));
            if from.is_empty() || to.is_empty() {
                return Err(format!(
                    "{spec:?}: a one-way partition is FROM -> TO, e.g. n1 -> n2"
                ));
            }
            return Ok(Self::OneWay { from, to });
        }
        if spec.contains('|') {
            let groups: Vec<Vec<String>> = spec.split('|').map(names).collect();
            if groups.iter().any(Vec::is_empty) {
                return Err(format!(
                    "{spec:?}: an empty group; write groups as n1,n2 | n3,n4,n5"
                ));
            }
            return Ok(Self::Groups(groups));
        }
        Err(format!(
            "unknown partition {spec:?}; expected groups (n1,n2 | n3,n4,n5), isolate N, \
             majority-minority, bridge, ring, or a one-way FROM -> TO"
        ))
    }

    /// The directed links to cut among `nodes`. Errors name nodes that do not exist.
    pub fn cuts(&self, nodes: &[String], rng: &mut impl Rng) -> Result<BTreeSet<CutLink>, String> {
        let check = |list: &[String]| -> Result<(), String> {
            match list.iter().find(|n| !nodes.contains(n)) {
                Some(unknown) => Err(format!(
                    "unknown node {unknown:?}; nodes: {}",
                    nodes.join(", ")
                )),
                None => Ok(()),
            }
        };
        let groups: Vec<Vec<String>> = match self {
            Self::Groups(groups) => {
                groups.iter().try_for_each(|g| check(g))?;
                let mut groups = groups.clone();
                let listed: BTreeSet<&String> = groups.iter().flatten().collect();
                let rest: Vec<String> = nodes
                    .iter()
                    .filter(|n| !listed.contains(n))
                    .cloned()
                    .collect();
                if !rest.is_empty() {
                    groups.push(rest);
                }
                groups
            }
            Self::Isolate(isolated) => {
                check(isolated)?;
                let rest = nodes
                    .iter()
                    .filter(|n| !isolated.contains(n))
                    .cloned()
                    .collect();
                vec![isolated.clone(), rest]
            }
            Self::MajorityMinority(within) => {
                check(within)?;
                let size = nodes.len() / 2;
                if within.len() > size {
                    return Err(format!(
                        "a minority of {} nodes has {size} at most, not {}",
                        nodes.len(),
                        within.join(",")
                    ));
                }
                let mut others: Vec<String> = nodes
                    .iter()
                    .filter(|n| !within.contains(n))
                    .cloned()
                    .collect();
                others.shuffle(rng);
                let mut minority = within.clone();
                minority.extend(others.split_off(others.len() - (size - within.len())));
                vec![others, minority]
            }
            Self::Bridge => {
                if nodes.len() < 3 {
                    return Err("bridge needs at least 3 nodes".into());
                }
                let mut shuffled = nodes.to_vec();
                shuffled.shuffle(rng);
                let bridge = shuffled.len() / 2;
                let (left, right) = (&shuffled[..bridge], &shuffled[bridge + 1..]);
                return Ok(between(left, right));
            }
            Self::Ring => {
                if nodes.len() < 5 {
                    return Err(
                        "ring needs at least 5 nodes (with fewer, every majority is the same)"
                            .into(),
                    );
                }
                let mut ring = nodes.to_vec();
                ring.shuffle(rng);
                let n = ring.len();
                // Each node keeps its nearest neighbours on both sides: itself plus them make a
                // majority; everything farther is cut.
                let reach = (n / 2).div_ceil(2);
                let mut cuts = BTreeSet::new();
                for i in 0..n {
                    for j in 0..n {
                        let distance = (i as isize - j as isize).unsigned_abs();
                        if i != j && distance.min(n - distance) > reach {
                            cuts.insert((ring[i].clone(), ring[j].clone()));
                        }
                    }
                }
                return Ok(cuts);
            }
            Self::OneWay { from, to } => {
                check(from)?;
                check(to)?;
                let mut cuts = BTreeSet::new();
                for f in from {
                    for t in to.iter().filter(|t| *t != f) {
                        cuts.insert((f.clone(), t.clone()));
                    }
                }
                return Ok(cuts);
            }
        };
        let mut cuts = BTreeSet::new();
        for (i, a) in groups.iter().enumerate() {
            for b in groups.iter().skip(i + 1) {
                cuts.extend(between(a, b));
            }
        }
        Ok(cuts)
    }
}

/// The word that names the leading node in a spec.
pub const LEADER: &str = "leader";

/// `spec` with every node list entry `leader` replaced by `id`.
pub fn with_leader(spec: &str, id: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    for c in spec.chars().chain(std::iter::once(' ')) {
        if is_name(c) {
            word.push(c);
            continue;
        }
        out += if word == LEADER { id } else { &word };
        word.clear();
        out.push(c);
    }
    out.pop();
    out
}

/// Whether `spec` names the leader.
pub fn names_leader(spec: &str) -> bool {
    with_leader(spec, "\u{0}") != spec
}

/// Both directions of every link between `a` and `b`.
fn between(a: &[String], b: &[String]) -> BTreeSet<CutLink> {
    let mut cuts = BTreeSet::new();
    for x in a {
        for y in b {
            cuts.insert((x.clone(), y.clone()));
            cuts.insert((y.clone(), x.clone()));
        }
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn nodes(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    fn cuts(spec: &str, n: usize, seed: u64) -> BTreeSet<CutLink> {
        Partition::parse(spec)
            .unwrap()
            .cuts(&nodes(n), &mut SmallRng::seed_from_u64(seed))
            .unwrap()
    }

    /// Who `node` can still send to.
    fn reach(cuts: &BTreeSet<CutLink>, n: usize, node: &str) -> BTreeSet<String> {
        nodes(n)
            .into_iter()
            .filter(|o| o != node && !cuts.contains(&(node.to_string(), o.clone())))
            .collect()
    }

    #[test]
    fn groups_cut_between_not_within() {
        let c = cuts("n1,n2 | n3,n4,n5", 5, 0);
        assert_eq!(c.len(), 2 * 2 * 3);
        assert!(c.contains(&("n1".into(), "n3".into())) && c.contains(&("n3".into(), "n1".into())));
        assert!(!c.contains(&("n1".into(), "n2".into())));
        // Unlisted nodes form their own group.
        let c = cuts("n1 | n2", 4, 0);
        assert_eq!(reach(&c, 4, "n3"), ["n4".to_string()].into());
    }

    #[test]
    fn isolate_cuts_a_node_both_ways() {
        let c = cuts("isolate n3", 5, 0);
        assert_eq!(c.len(), 8);
        assert!(reach(&c, 5, "n3").is_empty());
    }

    #[test]
    fn majority_minority_is_seeded() {
        let a = cuts("majority-minority", 5, 42);
        assert_eq!(a, cuts("majority-minority", 5, 42));
        assert_eq!(a.len(), 2 * 2 * 3, "2 | 3 split");
        let isolated_views: BTreeSet<usize> =
            nodes(5).iter().map(|n| reach(&a, 5, n).len()).collect();
        assert_eq!(
            isolated_views,
            [1, 2].into(),
            "minority sees 1 other, majority 2 others"
        );
    }

    #[test]
    fn the_minority_can_be_made_to_hold_a_node() {
        for seed in 0..20 {
            let c = cuts("majority-minority n3", 5, seed);
            assert_eq!(reach(&c, 5, "n3").len(), 1, "n3 and one other: seed {seed}");
        }
        let err = Partition::parse("majority-minority n1,n2,n3")
            .unwrap()
            .cuts(&nodes(5), &mut SmallRng::seed_from_u64(0))
            .unwrap_err();
        assert!(err.contains("2 at most"), "{err}");
        assert_eq!(
            with_leader("majority-minority leader", "n4"),
            "majority-minority n4"
        );
        assert_eq!(with_leader("leader,n2 | n3", "n1"), "n1,n2 | n3");
        assert_eq!(with_leader("isolate leaders", "n1"), "isolate leaders");
        assert!(names_leader("isolate leader") && !names_leader("isolate n1"));
    }

    #[test]
    fn bridge_keeps_one_node_in_both_halves() {
        let c = cuts("bridge", 5, 3);
        let views: Vec<usize> = nodes(5).iter().map(|n| reach(&c, 5, n).len()).collect();
        assert_eq!(
            views.iter().filter(|v| **v == 4).count(),
            1,
            "the bridge sees everyone: {views:?}"
        );
        assert_eq!(
            views.iter().filter(|v| **v == 2).count(),
            4,
            "the others see their half and the bridge"
        );
    }

    #[test]
    fn ring_gives_everyone_a_different_majority() {
        let c = cuts("ring", 5, 9);
        let views: Vec<BTreeSet<String>> = nodes(5)
            .iter()
            .map(|n| {
                let mut v = reach(&c, 5, n);
                v.insert(n.clone());
                v
            })
            .collect();
        assert!(
            views.iter().all(|v| v.len() == 3),
            "each sees a majority of 3: {views:?}"
        );
        let distinct: BTreeSet<_> = views.iter().collect();
        assert_eq!(distinct.len(), 5);
    }

    #[test]
    fn one_way_cuts_one_direction() {
        let c = cuts("n1 -> n2", 3, 0);
        assert_eq!(c, [("n1".to_string(), "n2".to_string())].into());
    }

    #[test]
    fn mistakes_are_named() {
        assert!(
            Partition::parse("n1 n2")
                .unwrap_err()
                .contains("unknown partition")
        );
        assert!(
            Partition::parse("isolate")
                .unwrap_err()
                .contains("needs a node")
        );
        assert!(
            Partition::parse("n1 | ")
                .unwrap_err()
                .contains("empty group")
        );
        let err = Partition::parse("isolate n9")
            .unwrap()
            .cuts(&nodes(3), &mut SmallRng::seed_from_u64(0))
            .unwrap_err();
        assert!(err.contains("unknown node \"n9\""), "{err}");
        assert!(
            Partition::parse("ring")
                .unwrap()
                .cuts(&nodes(3), &mut SmallRng::seed_from_u64(0))
                .is_err()
        );
    }
}
