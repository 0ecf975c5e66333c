//! Project 5's checks: the bank's money, read back.
//!
//! The history holds `transfer` operations (value: id, from, to, amount; `ok` when the
//! coordinator answered committed, `fail` when it answered aborted with a reason, `info` when
//! no answer came), `read_all` operations (value: the whole bank's `total` and what it must be,
//! `expected`, and the `balances`), and the runner's final reads: a `read_all` once the load
//! stopped and the ledger's `journal` (value: every entry, with its sequence number, id,
//! accounts and amount).
//!
//! [`total`]: every whole-bank read saw exactly the expected total (two-phase commit's reads
//! are serializable: no money in flight, ever), and the final one did.
//!
//! [`transfers`]: the journal is the record of what committed. Valid when no transfer id is in
//! it twice (nothing applied twice), every transfer answered committed is in it, none answered
//! aborted is, none that nobody asked for is; the final balances equal the opening balances
//! plus exactly the journalled transfers (no double debit, no lost credit, account by
//! account); no balance is negative; and the final read went through (a transaction stuck
//! prepared would hold its locks and block it). Transfers without an answer are counted: the
//! journal says which of them committed.

use std::collections::BTreeMap;

use super::Verdict;
use crate::engine::history::{FINAL_PROCESS, Op, OpType, invocations_and_completions};

pub fn total(history: &[Op]) -> Verdict {
    let checker = "bank_total".to_string();
    let mut evidence = Vec::new();
    let (mut reads, mut wrong, mut failed_final) = (0, 0, None);
    let mut saga = false;
    // Saga mode: reads that saw money in flight, the most they saw, and the longest stretch
    // (from the first such read to the next exact one).
    let (mut in_flight_reads, mut most, mut longest) = (0, 0i64, 0.0f64);
    let mut stretch_since: Option<f64> = None;
    for (start, op) in invocations_and_completions(history) {
        if op.f != "read_all" {
            continue;
        }
        let last = op.process >= FINAL_PROCESS;
        if op.kind != OpType::Ok {
            if last {
                failed_final = Some(op.error.clone().unwrap_or_default());
            }
            continue;
        }
        reads += 1;
        let (got, expected) = (op.value["total"].as_i64(), op.value["expected"].as_i64());
        let read_saga = op.value["mode"] == "saga";
        saga |= read_saga;
        if read_saga && !last {
            // A saga's reads are not one transaction: each shard is read as it is, so a
            // read may see a debit without its credit (or a credit whose debit it read before
            // it happened): money in flight, measured here, not a failure.
            let off = got.zip(expected).map_or(0, |(g, e)| g - e);
            if off != 0 {
                in_flight_reads += 1;
                most = most.max(off.abs());
                stretch_since.get_or_insert(start.time);
            } else if let Some(since) = stretch_since.take() {
                longest = longest.max(start.time - since);
            }
            continue;
        }
        let stuck = op.value["in_flight_after"].as_i64().unwrap_or(0);
        if got != expected || got.is_none() || (last && stuck != 0) {
            wrong += 1;
            if evidence.len() < 20 {
                evidence.push(format!(
                    "{}read at {:.3}-{:.3}s saw a total of {} where {} is the bank's{}",
                    if last { "the final " } else { "a " },
                    start.time,
                    op.time,
                    got.map_or("?".into(), |t| t.to_string()),
                    expected.map_or("?".into(), |t| t.to_string()),
                    if stuck != 0 {
                        format!(", with {stuck} still in flight (sagas stuck or dead-lettered)")
                    } else {
                        String::new()
                    }
                ));
            }
        }
    }
    if let Some(since) = stretch_since {
        let end = history.last().map_or(since, |op| op.time);
        longest = longest.max(end - since);
    }
    if let Some(e) = &failed_final {
        evidence.push(format!("the final read of every balance failed: {e}"));
    }
    let valid = wrong == 0 && failed_final.is_none() && reads > 0;
    let summary = if reads == 0 {
        "no whole-bank read completed".to_string()
    } else if saga && valid {
        format!(
            "{reads} whole-bank reads: {in_flight_reads} saw money in flight (up to {most}, at most \
             {longest:.1} s in a row: a saga's reads are not atomic); the final one, with nothing \
             in flight, saw exactly the bank's total"
        )
    } else if valid {
        format!("{reads} whole-bank reads, every one saw exactly the bank's total")
    } else if saga {
        format!("{wrong} of {reads} reads that must be exact saw money created, destroyed or stuck")
    } else {
        format!("{wrong} of {reads} whole-bank reads saw money created or destroyed")
    };
    let mut figures = vec![("reads".into(), reads.to_string())];
    if saga {
        figures.push(("in_flight_reads".into(), in_flight_reads.to_string()));
        figures.push(("max_in_flight".into(), most.to_string()));
        figures.push(("longest_in_flight_s".into(), format!("{longest:.1}")));
    }
    Verdict {
        unknown: false,
        checker,
        valid,
        summary,
        evidence,
        figures,
    }
}

struct Asked {
    from: String,
    to: String,
    amount: i64,
    outcome: OpType,
    /// What the service said it ended as (saga mode: `completed`, `compensated`, ...).
    state: String,
}

pub fn transfers(history: &[Op]) -> Verdict {
    let checker = "bank_transfers".to_string();
    let mut evidence = Vec::new();
    let mut asked: BTreeMap<String, Asked> = BTreeMap::new();
    let mut final_read: Option<&Op> = None;
    let mut journal: Option<&Op> = None;
    let mut steps: Option<&Op> = None;
    for (start, op) in invocations_and_completions(history) {
        match (op.f.as_str(), op.process >= FINAL_PROCESS) {
            ("transfer", false) => {
                let v = &start.value;
                if let Some(id) = v["id"].as_str() {
                    asked.insert(
                        id.to_string(),
                        Asked {
                            from: v["from"].as_str().unwrap_or_default().to_string(),
                            to: v["to"].as_str().unwrap_or_default().to_string(),
                            amount: v["amount"].as_i64().unwrap_or(0),
                            outcome: op.kind,
                            state: op
                                .meta
                                .as_ref()
                                .and_then(|m| m["state"].as_str())
                                .unwrap_or_default()
                                .to_string(),
                        },
                    );
                }
            }
            ("read_all", true) => final_read = Some(op),
            ("journal", true) => journal = Some(op),
            ("steps", true) => steps = Some(op),
            _ => {}
        }
    }
    let fail = |summary: String, evidence: Vec<String>| Verdict {
        unknown: false,
        checker: checker.clone(),
        valid: false,
        summary,
        evidence,
        figures: Vec::new(),
    };
    let Some(journal) = journal.filter(|j| j.kind == OpType::Ok) else {
        return fail(
            "the ledger's journal could not be read at the end".into(),
            journal.and_then(|j| j.error.clone()).into_iter().collect(),
        );
    };
    let Some(read) = final_read.filter(|r| r.kind == OpType::Ok) else {
        return fail(
            "the final read of every balance failed (a transaction stuck prepared holds its locks)"
                .into(),
            final_read
                .and_then(|r| r.error.clone())
                .into_iter()
                .collect(),
        );
    };
    let entries = journal.value.as_array().cloned().unwrap_or_default();
    let mut journalled: BTreeMap<String, (String, String, i64)> = BTreeMap::new();
    let mut twice = 0;
    let mut moved: BTreeMap<String, i128> = BTreeMap::new();
    for e in &entries {
        let id = e["id"].as_str().unwrap_or_default().to_string();
        let (from, to) = (
            e["from"].as_str().unwrap_or_default().to_string(),
            e["to"].as_str().unwrap_or_default().to_string(),
        );
        let amount = e["amount"].as_i64().unwrap_or(0);
        *moved.entry(from.clone()).or_default() -= i128::from(amount);
        *moved.entry(to.clone()).or_default() += i128::from(amount);
        if journalled.insert(id.clone(), (from, to, amount)).is_some() {
            twice += 1;
            evidence.push(format!("transfer {id} is in the journal twice"));
        }
    }
    let (mut committed, mut aborted, mut unknown, mut unknown_committed) = (0, 0, 0, 0);
    let mut missing = 0;
    let mut ghost_aborted = 0;
    for (id, a) in &asked {
        let entry = journalled.get(id);
        if let Some((from, to, amount)) = entry
            && (from != &a.from || to != &a.to || *amount != a.amount)
        {
            evidence.push(format!(
                "transfer {id} was {} -> {} {}, the journal has {from} -> {to} {amount}",
                a.from, a.to, a.amount
            ));
            missing += 1;
        }
        match a.outcome {
            OpType::Ok => {
                committed += 1;
                if entry.is_none() {
                    missing += 1;
                    evidence.push(format!(
                        "transfer {id} was answered committed and is not in the journal"
                    ));
                }
            }
            OpType::Fail => {
                aborted += 1;
                if entry.is_some() {
                    ghost_aborted += 1;
                    evidence.push(format!(
                        "transfer {id} was answered aborted and is in the journal"
                    ));
                }
            }
            _ => {
                unknown += 1;
                unknown_committed += usize::from(entry.is_some());
            }
        }
    }
    let strangers: Vec<&String> = journalled
        .keys()
        .filter(|id| !asked.contains_key(*id))
        .collect();
    for id in strangers.iter().take(10) {
        evidence.push(format!(
            "the journal has transfer {id}, which no client asked for"
        ));
    }
    // Balances: the opening balance of each account plus what the journal moved.
    let balances: BTreeMap<String, i64> = read.value["balances"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    let expected_total = read.value["expected"].as_i64().unwrap_or(0);
    let opening = if balances.is_empty() {
        0
    } else {
        expected_total / balances.len() as i64
    };
    let mut drift = 0;
    let mut negative = 0;
    for (account, balance) in &balances {
        let want = i128::from(opening) + moved.get(account).copied().unwrap_or(0);
        if i128::from(*balance) != want {
            drift += 1;
            if drift <= 10 {
                evidence.push(format!(
                    "{account} holds {balance}; its opening {opening} and the journal's transfers make {want}"
                ));
            }
        }
        if *balance < 0 {
            negative += 1;
            evidence.push(format!("{account} is negative: {balance}"));
        }
    }
    let step_errors = match steps {
        Some(op) if op.kind == OpType::Ok => check_steps(&asked, &op.value, &mut evidence),
        Some(op) => {
            evidence.push(format!(
                "the shards' step records could not be read: {}",
                op.error.clone().unwrap_or_default()
            ));
            1
        }
        None => 0,
    };
    let valid = twice == 0
        && missing == 0
        && ghost_aborted == 0
        && strangers.is_empty()
        && drift == 0
        && negative == 0
        && step_errors == 0;
    let summary = if valid {
        let (done, undone) = if read.value["mode"] == "saga" {
            ("completed", "compensated or refused")
        } else {
            ("committed", "aborted")
        };
        format!(
            "{committed} {done} transfers each applied once, {aborted} {undone} moved nothing, \
             {unknown} unanswered ({unknown_committed} of them {done}); every balance equals \
             its opening plus the journal"
        )
    } else {
        format!(
            "{twice} applied twice, {missing} committed but missing or different, {ghost_aborted} \
             aborted but applied, {} unasked, {drift} balances off the journal, {negative} negative, \
             {step_errors} step records wrong",
            strangers.len()
        )
    };
    Verdict {
        unknown: false,
        checker,
        valid,
        summary,
        evidence,
        figures: vec![
            ("committed".into(), committed.to_string()),
            ("aborted".into(), aborted.to_string()),
            ("unknown".into(), unknown.to_string()),
        ],
    }
}

/// Saga mode: what each transfer's idempotency keys did at the shards (`steps`: every record,
/// every state each key went through). A key applied twice is a double debit or credit; a
/// transfer answered completed must have its debit and credit applied, one answered otherwise
/// neither (refused, fenced or reversed). Returns how many were wrong.
fn check_steps(
    asked: &BTreeMap<String, Asked>,
    steps: &serde_json::Value,
    evidence: &mut Vec<String>,
) -> usize {
    let mut history: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in steps.as_array().into_iter().flatten() {
        if let (Some(key), Some(state)) = (s["key"].as_str(), s["state"].as_str()) {
            history.entry(key).or_default().push(state);
        }
    }
    let mut wrong = 0;
    let mut say = |evidence: &mut Vec<String>, text: String| {
        wrong += 1;
        if evidence.len() < 30 {
            evidence.push(text);
        }
    };
    for (key, states) in &history {
        if states.iter().filter(|s| **s == "applied").count() > 1 {
            say(
                evidence,
                format!("step {key} was applied {} times", states.len()),
            );
        }
    }
    let last = |key: String| history.get(key.as_str()).and_then(|s| s.last().copied());
    for (id, a) in asked {
        let (debit, credit) = (last(format!("{id}/debit")), last(format!("{id}/credit")));
        match a.outcome {
            OpType::Ok if debit != Some("applied") || credit != Some("applied") => say(
                evidence,
                format!(
                    "transfer {id} was answered completed; its debit is {}, its credit {}",
                    debit.unwrap_or("missing"),
                    credit.unwrap_or("missing")
                ),
            ),
            OpType::Fail if debit == Some("applied") || credit == Some("applied") => say(
                evidence,
                format!(
                    "transfer {id} was answered {} and its {} stayed applied",
                    if a.state.is_empty() {
                        "failed"
                    } else {
                        &a.state
                    },
                    if debit == Some("applied") {
                        "debit"
                    } else {
                        "credit"
                    }
                ),
            ),
            _ => {}
        }
    }
    wrong
}

/// Saga mode: every completed or compensated transfer notified exactly once (the notifier's
/// store holds each event id once however often Kafka-lite delivered it), none for a refused
/// one or one nobody asked for, and the notifier caught up with the topic at the end.
pub fn notifications(history: &[Op]) -> Verdict {
    let checker = "bank_notifications".to_string();
    let mut evidence = Vec::new();
    let mut asked: BTreeMap<String, (OpType, String)> = BTreeMap::new();
    let mut read: Option<&Op> = None;
    let mut two_phase_commit = false;
    for (start, op) in invocations_and_completions(history) {
        if op.f == "read_all" && op.kind == OpType::Ok && op.value["mode"] == "2pc" {
            two_phase_commit = true;
        }
        match (op.f.as_str(), op.process >= FINAL_PROCESS) {
            ("transfer", false) => {
                if let Some(id) = start.value["id"].as_str() {
                    let state = op
                        .meta
                        .as_ref()
                        .and_then(|m| m["state"].as_str())
                        .unwrap_or_default();
                    asked.insert(id.to_string(), (op.kind, state.to_string()));
                }
            }
            ("notifications", true) => read = Some(op),
            _ => {}
        }
    }
    if two_phase_commit && read.is_none() {
        // The same scenario may run in both modes (`proj5-compare`): 2PC has no notify step.
        return Verdict {
            unknown: false,
            checker,
            valid: true,
            summary: "two-phase commit: no notify step, nothing to check".into(),
            evidence: Vec::new(),
            figures: Vec::new(),
        };
    }
    let Some(read) = read.filter(|r| r.kind == OpType::Ok) else {
        return Verdict {
            unknown: false,
            checker,
            valid: false,
            summary: "the notifications could not be read at the end".into(),
            evidence: read.and_then(|r| r.error.clone()).into_iter().collect(),
            figures: Vec::new(),
        };
    };
    let mut notified: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in read.value["notifications"].as_array().into_iter().flatten() {
        notified
            .entry(n["transfer"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(n["outcome"].as_str().unwrap_or_default().to_string());
    }
    let duplicates = read.value["duplicates"].as_u64().unwrap_or(0);
    let caught_up = read.value["caught_up"] == true;
    let mut wrong = 0;
    let mut say = |evidence: &mut Vec<String>, text: String| {
        wrong += 1;
        if evidence.len() < 30 {
            evidence.push(text);
        }
    };
    let (mut completed, mut compensated) = (0, 0);
    for (id, (kind, state)) in &asked {
        let got = notified.get(id).map(Vec::as_slice).unwrap_or_default();
        let want = match (kind, state.as_str()) {
            (OpType::Ok, _) => Some("completed"),
            (OpType::Fail, "compensated") => Some("compensated"),
            (OpType::Fail, _) => None,
            // Unanswered: at most one notification, whichever way it ended.
            _ => {
                if got.len() > 1 {
                    say(
                        &mut evidence,
                        format!("transfer {id} was notified {} times", got.len()),
                    );
                }
                continue;
            }
        };
        match want {
            Some(outcome) if got != [outcome] => say(
                &mut evidence,
                format!("transfer {id} ended {outcome}; its notifications: {got:?}"),
            ),
            None if !got.is_empty() => say(
                &mut evidence,
                format!(
                    "transfer {id} moved nothing and was not compensated, yet notified {got:?}"
                ),
            ),
            Some("completed") => completed += 1,
            Some(_) => compensated += 1,
            None => {}
        }
    }
    for id in notified
        .keys()
        .filter(|id| !asked.contains_key(*id))
        .take(10)
    {
        say(
            &mut evidence,
            format!("a notification for transfer {id}, which no client asked for"),
        );
    }
    if !caught_up {
        say(
            &mut evidence,
            "the notifier had not caught up with the topic by the end of the final reads".into(),
        );
    }
    let valid = wrong == 0;
    let summary = if valid {
        format!(
            "{completed} completed and {compensated} compensated transfers each notified once; \
             {duplicates} redelivered events absorbed"
        )
    } else {
        format!("{wrong} notifications missing, doubled or wrong")
    };
    Verdict {
        unknown: false,
        checker,
        valid,
        summary,
        evidence,
        figures: vec![
            ("notified".into(), notified.len().to_string()),
            ("duplicates_absorbed".into(), duplicates.to_string()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(index: u64, process: u64, kind: OpType, f: &str, value: serde_json::Value) -> Op {
        Op {
            index,
            time: index as f64,
            process,
            kind,
            f: f.into(),
            key: None,
            value,
            error: None,
            meta: None,
        }
    }

    fn history(journal: serde_json::Value, balances: serde_json::Value) -> Vec<Op> {
        let t = |id: &str, amount| json!({"id": id, "from": "a", "to": "b", "amount": amount});
        vec![
            op(0, 1, OpType::Invoke, "transfer", t("t1", 10)),
            op(1, 1, OpType::Ok, "transfer", t("t1", 10)),
            op(2, 1, OpType::Invoke, "transfer", t("t2", 5)),
            op(3, 1, OpType::Fail, "transfer", t("t2", 5)),
            op(4, 1, OpType::Invoke, "transfer", t("t3", 1)),
            op(5, 1, OpType::Info, "transfer", t("t3", 1)),
            op(6, FINAL_PROCESS, OpType::Invoke, "read_all", json!(null)),
            op(
                7,
                FINAL_PROCESS,
                OpType::Ok,
                "read_all",
                json!({"total": 200, "expected": 200, "balances": balances}),
            ),
            op(8, FINAL_PROCESS, OpType::Invoke, "journal", json!(null)),
            op(9, FINAL_PROCESS, OpType::Ok, "journal", journal),
        ]
    }

    fn entry(id: &str, amount: i64) -> serde_json::Value {
        json!({"id": id, "from": "a", "to": "b", "amount": amount})
    }

    #[test]
    fn balances_that_match_the_journal_pass_and_unknowns_are_counted() {
        let h = history(
            json!([entry("t1", 10), entry("t3", 1)]),
            json!({"a": 89, "b": 111}),
        );
        let v = transfers(&h);
        assert!(v.valid, "{v:?}");
        assert!(
            v.summary.contains("1 unanswered (1 of them committed)"),
            "{}",
            v.summary
        );
        assert!(total(&h).valid);
    }

    #[test]
    fn a_double_debit_a_lost_commit_and_an_applied_abort_are_each_named() {
        // t1 applied twice.
        let v = transfers(&history(
            json!([entry("t1", 10), entry("t1", 10)]),
            json!({"a": 80, "b": 120}),
        ));
        assert!(!v.valid);
        assert!(v.evidence.iter().any(|e| e.contains("twice")), "{v:?}");
        // t1 missing, t2 (aborted) applied.
        let v = transfers(&history(
            json!([entry("t2", 5)]),
            json!({"a": 95, "b": 105}),
        ));
        assert!(
            v.evidence.iter().any(|e| e.contains("not in the journal")),
            "{v:?}"
        );
        assert!(
            v.evidence.iter().any(|e| e.contains("answered aborted")),
            "{v:?}"
        );
        // Balances off the journal (a credit skipped).
        let v = transfers(&history(
            json!([entry("t1", 10)]),
            json!({"a": 90, "b": 100}),
        ));
        assert!(
            v.evidence.iter().any(|e| e.contains("b holds 100")),
            "{v:?}"
        );
    }

    #[test]
    fn a_read_that_saw_money_in_flight_fails_the_total() {
        let mut h = history(json!([]), json!({"a": 100, "b": 100}));
        h.push(op(10, 2, OpType::Invoke, "read_all", json!(null)));
        h.push(op(
            11,
            2,
            OpType::Ok,
            "read_all",
            json!({"total": 190, "expected": 200}),
        ));
        let v = total(&h);
        assert!(!v.valid);
        assert!(v.evidence[0].contains("total of 190"), "{v:?}");
    }

    /// A saga-mode history: t1 completed, t2 compensated, t3 refused; the final reads.
    fn saga_history(steps: serde_json::Value, notified: serde_json::Value) -> Vec<Op> {
        let t = |id: &str| json!({"id": id, "from": "a", "to": "b", "amount": 10});
        let done = |index, kind, id: &str, state: &str| Op {
            meta: Some(json!({"state": state})),
            ..op(index, 1, kind, "transfer", t(id))
        };
        let read = |index, process, total, in_flight| {
            op(
                index,
                process,
                OpType::Ok,
                "read_all",
                json!({"total": total, "expected": 200, "mode": "saga", "in_flight_after": in_flight,
                       "balances": {"a": 90, "b": 110}}),
            )
        };
        vec![
            op(0, 1, OpType::Invoke, "transfer", t("t1")),
            done(1, OpType::Ok, "t1", "completed"),
            op(2, 1, OpType::Invoke, "transfer", t("t2")),
            done(3, OpType::Fail, "t2", "compensated"),
            op(4, 1, OpType::Invoke, "transfer", t("t3")),
            done(5, OpType::Fail, "t3", "refused"),
            op(6, 2, OpType::Invoke, "read_all", json!(null)),
            read(7, 2, 190, 10),
            op(8, 2, OpType::Invoke, "read_all", json!(null)),
            read(9, 2, 200, 0),
            op(10, FINAL_PROCESS, OpType::Invoke, "read_all", json!(null)),
            read(11, FINAL_PROCESS, 200, 0),
            op(12, FINAL_PROCESS, OpType::Invoke, "journal", json!(null)),
            op(
                13,
                FINAL_PROCESS,
                OpType::Ok,
                "journal",
                json!([entry("t1", 10)]),
            ),
            op(14, FINAL_PROCESS, OpType::Invoke, "steps", json!(null)),
            op(15, FINAL_PROCESS, OpType::Ok, "steps", steps),
            op(
                16,
                FINAL_PROCESS,
                OpType::Invoke,
                "notifications",
                json!(null),
            ),
            op(17, FINAL_PROCESS, OpType::Ok, "notifications", notified),
        ]
    }

    fn step(key: &str, state: &str) -> serde_json::Value {
        json!({"key": key, "state": state})
    }

    fn good_steps() -> serde_json::Value {
        json!([
            step("t1/debit", "applied"),
            step("t1/credit", "applied"),
            step("t2/debit", "applied"),
            step("t2/credit", "fenced"),
            step("t2/debit", "reversed"),
            step("t3/debit", "refused"),
        ])
    }

    fn notified(list: &[(&str, &str)]) -> serde_json::Value {
        let list: Vec<_> = list
            .iter()
            .map(|(t, o)| json!({"transfer": t, "outcome": o}))
            .collect();
        json!({"notifications": list, "duplicates": 3, "caught_up": true})
    }

    #[test]
    fn a_sagas_reads_may_see_money_in_flight_but_the_final_one_must_not() {
        let h = saga_history(good_steps(), notified(&[]));
        let v = total(&h);
        assert!(v.valid, "{v:?}");
        assert!(
            v.summary.contains("1 saw money in flight (up to 10"),
            "{}",
            v.summary
        );
        let mut stuck = h.clone();
        stuck[11].value["in_flight_after"] = json!(10);
        stuck[11].value["total"] = json!(190);
        let v = total(&stuck);
        assert!(!v.valid);
        assert!(v.evidence[0].contains("10 still in flight"), "{v:?}");
    }

    #[test]
    fn step_records_catch_a_double_apply_and_a_compensation_that_did_not_undo() {
        let h = saga_history(good_steps(), notified(&[]));
        assert!(transfers(&h).valid, "{:?}", transfers(&h));
        let mut twice = good_steps();
        twice
            .as_array_mut()
            .unwrap()
            .push(step("t1/credit", "applied"));
        let v = transfers(&saga_history(twice, notified(&[])));
        assert!(!v.valid);
        assert!(
            v.evidence.iter().any(|e| e.contains("applied 2 times")),
            "{v:?}"
        );
        let undone = json!([
            step("t1/debit", "applied"),
            step("t1/credit", "applied"),
            step("t2/debit", "applied"),
            step("t2/credit", "fenced"),
            step("t3/debit", "refused"),
        ]);
        let v = transfers(&saga_history(undone, notified(&[])));
        assert!(
            v.evidence
                .iter()
                .any(|e| e.contains("t2 was answered compensated and its debit stayed applied")),
            "{v:?}"
        );
    }

    #[test]
    fn each_completed_or_compensated_transfer_is_notified_once() {
        let good = notified(&[("t1", "completed"), ("t2", "compensated")]);
        let v = notifications(&saga_history(good_steps(), good));
        assert!(v.valid, "{v:?}");
        assert!(v.summary.contains("3 redelivered"), "{}", v.summary);
        let bad = notified(&[
            ("t1", "completed"),
            ("t1", "completed"),
            ("t3", "completed"),
        ]);
        let v = notifications(&saga_history(good_steps(), bad));
        assert!(!v.valid);
        let all = v.evidence.join("\n");
        assert!(all.contains("t1 ended completed"), "{all}");
        assert!(all.contains("t2 ended compensated"), "{all}");
        assert!(all.contains("t3 moved nothing"), "{all}");
    }
}
