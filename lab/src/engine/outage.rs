//! How long each disruptive fault stopped the workload: from the last operation that
//! succeeded before the fault to the first that succeeded after it. For a Raft cluster whose
//! leader is killed, that is the failover time: detection, election, and the clients finding
//! the new leader, as a client sees it.
//!
//! Measured on the history, not on node logs: the longest gap between two consecutive
//! successful completions that starts at or after the last success before the fault and
//! before the next fault event (the fault's undo, or another fault). An answer already on its
//! way when the fault hit may land just after it; the gap then starts there, which is still
//! the truth.

use serde::Serialize;

use super::events::{Event, EventKind};
use super::history::{OpType, completions};

/// The faults that can stop a workload (heal, resume and start undo faults).
const DISRUPTIVE: &[&str] = &["kill", "terminate", "pause", "partition", "restart"];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outage {
    /// The fault, as the timeline says it: `kill (SIGKILL)`...
    pub fault: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When it was applied (seconds since the run started).
    pub at: f64,
    /// The last successful completion before the gap.
    pub last_ok: f64,
    /// The first successful completion after it.
    pub first_ok: f64,
    /// `first_ok - last_ok`, in seconds.
    pub secs: f64,
}

/// One outage per disruptive fault that had successes before and after it.
pub fn outages(history: &[super::history::Op], timeline: &[Event]) -> Vec<Outage> {
    let mut oks: Vec<f64> = completions(history)
        .into_iter()
        .filter(|(_, op)| op.kind == OpType::Ok)
        .map(|(_, op)| op.time)
        .collect();
    oks.sort_by(f64::total_cmp);
    let faults: Vec<&Event> = timeline
        .iter()
        .filter(|e| e.kind == EventKind::Fault)
        .collect();
    let mut found = Vec::new();
    for (i, fault) in faults.iter().enumerate() {
        if !DISRUPTIVE.iter().any(|d| fault.what.starts_with(d)) {
            continue;
        }
        // Up to the next fault of any kind (its undo, or another fault): a gap that runs past
        // it still counts, one that starts after it is not this fault's.
        let until = faults.get(i + 1).map_or(f64::INFINITY, |next| next.t);
        // The last success before the fault, every later one before `until`, and the first
        // success after it.
        let from = oks.partition_point(|&t| t < fault.t).saturating_sub(1);
        let to = (oks.partition_point(|&t| t < until) + 1).min(oks.len());
        let Some((last_ok, first_ok)) = oks
            .get(from..to)
            .unwrap_or_default()
            .windows(2)
            .map(|w| (w[0], w[1]))
            .filter(|&(_, b)| b >= fault.t)
            .max_by(|a, b| (a.1 - a.0).total_cmp(&(b.1 - b.0)))
        else {
            continue;
        };
        found.push(Outage {
            fault: fault.what.clone(),
            node: fault.node.clone(),
            at: fault.t,
            last_ok,
            first_ok,
            secs: first_ok - last_ok,
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::history::Op;

    fn op(index: u64, time: f64, process: u64, kind: OpType) -> Op {
        Op {
            index,
            time,
            process,
            kind,
            f: "write".into(),
            key: Some("k".into()),
            value: serde_json::json!(1),
            error: None,
            meta: None,
        }
    }

    fn fault(t: f64, what: &str) -> Event {
        Event {
            t,
            kind: EventKind::Fault,
            node: Some("n1".into()),
            what: what.into(),
            fields: Default::default(),
        }
    }

    /// Successes every 100 ms, then none from 1.05 s to 1.8 s: the kill just after 1.0 s
    /// caused it. An answer in flight at the kill (1.05 s) does not hide the gap; it starts
    /// it.
    #[test]
    fn the_gap_runs_from_the_last_success_before_to_the_first_after() {
        let mut history = Vec::new();
        let mut times: Vec<f64> = (1..=10).map(|i| i as f64 * 0.1).collect();
        times.push(1.05);
        times.extend((18..=25).map(|i| i as f64 * 0.1));
        for (i, t) in times.iter().enumerate() {
            history.push(op(2 * i as u64, t - 0.01, i as u64, OpType::Invoke));
            history.push(op(2 * i as u64 + 1, *t, i as u64, OpType::Ok));
        }
        let timeline = vec![
            fault(1.001, "kill (SIGKILL)"),
            fault(1.5, "start"),
            fault(2.2, "pause (SIGSTOP)"),
        ];
        let found = outages(&history, &timeline);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].fault, "kill (SIGKILL)");
        assert!((found[0].last_ok - 1.05).abs() < 1e-9, "{found:?}");
        assert!((found[0].first_ok - 1.8).abs() < 1e-9, "{found:?}");
        // The pause at 2.2 s stopped nothing here: its gap is the usual 100 ms.
        assert!((found[1].secs - 0.1).abs() < 1e-9, "{found:?}");
        assert!(outages(&[], &timeline).is_empty());
    }
}
