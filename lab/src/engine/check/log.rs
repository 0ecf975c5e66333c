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

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::Verdict;
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
    let mut finals: BTreeMap<&str, Option<Vec<&str>>> = BTreeMap::new();
    for (start, op) in invocations_and_completions(history) {
        let Some(partition) = op.key.as_deref() else {
            continue;
        };
        match (op.f.as_str(), op.kind) {
            ("read", kind) if op.process >= FINAL_PROCESS => {
                let messages = (kind == OpType::Ok).then(|| {
                    op.value
                        .as_array()
                        .map(|a| a.iter().filter_map(|m| m.as_str()).collect())
                        .unwrap_or_default()
                });
                finals.insert(partition, messages);
            }
            ("send", kind) => {
                let Some(message) = start.value.as_str() else {
                    continue;
                };
                sent.insert(message);
                if kind == OpType::Ok {
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
            _ => {}
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
}
