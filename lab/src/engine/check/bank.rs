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
        if got != expected || got.is_none() {
            wrong += 1;
            if evidence.len() < 20 {
                evidence.push(format!(
                    "{}read at {:.3}-{:.3}s saw a total of {} where {} is the bank's",
                    if last { "the final " } else { "a " },
                    start.time,
                    op.time,
                    got.map_or("?".into(), |t| t.to_string()),
                    expected.map_or("?".into(), |t| t.to_string()),
                ));
            }
        }
    }
    if let Some(e) = &failed_final {
        evidence.push(format!("the final read of every balance failed: {e}"));
    }
    let valid = wrong == 0 && failed_final.is_none() && reads > 0;
    let summary = if reads == 0 {
        "no whole-bank read completed".to_string()
    } else if valid {
        format!("{reads} whole-bank reads, every one saw exactly the bank's total")
    } else {
        format!("{wrong} of {reads} whole-bank reads saw money created or destroyed")
    };
    Verdict {
        checker,
        valid,
        summary,
        evidence,
        figures: vec![("reads".into(), reads.to_string())],
    }
}

struct Asked {
    from: String,
    to: String,
    amount: i64,
    outcome: OpType,
}

pub fn transfers(history: &[Op]) -> Verdict {
    let checker = "bank_transfers".to_string();
    let mut evidence = Vec::new();
    let mut asked: BTreeMap<String, Asked> = BTreeMap::new();
    let mut final_read: Option<&Op> = None;
    let mut journal: Option<&Op> = None;
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
                        },
                    );
                }
            }
            ("read_all", true) => final_read = Some(op),
            ("journal", true) => journal = Some(op),
            _ => {}
        }
    }
    let fail = |summary: String, evidence: Vec<String>| Verdict {
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
    let valid = twice == 0
        && missing == 0
        && ghost_aborted == 0
        && strangers.is_empty()
        && drift == 0
        && negative == 0;
    let summary = if valid {
        format!(
            "{committed} committed transfers each applied once, {aborted} aborted moved nothing, \
             {unknown} unanswered ({unknown_committed} of them committed); every balance equals \
             its opening plus the journal"
        )
    } else {
        format!(
            "{twice} applied twice, {missing} committed but missing or different, {ghost_aborted} \
             aborted but applied, {} unasked, {drift} balances off the journal, {negative} negative",
            strangers.len()
        )
    };
    Verdict {
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
}
