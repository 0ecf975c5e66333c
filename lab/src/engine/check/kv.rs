//! Project 0's checkers, beside the linearizability one.
//!
//! - [`applied_once`]: no write was applied twice. Every application of a PUT bumps the key's
//!   version by one, so a key's final version can be at most the number of writes to it that
//!   may have happened (acknowledged or unknown). A retry applied again would push it past.
//!   Acknowledged writes must also report distinct versions, on keys never deleted (a delete
//!   starts a key's versions again at 1).
//! - [`availability`]: the share of operations that succeeded, overall and in each window
//!   between two faults, so a reader sees what each fault cost.

use std::collections::BTreeMap;

use super::Verdict;
use crate::engine::events::{Event, EventKind};
use crate::engine::history::{Op, OpType};

pub use crate::engine::history::FINAL_PROCESS;

fn version(op: &Op) -> Option<u64> {
    op.meta.as_ref()?.get("version")?.as_u64()
}

pub fn applied_once(history: &[Op]) -> Verdict {
    let checker = "applied_once".to_string();
    let mut possible: BTreeMap<&str, u64> = BTreeMap::new();
    let mut acknowledged: BTreeMap<&str, Vec<(u64, i64)>> = BTreeMap::new();
    let mut deleted: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    let mut final_version: BTreeMap<&str, u64> = BTreeMap::new();
    let mut evidence = Vec::new();
    for op in history {
        let Some(key) = op.key.as_deref() else {
            continue;
        };
        match (op.f.as_str(), op.kind) {
            ("write", OpType::Ok) => {
                *possible.entry(key).or_default() += 1;
                if let Some(v) = version(op) {
                    acknowledged
                        .entry(key)
                        .or_default()
                        .push((v, op.value.as_i64().unwrap_or_default()));
                }
            }
            ("write", OpType::Info) => *possible.entry(key).or_default() += 1,
            ("delete", _) => {
                deleted.insert(key);
            }
            ("read", OpType::Ok) if op.process >= FINAL_PROCESS => {
                final_version.insert(key, version(op).unwrap_or(0));
            }
            _ => {}
        }
    }
    // A delete starts a key's versions again, so only never-deleted keys must have distinct ones.
    for (key, writes) in acknowledged.iter().filter(|(k, _)| !deleted.contains(*k)) {
        let mut by_version: BTreeMap<u64, i64> = BTreeMap::new();
        for (v, value) in writes {
            if let Some(other) = by_version.insert(*v, *value) {
                evidence.push(format!(
                    "key {key:?}: writes of {other} and {value} both acknowledged as version {v}"
                ));
            }
        }
    }
    for (key, v) in &final_version {
        let may = possible.get(key).copied().unwrap_or(0);
        if *v > may {
            evidence.push(format!(
                "key {key:?}: final version {v}, but only {may} write(s) could have been applied"
            ));
        }
    }
    let valid = evidence.is_empty();
    Verdict {
        unknown: false,
        figures: Vec::new(),
        checker,
        valid,
        summary: if valid {
            format!(
                "every write applied at most once ({} keys read at the end)",
                final_version.len()
            )
        } else {
            format!("{} write(s) applied more than once", evidence.len())
        },
        evidence,
    }
}

/// `min` is the lowest acceptable overall share of successful operations, if any.
pub fn availability(history: &[Op], timeline: &[Event], min: Option<f64>) -> Verdict {
    let completions: Vec<&Op> = history
        .iter()
        .filter(|op| op.kind != OpType::Invoke && op.process < FINAL_PROCESS)
        .collect();
    let share = |ops: &[&Op]| {
        let ok = ops.iter().filter(|op| op.answered()).count();
        (ok, ops.len())
    };
    let (ok, total) = share(&completions);
    let overall = if total == 0 {
        0.0
    } else {
        ok as f64 / total as f64
    };
    let mut evidence = vec![format!(
        "overall: {:.1}% ({ok} of {total} operations answered)",
        overall * 100.0
    )];
    // Windows between consecutive faults.
    let faults: Vec<&Event> = timeline
        .iter()
        .filter(|e| e.kind == EventKind::Fault)
        .collect();
    let mut bounds: Vec<(f64, String)> = vec![(0.0, "before any fault".to_string())];
    bounds.extend(faults.iter().map(|e| {
        (
            e.t,
            format!(
                "after {}{}",
                e.node
                    .as_deref()
                    .map(|n| format!("{n}: "))
                    .unwrap_or_default(),
                e.what
            ),
        )
    }));
    for (i, (start, label)) in bounds.iter().enumerate() {
        let end = bounds.get(i + 1).map_or(f64::INFINITY, |b| b.0);
        let window: Vec<&Op> = completions
            .iter()
            .copied()
            .filter(|op| op.time >= *start && op.time < end)
            .collect();
        if window.is_empty() {
            continue;
        }
        let (ok, total) = share(&window);
        evidence.push(format!(
            "  {start:>6.2}s..{}: {:>5.1}% ({ok}/{total}) {label}",
            if end.is_finite() {
                format!("{end:.2}s")
            } else {
                "end".to_string()
            },
            ok as f64 / total as f64 * 100.0
        ));
    }
    let valid = total > 0 && min.is_none_or(|m| overall >= m);
    Verdict {
        unknown: false,
        figures: vec![(
            "operations answered".to_string(),
            format!("{:.1}% of {total}", overall * 100.0),
        )],
        checker: "availability".to_string(),
        valid,
        summary: match min {
            Some(m) => format!(
                "{:.1}% of operations answered (required: {:.1}%)",
                overall * 100.0,
                m * 100.0
            ),
            None => format!("{:.1}% of operations answered", overall * 100.0),
        },
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(index: u64, process: u64, kind: OpType, f: &str, value: i64, version: Option<u64>) -> Op {
        Op {
            index,
            time: index as f64,
            process,
            kind,
            f: f.into(),
            key: Some("k".into()),
            value: json!(value),
            error: None,
            meta: version.map(|v| json!({ "version": v })),
        }
    }

    #[test]
    fn a_final_version_beyond_the_writes_is_a_double_apply() {
        let good = vec![
            op(0, 1, OpType::Ok, "write", 1, Some(1)),
            op(1, 1, OpType::Info, "write", 2, None),
            op(2, FINAL_PROCESS, OpType::Ok, "read", 2, Some(2)),
        ];
        assert!(applied_once(&good).valid);
        let doubled = vec![
            op(0, 1, OpType::Ok, "write", 1, Some(1)),
            op(1, FINAL_PROCESS, OpType::Ok, "read", 1, Some(2)),
        ];
        let verdict = applied_once(&doubled);
        assert!(!verdict.valid);
        assert!(
            verdict.evidence[0].contains("final version 2"),
            "{verdict:?}"
        );
    }

    #[test]
    fn versions_restart_after_a_delete_without_a_false_alarm() {
        let mut delete = op(1, 2, OpType::Ok, "delete", 0, None);
        delete.value = json!(null);
        let history = vec![
            op(0, 1, OpType::Ok, "write", 1, Some(1)),
            delete,
            op(2, 1, OpType::Ok, "write", 2, Some(1)),
            op(3, FINAL_PROCESS, OpType::Ok, "read", 2, Some(1)),
        ];
        assert!(applied_once(&history).valid);
        // Without the delete, two writes acknowledged as version 1 are a real problem.
        let mut without = history.clone();
        without.remove(1);
        assert!(!applied_once(&without).valid);
    }

    #[test]
    fn availability_is_counted_per_fault_window() {
        let history = vec![
            op(0, 1, OpType::Ok, "write", 1, None),
            op(1, 1, OpType::Ok, "write", 1, None),
            op(2, 1, OpType::Info, "write", 1, None),
            op(3, 1, OpType::Info, "write", 1, None),
            // The service's "no" to a cas is an answer; an error instead of one is not.
            Op {
                meta: Some(json!({ "swapped": false })),
                ..op(4, 1, OpType::Fail, "cas", 1, None)
            },
            op(5, 1, OpType::Fail, "cas", 1, None),
        ];
        let timeline = vec![Event {
            t: 1.5,
            kind: EventKind::Fault,
            node: Some("n1".into()),
            what: "pause (SIGSTOP)".into(),
            fields: Default::default(),
        }];
        let verdict = availability(&history, &timeline, Some(0.5));
        assert!(verdict.valid, "{verdict:?}");
        assert!(
            verdict
                .evidence
                .iter()
                .any(|l| l.contains("100.0% (2/2) before any fault")),
            "{:#?}",
            verdict.evidence
        );
        assert!(
            verdict
                .evidence
                .iter()
                .any(|l| l.contains("25.0% (1/4) after n1: pause")),
            "{:#?}",
            verdict.evidence
        );
        assert!(!availability(&history, &timeline, Some(0.6)).valid);
    }
}
