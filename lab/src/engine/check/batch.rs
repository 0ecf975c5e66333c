//! Project 4's checks.
//!
//! [`jobs`] reads the history: `job` operations (one per job a client submitted and followed;
//! `ok` when it was done, `fail` when it failed) and the runner's final `output` reads (value:
//! the job output's [`Digest`]; meta: the digest of the same job run sequentially). Valid when
//! every job completed and each one's output equals the sequential run's after sorting its
//! lines (and a sort job's output, read in reduce order, is already sorted).
//!
//! [`commits`] reads the coordinator's events: `task_committed` (logged once the commit is
//! durable), `worker_lost` (the attempts a lease expiry forgot) and `job_done` (its
//! speculation, lost map outputs and locality). Valid when no attempt committed after its
//! lease expired and no reduce task committed twice (its output written by one attempt).
//!
//! [`Digest`]: crate::projects::proj4::Digest

use std::collections::{BTreeMap, BTreeSet};

use super::Verdict;
use crate::engine::events::{Event, EventKind};
use crate::engine::history::{FINAL_PROCESS, Op, OpType, invocations_and_completions};

pub fn jobs(history: &[Op]) -> Verdict {
    let checker = "batch_jobs".to_string();
    let mut evidence = Vec::new();
    let (mut done, mut failed, mut unknown) = (0, 0, 0);
    let mut seconds = Vec::new();
    let mut outputs: BTreeMap<String, (&Op, &Op)> = BTreeMap::new();
    let mut done_names = BTreeSet::new();
    for (start, op) in invocations_and_completions(history) {
        match (op.f.as_str(), op.process < FINAL_PROCESS) {
            ("job", true) => {
                let name = start.value["name"].as_str().unwrap_or("?").to_string();
                match op.kind {
                    OpType::Ok => {
                        done += 1;
                        done_names.insert(name);
                        seconds.push(op.time - start.time);
                    }
                    OpType::Fail => {
                        failed += 1;
                        evidence.push(format!(
                            "{name} failed: {}",
                            op.error.as_deref().unwrap_or("?")
                        ));
                    }
                    _ => {
                        unknown += 1;
                        evidence.push(format!(
                            "{name}: outcome unknown ({})",
                            op.error.as_deref().unwrap_or("?")
                        ));
                    }
                }
            }
            ("output", false) => {
                if let Some(key) = &op.key {
                    outputs.insert(key.clone(), (start, op));
                }
            }
            _ => {}
        }
    }
    let (mut equal, mut different) = (0, 0);
    for name in &done_names {
        let Some((_, read)) = outputs.get(name) else {
            different += 1;
            evidence.push(format!("{name}: its output was not read at the end"));
            continue;
        };
        if read.kind != OpType::Ok {
            different += 1;
            evidence.push(format!(
                "{name}: its output could not be read: {}",
                read.error.as_deref().unwrap_or("?")
            ));
            continue;
        }
        let meta = read.meta.clone().unwrap_or_default();
        if let Some(e) = meta["reference_error"].as_str() {
            different += 1;
            evidence.push(format!("{name}: the sequential run failed: {e}"));
            continue;
        }
        let (got, want) = (&read.value, &meta["reference"]);
        if got["lines"] != want["lines"] || got["hash"] != want["hash"] {
            different += 1;
            evidence.push(format!(
                "{name}: {} lines (hash {}), the sequential run {} lines (hash {})",
                got["lines"], got["hash"], want["lines"], want["hash"]
            ));
        } else if got["globally_sorted"] == false {
            different += 1;
            evidence.push(format!(
                "{name}: the right lines, but its reduce outputs read in order are not sorted"
            ));
        } else {
            equal += 1;
        }
    }
    let mean = if seconds.is_empty() {
        0.0
    } else {
        seconds.iter().sum::<f64>() / seconds.len() as f64
    };
    let valid = failed == 0 && unknown == 0 && different == 0 && done > 0;
    if done == 0 && failed == 0 && unknown == 0 {
        evidence.push("no job ran".into());
    }
    Verdict {
        unknown: false,
        checker,
        valid,
        summary: format!(
            "{done} jobs done ({equal} equal to the sequential run, {different} not), {failed} failed, {unknown} unknown; {mean:.1} s per job"
        ),
        evidence,
        figures: vec![
            ("jobs done".into(), done.to_string()),
            ("mean job s".into(), format!("{mean:.1}")),
        ],
    }
}

/// A coordinator event's field as a number.
fn number(event: &Event, field: &str) -> Option<u64> {
    event.fields.get(field).and_then(|v| v.as_u64())
}

pub fn commits(events: &[Event]) -> Verdict {
    let checker = "batch_commits".to_string();
    let mut evidence = Vec::new();
    let mut lost: BTreeSet<u64> = BTreeSet::new();
    let mut reduces: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let (mut late, mut twice, mut committed) = (0, 0, 0);
    let (mut launched, mut won, mut lost_outputs, mut local, mut remote) = (0, 0, 0, 0, 0);
    let mut refused = 0;
    for event in events.iter().filter(|e| e.kind == EventKind::NodeEvent) {
        let name = event.what.split(':').next().unwrap_or_default();
        match name {
            "worker_lost" => {
                // "12 (job 1 map task 3), 14 (job 1 reduce task 0)"
                let attempts = event.fields.get("attempts").and_then(|a| a.as_str());
                for part in attempts.unwrap_or_default().split(", ") {
                    if let Some(id) = part.split(' ').next().and_then(|n| n.parse().ok()) {
                        lost.insert(id);
                    }
                }
            }
            "task_committed" => {
                committed += 1;
                let (Some(attempt), Some(job), Some(task)) = (
                    number(event, "attempt"),
                    number(event, "job"),
                    number(event, "task"),
                ) else {
                    continue;
                };
                if lost.contains(&attempt) {
                    late += 1;
                    evidence.push(format!(
                        "{:.1}s: attempt {attempt} committed job {job} task {task} after its lease expired",
                        event.t
                    ));
                }
                let phase = event.fields.get("phase").and_then(|p| p.as_str());
                if phase == Some("reduce")
                    && let Some(first) = reduces.insert((job, task), attempt)
                {
                    twice += 1;
                    evidence.push(format!(
                        "{:.1}s: job {job} reduce {task} committed by attempt {attempt} after attempt {first}",
                        event.t
                    ));
                }
            }
            "completion_refused" => refused += 1,
            "job_done" => {
                launched += number(event, "backups_launched").unwrap_or(0);
                won += number(event, "backups_won").unwrap_or(0);
                lost_outputs += number(event, "lost_map_outputs").unwrap_or(0);
                local += number(event, "local_maps").unwrap_or(0);
                remote += number(event, "remote_maps").unwrap_or(0);
            }
            _ => {}
        }
    }
    let local_share = if local + remote == 0 {
        0.0
    } else {
        local as f64 / (local + remote) as f64
    };
    Verdict {
        unknown: false,
        checker,
        valid: late == 0 && twice == 0,
        summary: format!(
            "{committed} task commits: {late} from expired leases, {twice} reduces committed twice; {refused} late completions refused; {launched} backups launched ({won} won); {lost_outputs} map outputs lost and re-run; {:.0}% of maps local",
            local_share * 100.0
        ),
        evidence,
        figures: vec![
            ("backups".into(), format!("{launched} ({won} won)")),
            ("refused late".into(), refused.to_string()),
            ("maps re-run".into(), lost_outputs.to_string()),
            ("local maps".into(), format!("{:.0}%", local_share * 100.0)),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(t: f64, what: &str, fields: serde_json::Value) -> Event {
        Event {
            t,
            kind: EventKind::NodeEvent,
            node: Some("co1".into()),
            what: format!("{what}: ..."),
            fields: fields.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn a_commit_after_a_lost_lease_or_a_second_reduce_commit_is_caught() {
        let committed = |t, attempt, phase, task| {
            event(
                t,
                "task_committed",
                json!({"job": 1, "phase": phase, "task": task, "attempt": attempt}),
            )
        };
        let good = vec![
            committed(1.0, 1, "map", 0),
            event(
                2.0,
                "worker_lost",
                json!({"worker": "w2", "attempts": "2 (job 1 map task 1)"}),
            ),
            committed(3.0, 3, "map", 1),
            committed(4.0, 4, "reduce", 0),
            event(
                4.0,
                "job_done",
                json!({"backups_launched": 1, "backups_won": 1, "local_maps": 1, "remote_maps": 1}),
            ),
        ];
        let verdict = commits(&good);
        assert!(verdict.valid, "{verdict:?}");
        assert!(
            verdict.summary.contains("1 backups launched (1 won)"),
            "{}",
            verdict.summary
        );
        assert!(verdict.summary.contains("50% of maps local"));

        let mut late = good.clone();
        late.push(committed(5.0, 2, "map", 1));
        let verdict = commits(&late);
        assert!(!verdict.valid);
        assert!(
            verdict.evidence[0]
                .contains("attempt 2 committed job 1 task 1 after its lease expired")
        );

        let mut twice = good;
        twice.push(committed(5.0, 9, "reduce", 0));
        let verdict = commits(&twice);
        assert!(!verdict.valid);
        assert!(verdict.evidence[0].contains("reduce 0 committed by attempt 9 after attempt 4"));
    }

    fn op(index: u64, process: u64, kind: OpType, f: &str, key: &str) -> Op {
        Op {
            index,
            time: index as f64,
            process,
            kind,
            f: f.into(),
            key: Some(key.into()),
            value: json!(null),
            error: None,
            meta: None,
        }
    }

    #[test]
    fn jobs_must_finish_with_the_sequential_runs_output() {
        let job = json!({"name": "wordcount-1"});
        let digest = json!({"lines": 10, "hash": "ab"});
        let history = |got: serde_json::Value, outcome: OpType| {
            let mut done = op(1, 0, outcome, "job", "wordcount");
            done.value = job.clone();
            if outcome == OpType::Fail {
                done.error = Some("map task 0: trapped".into());
            }
            let mut read = op(3, FINAL_PROCESS, OpType::Ok, "output", "wordcount-1");
            read.value = got;
            read.meta = Some(json!({"reference": digest}));
            let mut invoke = op(0, 0, OpType::Invoke, "job", "wordcount");
            invoke.value = job.clone();
            vec![
                invoke,
                done,
                op(2, FINAL_PROCESS, OpType::Invoke, "output", "wordcount-1"),
                read,
            ]
        };
        let verdict = jobs(&history(digest.clone(), OpType::Ok));
        assert!(verdict.valid, "{verdict:?}");
        let verdict = jobs(&history(json!({"lines": 9, "hash": "cd"}), OpType::Ok));
        assert!(!verdict.valid);
        assert!(
            verdict.evidence[0].contains("9 lines"),
            "{:?}",
            verdict.evidence
        );
        let verdict = jobs(&history(
            json!({"lines": 10, "hash": "ab", "globally_sorted": false}),
            OpType::Ok,
        ));
        assert!(!verdict.valid);
        assert!(verdict.evidence[0].contains("not sorted"));
        let verdict = jobs(&history(digest.clone(), OpType::Fail));
        assert!(!verdict.valid);
        assert!(verdict.evidence[0].contains("wordcount-1 failed: map task 0: trapped"));
        assert!(!jobs(&[]).valid, "no job ran");
    }
}
