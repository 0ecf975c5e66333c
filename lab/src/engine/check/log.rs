//! Project 3's delivery check: what producers were told was written, against what a consumer
//! reads from every partition at the end.
//!
//! The history: `send` operations (key: the partition, `topic/N`; value: a message
//! `PROCESS:SEQ`, unique, SEQ growing per process; an acknowledged one says its `acks` in
//! `meta`), and the runner's final `read` of each partition (value: every message in offset
//! order). Judged:
//! - no message acknowledged with `acks=all` is missing (with `acks=1` or `0` loss is
//!   possible by design: counted and reported, not failed);
//! - no message appears twice (the idempotent producer's promise);
//! - each producer's messages appear in a partition in the order it sent them;
//! - nothing appears that no producer sent.
//!
//! And the consumer group's check, [`group_delivery`]: the runner's `drain` (the group's
//! committed offsets reached every partition's high watermark) and the `consumed` operations
//! it recorded from the consumer nodes' journals, against the final reads: every message the
//! log holds at the end was read by some member (at least once: redeliveries after a
//! rebalance are counted, not failed). The coordinators' `rebalance_completed` events give
//! the rebalances and how long each took; the journals the largest lag a read found and the
//! longest time a partition went between two reads (a dead member's partitions wait for its
//! session to expire and the group to rebalance).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::Verdict;
use crate::engine::events::{Event, EventKind};
use crate::engine::history::{FINAL_PROCESS, Op, OpType, invocations_and_completions};

/// A message's producer and sequence number, from `PROCESS:SEQ`.
fn parse_message(message: &str) -> Option<(u64, u64)> {
    let (process, seq) = message.split_once(':')?;
    Some((process.parse().ok()?, seq.parse().ok()?))
}

pub fn log_delivery(history: &[Op]) -> Verdict {
    let checker = "log_delivery".to_string();
    // Per partition: acknowledged messages and their acks mode.
    let mut acked: BTreeMap<&str, Vec<(&str, String)>> = BTreeMap::new();
    let mut sent: BTreeSet<&str> = BTreeSet::new();
    let finals = final_reads(history);
    for (start, op) in invocations_and_completions(history) {
        let (Some(partition), "send") = (op.key.as_deref(), op.f.as_str()) else {
            continue;
        };
        let Some(message) = start.value.as_str() else {
            continue;
        };
        sent.insert(message);
        if op.kind == OpType::Ok {
            let acks = op
                .meta
                .as_ref()
                .and_then(|m| m.get("acks"))
                .and_then(|a| a.as_str())
                .unwrap_or("all")
                .to_string();
            acked.entry(partition).or_default().push((message, acks));
        }
    }

    let mut evidence = Vec::new();
    let mut unread = 0;
    let (mut lost_all, mut lost_weak, mut duplicated, mut disordered, mut unknown) =
        (0, 0, 0, 0, 0);
    let mut landed_unacked = 0;
    let partitions: BTreeSet<&str> = acked.keys().chain(finals.keys()).copied().collect();
    for partition in partitions {
        let Some(Some(read)) = finals.get(partition) else {
            unread += 1;
            evidence.push(format!("{partition}: not read at the end"));
            continue;
        };
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for message in read {
            *counts.entry(message).or_default() += 1;
        }
        let acked_here = acked.get(partition).map(Vec::as_slice).unwrap_or_default();
        let acked_set: BTreeSet<&str> = acked_here.iter().map(|(m, _)| *m).collect();
        for (message, acks) in acked_here {
            if counts.contains_key(message) {
                continue;
            }
            if acks == "all" {
                lost_all += 1;
                if evidence.len() < 20 {
                    evidence.push(format!(
                        "{partition}: {message} was acknowledged (acks=all) and is gone"
                    ));
                }
            } else {
                lost_weak += 1;
            }
        }
        for (message, n) in &counts {
            if *n > 1 {
                duplicated += n - 1;
                if evidence.len() < 20 {
                    evidence.push(format!("{partition}: {message} appears {n} times"));
                }
            }
            if !sent.contains(message) {
                unknown += 1;
                evidence.push(format!("{partition}: {message} was never sent"));
            } else if !acked_set.contains(message) {
                landed_unacked += 1;
            }
        }
        let mut last_seq: HashMap<u64, u64> = HashMap::new();
        for message in read {
            let Some((process, seq)) = parse_message(message) else {
                continue;
            };
            if let Some(previous) = last_seq.insert(process, seq)
                && previous >= seq
            {
                disordered += 1;
                if evidence.len() < 20 {
                    evidence.push(format!(
                        "{partition}: {message} comes after {process}:{previous}"
                    ));
                }
            }
        }
    }
    let total_acked: usize = acked.values().map(Vec::len).sum();
    let valid = unread == 0 && lost_all == 0 && duplicated == 0 && disordered == 0 && unknown == 0;
    let summary = format!(
        "{total_acked} acknowledged: {lost_all} lost with acks=all, {lost_weak} lost with acks=1/0; {duplicated} duplicated, {disordered} out of order, {landed_unacked} landed without an ack{}",
        if unread > 0 {
            format!("; {unread} partitions unread")
        } else {
            String::new()
        }
    );
    Verdict {
        unknown: false,
        checker,
        valid,
        summary,
        evidence,
        figures: vec![
            ("acknowledged".into(), total_acked.to_string()),
            ("lost (acks=all)".into(), lost_all.to_string()),
            ("lost (acks=1/0)".into(), lost_weak.to_string()),
            ("duplicated".into(), duplicated.to_string()),
            ("out of order".into(), disordered.to_string()),
        ],
    }
}

/// The final reads: per partition, its messages (`None`: the read failed).
fn final_reads(history: &[Op]) -> BTreeMap<&str, Option<Vec<&str>>> {
    invocations_and_completions(history)
        .into_iter()
        .filter(|(_, op)| op.f == "read" && op.process >= FINAL_PROCESS)
        .filter_map(|(_, op)| {
            let messages = (op.kind == OpType::Ok).then(|| {
                op.value
                    .as_array()
                    .map(|a| a.iter().filter_map(|m| m.as_str()).collect())
                    .unwrap_or_default()
            });
            Some((op.key.as_deref()?, messages))
        })
        .collect()
}

pub fn group_delivery(history: &[Op], events: &[Event]) -> Verdict {
    let checker = "group_delivery".to_string();
    let mut drain: Option<(bool, String)> = None;
    // Per partition: how many times each message was read by the group.
    let mut consumed: BTreeMap<&str, HashMap<&str, usize>> = BTreeMap::new();
    let mut journals_failed = Vec::new();
    let mut max_lag = 0u64;
    let mut longest_gap: Option<(u64, &str)> = None;
    for (_, op) in invocations_and_completions(history) {
        if op.process < FINAL_PROCESS {
            continue;
        }
        match op.f.as_str() {
            "drain" => {
                drain = Some(if op.kind == OpType::Ok {
                    (true, String::new())
                } else {
                    (false, op.error.clone().unwrap_or_default())
                });
            }
            "consumed" if op.kind == OpType::Ok => {
                let Some(partition) = op.key.as_deref() else {
                    continue;
                };
                let counts = consumed.entry(partition).or_default();
                for message in op.value.as_array().into_iter().flatten() {
                    if let Some(m) = message.as_str() {
                        *counts.entry(m).or_default() += 1;
                    }
                }
                let meta = |field: &str| op.meta.as_ref().and_then(|m| m[field].as_u64());
                max_lag = max_lag.max(meta("max_lag").unwrap_or(0));
                if let Some(gap) = meta("longest_gap_ms")
                    && longest_gap.is_none_or(|(g, _)| gap > g)
                {
                    longest_gap = Some((gap, partition));
                }
            }
            "consumed" => journals_failed.push(format!(
                "{}'s journal: {}",
                op.key.as_deref().unwrap_or("?"),
                op.error.as_deref().unwrap_or("unreadable")
            )),
            _ => {}
        }
    }
    let rebalances: Vec<(f64, u64, String)> = events
        .iter()
        .filter(|e| e.kind == EventKind::NodeEvent && e.what.starts_with("rebalance_completed"))
        .map(|e| {
            (
                e.t,
                e.fields
                    .get("took_ms")
                    .and_then(|t| t.as_u64())
                    .unwrap_or(0),
                e.fields
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let Some((drained, drain_error)) = drain else {
        return Verdict {
            unknown: false,
            checker,
            valid: true,
            summary: "no consumer group in this run (no consumer nodes)".into(),
            evidence: Vec::new(),
            figures: Vec::new(),
        };
    };

    let finals = final_reads(history);
    let mut evidence = Vec::new();
    if !drained {
        evidence.push(format!("the group did not catch up: {drain_error}"));
    }
    evidence.extend(journals_failed.iter().cloned());
    let (mut held, mut not_consumed, mut distinct, mut reads, mut gone, mut unread) =
        (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    for (partition, read) in &finals {
        let Some(read) = read else {
            unread += 1;
            evidence.push(format!("{partition}: not read at the end"));
            continue;
        };
        let counts = consumed.get(partition);
        let in_log: BTreeSet<&str> = read.iter().copied().collect();
        held += in_log.len();
        for message in &in_log {
            if counts.is_none_or(|c| !c.contains_key(message)) {
                not_consumed += 1;
                if evidence.len() < 20 {
                    evidence.push(format!(
                        "{partition}: {message} is in the log but no member read it"
                    ));
                }
            }
        }
        for (message, n) in counts.into_iter().flatten() {
            distinct += 1;
            reads += n;
            if !in_log.contains(message) {
                gone += 1;
            }
        }
    }
    for (t, took, reason) in rebalances.iter().take(10) {
        evidence.push(format!("rebalance at {t:.1}s took {took} ms ({reason})"));
    }
    let longest = rebalances.iter().map(|r| r.1).max();
    let valid = drained && not_consumed == 0 && unread == 0 && journals_failed.is_empty();
    let summary = format!(
        "{held} messages in the log: {} read by the group, {not_consumed} not; {} redelivered; {} rebalances{}; largest lag {max_lag}{}{}",
        held - not_consumed,
        reads - distinct,
        rebalances.len(),
        longest.map_or(String::new(), |ms| format!(" (longest {ms} ms)")),
        longest_gap.map_or(String::new(), |(ms, p)| format!(
            "; {p} went {:.1} s between reads",
            ms as f64 / 1000.0
        )),
        if drained {
            ""
        } else {
            "; the group did not catch up"
        }
    );
    Verdict {
        unknown: false,
        checker,
        valid,
        summary,
        evidence,
        figures: vec![
            ("in the log".into(), held.to_string()),
            ("not consumed".into(), not_consumed.to_string()),
            ("redelivered".into(), (reads - distinct).to_string()),
            ("consumed, then gone".into(), gone.to_string()),
            ("rebalances".into(), rebalances.len().to_string()),
            (
                "longest rebalance".into(),
                longest.map_or("-".into(), |ms| format!("{ms} ms")),
            ),
            ("largest lag".into(), max_lag.to_string()),
            (
                "longest unread".into(),
                longest_gap.map_or("-".into(), |(ms, _)| format!("{:.1} s", ms as f64 / 1000.0)),
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Default)]
    struct History(Vec<Op>);

    impl History {
        fn push(
            &mut self,
            process: u64,
            kind: OpType,
            f: &str,
            key: &str,
            value: serde_json::Value,
            meta: Option<serde_json::Value>,
        ) {
            let index = self.0.len() as u64;
            self.0.push(Op {
                index,
                time: index as f64,
                process,
                kind,
                f: f.into(),
                key: Some(key.into()),
                value,
                error: None,
                meta,
            });
        }

        fn send(&mut self, process: u64, message: &str, outcome: OpType, acks: &str) {
            self.push(process, OpType::Invoke, "send", "t/0", json!(message), None);
            self.push(
                process,
                outcome,
                "send",
                "t/0",
                json!(message),
                Some(json!({"acks": acks})),
            );
        }

        fn final_read(&mut self, messages: &[&str]) {
            self.push(
                FINAL_PROCESS,
                OpType::Invoke,
                "read",
                "t/0",
                json!(null),
                None,
            );
            self.push(
                FINAL_PROCESS,
                OpType::Ok,
                "read",
                "t/0",
                json!(messages),
                None,
            );
        }
    }

    #[test]
    fn everything_acknowledged_once_and_in_order_passes() {
        let mut h = History::default();
        h.send(1, "1:1", OpType::Ok, "all");
        h.send(2, "2:1", OpType::Ok, "all");
        h.send(1, "1:2", OpType::Info, "all");
        h.send(1, "1:3", OpType::Ok, "all");
        h.final_read(&["2:1", "1:1", "1:2", "1:3"]);
        let verdict = log_delivery(&h.0);
        assert!(verdict.valid, "{verdict:?}");
        assert!(
            verdict.summary.contains("1 landed without an ack"),
            "{}",
            verdict.summary
        );
    }

    #[test]
    fn loss_fails_with_acks_all_and_is_only_counted_otherwise() {
        let mut h = History::default();
        h.send(1, "1:1", OpType::Ok, "1");
        h.send(1, "1:2", OpType::Ok, "1");
        h.final_read(&["1:1"]);
        let verdict = log_delivery(&h.0);
        assert!(verdict.valid, "{verdict:?}");
        assert!(
            verdict
                .figures
                .contains(&("lost (acks=1/0)".into(), "1".into()))
        );

        let mut h = History::default();
        h.send(1, "1:1", OpType::Ok, "all");
        h.send(1, "1:2", OpType::Ok, "all");
        h.final_read(&["1:1"]);
        let verdict = log_delivery(&h.0);
        assert!(!verdict.valid);
        assert!(verdict.evidence[0].contains("1:2 was acknowledged (acks=all) and is gone"));
    }

    #[test]
    fn duplicates_disorder_strangers_and_unread_partitions_fail() {
        let cases: [(&[&str], &str); 3] = [
            (&["1:1", "1:2", "1:2"], "appears 2 times"),
            (&["1:2", "1:1"], "comes after 1:2"),
            (&["1:1", "1:2", "9:9"], "never sent"),
        ];
        for (read, expected) in cases {
            let mut h = History::default();
            h.send(1, "1:1", OpType::Ok, "all");
            h.send(1, "1:2", OpType::Ok, "all");
            h.final_read(read);
            let verdict = log_delivery(&h.0);
            assert!(!verdict.valid, "{read:?}");
            assert!(
                verdict.evidence.iter().any(|e| e.contains(expected)),
                "{read:?}: {:?}",
                verdict.evidence
            );
        }
        let mut h = History::default();
        h.send(1, "1:1", OpType::Ok, "all");
        let verdict = log_delivery(&h.0);
        assert!(!verdict.valid);
        assert!(verdict.evidence[0].contains("not read at the end"));
    }

    impl History {
        fn drain(&mut self, ok: bool) {
            self.push(
                FINAL_PROCESS,
                OpType::Invoke,
                "drain",
                "lab",
                json!(null),
                None,
            );
            let kind = if ok { OpType::Ok } else { OpType::Fail };
            self.push(FINAL_PROCESS, kind, "drain", "lab", json!({}), None);
            if !ok {
                self.0.last_mut().unwrap().error = Some("committed 3 of 5".into());
            }
        }

        fn consumed(&mut self, messages: &[&str], gap_ms: u64) {
            self.push(
                FINAL_PROCESS,
                OpType::Invoke,
                "consumed",
                "t/0",
                json!(null),
                None,
            );
            self.push(
                FINAL_PROCESS,
                OpType::Ok,
                "consumed",
                "t/0",
                json!(messages),
                Some(json!({"max_lag": 4, "longest_gap_ms": gap_ms})),
            );
        }
    }

    fn rebalance(t: f64, took_ms: u64) -> Event {
        Event {
            t,
            kind: EventKind::NodeEvent,
            node: Some("b2".into()),
            what: "rebalance_completed: group lab: generation 2".into(),
            fields: serde_json::from_value(
                json!({"took_ms": took_ms, "reason": "g2's session expired"}),
            )
            .unwrap(),
        }
    }

    #[test]
    fn the_group_must_read_everything_in_the_log_and_catch_up() {
        // Everything read, one message twice (a redelivery after a rebalance): valid.
        let mut h = History::default();
        h.send(1, "1:1", OpType::Ok, "all");
        h.send(1, "1:2", OpType::Ok, "all");
        h.drain(true);
        h.consumed(&["1:1", "1:2", "1:2"], 3_300);
        h.final_read(&["1:1", "1:2"]);
        let verdict = group_delivery(&h.0, &[rebalance(3.0, 20), rebalance(6.0, 540)]);
        assert!(verdict.valid, "{verdict:?}");
        for figure in [
            ("redelivered", "1"),
            ("rebalances", "2"),
            ("longest rebalance", "540 ms"),
            ("largest lag", "4"),
            ("longest unread", "3.3 s"),
        ] {
            assert!(
                verdict
                    .figures
                    .contains(&(figure.0.into(), figure.1.into())),
                "{figure:?} in {:?}",
                verdict.figures
            );
        }

        // A message in the log nobody read.
        let mut h = History::default();
        h.send(1, "1:1", OpType::Ok, "all");
        h.send(1, "1:2", OpType::Ok, "all");
        h.drain(true);
        h.consumed(&["1:1"], 0);
        h.final_read(&["1:1", "1:2"]);
        let verdict = group_delivery(&h.0, &[]);
        assert!(!verdict.valid);
        assert!(verdict.evidence[0].contains("1:2 is in the log but no member read it"));

        // The group never caught up.
        let mut h = History::default();
        h.send(1, "1:1", OpType::Ok, "all");
        h.drain(false);
        h.consumed(&["1:1"], 0);
        h.final_read(&["1:1"]);
        let verdict = group_delivery(&h.0, &[]);
        assert!(!verdict.valid);
        assert!(verdict.evidence[0].contains("did not catch up: committed 3 of 5"));

        // No consumer nodes at all: nothing to judge.
        let mut h = History::default();
        h.send(1, "1:1", OpType::Ok, "all");
        h.final_read(&["1:1"]);
        let verdict = group_delivery(&h.0, &[]);
        assert!(verdict.valid && verdict.summary.contains("no consumer group"));
    }
}
