//! Raft's Election Safety, checked on the run's timeline: at most one node becomes leader in
//! any term. Two leaders in one term is split brain: each could commit a different entry at
//! the same index. The nodes log `became_leader` with the term; the lab keeps those events
//! with their fields (`events.jsonl`).
//!
//! Two leaders in *different* terms at once are allowed (an isolated old leader that has not
//! heard of the new term yet): it cannot commit, which `linearizable` checks.

use std::collections::BTreeMap;

use super::Verdict;
use crate::engine::events::{Event, EventKind};

/// The event a node logs when it wins an election, with a `term` field.
pub const BECAME_LEADER: &str = "became_leader";

pub fn election_safety(timeline: &[Event]) -> Verdict {
    // term -> (node, when) of each win.
    let mut wins: BTreeMap<u64, Vec<(String, f64)>> = BTreeMap::new();
    for event in timeline {
        if event.kind != EventKind::NodeEvent || !event.what.starts_with(BECAME_LEADER) {
            continue;
        }
        let (Some(node), Some(term)) = (
            &event.node,
            event.fields.get("term").and_then(|t| t.as_u64()),
        ) else {
            continue;
        };
        let winners = wins.entry(term).or_default();
        // A restarted node may report its old term's win again: one node, one win.
        if !winners.iter().any(|(n, _)| n == node) {
            winners.push((node.clone(), event.t));
        }
    }
    let split: Vec<String> = wins
        .iter()
        .filter(|(_, winners)| winners.len() > 1)
        .map(|(term, winners)| {
            let who: Vec<String> = winners
                .iter()
                .map(|(n, t)| format!("{n} @{t:.2}s"))
                .collect();
            format!("term {term}: {}", who.join(", "))
        })
        .collect();
    let terms = wins.len();
    if terms == 0 {
        return Verdict {
            unknown: false,
            figures: Vec::new(),
            checker: "election_safety".into(),
            valid: false,
            summary: "no became_leader event with a term on the timeline: nothing to check".into(),
            evidence: Vec::new(),
        };
    }
    let evidence: Vec<String> = if split.is_empty() {
        wins.iter()
            .map(|(term, w)| format!("term {term}: {} @{:.2}s", w[0].0, w[0].1))
            .collect()
    } else {
        split.clone()
    };
    Verdict {
        unknown: false,
        figures: Vec::new(),
        checker: "election_safety".into(),
        valid: split.is_empty(),
        summary: if split.is_empty() {
            format!("one leader in each of {terms} term(s) with an election")
        } else {
            format!("{} term(s) with more than one leader", split.len())
        },
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn won(t: f64, node: &str, term: u64) -> Event {
        Event {
            t,
            kind: EventKind::NodeEvent,
            node: Some(node.into()),
            what: format!("became_leader: became leader in term {term}"),
            fields: serde_json::json!({ "term": term })
                .as_object()
                .unwrap()
                .clone(),
        }
    }

    #[test]
    fn two_leaders_in_one_term_is_split_brain() {
        let fine = [won(0.1, "n1", 1), won(2.0, "n2", 3), won(3.0, "n2", 3)];
        let verdict = election_safety(&fine);
        assert!(verdict.valid, "{verdict:?}");
        assert_eq!(verdict.evidence, ["term 1: n1 @0.10s", "term 3: n2 @2.00s"]);

        let split = [won(0.1, "n1", 1), won(2.0, "n2", 3), won(2.1, "n3", 3)];
        let verdict = election_safety(&split);
        assert!(!verdict.valid);
        assert_eq!(verdict.evidence, ["term 3: n2 @2.00s, n3 @2.10s"]);

        assert!(
            !election_safety(&[]).valid,
            "no elections seen is not evidence of safety"
        );
    }
}
