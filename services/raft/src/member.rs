//! How Raft nodes are named.
//!
//! openraft wants numeric node ids; distlab names nodes (`n1`, `c2`). A node's Raft id is a
//! hash of its name ([`raft_id`]), and its name travels in the membership as the [`Member`]
//! node value, so every membership entry says who is who in words.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::RaftId;

/// A cluster member as the membership config records it: its name.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A node's Raft id: FNV-1a of its name (stable across restarts and machines).
pub fn raft_id(name: &str) -> RaftId {
    distlab_runtime::hash::fnv1a(name.bytes())
}

/// Names of the nodes this node knows (itself and its `--peer`s), by Raft id.
#[derive(Debug, Clone, Default)]
pub struct Names(BTreeMap<RaftId, String>);

impl Names {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self(
            names
                .into_iter()
                .map(|n| (raft_id(n), n.to_string()))
                .collect(),
        )
    }

    /// Every id this node knows, with its name.
    pub fn iter(&self) -> impl Iterator<Item = (RaftId, &str)> {
        self.0.iter().map(|(id, name)| (*id, name.as_str()))
    }

    /// The name of `id`, or the number if it is nobody this node knows.
    pub fn name(&self, id: RaftId) -> String {
        self.0.get(&id).cloned().unwrap_or_else(|| id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_ids_are_stable_and_distinct() {
        assert_eq!(raft_id("n1"), raft_id("n1"));
        let ids: std::collections::HashSet<_> =
            (1..=64).map(|i| raft_id(&format!("n{i}"))).collect();
        assert_eq!(ids.len(), 64);
        let names = Names::new(["n1", "n2"]);
        assert_eq!(names.name(raft_id("n2")), "n2");
        assert_eq!(names.name(7), "7");
    }
}
