//! Project 1's checkers: what a Dynamo-style cache promises, which is less than
//! linearizability (two coordinators may take turns on a key; the newer version wins).
//!
//! - [`no_lost_writes`]: after the faults heal, every acknowledged write is still there, or
//!   something newer is. The cache is last-writer-wins on versions from a hybrid clock, so a
//!   write acknowledged before another mutation was invoked must not win over it, and the
//!   final read of a key must return the value of a mutation that no acknowledged mutation
//!   strictly followed. What would fail it: a write acknowledged by W replicas none of which
//!   the final R-quorum read asked (W + R <= N), a restarted node's empty copy winning, a
//!   hint replayed over a newer value.
//! - [`key_movement`]: each join or leave changed the primary of at most 1.25 x K/N keys
//!   (K keys, N members on the larger side), from the nodes' `ring_changed` events: the
//!   point of consistent hashing (a modulo placement moves almost all of them). The leaves
//!   of the lab stopping the cluster at the end are not the scenario's and are left out.
//! - [`hints_drained`]: every node that held hints for a member that was down delivered them
//!   all once it was back (`hints_pending` then `hints_drained` on the timeline).

use std::collections::{BTreeMap, BTreeSet};

use super::Verdict;
use crate::engine::events::{Event, EventKind, STOPPING_CLUSTER};
use crate::engine::history::{FINAL_PROCESS, Op, OpType, invocations_and_completions};

/// The event a node logs when its placement changes (fields `before`, `members`,
/// `primary_keys`, `primaries_moved`).
pub const RING_CHANGED: &str = "ring_changed";
/// A node started holding hints (field `owners`).
pub const HINTS_PENDING: &str = "hints_pending";
/// A node's hint queues are empty again (field `delivered`).
pub const HINTS_DRAINED: &str = "hints_drained";

/// The largest movement a join or leave may cause, in units of the ideal K/N.
pub const MOVEMENT_BOUND: f64 = 1.25;
/// Fewer keys per member than this, and a change is too noisy to judge.
const MIN_KEYS_PER_MEMBER: usize = 50;

/// A write or delete as the checker sees it.
struct Mutation {
    invoked: f64,
    /// When it was acknowledged; `None` when it is unknown whether it happened (`info`).
    acked: Option<f64>,
    /// The value written; `None` for a delete.
    value: Option<serde_json::Value>,
}

impl Mutation {
    fn describe(&self) -> String {
        let what = match &self.value {
            Some(v) => format!("write of {v}"),
            None => "delete".to_string(),
        };
        match self.acked {
            Some(t) => format!("{what} (invoked {:.3}s, acked {t:.3}s)", self.invoked),
            None => format!("{what} (invoked {:.3}s, outcome unknown)", self.invoked),
        }
    }
}

/// The timeline up to the lab stopping the cluster: what comes after (graceful leaves, hint
/// queues left behind) is teardown, not the scenario.
fn during_run(timeline: &[Event]) -> impl Iterator<Item = &Event> {
    timeline
        .iter()
        .take_while(|e| !(e.kind == EventKind::Note && e.what == STOPPING_CLUSTER))
}

pub fn no_lost_writes(history: &[Op]) -> Verdict {
    let checker = "no_lost_writes".to_string();
    let mut mutations: BTreeMap<&str, Vec<Mutation>> = BTreeMap::new();
    let mut finals: BTreeMap<&str, Result<&serde_json::Value, OpType>> = BTreeMap::new();
    let mut unjudged: BTreeSet<&str> = BTreeSet::new();
    for (start, op) in invocations_and_completions(history) {
        let (Some(key), Some(_)) = (op.key.as_deref(), start.key.as_deref()) else {
            continue;
        };
        match (op.f.as_str(), op.kind) {
            ("read", kind) if op.process >= FINAL_PROCESS => {
                finals.insert(
                    key,
                    if kind == OpType::Ok {
                        Ok(&op.value)
                    } else {
                        Err(kind)
                    },
                );
            }
            ("read", _) | (_, OpType::Fail) => {}
            ("write" | "delete", kind) => mutations.entry(key).or_default().push(Mutation {
                invoked: start.time,
                acked: (kind == OpType::Ok).then_some(op.time),
                value: (op.f == "write").then(|| start.value.clone()),
            }),
            // cas, incr...: the model here is plain last-writer-wins registers.
            _ => {
                unjudged.insert(key);
            }
        }
    }
    let mut evidence = Vec::new();
    let mut acked_total = 0;
    for (key, ops) in &mutations {
        if unjudged.contains(key) {
            continue;
        }
        acked_total += ops.iter().filter(|m| m.acked.is_some()).count();
        let read = match finals.get(key) {
            Some(Ok(value)) => *value,
            Some(Err(kind)) => {
                evidence.push(format!(
                    "key {key:?}: the final read did not succeed ({kind:?}): not readable after the heal"
                ));
                continue;
            }
            None if ops.iter().any(|m| m.acked.is_some()) => {
                evidence.push(format!("key {key:?}: written, but never read at the end"));
                continue;
            }
            None => continue,
        };
        // The mutations that could have left what the final read saw; `None` stands for the
        // key's empty start.
        let sources: Vec<Option<&Mutation>> = if read.is_null() {
            std::iter::once(None)
                .chain(ops.iter().filter(|m| m.value.is_none()).map(Some))
                .collect()
        } else {
            ops.iter()
                .filter(|m| m.value.as_ref() == Some(read))
                .map(Some)
                .collect()
        };
        if sources.is_empty() {
            evidence.push(format!(
                "key {key:?}: the final read saw {read}, which no write wrote"
            ));
            continue;
        }
        // The last source to finish; an unknown outcome may have happened at any time.
        let latest = sources
            .iter()
            .map(|s| s.map_or(Some(f64::NEG_INFINITY), |m| m.acked))
            .max_by(|a, b| {
                a.unwrap_or(f64::INFINITY)
                    .total_cmp(&b.unwrap_or(f64::INFINITY))
            })
            .flatten();
        let Some(latest) = latest else {
            continue;
        };
        // An acknowledged mutation invoked after every source finished must have won.
        if let Some(lost) = ops
            .iter()
            .filter(|m| m.acked.is_some() && m.invoked > latest)
            .max_by(|a, b| a.invoked.total_cmp(&b.invoked))
        {
            let seen = if read.is_null() {
                "nothing".to_string()
            } else {
                read.to_string()
            };
            evidence.push(format!(
                "key {key:?}: the final read saw {seen}, older than the {} (lost)",
                lost.describe()
            ));
        }
    }
    let valid = evidence.is_empty();
    let mut summary = if valid {
        format!(
            "every acknowledged write survived: {} keys read at the end, {acked_total} acknowledged writes and deletes",
            finals.len()
        )
    } else {
        format!("{} key(s) lost an acknowledged write", evidence.len())
    };
    if !unjudged.is_empty() {
        summary.push_str(&format!(
            " ({} key(s) with other operations not judged)",
            unjudged.len()
        ));
    }
    Verdict {
        unknown: false,
        figures: Vec::new(),
        checker,
        valid,
        summary,
        evidence,
    }
}

/// One membership change as the nodes reported it.
#[derive(Default)]
struct Change {
    first_seen: f64,
    /// node -> (primary keys, primaries moved); a node counts once.
    reports: BTreeMap<String, (u64, u64)>,
}

fn members(event: &Event, field: &str) -> Option<BTreeSet<String>> {
    let text = event.fields.get(field)?.as_str()?;
    Some(
        text.split(',')
            .filter(|m| !m.is_empty())
            .map(String::from)
            .collect(),
    )
}

pub fn key_movement(timeline: &[Event]) -> Verdict {
    let checker = "key_movement".to_string();
    let mut changes: BTreeMap<(BTreeSet<String>, BTreeSet<String>), Change> = BTreeMap::new();
    for event in during_run(timeline) {
        if event.kind != EventKind::NodeEvent || !event.what.starts_with(RING_CHANGED) {
            continue;
        }
        let (Some(node), Some(before), Some(after)) = (
            &event.node,
            members(event, "before"),
            members(event, "members"),
        ) else {
            continue;
        };
        // A node that just started learns the whole ring at once: not a join or leave.
        if before.symmetric_difference(&after).count() != 1 {
            continue;
        }
        let number = |f: &str| event.fields.get(f).and_then(|v| v.as_u64()).unwrap_or(0);
        let change = changes.entry((before, after)).or_insert_with(|| Change {
            first_seen: event.t,
            ..Change::default()
        });
        change
            .reports
            .entry(node.clone())
            .or_insert((number("primary_keys"), number("primaries_moved")));
    }
    if changes.is_empty() {
        return Verdict {
            unknown: false,
            figures: Vec::new(),
            checker,
            valid: false,
            summary: "no join or leave on the timeline (no ring_changed event): nothing to measure"
                .into(),
            evidence: Vec::new(),
        };
    }
    let mut ordered: Vec<_> = changes.into_iter().collect();
    ordered.sort_by(|a, b| a.1.first_seen.total_cmp(&b.1.first_seen));
    let (mut evidence, mut figures) = (Vec::new(), Vec::new());
    let (mut judged, mut bad) = (0, 0);
    let mut worst: f64 = 0.0;
    for ((before, after), change) in &ordered {
        let n = before.len().max(after.len());
        let what = match (
            after.difference(before).next(),
            before.difference(after).next(),
        ) {
            (Some(joined), _) => format!("{joined} joined"),
            (_, Some(left)) => format!("{left} left"),
            _ => unreachable!("one member differs"),
        };
        let keys: u64 = change.reports.values().map(|r| r.0).sum();
        let moved: u64 = change.reports.values().map(|r| r.1).sum();
        let ideal = keys as f64 / n as f64;
        let ratio = if ideal > 0.0 {
            moved as f64 / ideal
        } else {
            0.0
        };
        let mut line = format!(
            "@{:.2}s {what} ({} -> {} members): {moved} of {keys} keys changed primary; ideal K/N {ideal:.0}; {ratio:.2}x",
            change.first_seen,
            before.len(),
            after.len()
        );
        // A cluster forming (members finding each other before the load has written much)
        // changes its ring too: too few keys to say anything.
        if (keys as usize) < MIN_KEYS_PER_MEMBER * n {
            line.push_str(&format!(
                " — not judged: fewer than {} keys",
                MIN_KEYS_PER_MEMBER * n
            ));
        } else {
            judged += 1;
            worst = worst.max(ratio);
            figures.push((
                format!("{what} ({} -> {})", before.len(), after.len()),
                format!("{moved} of {keys} keys moved, {ratio:.2}x K/N"),
            ));
            if ratio > MOVEMENT_BOUND {
                bad += 1;
                line.push_str(&format!(" — more than {MOVEMENT_BOUND}x"));
            }
        }
        evidence.push(line);
    }
    let valid = judged > 0 && bad == 0;
    let summary = if judged == 0 {
        format!(
            "no join or leave with enough keys to judge (at least {MIN_KEYS_PER_MEMBER} per member: a workload with more keys)"
        )
    } else if bad == 0 {
        format!(
            "{judged} join(s)/leave(s) judged, each moving at most {worst:.2}x K/N keys (bound {MOVEMENT_BOUND}x)"
        )
    } else {
        format!("{bad} of {judged} join(s)/leave(s) moved more than {MOVEMENT_BOUND}x K/N keys")
    };
    Verdict {
        unknown: false,
        figures,
        checker,
        valid,
        summary,
        evidence,
    }
}

pub fn hints_drained(timeline: &[Event]) -> Verdict {
    let checker = "hints_drained".to_string();
    // node -> (when hints started waiting, owners), while pending.
    let mut pending: BTreeMap<&str, (f64, String)> = BTreeMap::new();
    let mut evidence = Vec::new();
    let mut drained = 0;
    for event in during_run(timeline) {
        let Some(node) = event.node.as_deref() else {
            continue;
        };
        if event.kind != EventKind::NodeEvent {
            continue;
        }
        let text = |f: &str| {
            event
                .fields
                .get(f)
                .map(|v| v.as_str().map_or_else(|| v.to_string(), String::from))
                .unwrap_or_default()
        };
        if event.what.starts_with(HINTS_PENDING) {
            pending.insert(node, (event.t, text("owners")));
        } else if event.what.starts_with(HINTS_DRAINED)
            && let Some((since, owners)) = pending.remove(node)
        {
            drained += 1;
            evidence.push(format!(
                "{node}: hints for {owners} from @{since:.2}s, {} delivered, drained @{:.2}s",
                text("delivered"),
                event.t
            ));
        }
    }
    let left: Vec<String> = pending
        .iter()
        .map(|(node, (since, owners))| {
            format!("{node}: still holding hints for {owners} (since @{since:.2}s) at the end")
        })
        .collect();
    let valid = left.is_empty();
    let summary = match (valid, drained) {
        (true, 0) => "no node held hints".to_string(),
        (true, n) => format!("every hint queue drained ({n} time(s) a node held hints)"),
        (false, _) => format!("{} node(s) still holding hints at the end", left.len()),
    };
    evidence.extend(left);
    Verdict {
        unknown: false,
        figures: Vec::new(),
        checker,
        valid,
        summary,
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct History(Vec<Op>);

    impl History {
        fn op(
            &mut self,
            time: f64,
            process: u64,
            kind: OpType,
            f: &str,
            key: &str,
            value: serde_json::Value,
        ) {
            let index = self.0.len() as u64;
            self.0.push(Op {
                index,
                time,
                process,
                kind,
                f: f.into(),
                key: Some(key.into()),
                value,
                error: None,
                meta: None,
            });
        }
        fn write(&mut self, p: u64, from: f64, to: f64, value: i64, kind: OpType) {
            self.op(from, p, OpType::Invoke, "write", "k", json!(value));
            self.op(to, p, kind, "write", "k", json!(value));
        }
        fn delete(&mut self, p: u64, from: f64, to: f64) {
            self.op(from, p, OpType::Invoke, "delete", "k", json!(null));
            self.op(to, p, OpType::Ok, "delete", "k", json!(null));
        }
        fn final_read(mut self, value: serde_json::Value) -> Vec<Op> {
            self.op(9.0, FINAL_PROCESS, OpType::Invoke, "read", "k", json!(null));
            self.op(9.1, FINAL_PROCESS, OpType::Ok, "read", "k", value);
            self.0
        }
    }

    fn sequential() -> History {
        let mut h = History(Vec::new());
        h.write(1, 0.0, 0.1, 1, OpType::Ok);
        h.write(1, 0.2, 0.3, 2, OpType::Ok);
        h
    }

    #[test]
    fn the_last_acknowledged_write_must_survive() {
        assert!(no_lost_writes(&sequential().final_read(json!(2))).valid);
        let lost = no_lost_writes(&sequential().final_read(json!(1)));
        assert!(!lost.valid);
        assert!(
            lost.evidence[0].contains("write of 2"),
            "{:?}",
            lost.evidence
        );
        let empty = no_lost_writes(&sequential().final_read(json!(null)));
        assert!(!empty.valid, "a restarted node's empty copy must not win");
        let phantom = no_lost_writes(&sequential().final_read(json!(7)));
        assert!(phantom.evidence[0].contains("no write wrote"));
    }

    #[test]
    fn concurrent_and_unknown_writes_may_win() {
        let mut h = sequential();
        // Overlaps write 2: either may be last.
        h.write(2, 0.25, 0.4, 3, OpType::Ok);
        let ops = h.final_read(json!(2));
        assert!(no_lost_writes(&ops).valid);
        let mut h = sequential();
        // A timed-out write may have landed at any time, even after later writes.
        h.write(2, 0.05, 0.5, 4, OpType::Info);
        assert!(no_lost_writes(&h.final_read(json!(4))).valid);
        let mut h = sequential();
        h.write(2, 0.5, 0.6, 5, OpType::Fail);
        assert!(
            !no_lost_writes(&h.final_read(json!(5))).valid,
            "a failed write did not happen"
        );
    }

    #[test]
    fn a_delete_is_a_mutation_like_a_write() {
        let mut h = sequential();
        h.delete(2, 0.5, 0.6);
        assert!(no_lost_writes(&h.final_read(json!(null))).valid);
        let mut h = sequential();
        h.delete(2, 0.5, 0.6);
        assert!(
            !no_lost_writes(&h.final_read(json!(2))).valid,
            "the delete was lost"
        );
    }

    #[test]
    fn a_failed_final_read_is_not_readable() {
        let mut h = sequential();
        h.op(9.0, FINAL_PROCESS, OpType::Invoke, "read", "k", json!(null));
        h.op(9.5, FINAL_PROCESS, OpType::Info, "read", "k", json!(null));
        let verdict = no_lost_writes(&h.0);
        assert!(!verdict.valid);
        assert!(verdict.evidence[0].contains("not readable"));
    }

    fn node_event(t: f64, node: &str, what: &str, fields: serde_json::Value) -> Event {
        Event {
            t,
            kind: EventKind::NodeEvent,
            node: Some(node.into()),
            what: what.into(),
            fields: fields.as_object().unwrap().clone(),
        }
    }

    fn ring_changed(node: &str, before: &str, after: &str, keys: u64, moved: u64) -> Event {
        node_event(
            1.0,
            node,
            RING_CHANGED,
            json!({"before": before, "members": after, "primary_keys": keys, "primaries_moved": moved}),
        )
    }

    #[test]
    fn movement_is_summed_over_the_nodes_and_bounded() {
        // n4 joins 3 members: 1200 keys, ideal 300 moved.
        let join = |moved: [u64; 3]| {
            let mut events = vec![ring_changed("n4", "n4", "n1,n2,n3,n4", 0, 0)];
            for (i, m) in moved.into_iter().enumerate() {
                let node = format!("n{}", i + 1);
                events.push(ring_changed(&node, "n1,n2,n3", "n1,n2,n3,n4", 400, m));
                // Reported twice (a restart): counted once.
                events.push(ring_changed(&node, "n1,n2,n3", "n1,n2,n3,n4", 400, m));
            }
            events
        };
        let fine = key_movement(&join([100, 110, 120]));
        assert!(fine.valid, "{fine:?}");
        assert!(fine.evidence[0].contains("n4 joined"), "{fine:?}");
        assert!(fine.evidence[0].contains("330 of 1200"), "{fine:?}");
        let modulo = key_movement(&join([300, 300, 300]));
        assert!(!modulo.valid);
        assert!(modulo.evidence[0].contains("3.00x"), "{modulo:?}");
        let few = key_movement(&[ring_changed("n1", "n1,n2", "n1", 10, 5)]);
        assert!(!few.valid);
        assert!(few.evidence[0].contains("not judged"));
        // A forming cluster's changes are listed, not judged.
        let mut events = vec![ring_changed("n1", "n1,n2", "n1,n2,n3", 3, 2)];
        events.extend(join([100, 110, 120]));
        let verdict = key_movement(&events);
        assert!(verdict.valid, "{verdict:?}");
        assert!(verdict.summary.starts_with("1 join"), "{verdict:?}");
        assert!(!key_movement(&[]).valid);
    }

    #[test]
    fn hints_must_drain_by_the_end() {
        let pending = node_event(
            1.0,
            "n4",
            HINTS_PENDING,
            json!({"owners": "n1", "waiting": 5}),
        );
        let drained = node_event(3.0, "n4", HINTS_DRAINED, json!({"delivered": 40}));
        let ok = hints_drained(&[pending.clone(), drained]);
        assert!(ok.valid);
        assert!(ok.evidence[0].contains("40 delivered"), "{ok:?}");
        let stuck = hints_drained(&[pending]);
        assert!(!stuck.valid);
        assert!(stuck.evidence[0].contains("still holding hints for n1"));
        assert!(hints_drained(&[]).valid);
    }
}
